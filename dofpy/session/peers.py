"""The peer table: where each peer's DSP session is, as a ``(state, input) ->
state`` table, and which peers are remembered (bounded, least recently heard
forgotten first)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from dofpy._core import Address
from dofpy.session._table import TransitionTable

__all__ = ["PEER_TABLE", "Peer", "PeerInput", "PeerState", "PeerTable"]


class PeerState(enum.Enum):
    """Where a peer's DSP session is."""

    IDLE = "idle"  # no DSP exchange yet; commands still flow (UDP needs no open)
    OPENING = "opening"  # we sent a DSP Open and wait for its response
    OPEN = "open"  # a DSP Open was answered, in either direction
    CLOSED = "closed"  # terminated; a new command from the peer starts over


class PeerInput(enum.Enum):
    WE_OPEN = "we-open"  # we send a DSP Open
    PEER_SPEAKS = "peer-speaks"  # a new command from the peer
    PEER_OPENS = "peer-opens"  # the peer's DSP Open
    OPEN_ANSWERED = "open-answered"  # the answer to our DSP Open
    OPEN_FAILED = "open-failed"  # our DSP Open failed (timed out, refused)
    CLOSE = "close"  # a DSP Terminate, either way


_S, _I = PeerState, PeerInput

PEER_TABLE: TransitionTable[PeerState, PeerInput] = TransitionTable(
    "peer",
    {
        # Opening again (from OPENING or OPEN) re-negotiates.
        **{(state, _I.WE_OPEN): _S.OPENING for state in _S},
        # A closed peer starts over when it speaks again.
        (_S.IDLE, _I.PEER_SPEAKS): _S.IDLE,
        (_S.OPENING, _I.PEER_SPEAKS): _S.OPENING,
        (_S.OPEN, _I.PEER_SPEAKS): _S.OPEN,
        (_S.CLOSED, _I.PEER_SPEAKS): _S.IDLE,
        # A closed peer's Open always comes after PEER_SPEAKS made it IDLE.
        (_S.IDLE, _I.PEER_OPENS): _S.OPEN,
        (_S.OPENING, _I.PEER_OPENS): _S.OPEN,
        (_S.OPEN, _I.PEER_OPENS): _S.OPEN,
        # An answer after we closed does not reopen.
        (_S.IDLE, _I.OPEN_ANSWERED): _S.OPEN,
        (_S.OPENING, _I.OPEN_ANSWERED): _S.OPEN,
        (_S.OPEN, _I.OPEN_ANSWERED): _S.OPEN,
        (_S.CLOSED, _I.OPEN_ANSWERED): _S.CLOSED,
        # Only a peer still opening is closed by its Open failing.
        (_S.IDLE, _I.OPEN_FAILED): _S.IDLE,
        (_S.OPENING, _I.OPEN_FAILED): _S.CLOSED,
        (_S.OPEN, _I.OPEN_FAILED): _S.OPEN,
        (_S.CLOSED, _I.OPEN_FAILED): _S.CLOSED,
        **{(state, _I.CLOSE): _S.CLOSED for state in _S},
    },
)
"""Every move of a peer's session; a pair not listed raises ``IllegalTransition``."""

_SPEAKING_KEEPS = tuple(
    state for state in PeerState if PEER_TABLE.entries.get((state, PeerInput.PEER_SPEAKS)) is state
)
"""The states a new command from the peer leaves as they are, read from the
table: :meth:`PeerTable.heard` skips the table lookup for them (every
datagram of a block transfer is such a command). A tuple: membership is an
identity test, where a set or the table's dict would call ``Enum.__hash__``."""


@dataclass(slots=True)
class Peer:
    address: Address
    state: PeerState = PeerState.IDLE
    applications: tuple[int, ...] = ()
    last_heard: float = 0.0

    def move(self, given: PeerInput) -> None:
        self.state = PEER_TABLE.next(self.state, given)


class PeerTable:
    """At most ``limit`` peers; a new one displaces the one heard from least
    recently among those ``busy`` does not name."""

    def __init__(self, limit: int, busy: Callable[[], set[Address]]) -> None:
        self._limit = limit
        self._busy = busy
        self._peers: dict[Address, Peer] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def get(self, address: Address) -> Peer | None:
        return self._peers.get(address)

    def touch(self, address: Address, now: float) -> Peer:
        known = self._peers.get(address)
        if known is None:
            if len(self._peers) >= self._limit:
                # Forget the peer heard from least recently that has nothing pending.
                busy = self._busy()
                idle = [p for p in self._peers.values() if p.address not in busy]
                if idle:
                    del self._peers[min(idle, key=lambda p: p.last_heard).address]
            known = Peer(address, last_heard=now)
            self._peers[address] = known
        known.last_heard = now
        return known

    def heard(self, address: Address, now: float) -> Peer:
        """A new command from ``address`` at ``now``: :meth:`touch`, then the
        move ``PEER_SPEAKS`` (nothing to look up when the table leaves the
        state as it is)."""
        known = self._peers.get(address)
        if known is not None and known.state in _SPEAKING_KEEPS:
            known.last_heard = now
            return known
        known = self.touch(address, now)
        known.move(PeerInput.PEER_SPEAKS)
        return known
