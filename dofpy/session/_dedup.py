"""Duplicate suppression for commands that must execute at most once.

A provider remembers, per command key, whether the command is still being
handled or which response it produced. The node keys commands by (address,
authenticated identity, operation id): the identity of the secure session a
command came through, ``None`` in the clear (where the address is all there
is), so that another identity using the same address and operation id is never
answered from here. A retransmitted copy is answered
from here instead of being executed again. The cache is bounded in entries and
in age; entries dropped for space are counted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["PENDING", "DuplicateCache"]


class _Pending:
    def __repr__(self) -> str:
        return "PENDING"


PENDING = _Pending()
"""Marker: the command is being handled; a duplicate is dropped, not re-executed."""


ResponseT = TypeVar("ResponseT")


@dataclass(slots=True)
class _Entry(Generic[ResponseT]):
    expires: float
    responses: list[ResponseT] | _Pending
    size: int = 0
    """The bytes of ``responses``, as ``weigh`` measures them."""


class DuplicateCache(Generic[ResponseT]):
    """Bounded map of recently seen commands to the responses sent for them.

    ``max_bytes`` bounds the responses kept, as ``weigh`` measures each
    (``None``: no bound in bytes); ``weigh`` is required with it."""

    def __init__(
        self,
        max_entries: int = 4096,
        lifetime: float = 60.0,
        *,
        max_bytes: int | None = None,
        weigh: Callable[[ResponseT], int] | None = None,
    ) -> None:
        if max_entries < 1 or lifetime <= 0:
            raise ValueError("max_entries must be >= 1 and lifetime > 0")
        if max_bytes is not None and (max_bytes < 1 or weigh is None):
            raise ValueError("max_bytes must be >= 1, and needs weigh")
        self._max_entries = max_entries
        self._lifetime = lifetime
        self._max_bytes = max_bytes
        self._weigh = weigh
        self._entries: OrderedDict[Hashable, _Entry[ResponseT]] = OrderedDict()
        # The keys of the entries holding answer bytes, least recently
        # answered first: what shedding drops, in order, without walking
        # past the entries still being handled (however many there are).
        self._weighed: OrderedDict[Hashable, None] = OrderedDict()
        self._bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """The bytes of the responses kept (0 without ``weigh``)."""
        return self._bytes

    def _drop(self, key: Hashable) -> None:
        self._bytes -= self._entries.pop(key).size
        self._weighed.pop(key, None)

    def _expire(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                break
            self._drop(key)

    def lookup(self, key: Hashable, now: float) -> list[ResponseT] | _Pending | None:
        """``None`` for a new command; ``PENDING``; or the responses already sent."""
        self._expire(now)
        entry = self._entries.get(key)
        return None if entry is None else entry.responses

    def begin(self, key: Hashable, now: float) -> None:
        """Record that the command ``key`` is now being handled."""
        self._expire(now)
        if key in self._entries:
            self._drop(key)
        self._entries[key] = _Entry[ResponseT](now + self._lifetime, PENDING)
        while len(self._entries) > self._max_entries:
            self._drop(next(iter(self._entries)))
            self.evicted += 1

    def add_response(self, key: Hashable, response: ResponseT, now: float) -> None:
        """Remember a response sent for ``key`` (there may be several)."""
        entry = self._entries.get(key)
        if entry is None:
            return  # evicted or expired meanwhile: nothing to answer duplicates with
        if isinstance(entry.responses, _Pending):
            entry.responses = []
        entry.responses.append(response)
        entry.expires = now + self._lifetime
        self._entries.move_to_end(key)
        if self._weigh is not None:
            size = self._weigh(response)
            entry.size += size
            self._bytes += size
            if entry.size:
                self._weighed[key] = None
                self._weighed.move_to_end(key)
        if self._max_bytes is not None and self._bytes > self._max_bytes:
            self._shed(key)

    def _shed(self, newest: Hashable) -> None:
        """Drop the least recently used answered entries until the responses
        fit ``max_bytes``; the entry just answered (``newest``) goes last,
        when it alone is too large. Entries still being handled weigh
        nothing and stay (dropping them would free no bytes)."""
        assert self._max_bytes is not None
        doomed = []
        excess = self._bytes - self._max_bytes
        for key in self._weighed:  # ``newest`` is the last
            if excess <= 0 or key == newest:
                break
            doomed.append(key)
            excess -= self._entries[key].size
        if excess > 0:
            doomed.append(newest)
        for key in doomed:
            self._drop(key)
        self.evicted += len(doomed)

    def forget(self, match: Callable[[Any], bool]) -> int:
        """Drop every entry whose key ``match`` accepts (a peer's session
        ended); returns how many. A scan: for rare events, not per packet."""
        doomed = [key for key in self._entries if match(key)]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    def earliest_expiry(self) -> float | None:
        if not self._entries:
            return None
        return next(iter(self._entries.values())).expires
