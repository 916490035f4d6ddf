"""What the session layer reports: the events a :class:`~dofpy.session.node.Node`
queues for the layer above (:data:`NodeEvent`), its statistics, and the
reports its tables give one another (:data:`SessionReport`: a channel opened or
closed, a handshake failed), which only the node reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from dofpy._core import Address
from dofpy.errors import DofError, SecureSessionFailed
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet
from dofpy.wire.trp import RequestSessionCommand

__all__ = [
    "AuthenticatorRequested",
    "ChannelClosed",
    "ChannelOpened",
    "CommandHandler",
    "CommandReceived",
    "EmitEvent",
    "HandshakeFailed",
    "IncomingHandshakeFailed",
    "NodeEvent",
    "NodeStatistics",
    "PeerClosed",
    "PlaintextUsed",
    "RequestFailed",
    "ResponseReceived",
    "SecureSessionEnded",
    "SecureSessionEstablished",
    "SecurityStatistics",
    "SessionOpened",
    "SessionReport",
]

# -- events for the layer above ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandReceived:
    """A new application command arrived (duplicates never show up here).

    Answer it with :meth:`Node.send_response` (``op_count`` and ``peer``
    identify it); a command needing no answer may be left unanswered.
    """

    peer: Address
    op_count: int | None
    app_id: int
    payload: bytes
    retry: int
    identity: OID | None = None
    permissions: PermissionSet | None = None


CommandHandler = Callable[
    [Address, int | None, int, bytes, OID | None, PermissionSet | None, float], bool
]
"""``handler(peer, op_count, app_id, payload, identity, permissions, now)``:
takes a one-way application command as it arrives (see
:meth:`Node.set_command_handler`); True when it took it."""


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The response to our command ``request_id`` arrived; ``identity`` and
    ``permissions`` are those of the secure session it came through (``None``
    in the clear): for the responder, what the Authenticator granted it."""

    request_id: int
    peer: Address
    app_id: int
    payload: bytes
    identity: OID | None = None
    permissions: PermissionSet | None = None


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """Our command ``request_id`` failed: timed out, or the peer went away."""

    request_id: int
    peer: Address
    error: DofError


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """Our DSP Open ``request_id`` completed; ``applications`` the peer supports."""

    request_id: int
    peer: Address
    applications: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """``peer`` terminated its session (DSP Terminate), or we did."""

    peer: Address
    by_peer: bool


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


NodeEvent = (
    CommandReceived
    | ResponseReceived
    | RequestFailed
    | SessionOpened
    | PeerClosed
    | SecureSessionEstablished
    | SecureSessionEnded
    | AuthenticatorRequested
    | IncomingHandshakeFailed
    | PlaintextUsed
)


# -- statistics -------------------------------------------------------------------


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
    silent_sessions_retired: int
    silence_rekeys: int
    """New handshakes started because the peer was silent under the key while
    this side kept sealing to it (``SecurityConfig.silence_rekey``)."""
    """Sessions retired after a request went unanswered and nothing from the
    peer authenticated since it was sent (the peer most likely restarted)."""
    plaintext_sent: int
    plaintext_accepted: int
    sessions: int
    half_open: int
    authenticator_pending: int
    keys: int
    """Session keys held (current and superseded ones still in their grace)."""


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """Counters of a node; every dropped datagram or event is counted once."""

    datagrams_received: int
    datagrams_sent: int
    bad_datagrams: int
    unsupported_datagrams: int
    unmatched_responses: int
    duplicate_commands: int
    duplicate_responses_resent: int
    duplicate_responses_held: int
    duplicate_cache_evictions: int
    duplicate_cache_bytes: int
    """The bytes of the answers the duplicate cache keeps (a level)."""
    retransmissions: int
    requests_timed_out: int
    events_dropped: int
    commands_refused: int
    held_dropped: int
    responses_wrong_identity: int
    responses_withheld: int
    peers: int
    pending_commands: int
    security: SecurityStatistics | None = None


# -- reports between the session layer's tables ----------------------------------


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """The channel table installed a session key with ``peer`` (either side's
    handshake): what waits for it may go now."""

    peer: Address
    identity: OID
    ssid: int
    initiator: bool
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """Every key of the session with ``peer`` is retired (End Session, expiry,
    integrity limit); ``error`` says why."""

    peer: Address
    error: DofError


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """A handshake this node started with ``peer`` failed with ``error``.

    ``kept`` is the identity of the session that stays at ``peer`` (only a new
    key failed: what waits for it goes on, except commands bound to another
    identity); ``None`` when no usable session remains."""

    peer: Address
    error: DofError
    kept: OID | None


SessionReport = (
    ChannelOpened
    | ChannelClosed
    | HandshakeFailed
    | IncomingHandshakeFailed
    | AuthenticatorRequested
    | PlaintextUsed
)
"""What a table of the session layer tells the node; the last three are
handed up as they are."""


class EmitEvent(Protocol):
    """``emit(event, droppable=...)``: queue ``event`` for the layer above;
    False when a droppable one found the queue full."""

    def __call__(self, event: NodeEvent, *, droppable: bool) -> bool: ...


Report = Callable[[SessionReport, float], None]
"""``report(what, now)``: how a table of the session layer tells the node."""
