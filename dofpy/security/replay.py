"""Packet numbers of a secure session: the sender's counter and the
receiver's sliding replay window (one of each per direction).

The window remembers the highest packet number accepted and which of the
``size`` numbers below it were seen (a bitmap, so memory is bounded whatever
arrives). A number is accepted once; numbers at or below ``highest - size``
are refused as too old, so reordering up to ``size`` packets is tolerated.
Check with :meth:`ReplayWindow.check` before spending work on decryption and
record with :meth:`ReplayWindow.accept` only after the packet authenticated,
so forged packets cannot move the window.
"""

from __future__ import annotations

from dataclasses import dataclass

from dofpy.errors import LocalProtocolError
from dofpy.wire._codec import C4_MAX

__all__ = [
    "MAX_PACKET_NUMBER",
    "PacketCounter",
    "ReplayStatistics",
    "ReplayWindow",
]

#: Packet numbers travel as c4 (30 bits).
MAX_PACKET_NUMBER = C4_MAX


@dataclass(frozen=True, slots=True)
class ReplayStatistics:
    """Counts of what a window decided."""

    accepted: int
    replayed: int
    too_old: int


class ReplayWindow:
    """Accept each packet number at most once; refuse numbers too far behind."""

    __slots__ = ("_accepted", "_bitmap", "_highest", "_replayed", "_size", "_too_old")

    def __init__(self, size: int = 1024) -> None:
        if isinstance(size, bool) or not 1 <= size <= 1 << 16:
            raise ValueError(f"replay window size {size} outside 1..65536")
        self._size = size
        self._highest = -1
        # Bit i set: packet number highest - i was accepted.
        self._bitmap = 0
        self._accepted = self._replayed = self._too_old = 0

    @property
    def size(self) -> int:
        """How many numbers below the highest the window remembers."""
        return self._size

    @property
    def highest(self) -> int | None:
        """The highest packet number accepted so far."""
        return None if self._highest < 0 else self._highest

    def _verdict(self, packet_number: int) -> str:
        if isinstance(packet_number, bool) or not 0 <= packet_number <= MAX_PACKET_NUMBER:
            raise ValueError(f"packet number {packet_number} outside 0..{MAX_PACKET_NUMBER:#x}")
        if packet_number > self._highest:
            return "new"
        offset = self._highest - packet_number
        if offset >= self._size:
            return "too_old"
        if (self._bitmap >> offset) & 1:
            return "replayed"
        return "new"

    def check(self, packet_number: int) -> bool:
        """Would ``packet_number`` be accepted? (Records nothing.)"""
        return self._verdict(packet_number) == "new"

    def accept(self, packet_number: int) -> bool:
        """Record ``packet_number`` if it is new; False (and counted) if it was
        seen before or is too old. Call only for authenticated packets."""
        verdict = self._verdict(packet_number)
        if verdict == "replayed":
            self._replayed += 1
            return False
        if verdict == "too_old":
            self._too_old += 1
            return False
        if packet_number > self._highest:
            shift = packet_number - self._highest
            mask = (1 << self._size) - 1
            self._bitmap = ((self._bitmap << shift) | 1) & mask if shift < self._size else 1
            self._highest = packet_number
        else:
            self._bitmap |= 1 << (self._highest - packet_number)
        self._accepted += 1
        return True

    def statistics(self) -> ReplayStatistics:
        """What the window accepted and refused."""
        return ReplayStatistics(self._accepted, self._replayed, self._too_old)


class PacketCounter:
    """The sender's packet numbers: ``start``, ``start + 1``, ... up to the c4
    limit. Past it the session must be rekeyed (a number, and so a nonce,
    is never used twice with one key)."""

    __slots__ = ("_next", "_start")

    def __init__(self, start: int = 1) -> None:
        if isinstance(start, bool) or not 0 <= start <= MAX_PACKET_NUMBER:
            raise ValueError(f"first packet number {start} outside 0..{MAX_PACKET_NUMBER:#x}")
        self._next = start
        self._start = start

    @property
    def used(self) -> int:
        """How many numbers were given out."""
        return self._next - self._start

    @property
    def remaining(self) -> int:
        """How many numbers are left before a rekey is required."""
        return MAX_PACKET_NUMBER + 1 - self._next

    def next(self) -> int:
        """The next packet number; raises ``LocalProtocolError`` when exhausted."""
        if self._next > MAX_PACKET_NUMBER:
            raise LocalProtocolError("packet numbers exhausted: rekey the session")
        number = self._next
        self._next += 1
        return number
