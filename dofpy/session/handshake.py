"""What both sides of a TEP handshake share: its phases as a ``(phase, input)
-> phase`` table, the state one handshake keeps, and the dofpy Reject codes.

The initiator (:mod:`dofpy.session.initiator`) and the responder
(:mod:`dofpy.session.responder`) run the exchange; this module holds no
behaviour beyond the table and :class:`HandshakeTable`, where both keep their
handshakes with each one's next timer in a heap.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import hmac
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from dofpy._core import Address
from dofpy.session._table import TransitionTable
from dofpy.session.config import SecurityConfig
from dofpy.wire.oid import OID
from dofpy.wire.security import InitiatorBlock, KeyRequest
from dofpy.wire.tep import TepAccept
from dofpy.wire.trp import RequestSessionCommand

__all__ = [
    "AUTHENTICATOR_REJECT_CODE",
    "COOKIE_REJECT_CODE",
    "HANDSHAKE_REJECT_CODE",
    "HANDSHAKE_TABLE",
    "MODE_REJECT_CODE",
    "Handshake",
    "HandshakeInput",
    "HandshakeTable",
    "Phase",
    "initiator_wake_at",
    "responder_wake_at",
]

COOKIE_REJECT_CODE = 0xC0
"""TEP Reject code meaning "repeat your Rekey with this cookie" (dofpy extension)."""
AUTHENTICATOR_REJECT_CODE = 0xC1
"""TEP Reject code: the Authenticator refused the session (description: TRP error)."""
HANDSHAKE_REJECT_CODE = 0xC2
"""TEP Reject code: the responder cannot take the handshake now (busy, bad Rekey)."""
MODE_REJECT_CODE = 0xC3
"""TEP Reject code: the initiator's security mode is not the responder's (the
description names both, e.g. ``CCM tag 8 (initiator) / CCM tag 16 (responder)``)."""

COOKIE_SIZE = 8
NONCE_SIZE = 16


class Phase(enum.Enum):
    REKEY_SENT = "rekey-sent"  # initiator: waiting for Accept (or a cookie)
    CONFIRM_SENT = "confirm-sent"  # initiator: waiting for Confirm Ack
    ASKING_AUTHENTICATOR = "asking-authenticator"  # responder: waiting for the tickets
    ACCEPT_SENT = "accept-sent"  # responder: waiting for Confirm
    DONE = "done"
    FAILED = "failed"


class HandshakeInput(enum.Enum):
    BUSY = "busy"  # initiator: the responder asked us to come back later
    ACCEPT_VERIFIED = "accept-verified"  # initiator: an Accept whose ticket verified
    CONFIRM_ACKED = "confirm-acked"  # initiator: the Confirm Ack
    TICKETS = "tickets"  # responder: the Authenticator's tickets opened
    CONFIRM_VERIFIED = "confirm-verified"  # responder: a Confirm that verified
    FAIL = "fail"  # either side: refused, timed out, evicted, ended


_LIVE = (Phase.REKEY_SENT, Phase.CONFIRM_SENT, Phase.ASKING_AUTHENTICATOR, Phase.ACCEPT_SENT)

HANDSHAKE_TABLE: TransitionTable[Phase, HandshakeInput] = TransitionTable(
    "handshake",
    {
        # A busy responder: the same handshake retries after a back-off; after
        # its Accept it starts over (a new handshake in REKEY_SENT).
        (Phase.REKEY_SENT, HandshakeInput.BUSY): Phase.REKEY_SENT,
        (Phase.CONFIRM_SENT, HandshakeInput.BUSY): Phase.FAILED,
        (Phase.REKEY_SENT, HandshakeInput.ACCEPT_VERIFIED): Phase.CONFIRM_SENT,
        (Phase.CONFIRM_SENT, HandshakeInput.CONFIRM_ACKED): Phase.DONE,
        (Phase.ASKING_AUTHENTICATOR, HandshakeInput.TICKETS): Phase.ACCEPT_SENT,
        (Phase.ACCEPT_SENT, HandshakeInput.CONFIRM_VERIFIED): Phase.DONE,
        **{(phase, HandshakeInput.FAIL): Phase.FAILED for phase in _LIVE},
    },
)
"""Every move of a handshake; a pair not listed raises ``IllegalTransition``
(DONE and FAILED take no input: a finished handshake is never moved again)."""


@dataclass(slots=True)
class Handshake:
    peer: Address
    phase: Phase
    deadline: float
    block: InitiatorBlock
    rekey_op: int
    cookie_rounds: int = 0
    cookie: bytes = b""
    busy_rounds: int = 0
    retry_at: float | None = None  # a busy responder asked us to come back then
    # responder side
    command: RequestSessionCommand | None = None
    responder: KeyRequest | None = None
    accept: TepAccept | None = None
    session_key: bytes | None = field(default=None, repr=False)
    ssid: int | None = None
    token: int | None = None  # the AuthenticatorRequested it waits on (defer_authenticator)
    # What was seen, for naming the cause when it fails.
    started: float = 0.0
    rekeys_sent: int = 0  # Rekeys of earlier cookie rounds (the node counts the current one)
    bad_accepts: int = 0
    bad_confirms: int = 0
    ask_deadline: float | None = None  # responder: when to stop waiting for the Authenticator
    trp_request: int | None = None  # responder: the Request Session sent to the Authenticator

    def move(self, given: HandshakeInput) -> None:
        self.phase = HANDSHAKE_TABLE.next(self.phase, given)

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED)


def where(peer: Address) -> str:
    return f"{peer[0]}:{peer[1]}"


def printable(data: bytes) -> str:
    """A peer's bytes for a message or a log line: printable ASCII only (no
    control characters from the network in anyone's terminal)."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in data)


def make_cookie(cookie_key: bytes, peer: Address, identity: OID, bucket: int) -> bytes:
    """The stateless cookie of ``peer`` claiming ``identity`` in time ``bucket``."""
    message = (
        bucket.to_bytes(8, "big", signed=True) + f"{peer[0]}|{peer[1]}".encode() + identity.encode()
    )
    return hmac.new(cookie_key, message, hashlib.sha256).digest()[:COOKIE_SIZE]


def cookie_valid(
    config: SecurityConfig, peer: Address, identity: OID, nonce: bytes, now: float
) -> bool:
    """Whether a Rekey's ``nonce`` starts with the cookie of this bucket or the last."""
    if len(nonce) != NONCE_SIZE:
        return False
    bucket = int(now // config.cookie_lifetime)
    presented = nonce[:COOKIE_SIZE]
    # Both buckets are checked, whatever the first says: the time taken does
    # not tell which one matched.
    matches = [
        hmac.compare_digest(presented, make_cookie(config.cookie_key, peer, identity, b))
        for b in (bucket, bucket - 1)
    ]
    return any(matches)


def initiator_wake_at(handshake: Handshake) -> float:
    """When a running handshake needs the timer: its deadline, or coming back
    to a busy responder before it."""
    if handshake.retry_at is None:
        return handshake.deadline
    return min(handshake.deadline, handshake.retry_at)


def responder_wake_at(handshake: Handshake) -> float:
    """When a handshake (finished ones too: kept until their deadline) needs
    the timer: its deadline, or giving up on the Authenticator before it."""
    if handshake.ask_deadline is None or handshake.phase is not Phase.ASKING_AUTHENTICATOR:
        return handshake.deadline
    return min(handshake.deadline, handshake.ask_deadline)


K = TypeVar("K", bound=Hashable)

_SLACK = 64  # stale heap entries always tolerated before a rebuild


class HandshakeTable(Generic[K]):
    """Handshakes by key (the initiator's by peer, the responder's by peer and
    operation), with the next time each needs its timer (``wake_at``) kept in
    a heap: :meth:`next_wakeup` costs the same however many handshakes wait,
    finished ones (kept to answer retransmissions until their deadline)
    included.

    Each key has one live heap entry, never later than its handshake's
    ``wake_at``: a table whose handshake's wake-up moves earlier calls
    :meth:`reschedule` (a new handshake under a key is scheduled by setting
    it). A wake-up that moved later, or a handshake gone, is found when its
    entry comes to the top and is put right there, so :meth:`next_wakeup` is
    exactly the earliest ``wake_at`` of the table, as a scan would give.
    ``examined`` counts the heap entries looked at (the cost the tests bound).
    """

    __slots__ = ("_handshakes", "_heap", "_live", "_order", "_tokens", "_wake_at", "examined")

    def __init__(self, wake_at: Callable[[Handshake], float]) -> None:
        self._handshakes: dict[K, Handshake] = {}
        self._wake_at = wake_at
        self._heap: list[tuple[float, int, K]] = []
        self._live: dict[K, int] = {}  # key -> token of its live heap entry
        self._order: dict[K, int] = {}  # key -> when it entered the table (dict order)
        self._tokens = 0
        self.examined = 0

    def __len__(self) -> int:
        return len(self._handshakes)

    def __contains__(self, key: object) -> bool:
        return key in self._handshakes

    def get(self, key: K) -> Handshake | None:
        return self._handshakes.get(key)

    def values(self) -> Iterable[Handshake]:
        return self._handshakes.values()

    def __setitem__(self, key: K, handshake: Handshake) -> None:
        if key not in self._handshakes:
            self._tokens += 1
            self._order[key] = self._tokens
        self._handshakes[key] = handshake
        self.reschedule(key)

    def __delitem__(self, key: K) -> None:
        del self._handshakes[key]
        self._live.pop(key, None)
        del self._order[key]

    def pop(self, key: K) -> Handshake | None:
        handshake = self._handshakes.get(key)
        if handshake is not None:
            del self[key]
        return handshake

    def reschedule(self, key: K) -> None:
        """The handshake under ``key`` may need its timer earlier than before."""
        self._tokens += 1
        self._live[key] = self._tokens
        heapq.heappush(self._heap, (self._wake_at(self._handshakes[key]), self._tokens, key))
        if len(self._heap) > 2 * len(self._live) + _SLACK:
            live = self._live
            self._heap = [entry for entry in self._heap if live.get(entry[2]) == entry[1]]
            heapq.heapify(self._heap)

    def next_wakeup(self) -> float | None:
        """The earliest ``wake_at`` of the handshakes in the table."""
        heap, live = self._heap, self._live
        while heap:
            self.examined += 1
            when, token, key = heap[0]
            if live.get(key) != token:  # stale: the key was rescheduled or removed
                heapq.heappop(heap)
                continue
            actual = self._wake_at(self._handshakes[key])
            if actual == when:
                return when
            heapq.heappop(heap)  # moved later: put it where it belongs
            self.reschedule(key)
        return None

    def due(self, now: float) -> list[Handshake]:
        """The handshakes whose ``wake_at`` is at or before ``now``, in the
        order they entered the table (the order a scan of it visits them).
        Their entries stay scheduled: what the caller does to them moves them."""
        keys: list[K] = []
        while (when := self.next_wakeup()) is not None and when <= now:
            _, _, key = heapq.heappop(self._heap)
            del self._live[key]
            keys.append(key)
        for key in keys:
            self.reschedule(key)
        keys.sort(key=self._order.__getitem__)
        return [self._handshakes[key] for key in keys]
