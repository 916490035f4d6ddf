"""Secure sessions for the DPS node: TEP handshakes, stateless cookies, the
Authenticator round trip, CCM channels and their rekeying. Sans-IO.

A node configured with a :class:`SecurityConfig` protects every application
packet (OAP and above) with AES-256-CCM once a two-party session exists with
the peer, and (with ``require_security``) sends and accepts no application
packet in the clear. The session key comes from a TEP exchange::

    initiator                         responder                       authenticator
    Rekey (nonce N)           ->
                              <-      Reject COOKIE (cookie C)        (no state kept)
    Rekey (nonce C || N')     ->      (cookie valid: state kept)
                                      Request Session        ->
                                                             <-      tickets + grant
                              <-      Accept (ticket, confirmation, SSID)
    Confirm (same op id)      ->
                              <-      Confirm Ack
    ... CCM packets both ways ...

**Cookies (dofpy extension).** The first Rekey from an address is answered
with a TEP Reject whose code is :data:`COOKIE_REJECT_CODE` and whose
description is an 8-byte cookie ``HMAC-SHA256(cookie key, time bucket ||
address || initiator identity)[:8]``; nothing is remembered. The initiator
repeats the Rekey with its nonce set to ``cookie || 8 fresh bytes``. Only a
Rekey whose nonce starts with a valid cookie (this bucket or the previous one)
creates handshake state, so an attacker who cannot receive at the address it
claims creates none, and the Reject is smaller than the Rekey it answers (no
amplification). Half-open handshakes are bounded and what is refused is
counted.

The session key and the initiator's ticket come from the domain's
Authenticator (TRP Request Session): over the network (``authenticator`` address)
or in-process (``local_authenticator``, for a responder trusted with the domain's
credential store).

**Deferred decisions.** A responder that holds the credential store in a
database must not wait on it inside the event loop. With ``defer_authenticator``
the node does not decide at all: each Request Session becomes an
:class:`AuthenticatorRequested` event, the application decides wherever it likes
(a worker thread) and hands the answer back with
:meth:`~dofpy.session.node.Node.answer_authenticator`; the handshake then goes on
exactly as with an in-process answer. A pending decision is a half-open
handshake (bounded by ``max_half_open``, ended by ``handshake_timeout``); an
answer that comes too late, twice, or for a token never issued is ignored
and counted (``authenticator_answers_ignored``).

**Diagnosis.** A failed handshake ends its commands with
:class:`~dofpy.errors.SecureSessionFailed` naming the cause: at once for a
Reject (it carries the handshake's random operation id), at the deadline for
what a forgery could cause (an Accept that does not verify is counted, logged
and waited past). A responder gives a remote Authenticator two thirds of its
handshake timeout, then refuses with Reject ``0xC2`` ``authenticator: <cause>``
so that the initiator hears why before its own deadline; each handshake it
answered that fails is reported as :class:`IncomingHandshakeFailed`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import secrets
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from dofpy._core import Address
from dofpy.errors import (
    BadPacket,
    BrokenResourceError,
    ClosedResourceError,
    DofError,
    DofTimeoutError,
    PeerIdentityMismatch,
    SecureSessionCause,
    SecureSessionFailed,
    SecureSessionRefused,
    SecureSessionTimeout,
)
from dofpy.security.authenticator import TicketRole, TrpAuthenticator, open_session_ticket
from dofpy.security.crypto import (
    build_accept,
    build_confirm,
    build_rekey,
    session_key_from_accept,
    verify_confirm,
)
from dofpy.security.replay import MAX_PACKET_NUMBER
from dofpy.security.secure_frame import SecureChannel
from dofpy.wire.ccm import CcmOptions, CcmStrength
from dofpy.wire.dpp import AppId
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet
from dofpy.wire.security import InitiatorBlock, KeyRequest, SecurityIdentity
from dofpy.wire.tep import (
    ResponderInit,
    TepAccept,
    TepConfirm,
    TepConfirmAck,
    TepEndSession,
    TepReject,
    TepRekey,
    decode_tep_untrusted,
    encode_tep,
)
from dofpy.wire.trp import (
    RequestSessionCommand,
    RequestSessionResponse,
    TrpError,
    TrpPdu,
    TrpReject,
    decode_trp_untrusted,
    encode_trp,
)

if TYPE_CHECKING:
    from dofpy.session.node import Node

__all__ = [
    "CCM_CONFIDENTIALITY_LIMIT",
    "CCM_INTEGRITY_LIMIT",
    "COOKIE_REJECT_CODE",
    "AuthenticatorRequested",
    "IncomingHandshakeFailed",
    "PlaintextPolicy",
    "PlaintextUsed",
    "SecureSessionEnded",
    "SecureSessionEstablished",
    "SecurityConfig",
    "SecurityStatistics",
]

logger = logging.getLogger("dofpy.session.security")

COOKIE_REJECT_CODE = 0xC0
"""TEP Reject code meaning "repeat your Rekey with this cookie" (dofpy extension)."""
AUTHENTICATOR_REJECT_CODE = 0xC1
"""TEP Reject code: the Authenticator refused the session (description: TRP error)."""
HANDSHAKE_REJECT_CODE = 0xC2
"""TEP Reject code: the responder cannot take the handshake now (busy, bad Rekey)."""
MODE_REJECT_CODE = 0xC3
"""TEP Reject code: the initiator's security mode is not the responder's (the
description names both, e.g. ``CCM tag 8 (initiator) / CCM tag 16 (responder)``)."""

_COOKIE_SIZE = 8
# A responder waits this share of its handshake timeout for its Authenticator,
# then refuses the handshake naming why: the initiator (whose timeout is
# normally the same) hears the cause before its own deadline.
_AUTHENTICATOR_SHARE = 2 / 3
# Prefix of a Reject 0xC2 description: the responder's Authenticator failed it.
_AUTHENTICATOR_TROUBLE = b"authenticator: "
_TICKET_INVALID = b"authenticator ticket invalid"
# Suffix of a Reject 0xC1 description: the refused Request Session went in the clear.
_ASKED_IN_CLEAR = b" (asked in the clear)"
_SSID_MAX = 0x3FFFFFFF  # the largest c4
_SSID_HALF = 0x20000000  # the bit that splits the SSID space (see _allocate_ssid)
_NONCE_SIZE = 16

CCM_CONFIDENTIALITY_LIMIT = 2_965_820
"""Packets one AES-CCM key may protect: 2^21.5, RFC 9001 §6.6 (AEAD_AES_128_CCM;
the bound depends on the block count, not the key size, so it holds for the
AES-256-CCM of DOF). One session key serves both directions, so both count."""
CCM_INTEGRITY_LIMIT = 2_965_820
"""Datagrams failing authentication under one key before it is retired:
2^21.5, RFC 9001 §6.6 (AEAD_AES_128_CCM)."""

_Key = TypeVar("_Key")

# A superseded key still opens the peer's packets sent before it switched;
# once the peer is seen using the new key, only reordered ones can follow.
_REORDER_GRACE = 2.0
# Peers remembered for the plaintext policy (secured once, announced once).
_MAX_REMEMBERED_PEERS = 4096


class PlaintextPolicy(enum.Enum):
    """Whether a node with a :class:`SecurityConfig` ever uses the clear.

    ``REFUSE`` (the default): no application packet is sent or accepted
    outside a secure session; a command waits for the handshake.
    ``ALLOW``: with a peer that has no secure session (and never had one
    with this node), application packets go and are taken in the clear, for a
    domain that mixes secured and plaintext nodes. Each use is counted
    (``plaintext_sent``, ``plaintext_accepted``) and announced once per peer
    and direction with :class:`PlaintextUsed`. A peer once secured is never
    spoken to, nor heard from, in the clear again: a new handshake instead.
    """

    REFUSE = "refuse"
    ALLOW = "allow"


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Who this node is in its domain, and how it secures its sessions.

    ``rng(n)`` gives ``n`` unpredictable bytes: the only randomness of the
    core; the operating system's CSPRNG (``secrets.token_bytes``) unless told
    otherwise (a seeded generator is for deterministic tests only).
    ``cookie_key`` keys the stateless handshake cookies (32 random bytes,
    never shared; drawn from the CSPRNG by default). A responder gets session
    keys from the Authenticator at ``authenticator`` or, when it holds the
    credential store, from
    ``local_authenticator``. ``desired_duration`` is in minutes (a dofpy
    convention; the field is one byte): the initiator rekeys before it ends.
    With ``seal_authenticator`` a responder talks TRP to ``authenticator`` only inside a
    secure session with it (a TEP handshake with the Authenticator first), so
    the Authenticator knows who asks and nobody sees who talks to whom.
    With ``defer_authenticator`` the application is this responder's authenticator:
    every Request Session is handed up as :class:`AuthenticatorRequested` and
    answered later with :meth:`~dofpy.session.node.Node.answer_authenticator`, so
    a credential store in a database is never queried on the event loop (the
    Authenticator's own handshakes). It excludes ``authenticator`` and
    ``local_authenticator``: one place decides.
    ``peer_identities`` binds addresses to the identities expected there: a
    handshake this node starts with such an address fails with
    :class:`~dofpy.errors.PeerIdentityMismatch` when the responder
    authenticates as anyone else, and requests to it are bound to that
    identity as if sent with ``identity=`` (see :meth:`Node.send_command`).

    ``plaintext`` says whether the clear is ever used (:class:`PlaintextPolicy`;
    ``require_security`` is the older spelling: ``False`` alone still means
    ``ALLOW``, with a ``DeprecationWarning``; after construction it is True
    exactly when the policy is ``REFUSE``).

    Key usage (RFC 9001 §6.6): one session key protects at most
    ``confidentiality_limit`` packets (both directions). The initiator starts
    a new handshake at half of it, the responder (itself initiating one) at
    three quarters, and past the limit nothing more is sealed: sends wait for
    the new key. A key under which ``integrity_limit`` datagrams failed
    authentication is retired at once (the peer is told with a sealed End
    Session and the next packet starts a new handshake). A superseded key is
    kept only to open the peer's packets still in flight: until the peer is
    seen using the new one (then a short reorder grace) and at most
    ``superseded_grace`` seconds; End Session retires every key of the peer.
    """

    domain: OID
    identity: OID
    secret: bytes = field(repr=False)
    rng: Callable[[int], bytes] = field(default=secrets.token_bytes, repr=False)
    cookie_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    permissions: PermissionSet = field(default_factory=PermissionSet)
    authenticator: Address | None = None
    local_authenticator: TrpAuthenticator | None = field(default=None, repr=False)
    require_security: bool = True
    plaintext: PlaintextPolicy | None = None
    tag_length: int = 16
    desired_duration: int = 60
    cookie_lifetime: float = 30.0
    handshake_timeout: float = 15.0
    max_half_open: int = 256
    max_half_open_per_source: int = 8
    rekey_packets_left: int = 1 << 16
    session_grace: float = 30.0
    seal_authenticator: bool = False
    defer_authenticator: bool = False
    peer_identities: Mapping[Address, OID] = field(default_factory=dict)
    confidentiality_limit: int = CCM_CONFIDENTIALITY_LIMIT
    integrity_limit: int = CCM_INTEGRITY_LIMIT
    superseded_grace: float = 30.0

    def __post_init__(self) -> None:
        if self.plaintext is None:
            if not self.require_security:
                warnings.warn(
                    "require_security=False sends and accepts application packets in"
                    " the clear: say so with plaintext=PlaintextPolicy.ALLOW",
                    DeprecationWarning,
                    stacklevel=3,
                )
            object.__setattr__(
                self,
                "plaintext",
                PlaintextPolicy.REFUSE if self.require_security else PlaintextPolicy.ALLOW,
            )
        elif not isinstance(self.plaintext, PlaintextPolicy):
            raise TypeError("plaintext must be a PlaintextPolicy")
        elif self.plaintext is PlaintextPolicy.REFUSE and not self.require_security:
            raise ValueError(
                "plaintext=REFUSE contradicts require_security=False"
                " (to allow the clear, set plaintext=PlaintextPolicy.ALLOW)"
            )
        else:
            object.__setattr__(self, "require_security", self.plaintext is PlaintextPolicy.REFUSE)
        if not 4 <= self.confidentiality_limit <= MAX_PACKET_NUMBER:
            raise ValueError(f"confidentiality_limit must be 4..{MAX_PACKET_NUMBER}")
        if self.integrity_limit < 1 or self.superseded_grace < 0:
            raise ValueError("integrity_limit must be >= 1 and superseded_grace >= 0")
        if len(self.secret) != 32 or len(self.cookie_key) != 32:
            raise ValueError("secret and cookie_key must be 32 bytes each")
        if self.tag_length not in (8, 16):
            raise ValueError("tag_length must be 8 or 16")
        if not 1 <= self.desired_duration <= 255:
            raise ValueError("desired_duration must be 1..255 minutes")
        if self.max_half_open_per_source < 1:
            raise ValueError("max_half_open_per_source must be >= 1")
        if self.max_half_open < 1 or self.cookie_lifetime <= 0 or self.handshake_timeout <= 0:
            raise ValueError("max_half_open, cookie_lifetime, handshake_timeout must be > 0")
        if self.defer_authenticator and (
            self.authenticator is not None or self.local_authenticator is not None
        ):
            raise ValueError(
                "defer_authenticator hands every decision to the application:"
                " authenticator and local_authenticator would never be asked"
            )


@dataclass(frozen=True, slots=True)
class SecureSessionEstablished:
    """A secure session with ``peer`` is ready. ``session_key`` is for an
    operator's key log only (never shown by ``repr``)."""

    peer: Address
    peer_identity: OID
    ssid: int
    initiator: bool
    session_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SecureSessionEnded:
    """A secure session with ``peer`` failed to start or ended; ``error`` says why."""

    peer: Address
    error: DofError


@dataclass(frozen=True, slots=True)
class IncomingHandshakeFailed:
    """A handshake that ``peer`` started with this node (the responder) failed:
    ``error.cause`` says why, ``claimed_identity`` is who the initiator said it
    was (not authenticated: the handshake did not complete). Emitted for
    handshakes that passed the cookie (the address answered), droppable."""

    peer: Address
    claimed_identity: OID
    error: SecureSessionFailed


@dataclass(frozen=True, slots=True)
class PlaintextUsed:
    """A node whose policy is :attr:`PlaintextPolicy.ALLOW` first sent
    (``sent``) or accepted an application packet in the clear with ``peer``
    (no secure session with it). Announced once per peer and direction; every
    use is counted (``plaintext_sent``, ``plaintext_accepted``)."""

    peer: Address
    sent: bool


@dataclass(frozen=True, slots=True)
class AuthenticatorRequested:
    """A responder with ``defer_authenticator`` needs the Authenticator's answer to
    ``command`` (the Request Session for the Rekey from ``peer``).

    Decide it (``TrpAuthenticator.decide(command)``, in a worker thread when the
    credential store is a database) and give the response back with
    :meth:`~dofpy.session.node.Node.answer_authenticator` before ``deadline``
    (the handshake's end, on the node's clock). The initiator's identity in
    ``command`` is only claimed: deciding it is what authenticates it.
    """

    token: int
    peer: Address
    command: RequestSessionCommand
    deadline: float

    @property
    def initiator(self) -> OID:
        """The identity the initiator claims."""
        return self.command.initiator.request.identity.node


@dataclass(frozen=True, slots=True)
class SecurityStatistics:
    handshakes_started: int
    handshakes_completed: int
    handshakes_failed: int
    cookies_sent: int
    cookies_rejected: int
    half_open_refused: int
    amplification_drops: int
    authentication_failures: int
    replays: int
    unknown_sessions: int
    plaintext_refused: int
    rekeys: int
    busy_retries: int
    authenticator_requests: int
    authenticator_answers_ignored: int
    control_ignored: int
    half_open_replaced: int
    mode_mismatches: int
    identity_mismatches: int
    usage_rekeys: int
    sends_held: int
    keys_retired: int
    integrity_retirements: int
    plaintext_sent: int
    plaintext_accepted: int
    sessions: int
    half_open: int
    authenticator_pending: int
    keys: int
    """Session keys held (current and superseded ones still in their grace)."""


class _Phase(enum.Enum):
    REKEY_SENT = "rekey-sent"  # initiator: waiting for Accept (or a cookie)
    CONFIRM_SENT = "confirm-sent"  # initiator: waiting for Confirm Ack
    ASKING_AUTHENTICATOR = "asking-authenticator"  # responder: waiting for the tickets
    ACCEPT_SENT = "accept-sent"  # responder: waiting for Confirm
    DONE = "done"
    FAILED = "failed"


_PHASE_TRANSITIONS: dict[_Phase, frozenset[_Phase]] = {
    _Phase.REKEY_SENT: frozenset({_Phase.REKEY_SENT, _Phase.CONFIRM_SENT, _Phase.FAILED}),
    _Phase.CONFIRM_SENT: frozenset({_Phase.DONE, _Phase.FAILED}),
    _Phase.ASKING_AUTHENTICATOR: frozenset({_Phase.ACCEPT_SENT, _Phase.FAILED}),
    _Phase.ACCEPT_SENT: frozenset({_Phase.DONE, _Phase.FAILED}),
    _Phase.DONE: frozenset(),
    _Phase.FAILED: frozenset(),
}


@dataclass(slots=True)
class _Handshake:
    peer: Address
    phase: _Phase
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

    def move(self, phase: _Phase) -> None:
        if phase not in _PHASE_TRANSITIONS[self.phase]:
            raise AssertionError(f"handshake {self.phase.value} -> {phase.value}")
        self.phase = phase


@dataclass(slots=True)
class _Session:
    channel: SecureChannel
    peer_identity: OID
    permissions: PermissionSet
    established: float
    expires: float
    # packets_protected at which a new key is sought (half the limit for the
    # initiator, three quarters for the responder: the initiator goes first).
    rekey_at: int
    # A packet from the peer authenticated under this key: it switched to it.
    confirmed: bool = False
    # No usage rekey is started before then (one per handshake timeout, so a
    # peer that cannot take the handshake is not asked at every packet).
    rekey_not_before: float = 0.0


class SecurityLayer:
    """The secure-session state of one node (owned by :class:`Node`)."""

    def __init__(self, config: SecurityConfig, node: Node) -> None:
        self.config = config
        self._node = node
        self._initiating: dict[Address, _Handshake] = {}
        self._responding: dict[tuple[Address, int], _Handshake] = {}
        self._authenticator_requests: dict[int, tuple[Address, int]] = {}
        # defer_authenticator: the handshakes waiting on the application, by token.
        self._deferred: dict[int, _Handshake] = {}
        self._next_token = 1
        self._current: dict[Address, _Session] = {}
        # At most one superseded session per peer, kept for in-flight packets.
        self._previous: dict[Address, _Session] = {}
        self._by_ssid: dict[tuple[Address, int], _Session] = {}
        # Plaintext policy ALLOW: peers once secured (never clear again) and the
        # (peer, sent) pairs already announced with PlaintextUsed.
        self._secured_peers: dict[Address, None] = {}
        self._plaintext_announced: dict[tuple[Address, bool], None] = {}
        self._next_ssid = 1
        self._counts = dict.fromkeys(
            (
                "handshakes_started",
                "handshakes_completed",
                "handshakes_failed",
                "cookies_sent",
                "cookies_rejected",
                "half_open_refused",
                "amplification_drops",
                "authentication_failures",
                "replays",
                "unknown_sessions",
                "plaintext_refused",
                "rekeys",
                "busy_retries",
                "authenticator_requests",
                "authenticator_answers_ignored",
                "control_ignored",
                "half_open_replaced",
                "mode_mismatches",
                "identity_mismatches",
                "usage_rekeys",
                "sends_held",
                "keys_retired",
                "integrity_retirements",
                "plaintext_sent",
                "plaintext_accepted",
            ),
            0,
        )

    # -- queries -------------------------------------------------------------------

    def statistics(self) -> SecurityStatistics:
        return SecurityStatistics(
            **self._counts,
            sessions=len(self._current),
            half_open=sum(1 for h in self._responding.values() if h.phase is not _Phase.DONE),
            authenticator_pending=len(self._deferred),
            keys=len(self._by_ssid),
        )

    def session(self, peer: Address) -> _Session | None:
        return self._current.get(peer)

    def count(self, name: str) -> None:
        self._counts[name] += 1

    def get_timer(self) -> float | None:
        deadlines = [h.deadline for h in self._initiating.values()]
        deadlines += [h.retry_at for h in self._initiating.values() if h.retry_at is not None]
        deadlines += [h.deadline for h in self._responding.values()]
        deadlines += [
            h.ask_deadline
            for h in self._responding.values()
            if h.ask_deadline is not None and h.phase is _Phase.ASKING_AUTHENTICATOR
        ]
        deadlines += [s.expires for s in self._by_ssid.values()]
        return min(deadlines) if deadlines else None

    # -- initiator ---------------------------------------------------------------------

    def ensure_session(self, peer: Address, now: float) -> None:
        """Start a handshake with ``peer`` unless one is running."""
        if peer in self._initiating:
            return
        self._start_handshake(peer, now, self.config.rng(_NONCE_SIZE), cookie_rounds=0)

    def _start_handshake(
        self,
        peer: Address,
        now: float,
        nonce: bytes,
        cookie_rounds: int,
        cookie: bytes = b"",
        earlier: _Handshake | None = None,
    ) -> None:
        block, op = self._send_rekey(peer, nonce, now)
        handshake = _Handshake(
            peer,
            _Phase.REKEY_SENT,
            now + self.config.handshake_timeout,
            block,
            op,
            cookie_rounds,
            cookie,
            started=now if earlier is None else earlier.started,
        )
        if earlier is not None:
            handshake.rekeys_sent = earlier.rekeys_sent + self._node._attempts(earlier.rekey_op)
            handshake.bad_accepts = earlier.bad_accepts
        self._initiating[peer] = handshake
        if cookie_rounds == 0:
            self._counts["handshakes_started"] += 1

    def _send_rekey(self, peer: Address, nonce: bytes, now: float) -> tuple[InitiatorBlock, int]:
        cfg = self.config
        rekey = build_rekey(
            cfg.domain,
            cfg.identity,
            nonce,
            options=CcmOptions(max_tag=cfg.tag_length, min_tag=cfg.tag_length),
            permissions=cfg.permissions,
            desired_duration=cfg.desired_duration,
        )
        op = self._node._send_internal_command(peer, AppId.TEP, encode_tep(rekey), now, "tep")
        return rekey.initiator, op

    def _retry_busy(self, handshake: _Handshake, now: float) -> None:
        """Come back to a busy responder: a new Rekey (new nonce, same cookie)."""
        handshake.retry_at = None
        handshake.rekeys_sent += self._node._attempts(handshake.rekey_op)
        nonce = (
            handshake.cookie + self.config.rng(_NONCE_SIZE - _COOKIE_SIZE)
            if handshake.cookie
            else self.config.rng(_NONCE_SIZE)
        )
        handshake.block, handshake.rekey_op = self._send_rekey(handshake.peer, nonce, now)

    def on_tep_response(self, peer: Address, op: int, payload: bytes, now: float) -> bool:
        """A TEP response to one of our commands (Accept, Reject, Confirm Ack).

        True when it was the answer the handshake waited for (the command is
        done); False for a late or repeated copy, which is ignored.
        """
        handshake = self._initiating.get(peer)
        if handshake is None or handshake.rekey_op != op:
            return False
        pdu = decode_tep_untrusted(
            payload, is_response=True, answers_rekey=handshake.phase is _Phase.REKEY_SENT
        )
        match pdu:
            case TepReject(code=code, description=cookie) if (
                code == COOKIE_REJECT_CODE
                and handshake.phase is _Phase.REKEY_SENT
                and len(cookie) == _COOKIE_SIZE
                and handshake.cookie_rounds < 2
            ):
                del self._initiating[peer]
                nonce = cookie + self.config.rng(_NONCE_SIZE - _COOKIE_SIZE)
                self._start_handshake(
                    peer, now, nonce, handshake.cookie_rounds + 1, cookie, earlier=handshake
                )
            case TepReject(code=code, description=b"busy") if (
                code == HANDSHAKE_REJECT_CODE
                and handshake.phase in (_Phase.REKEY_SENT, _Phase.CONFIRM_SENT)
            ):
                if handshake.phase is _Phase.CONFIRM_SENT:
                    # A full responder evicted our handshake after its Accept:
                    # start over (same cookie) after the back-off.
                    handshake.move(_Phase.FAILED)
                    handshake = _Handshake(
                        peer,
                        _Phase.REKEY_SENT,
                        handshake.deadline,
                        handshake.block,
                        handshake.rekey_op,
                        handshake.cookie_rounds,
                        handshake.cookie,
                        handshake.busy_rounds,
                        started=handshake.started,
                        rekeys_sent=handshake.rekeys_sent,
                        bad_accepts=handshake.bad_accepts,
                    )
                    self._initiating[peer] = handshake
                # The responder holds too many half-open handshakes: come back
                # later (exponential back-off with jitter) while our own
                # deadline allows, instead of failing the requests waiting.
                handshake.busy_rounds += 1
                self._counts["busy_retries"] += 1
                base = min(0.25 * 2 ** (handshake.busy_rounds - 1), 4.0)
                jitter = 0.5 + self.config.rng(1)[0] / 255
                retry_at = now + base * jitter
                if retry_at >= handshake.deadline:
                    self._fail(
                        handshake,
                        SecureSessionRefused(
                            peer,
                            SecureSessionCause.BUSY,
                            f"no secure session with {_where(peer)}: it stayed busy"
                            f" ({handshake.busy_rounds} Rejects 'busy'): it holds too many"
                            " half-open handshakes (a flood, or a slow Authenticator)",
                            code,
                        ),
                        now,
                    )
                else:
                    handshake.retry_at = retry_at
            case TepReject() if handshake.phase is not _Phase.REKEY_SENT:
                # After the Accept the responder never rejects (a bad Confirm
                # is dropped): a Reject now is forged.
                self._counts["control_ignored"] += 1
                logger.debug("TEP Reject from %s after its Accept ignored (forged)", peer)
                return False
            case TepReject(code=code, description=description):
                # A Reject carries the handshake's random operation id: only
                # an attacker who sees the Rekey can forge it (and could as
                # well drop the answer). It ends the handshake at once.
                if code == MODE_REJECT_CODE:
                    self._counts["mode_mismatches"] += 1
                self._fail(handshake, self._refused(peer, code, description), now)

            case TepAccept() if handshake.phase is _Phase.REKEY_SENT:
                self._on_accept(handshake, pdu, now)
            case TepConfirmAck() if handshake.phase is _Phase.CONFIRM_SENT:
                self._establish_initiator(handshake, now)
            case _:
                return False
        return True

    def _on_accept(self, handshake: _Handshake, accept: TepAccept, now: float) -> None:
        try:
            key = session_key_from_accept(accept, handshake.block, self.config.secret)
            # The ticket's MAC (made by the Authenticator over the whole request)
            # proves that the responder identity and permissions in this Accept
            # are the ones the Authenticator granted: the responder knows K and
            # could otherwise claim more in its own block.
            granted = RequestSessionCommand(self.config.domain, accept.responder, handshake.block)
            if (
                open_session_ticket(
                    accept.ticket,
                    self.config.secret,
                    TicketRole.INITIATOR,
                    granted,
                    accept.authenticator,
                )
                != key
            ):
                raise BadPacket("the ticket's key differs from the Accept's")
        except BadPacket as exc:
            # A wrong identity secret, or a forged Accept: they look alike, so
            # the handshake goes on waiting for one that verifies (a forgery
            # must not end it) and names this cause if none does.
            self._counts["authentication_failures"] += 1
            handshake.bad_accepts += 1
            logger.log(
                logging.INFO if handshake.bad_accepts == 1 else logging.DEBUG,
                "TEP Accept from %s did not verify with this node's identity secret (%s);"
                " still waiting for one that does: %s",
                _where(handshake.peer),
                self.config.identity,
                exc,
            )
            raise
        if accept.responder_init is None or accept.responder_init.ssid is None:
            raise BadPacket("TEP Accept without an SSID")
        # The responder's identity is authenticated now (the ticket's MAC):
        # a handshake with anyone but the identity expected at this address
        # ends here, before the Confirm, and no session is installed.
        actual = accept.responder.identity.node
        for expected in self._node._expected_identities(handshake.peer):
            if expected != actual:
                self._counts["identity_mismatches"] += 1
                self._fail(handshake, PeerIdentityMismatch(handshake.peer, expected, actual), now)
                return
        confirm = build_confirm(key, handshake.block, accept)
        handshake.accept = accept
        handshake.session_key = key
        handshake.ssid = accept.responder_init.ssid
        handshake.move(_Phase.CONFIRM_SENT)
        self._node._send_internal_command(
            handshake.peer, AppId.TEP, encode_tep(confirm), now, "tep", op=handshake.rekey_op
        )

    def _establish_initiator(self, handshake: _Handshake, now: float) -> None:
        accept = handshake.accept
        assert accept is not None and handshake.session_key is not None
        assert handshake.ssid is not None
        handshake.move(_Phase.DONE)
        del self._initiating[handshake.peer]
        duration = max(accept.authenticator.granted_duration, 1) * 60.0
        self._install(
            handshake.peer,
            handshake.session_key,
            handshake.ssid,
            accept.responder.identity.node,
            accept.responder.permissions,
            now,
            # The initiator rekeys a little before the responder forgets the key.
            now + duration * 0.9,
            initiator=True,
        )

    def on_handshake_failure(
        self, peer: Address, op: int, error: DofError, now: float, attempts: int = 0
    ) -> None:
        """The Rekey or Confirm command itself timed out (sent ``attempts`` times)."""
        handshake = self._initiating.get(peer)
        if handshake is not None and handshake.rekey_op == op:
            if isinstance(error, DofTimeoutError):
                error = self._timed_out(handshake, now, attempts)
            self._fail(handshake, error, now)

    def diagnose(self, peer: Address, now: float) -> SecureSessionTimeout | None:
        """The most likely reason the handshake with ``peer`` is not done yet
        (None when none is running): for commands that time out waiting for it."""
        handshake = self._initiating.get(peer)
        return None if handshake is None else self._timed_out(handshake, now)

    def _timed_out(
        self, handshake: _Handshake, now: float, attempts: int | None = None
    ) -> SecureSessionTimeout:
        """Why ``handshake`` (ours) is not done by ``now``: the most likely cause seen."""
        peer = handshake.peer
        where = _where(peer)
        waited = now - handshake.started
        if handshake.phase is _Phase.CONFIRM_SENT:
            cause = SecureSessionCause.NO_CONFIRM_ACK
            text = (
                f"{where} did not acknowledge this node's Confirm (its Accept verified)"
                f" in {waited:.1f} s: the link lost it, or {where} failed"
            )
        elif handshake.bad_accepts:
            cause = SecureSessionCause.ACCEPT_NOT_VERIFIED
            text = (
                f"the Accept from {where} did not verify with this node's identity secret"
                f" ({handshake.bad_accepts} Accept{'s' * (handshake.bad_accepts > 1)}):"
                f" this node's secret ({self.config.identity}), or the Authenticator's"
                " record of it, is wrong (or the Accepts were forged)"
            )
        elif handshake.cookie_rounds:
            cause = SecureSessionCause.NO_ACCEPT
            text = (
                f"{where} answered with a cookie, then sent no Accept in {waited:.1f} s:"
                f" it may be waiting for its Authenticator (see {where}'s log)"
            )
        else:
            cause = SecureSessionCause.NO_ANSWER
            if attempts is None:
                attempts = self._node._attempts(handshake.rekey_op)
            rekeys = handshake.rekeys_sent + attempts
            text = (
                f"{where} did not answer the handshake ({rekeys} Rekey{'s' * (rekeys > 1)}"
                f" in {waited:.1f} s): is it running, reachable, and a secure node of"
                f" {self.config.domain}?"
            )
            if peer == self.config.authenticator:
                text += " (an Authenticator without its own identity takes no sealed TRP)"
        return SecureSessionTimeout(peer, cause, f"no secure session with {where}: {text}")

    def _refused(self, peer: Address, code: int, description: bytes) -> SecureSessionRefused:
        """The error of a TEP Reject from ``peer``, naming its cause."""
        where = _where(peer)
        said = _printable(description)
        head = f"{where} rejected the secure session"
        if code == MODE_REJECT_CODE:
            cause = SecureSessionCause.MODE_MISMATCH
            text = (
                f"it requires another security mode (TEP Reject {code:#04x}: {said});"
                " give both nodes the same tag_length"
            )
        elif code == AUTHENTICATOR_REJECT_CODE:
            cause = SecureSessionCause.AUTHENTICATOR_REFUSED
            name, _, rest = said.partition(" ")
            if rest:
                text = (
                    f"the Authenticator refused it ({name}); {where} asked it in the clear,"
                    " which a sealed-only Authenticator (the default) always refuses:"
                    f" {where} needs seal_authenticator (otherwise:"
                    f" {_trp_hint(name, self.config)})"
                )
            else:
                text = f"the Authenticator refused it ({name}: {_trp_hint(name, self.config)})"
        elif code == HANDSHAKE_REJECT_CODE and description == _TICKET_INVALID:
            cause = SecureSessionCause.TICKET_NOT_VERIFIED
            text = (
                f"its ticket from the Authenticator did not verify with its own identity"
                f" secret: {where}'s secret, or the Authenticator's record of it, is wrong"
            )
        elif code == HANDSHAKE_REJECT_CODE and description.startswith(_AUTHENTICATOR_TROUBLE):
            cause = SecureSessionCause.AUTHENTICATOR_FAILED
            why = _printable(description[len(_AUTHENTICATOR_TROUBLE) :])
            text = (
                f"it could not get a session key from its Authenticator ({why}:"
                f" {_AUTHENTICATOR_TROUBLE_HINTS.get(why, 'see its log')})"
            )
        elif code == HANDSHAKE_REJECT_CODE and description == b"domain":
            cause = SecureSessionCause.REJECTED
            text = f"it is not a node of {self.config.domain} (TEP Reject {code:#04x}: domain)"
        elif code == COOKIE_REJECT_CODE:
            cause = SecureSessionCause.REJECTED
            text = (
                "it kept asking for a cookie: the address it sees for this node changes"
                " between Rekeys (a NAT rebinding?)"
            )
        else:
            cause = SecureSessionCause.REJECTED
            text = f"TEP code {code:#04x}: {said}"
        return SecureSessionRefused(peer, cause, f"{head}: {text}", code)

    def _fail(self, handshake: _Handshake, error: DofError, now: float) -> None:
        if handshake.phase in (_Phase.DONE, _Phase.FAILED):
            return
        logger.debug("handshake with %s failed: %s", _where(handshake.peer), error)
        handshake.move(_Phase.FAILED)
        self._counts["handshakes_failed"] += 1
        if self._initiating.get(handshake.peer) is handshake:
            del self._initiating[handshake.peer]
            current = self._current.get(handshake.peer)
            if current is not None and not current.channel.exhausted:
                # Only a new key failed: the current one still serves the
                # commands waiting (and a new key is sought again later) —
                # except those bound to another identity than its own, which
                # were waiting for this very handshake.
                self._node._fail_bound_elsewhere(handshake.peer, current.peer_identity, error, now)
                return
            self._node._on_secure_session_failed(handshake.peer, error, now)

    # -- responder ---------------------------------------------------------------------

    def cookie(self, peer: Address, identity: OID, bucket: int) -> bytes:
        message = (
            bucket.to_bytes(8, "big", signed=True)
            + f"{peer[0]}|{peer[1]}".encode()
            + identity.encode()
        )
        return hmac.new(self.config.cookie_key, message, hashlib.sha256).digest()[:_COOKIE_SIZE]

    def _cookie_valid(self, peer: Address, identity: OID, nonce: bytes, now: float) -> bool:
        if len(nonce) != _NONCE_SIZE:
            return False
        bucket = int(now // self.config.cookie_lifetime)
        presented = nonce[:_COOKIE_SIZE]
        return any(
            hmac.compare_digest(presented, self.cookie(peer, identity, b))
            for b in (bucket, bucket - 1)
        )

    def on_tep_command(
        self,
        peer: Address,
        op: int | None,
        payload: bytes,
        received_size: int,
        now: float,
    ) -> None:
        """A TEP command from ``peer``: Rekey (new or repeated) or Confirm."""
        if op is None:
            raise BadPacket("TEP command without an operation id")
        existing = self._responding.get((peer, op))
        pdu = decode_tep_untrusted(payload, is_response=False)
        match pdu:
            case TepRekey():
                if existing is not None:
                    if existing.accept is not None and existing.phase is _Phase.ACCEPT_SENT:
                        self._reply(peer, op, existing.accept, now)
                    return  # still asking the authenticator: the Accept will come
                self._on_rekey(peer, op, pdu, received_size, now)
            case TepConfirm():
                if existing is None:
                    raise BadPacket("TEP Confirm without a handshake")
                if existing.phase is _Phase.DONE:
                    self._reply(peer, op, TepConfirmAck(), now)
                    return
                if existing.phase is not _Phase.ACCEPT_SENT:
                    raise BadPacket(f"TEP Confirm in {existing.phase.value}")
                self._on_confirm(existing, pdu, now)
            case _:
                raise BadPacket(f"TEP {type(pdu).__name__} is not handled")

    def _on_rekey(
        self, peer: Address, op: int, rekey: TepRekey, received_size: int, now: float
    ) -> None:
        cfg = self.config
        request = rekey.initiator.request
        identity = request.identity.node
        if rekey.domain is None or rekey.domain != cfg.domain:
            self._reject_small(peer, op, HANDSHAKE_REJECT_CODE, b"domain", received_size)
            return
        if not self._cookie_valid(peer, identity, request.nonce, now):
            bucket = int(now // cfg.cookie_lifetime)
            if request.nonce[:_COOKIE_SIZE] and len(request.nonce) == _NONCE_SIZE:
                self._counts["cookies_rejected"] += 1
            if self._reject_small(
                peer, op, COOKIE_REJECT_CODE, self.cookie(peer, identity, bucket), received_size
            ):
                self._counts["cookies_sent"] += 1
            return
        mismatch = self._mode_mismatch(rekey.initiator)
        if mismatch is not None:
            # Refused here, named on both sides: a session whose two ends use
            # different tag lengths would fail every packet.
            self._counts["mode_mismatches"] += 1
            self._counts["handshakes_failed"] += 1
            self._reject_small(peer, op, MODE_REJECT_CODE, mismatch.encode(), received_size)
            self._node._emit_event(
                IncomingHandshakeFailed(
                    peer,
                    identity,
                    SecureSessionRefused(
                        peer,
                        SecureSessionCause.MODE_MISMATCH,
                        f"handshake from {_where(peer)} (claims {identity}) refused: it asked"
                        f" for another security mode: {mismatch}",
                        MODE_REJECT_CODE,
                    ),
                ),
                droppable=True,
            )
            return
        if not self._make_half_open_room(peer, identity, now):
            self._counts["half_open_refused"] += 1
            self._reject_small(peer, op, HANDSHAKE_REJECT_CODE, b"busy", received_size)
            return
        responder = KeyRequest(
            SecurityIdentity(cfg.identity), cfg.rng(_NONCE_SIZE), cfg.permissions
        )
        command = RequestSessionCommand(cfg.domain, responder, rekey.initiator)
        handshake = _Handshake(
            peer,
            _Phase.ASKING_AUTHENTICATOR,
            now + cfg.handshake_timeout,
            rekey.initiator,
            op,
            command=command,
            responder=responder,
            started=now,
        )
        self._responding[(peer, op)] = handshake
        self._counts["handshakes_started"] += 1
        if cfg.local_authenticator is not None:
            decision = cfg.local_authenticator.decide(command)
            self._on_authenticator_answer(handshake, decision.response, now, decision.reason)
        elif cfg.defer_authenticator:
            token = self._next_token
            self._next_token += 1
            handshake.token = token
            self._deferred[token] = handshake
            self._counts["authenticator_requests"] += 1
            # Not droppable: at most max_half_open of these wait at a time.
            self._node._emit_event(
                AuthenticatorRequested(token, peer, command, handshake.deadline), droppable=False
            )
        elif cfg.authenticator is not None:
            request_id = self._node._send_internal_command(
                cfg.authenticator, AppId.TRP, encode_trp(command), now, "trp"
            )
            self._authenticator_requests[request_id] = (peer, op)
            handshake.trp_request = request_id
            handshake.ask_deadline = now + cfg.handshake_timeout * _AUTHENTICATOR_SHARE
        else:
            self._refuse_handshake(
                handshake,
                b"no authenticator configured",
                now,
                cause=SecureSessionCause.AUTHENTICATOR_FAILED,
                message=self._incoming_message(
                    handshake, "this node has no Authenticator (authenticator=...)"
                ),
            )

    def _mode_mismatch(self, block: InitiatorBlock) -> str | None:
        """Why the initiator's security mode is not ours (None: it is)."""
        ours = f"CCM AES-256 tag {self.config.tag_length}"
        try:
            options = block.security_mode.ccm_options()
        except BadPacket:
            theirs = f"mode {block.security_mode.protocol_id:#06x}"
        else:
            if (
                options.min_tag == self.config.tag_length
                and options.encrypt_min
                and CcmStrength.AES_256 in options.strengths
            ):
                return None
            theirs = f"CCM tag {options.min_tag}" + ("" if options.encrypt_min else " unencrypted")
            if CcmStrength.AES_256 not in options.strengths:
                theirs += " without AES-256"
        return f"{theirs} (initiator) / {ours} (responder)"

    def _make_half_open_room(self, peer: Address, identity: OID, now: float) -> bool:
        """Room for one more half-open handshake from ``peer`` claiming
        ``identity``. One source address, and one claimed identity, hold at
        most ``max_half_open_per_source``: its newest handshake replaces its
        oldest, so a host (or a stolen address) cannot fill the table. When
        the whole table is full a random handshake (from ``rng``) is evicted,
        so a flood from many sources displaces genuine initiators only by
        chance and they come back (busy back-off). False when nothing can go
        (every slot waits on the application, which must answer or time out)."""
        cfg = self.config
        open_ = [h for h in self._responding.values() if h.phase is not _Phase.DONE]
        for same in (
            [h for h in open_ if h.peer[0] == peer[0]],
            [h for h in open_ if h.block.request.identity.node == identity],
        ):
            if len(same) >= cfg.max_half_open_per_source:
                oldest = min(same, key=lambda h: h.deadline)
                self._evict_half_open(oldest, now)
                open_.remove(oldest)
        if len(open_) < cfg.max_half_open:
            return True
        evictable = [h for h in open_ if h.token is None]
        if not evictable:
            return False
        index = int.from_bytes(cfg.rng(4), "big") % len(evictable)
        self._evict_half_open(evictable[index], now)
        return True

    def _evict_half_open(self, handshake: _Handshake, now: float) -> None:
        self._counts["half_open_replaced"] += 1
        self._counts["handshakes_failed"] += 1
        handshake.move(_Phase.FAILED)
        self._forget_handshake(handshake)
        # Its address passed the cookie: tell it to come back (busy back-off)
        # rather than leave it retransmitting into a handshake we forgot.
        self._reply(
            handshake.peer, handshake.rekey_op, TepReject(HANDSHAKE_REJECT_CODE, b"busy"), now
        )
        for request_id, key in list(self._authenticator_requests.items()):
            if key == (handshake.peer, handshake.rekey_op):
                del self._authenticator_requests[request_id]

    def answer_authenticator(self, token: int, answer: TrpPdu, now: float) -> bool:
        """The application's answer to :class:`AuthenticatorRequested` ``token``:
        the handshake goes on (Accept or Reject). False, and counted, when
        nothing waits on ``token`` (unknown, answered already, or the
        handshake ended or timed out)."""
        handshake = self._deferred.pop(token, None)
        if (
            handshake is None
            or handshake.phase is not _Phase.ASKING_AUTHENTICATOR
            or self._responding.get((handshake.peer, handshake.rekey_op)) is not handshake
            or now >= handshake.deadline
        ):
            # A timed-out handshake is swept by handle_timer (and counted failed there).
            self._counts["authenticator_answers_ignored"] += 1
            return False
        self._on_authenticator_answer(handshake, answer, now)
        return True

    def on_trp_response(self, request_id: int, payload: bytes, now: float) -> None:
        key = self._authenticator_requests.pop(request_id, None)
        handshake = None if key is None else self._responding.get(key)
        if handshake is None or handshake.phase is not _Phase.ASKING_AUTHENTICATOR:
            return
        try:
            pdu = decode_trp_untrusted(payload, True)
        except BadPacket:
            self._refuse_handshake(
                handshake,
                b"bad authenticator answer",
                now,
                cause=SecureSessionCause.AUTHENTICATOR_FAILED,
                message=self._incoming_message(handshake, "the Authenticator's answer is garbled"),
            )
            raise
        if not isinstance(pdu, RequestSessionResponse | TrpReject):
            self._refuse_handshake(
                handshake,
                b"bad authenticator answer",
                now,
                cause=SecureSessionCause.AUTHENTICATOR_FAILED,
                message=self._incoming_message(
                    handshake, f"the Authenticator answered with a {type(pdu).__name__}"
                ),
            )
            return
        self._on_authenticator_answer(handshake, pdu, now)

    def on_trp_failure(self, request_id: int, error: DofError, now: float) -> None:
        key = self._authenticator_requests.pop(request_id, None)
        handshake = None if key is None else self._responding.get(key)
        if handshake is not None and handshake.phase is _Phase.ASKING_AUTHENTICATOR:
            if isinstance(error, SecureSessionFailed):
                cause = error.cause.value
            elif isinstance(error, PeerIdentityMismatch):
                cause = "identity-mismatch"
            else:
                cause = SecureSessionCause.NO_ANSWER.value
            where = _where(self.config.authenticator or ("?", 0))
            self._refuse_handshake(
                handshake,
                _AUTHENTICATOR_TROUBLE + cause.encode(),
                now,
                cause=SecureSessionCause.AUTHENTICATOR_FAILED,
                message=self._incoming_message(
                    handshake, f"no answer from the Authenticator at {where}: {error}"
                ),
            )

    def _on_authenticator_answer(
        self, handshake: _Handshake, answer: object, now: float, reason: str = ""
    ) -> None:
        if isinstance(answer, TrpReject):
            description = answer.error.name.encode()
            text = f"the Authenticator refused it: {answer.error.name}"
            if reason:
                text += f" ({reason})"
            cfg = self.config
            if (
                answer.error is TrpError.ACCESS_DENIED
                and handshake.trp_request is not None
                and not cfg.seal_authenticator
            ):
                # A sealed-only Authenticator answers every clear command so.
                description += _ASKED_IN_CLEAR
                text += (
                    "; asked in the clear, and a sealed-only Authenticator (the default)"
                    " refuses all TRP in the clear: set seal_authenticator"
                )
            self._refuse_handshake(
                handshake,
                description,
                now,
                code=AUTHENTICATOR_REJECT_CODE,
                cause=SecureSessionCause.AUTHENTICATOR_REFUSED,
                message=self._incoming_message(handshake, text),
            )
            return
        if not isinstance(answer, RequestSessionResponse):
            self._refuse_handshake(
                handshake,
                b"bad authenticator answer",
                now,
                cause=SecureSessionCause.AUTHENTICATOR_FAILED,
                message=self._incoming_message(
                    handshake, f"the Authenticator answered with a {type(answer).__name__}"
                ),
            )
            return
        assert handshake.command is not None and handshake.responder is not None
        try:
            key = open_session_ticket(
                answer.responder_ticket,
                self.config.secret,
                TicketRole.RESPONDER,
                handshake.command,
                answer.authenticator,
            )
        except BadPacket:
            self._counts["authentication_failures"] += 1
            self._refuse_handshake(
                handshake,
                _TICKET_INVALID,
                now,
                cause=SecureSessionCause.TICKET_NOT_VERIFIED,
                message=self._incoming_message(
                    handshake,
                    "the Authenticator's ticket for this node did not verify with its identity"
                    f" secret: this node's secret ({self.config.identity}), or the"
                    " Authenticator's record of it, is wrong",
                ),
            )
            return
        ssid = self._allocate_ssid(handshake.peer, handshake.block.request.identity.node)
        accept = build_accept(
            handshake.block,
            session_key=key,
            ticket=answer.initiator_ticket,
            responder=handshake.responder,
            responder_init=ResponderInit(ssid),
            authenticator=answer.authenticator,
        )
        handshake.accept = accept
        handshake.session_key = key
        handshake.ssid = ssid
        handshake.move(_Phase.ACCEPT_SENT)
        self._reply(handshake.peer, handshake.rekey_op, accept, now)

    def _on_confirm(self, handshake: _Handshake, confirm: TepConfirm, now: float) -> None:
        accept = handshake.accept
        assert accept is not None and handshake.session_key is not None
        assert handshake.ssid is not None
        try:
            verify_confirm(confirm, handshake.session_key, handshake.block, accept)
        except BadPacket:
            # Forged, or a broken initiator: wait on for one that verifies.
            self._counts["authentication_failures"] += 1
            handshake.bad_confirms += 1
            logger.debug("TEP Confirm from %s did not verify", _where(handshake.peer))
            raise
        handshake.move(_Phase.DONE)
        # Keep the finished handshake until its deadline so that a repeated
        # Confirm is answered again, but not its key.
        session_key, handshake.session_key = handshake.session_key, None
        duration = max(accept.authenticator.granted_duration, 1) * 60.0
        self._reply(handshake.peer, handshake.rekey_op, TepConfirmAck(), now)
        assert session_key is not None
        self._install(
            handshake.peer,
            session_key,
            handshake.ssid,
            handshake.block.request.identity.node,
            handshake.block.request.permissions,
            now,
            now + duration + self.config.session_grace,
            initiator=False,
        )

    def _refuse_handshake(
        self,
        handshake: _Handshake,
        reason: bytes,
        now: float,
        code: int = HANDSHAKE_REJECT_CODE,
        cause: SecureSessionCause | None = None,
        message: str = "",
    ) -> None:
        handshake.move(_Phase.FAILED)
        self._counts["handshakes_failed"] += 1
        self._forget_handshake(handshake)
        self._reply(handshake.peer, handshake.rekey_op, TepReject(code, reason[:64]), now)
        if cause is not None:
            self._incoming_failed(
                handshake, SecureSessionRefused(handshake.peer, cause, message, code)
            )

    def _incoming_failed(self, handshake: _Handshake, error: SecureSessionFailed) -> None:
        """Tell the application that a handshake we answered failed, and why."""
        claimed = handshake.block.request.identity.node
        logger.debug(
            "handshake from %s (claims %s) failed: %s", _where(handshake.peer), claimed, error
        )
        self._node._emit_event(
            IncomingHandshakeFailed(handshake.peer, claimed, error), droppable=True
        )

    def _incoming_timed_out(self, handshake: _Handshake, now: float) -> SecureSessionTimeout:
        """Why a handshake we answered is not done by its deadline."""
        where = _where(handshake.peer)
        claimed = handshake.block.request.identity.node
        if handshake.phase is _Phase.ASKING_AUTHENTICATOR:
            cause = SecureSessionCause.AUTHENTICATOR_FAILED
            if handshake.token is not None:
                text = (
                    "the application did not answer its AuthenticatorRequested in time"
                    " (answer_authenticator)"
                )
            else:
                text = self._authenticator_trouble(handshake, now)[1]
        elif handshake.bad_confirms:
            cause = SecureSessionCause.CONFIRM_NOT_VERIFIED
            text = (
                f"its Confirms ({handshake.bad_confirms}) did not verify with the session"
                " key (forged, or a broken initiator)"
            )
        else:
            cause = SecureSessionCause.NO_CONFIRM
            text = (
                "it sent no Confirm after this node's Accept: most likely it could not"
                f" verify the Accept, i.e. its identity secret differs from the"
                f" Authenticator's record of {claimed}; or it went away"
            )
        return SecureSessionTimeout(
            handshake.peer,
            cause,
            f"handshake from {where} (claims {claimed}) not done in"
            f" {now - handshake.started:.1f} s: {text}",
        )

    def _authenticator_trouble(self, handshake: _Handshake, now: float) -> tuple[str, str]:
        """Why the remote Authenticator has not answered ``handshake``'s Request
        Session: (a cause for the initiator's Reject, a message for our log)."""
        address = self.config.authenticator
        assert address is not None
        where = _where(address)
        if self.config.seal_authenticator and address not in self._current:
            ours = self.diagnose(address, now)
            if ours is not None:
                return ours.cause.value, (
                    f"the Authenticator at {where} gave no answer: this node's secure"
                    f" session with it is not up ({ours})"
                )
        sent = 0 if handshake.trp_request is None else self._node._attempts(handshake.trp_request)
        return SecureSessionCause.NO_ANSWER.value, (
            f"the Authenticator at {where} did not answer the Request Session"
            f" ({sent} sent in {now - handshake.started:.1f} s): is it running and reachable?"
        )

    def _authenticator_gave_no_answer(self, handshake: _Handshake, now: float) -> None:
        """The share of the handshake timeout for the Authenticator is over:
        refuse now, naming why, rather than let the initiator time out blind."""
        if handshake.trp_request is not None:
            self._authenticator_requests.pop(handshake.trp_request, None)
            self._node.cancel(handshake.trp_request)
        cause, text = self._authenticator_trouble(handshake, now)
        self._refuse_handshake(
            handshake,
            _AUTHENTICATOR_TROUBLE + cause.encode(),
            now,
            cause=SecureSessionCause.AUTHENTICATOR_FAILED,
            message=self._incoming_message(handshake, text),
        )

    @staticmethod
    def _incoming_message(handshake: _Handshake, text: str) -> str:
        claimed = handshake.block.request.identity.node
        return f"handshake from {_where(handshake.peer)} (claims {claimed}) refused: {text}"

    def _forget_handshake(self, handshake: _Handshake) -> None:
        key = (handshake.peer, handshake.rekey_op)
        if self._responding.get(key) is handshake:
            del self._responding[key]
        if handshake.token is not None:
            self._deferred.pop(handshake.token, None)

    def _reply(self, peer: Address, op: int, pdu: object, now: float) -> None:
        assert isinstance(pdu, TepAccept | TepReject | TepConfirmAck)
        self._node._send_plain_response(peer, op, AppId.TEP, encode_tep(pdu))

    def _reject_small(
        self, peer: Address, op: int, code: int, description: bytes, received_size: int
    ) -> bool:
        """Answer an unvalidated address, never with more bytes than it sent."""
        sent = self._node._send_plain_response(
            peer, op, AppId.TEP, encode_tep(TepReject(code, description)), limit=received_size
        )
        if not sent:
            self._counts["amplification_drops"] += 1
        return sent

    def _allocate_ssid(self, peer: Address, initiator: OID) -> int:
        """An SSID for a session we answer. Two nodes that open sessions to
        each other at once both allocate one, and packets are found by
        (address, SSID): so the SSID space is split between the two by the
        order of their identities (the higher one allocates with bit
        ``_SSID_HALF`` set), and their SSIDs never collide. Two nodes of one
        identity cannot order themselves: they draw the SSID at random."""
        ours, theirs = self.config.identity.encode(), initiator.encode()
        if ours == theirs:
            for _ in range(8):
                ssid = 1 + int.from_bytes(self.config.rng(4), "big") % _SSID_MAX
                if (peer, ssid) not in self._by_ssid:
                    return ssid
        half = _SSID_HALF if ours > theirs else 0
        for _ in range(_SSID_HALF):
            ssid = half | self._next_ssid
            self._next_ssid = self._next_ssid + 1 if self._next_ssid < _SSID_HALF - 1 else 1
            if (peer, ssid) not in self._by_ssid:
                return ssid
        raise AssertionError("no free SSID")  # pragma: no cover

    # -- sessions ---------------------------------------------------------------------------

    def _install(
        self,
        peer: Address,
        key: bytes,
        ssid: int,
        peer_identity: OID,
        permissions: PermissionSet,
        now: float,
        expires: float,
        *,
        initiator: bool,
    ) -> None:
        cfg = self.config
        limit = cfg.confidentiality_limit
        channel = SecureChannel(
            key, ssid=ssid, initiator=initiator, tag_length=cfg.tag_length, usage_limit=limit
        )
        rekey_at = limit // 2 if initiator else limit * 3 // 4
        session = _Session(channel, peer_identity, permissions, now, expires, rekey_at)
        # Current plus one superseded session per peer, never more: the one
        # superseded before is retired now, whatever its grace.
        older = self._previous.pop(peer, None)
        if older is not None:
            self._drop(peer, older)
        superseded = self._current.get(peer)
        if superseded is not None:
            self._counts["rekeys"] += 1
            if superseded.channel.initiator == initiator:
                # Our own rekey (or the peer's again): the peer switches to the
                # new key at once, so the old one only opens what is in flight.
                superseded.expires = min(superseded.expires, now + cfg.superseded_grace)
            # Otherwise the two were started by opposite sides (a simultaneous
            # open, or the peer rekeying a session we started): the peer may go
            # on sending on the old one, so it stays until the peer is seen
            # using the new one (on_opened) or it expires.
            self._previous[peer] = superseded
        self._current[peer] = session
        self._by_ssid[(peer, ssid)] = session
        if cfg.plaintext is PlaintextPolicy.ALLOW:
            self._remember(self._secured_peers, peer)
        self._counts["handshakes_completed"] += 1
        self._node._on_secure_session(peer, peer_identity, ssid, initiator, key, now)

    def _drop(self, peer: Address, session: _Session) -> None:
        """Let go of ``session``'s key (it opens and seals nothing more)."""
        key = (peer, session.channel.ssid)
        if self._by_ssid.get(key) is session:
            del self._by_ssid[key]
        self._counts["keys_retired"] += 1

    def lookup(self, peer: Address, ssid: int | None) -> _Session:
        """The session a secure datagram from ``peer`` names; ``BadPacket`` if none."""
        session = None if ssid is None else self._by_ssid.get((peer, ssid))
        if session is None:
            self._counts["unknown_sessions"] += 1
            raise BadPacket(f"no secure session {ssid} with {peer}")
        return session

    def on_opened(self, peer: Address, session: _Session, now: float) -> None:
        """A datagram from ``peer`` authenticated under ``session``."""
        if not session.confirmed:
            session.confirmed = True
            previous = self._previous.get(peer)
            if previous is not None and self._current.get(peer) is session:
                # The peer sends under the new key: only reordered packets can
                # still come under the old one.
                previous.expires = min(previous.expires, now + _REORDER_GRACE)
        if session.channel.packets_protected >= session.rekey_at:
            self._rekey_for_usage(peer, session, now)

    def on_authentication_failed(self, peer: Address, session: _Session, now: float) -> None:
        """A datagram naming ``session`` failed authentication (a forgery, or
        damage). Past the integrity limit the key is retired."""
        self._counts["authentication_failures"] += 1
        if session.channel.failed_authentications < self.config.integrity_limit:
            return
        self._counts["integrity_retirements"] += 1
        if self._current.get(peer) is session:
            # Tell the peer (sealed: only it can read it) so that its next
            # packet starts a new handshake instead of going unheard.
            self._end(
                peer,
                ClosedResourceError(
                    f"secure session with {peer} retired: {self.config.integrity_limit}"
                    " datagrams failed authentication under its key"
                ),
                now,
            )
        elif self._previous.get(peer) is session:
            del self._previous[peer]
            self._drop(peer, session)

    def ready_to_seal(self, peer: Address, session: _Session, now: float) -> bool:
        """Whether ``session`` (the current one with ``peer``) may seal one more
        packet now; starts a new handshake when its key is due for one. False
        (counted ``sends_held``) once the key reached its usage limit: the
        caller holds the packet for the new session, never sends it clear."""
        channel = session.channel
        used = channel.packets_protected
        if used >= session.rekey_at:
            self._rekey_for_usage(peer, session, now)
            if channel.exhausted:
                self._counts["sends_held"] += 1
                return False
        elif channel.initiator and (
            now >= session.expires or channel.packets_remaining <= self.config.rekey_packets_left
        ):
            self.ensure_session(peer, now)
        return True

    def _rekey_for_usage(self, peer: Address, session: _Session, now: float) -> None:
        # Either side may start the handshake (TEP lets a responder initiate
        # one): the responder waits longer, so normally the initiator goes first.
        if (
            self._current.get(peer) is session
            and peer not in self._initiating
            and now >= session.rekey_not_before
        ):
            session.rekey_not_before = now + self.config.handshake_timeout
            self._counts["usage_rekeys"] += 1
            self.ensure_session(peer, now)

    def end_session(self, peer: Address, now: float) -> bool:
        """End our secure session with ``peer``: tell it with a sealed TEP End
        Session (the only TEP command sent sealed: an End Session in the clear
        could come from anyone, and is ignored). False if there was none."""
        if peer not in self._current:
            return False
        # A new key we were still making with the peer would outlive the End
        # Session on one side only (the peer drops it on the End Session).
        handshake = self._initiating.pop(peer, None)
        if handshake is not None:
            handshake.move(_Phase.FAILED)
            self._node.cancel(handshake.rekey_op)
        self._end(peer, ClosedResourceError(f"secure session with {peer} ended by us"), now)
        return True

    def _end(self, peer: Address, error: DofError, now: float) -> None:
        session = self._current[peer]
        if session.channel.packets_remaining > 0:
            self._node._send_sealed_command(peer, session.channel, encode_tep(TepEndSession()), now)
        self._forget(peer, error)

    def on_sealed_tep_command(self, peer: Address, payload: bytes) -> None:
        """A TEP command that arrived inside the secure session with ``peer``."""
        pdu = decode_tep_untrusted(payload, is_response=False, secure=True)
        if not isinstance(pdu, TepEndSession):
            raise BadPacket(f"sealed TEP {type(pdu).__name__} is not handled")
        self._forget(peer, BrokenResourceError(f"{peer} ended the secure session"))

    def _forget(self, peer: Address, error: DofError) -> None:
        """End the session with ``peer``: every key of it is retired now."""
        session = self._current.pop(peer, None)
        if session is None:
            return
        self._drop(peer, session)
        previous = self._previous.pop(peer, None)
        if previous is not None:
            self._drop(peer, previous)
        self._node._on_secure_session_ended(peer, error)

    # -- plaintext policy ---------------------------------------------------------------

    def plaintext_allowed(self, peer: Address) -> bool:
        """Whether application packets may go to, or come from, ``peer`` in
        the clear now: policy ``ALLOW``, no secure session with it (nor one
        being started by us), and none ever had (as far as remembered)."""
        return (
            self.config.plaintext is PlaintextPolicy.ALLOW
            and peer not in self._current
            and peer not in self._initiating
            and peer not in self._secured_peers
        )

    def used_plaintext(self, peer: Address, *, sent: bool) -> None:
        """Count one clear application packet with ``peer``; announce the first."""
        self._counts["plaintext_sent" if sent else "plaintext_accepted"] += 1
        if (peer, sent) not in self._plaintext_announced:
            self._remember(self._plaintext_announced, (peer, sent))
            self._node._emit_event(PlaintextUsed(peer, sent), droppable=True)

    @staticmethod
    def _remember(table: dict[_Key, None], key: _Key) -> None:
        table.pop(key, None)
        table[key] = None
        if len(table) > _MAX_REMEMBERED_PEERS:
            del table[next(iter(table))]

    def handle_timer(self, now: float) -> None:
        for handshake in list(self._initiating.values()):
            if now >= handshake.deadline:
                self._fail(handshake, self._timed_out(handshake, now), now)
            elif handshake.retry_at is not None and now >= handshake.retry_at:
                self._retry_busy(handshake, now)
        for handshake in list(self._responding.values()):
            if now >= handshake.deadline:
                if handshake.phase is not _Phase.DONE:
                    self._counts["handshakes_failed"] += 1
                    self._incoming_failed(handshake, self._incoming_timed_out(handshake, now))
                self._forget_handshake(handshake)
            elif (
                handshake.phase is _Phase.ASKING_AUTHENTICATOR
                and handshake.ask_deadline is not None
                and now >= handshake.ask_deadline
            ):
                self._authenticator_gave_no_answer(handshake, now)
        for key, session in list(self._by_ssid.items()):
            if now < session.expires:
                continue
            peer = key[0]
            if self._current.get(peer) is not session:
                # A superseded key at the end of its grace.
                if self._previous.get(peer) is session:
                    del self._previous[peer]
                self._drop(peer, session)
                continue
            if session.channel.initiator:
                # Our own session is due for a new key: start the handshake, keep
                # using the old key until the new one is in place.
                self.ensure_session(peer, now)
                session.expires = now + self.config.session_grace
                continue
            self._forget(peer, ClosedResourceError(f"secure session with {peer} expired"))


def _where(peer: Address) -> str:
    return f"{peer[0]}:{peer[1]}"


def _printable(data: bytes) -> str:
    """A peer's bytes for a message or a log line: printable ASCII only (no
    control characters from the network in anyone's terminal)."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in data)


_TRP_HINTS = {
    TrpError.UNKNOWN_INITIATOR.name: "this node ({identity}) is not enrolled in {domain}",
    TrpError.UNKNOWN_RESPONDER.name: "the responder is not enrolled in {domain}",
    TrpError.UNKNOWN_DOMAIN.name: "the Authenticator does not serve {domain}",
    TrpError.ACCESS_DENIED.name: (
        "a node is revoked, or asks for permissions it was not granted"
        " (see the Authenticator's audit)"
    ),
    TrpError.HIGH_LOAD.name: "the Authenticator is overloaded or rate-limits the responder",
    TrpError.BAD_MODE.name: "the Authenticator does not allow this security mode",
    TrpError.INCOMPATIBLE_SECURITY_IDENTIFIERS.name: "a credential type it does not take",
    TrpError.PARSE_ERROR.name: "it could not read the request",
    TrpError.INTERNAL_ERROR.name: "it failed (its log says why)",
}


def _trp_hint(name: str, config: SecurityConfig) -> str:
    hint = _TRP_HINTS.get(name, "an unknown TRP error")
    return hint.format(identity=config.identity, domain=config.domain)


# What the responder's Reject "authenticator: <cause>" tells the initiator to check.
_AUTHENTICATOR_TROUBLE_HINTS = {
    SecureSessionCause.NO_ANSWER.value: "is its Authenticator running and reachable from it?",
    SecureSessionCause.NO_ACCEPT.value: "its Authenticator is alive but sent no Accept",
    SecureSessionCause.ACCEPT_NOT_VERIFIED.value: (
        "its identity secret, or the Authenticator's record of it, is wrong"
    ),
    SecureSessionCause.NO_CONFIRM_ACK.value: "its handshake with the Authenticator did not end",
    SecureSessionCause.MODE_MISMATCH.value: "its Authenticator uses another security mode",
    SecureSessionCause.AUTHENTICATOR_REFUSED.value: "the Authenticator refused its handshake",
    "identity-mismatch": "another identity answers at its Authenticator's address",
}
