"""What both sides of a TEP handshake share: its phases as a ``(phase, input)
-> phase`` table, the state one handshake keeps, and the dofpy Reject codes.

The initiator (:mod:`dofpy.session.initiator`) and the responder
(:mod:`dofpy.session.responder`) run the exchange; this module holds no
behaviour beyond the table.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass, field

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
    "Phase",
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
