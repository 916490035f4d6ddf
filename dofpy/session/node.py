"""The sans-IO DPS node: peers, operation ids, retransmission, duplicates,
DSP session handling and the DPP common operations.

A :class:`Node` speaks DNP/DPP with any number of peers over one datagram
socket (driven by :mod:`dofpy.trio` or :mod:`dofpy.testing.netsim`). It knows
nothing of OAP: the layer above sends application commands and responses
through :meth:`Node.send_command` / :meth:`Node.send_response` and learns what
arrived from :meth:`Node.next_event`.

Operation ids link a command to its response: a command carries the implied
sender SID and a fresh operation count; the response carries the implied
receiver SID and the same count. A command is retransmitted (same count,
retry byte incremented) until a response arrives or its :class:`RetryPolicy`
gives up; the receiving node answers a retransmitted copy from its
:class:`DuplicateCache` instead of handing it up again, so a retried Set or
Invoke executes at most once.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dofpy._core import Address
from dofpy.errors import (
    BadPacket,
    BrokenResourceError,
    ClosedResourceError,
    DofError,
    DofTimeoutError,
    LocalProtocolError,
)
from dofpy.security.crypto import AuthenticationFailed
from dofpy.security.secure_frame import ReplayedPacket, SecureChannel
from dofpy.session._dedup import PENDING, DuplicateCache
from dofpy.session._retry import RetryPolicy, RetryState
from dofpy.session.security import (
    AuthenticatorRequested,
    IncomingHandshakeFailed,
    PlaintextUsed,
    SecureSessionEnded,
    SecureSessionEstablished,
    SecurityConfig,
    SecurityLayer,
    SecurityStatistics,
)
from dofpy.wire._codec import C4_MAX
from dofpy.wire.common import (
    CommonPdu,
    Heartbeat,
    Ping,
    PingResponse,
    Query,
    QueryResponse,
    decode_common_untrusted,
    encode_common,
)
from dofpy.wire.dpp import (
    AppId,
    DppPacket,
    OpIdType,
    decode_frame_untrusted,
    encode_frame,
    read_sealed_command_untrusted,
    split_app_untrusted,
)
from dofpy.wire.dsp import (
    DspConfigAck,
    DspConfigReject,
    DspConfigRequest,
    DspNop,
    DspOpen,
    DspOpenResponse,
    DspPdu,
    DspQuery,
    DspQueryResponse,
    DspTerminate,
    DspTerminateResponse,
    decode_dsp_untrusted,
    encode_dsp,
)
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet
from dofpy.wire.trp import TrpPdu

__all__ = [
    "AuthenticatorRequested",
    "CommandHandler",
    "CommandReceived",
    "IncomingHandshakeFailed",
    "Node",
    "NodeConfig",
    "NodeEvent",
    "NodeStatistics",
    "PeerClosed",
    "PeerState",
    "PlaintextUsed",
    "RequestFailed",
    "ResponseReceived",
    "SecureSessionEnded",
    "SecureSessionEstablished",
    "SessionOpened",
]


# -- configuration, statistics, events ----------------------------------------


_UNNAMED = OID(3, b"node@localhost")
"""The identity of a node configured without one (compared by identity)."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Limits and policies of a node. Every queue and table is bounded here."""

    node_id: OID = field(default_factory=lambda: _UNNAMED)
    """This node's identity; with ``security`` it is the security identity
    (leave it unset, or give the same OID: a different one is refused)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    applications: tuple[int, ...] = (AppId.DSP, AppId.OAP, AppId.COMMON)
    max_pending_commands: int = 4096
    max_events: int = 16384
    max_peers: int = 4096
    duplicate_entries: int = 8192
    duplicate_lifetime: float = 60.0
    first_op_count: int | None = None
    """The first operation id; by default 1 without security and a random
    value with it (an explicit value is for tests that replay an id)."""
    security: SecurityConfig | None = None
    max_datagram: int = 65507
    """The largest datagram this node sends: the most one IPv4 UDP datagram
    carries by default; lower it for a path (or peers) with a smaller limit."""

    def __post_init__(self) -> None:
        for name in ("max_pending_commands", "max_events", "max_peers", "duplicate_entries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 64 <= self.max_datagram <= 65535:
            raise ValueError(f"max_datagram must be 64..65535, not {self.max_datagram}")
        if self.first_op_count is not None and not 0 <= self.first_op_count <= C4_MAX:
            raise ValueError("first_op_count must be a c4")
        if self.security is not None:
            if self.node_id is _UNNAMED:
                object.__setattr__(self, "node_id", self.security.identity)
            elif self.node_id != self.security.identity:
                raise ValueError(
                    f"node_id {self.node_id} differs from the security identity "
                    f"{self.security.identity}: a secure node is who its credentials say"
                    " (leave node_id unset)"
                )


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


class PeerState(enum.Enum):
    """Where a peer's DSP session is."""

    IDLE = "idle"  # no DSP exchange yet; commands still flow (UDP needs no open)
    OPENING = "opening"  # we sent a DSP Open and wait for its response
    OPEN = "open"  # a DSP Open was answered, in either direction
    CLOSED = "closed"  # terminated; a new command from the peer starts over


# Allowed transitions of a peer's session state. Anything else is a bug.
# Opening again (from OPENING or OPEN) re-negotiates; a closed peer starts over
# when either side speaks again.
_PEER_TRANSITIONS: dict[PeerState, frozenset[PeerState]] = {
    PeerState.IDLE: frozenset({PeerState.OPENING, PeerState.OPEN, PeerState.CLOSED}),
    PeerState.OPENING: frozenset({PeerState.OPENING, PeerState.OPEN, PeerState.CLOSED}),
    PeerState.OPEN: frozenset({PeerState.OPENING, PeerState.OPEN, PeerState.CLOSED}),
    PeerState.CLOSED: frozenset({PeerState.IDLE, PeerState.OPENING}),
}


# One-way commands waiting for a secure session, per peer (oldest dropped).
_MAX_HELD_PER_PEER = 256

# Applications that may travel in the clear when security is required: session
# set-up (DSP), key exchange (TEP, TRP) and the common operations (ping).
_PLAINTEXT_APPS = frozenset({AppId.DSP, AppId.TEP, AppId.TRP, AppId.COMMON})
# Applications never sealed by the generic path: TEP (a Rekey names its domain
# only in the clear; the one sealed TEP command, End Session, is sealed apart).
# TRP is sealed when a session with the Authenticator exists (seal_authenticator).
_ALWAYS_PLAIN_APPS = frozenset({AppId.TEP})


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


# -- internal state ------------------------------------------------------------


class _Unset(enum.Enum):
    CURRENT = "current"  # send_response: the identity of the current session


class _Internal(enum.Enum):
    """Commands the node itself issued (not the layer above)."""

    PING = "ping"
    DSP_OPEN = "dsp-open"
    DSP_TERMINATE = "dsp-terminate"
    QUERY = "query"
    TEP = "tep"
    TRP = "trp"


@dataclass(slots=True)
class _Pending:
    request_id: int
    peer: Address
    app_id: int
    payload: bytes
    retry: RetryState | None  # None: sent once, no retransmission
    internal: _Internal | None = None
    # Sent only through, and answered only from, a secure session with this identity.
    identity: OID | None = None


@dataclass(slots=True)
class _Peer:
    address: Address
    state: PeerState = PeerState.IDLE
    applications: tuple[int, ...] = ()
    last_heard: float = 0.0


# -- the node ------------------------------------------------------------------


class Node:
    """A sans-IO DPS node. Implements :class:`dofpy._core.DatagramCore`."""

    def __init__(self, config: NodeConfig | None = None) -> None:
        self.config = config or NodeConfig()
        security = self.config.security
        # With security, op ids start at a random value so that an off-path
        # spoofer cannot guess the ids of our pending commands (a forged
        # Reject must name one); handshake commands take a fresh random id each.
        if self.config.first_op_count is not None:
            self._next_op = self.config.first_op_count
        elif security is None:
            self._next_op = 1
        else:
            self._next_op = int.from_bytes(security.rng(4), "big") & C4_MAX
        self._pending: dict[int, _Pending] = {}
        self._peers: dict[Address, _Peer] = {}
        self._outgoing: list[tuple[bytes, Address]] = []
        self._events: deque[NodeEvent] = deque()
        # Keyed by (address, authenticated identity or None, operation id).
        self._duplicates: DuplicateCache[DppPacket] = DuplicateCache(
            self.config.duplicate_entries, self.config.duplicate_lifetime
        )
        self._security = (
            None if self.config.security is None else SecurityLayer(self.config.security, self)
        )
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "datagrams_received",
                "datagrams_sent",
                "bad_datagrams",
                "unsupported_datagrams",
                "unmatched_responses",
                "duplicate_commands",
                "duplicate_responses_resent",
                "duplicate_responses_held",
                "retransmissions",
                "requests_timed_out",
                "events_dropped",
                "commands_refused",
                "held_dropped",
                "responses_wrong_identity",
                "responses_withheld",
            ),
            0,
        )
        self._held: dict[Address, deque[_Pending]] = {}
        # The identity of the current secure session at each address.
        self._session_identities: dict[Address, OID] = {}
        self._command_handler: CommandHandler | None = None

    def set_command_handler(self, handler: CommandHandler | None) -> None:
        """Offer every new one-way application command (one without a retry
        byte, so never remembered for duplicates; not DSP, common or TEP) to
        ``handler`` as it arrives, before a :class:`CommandReceived` is queued
        for it: when the handler returns True it took the command and no event
        is queued. A block transfer takes thousands of such commands a second;
        this spares each an event object and a trip through the queue. The
        handler may send (its datagrams join this node's outgoing ones), and
        must raise nothing.
        """
        self._command_handler = handler

    # -- DatagramCore ------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._counts["datagrams_received"] += 1
        try:
            security = self._security
            if security is not None and (sealed := read_sealed_command_untrusted(data)) is not None:
                # The shape of every one-way command a secure session carries
                # (a block transfer's datagrams): read without building
                # packets, every header byte checked, then authenticated.
                op_count, _delay, ssid, packet_number, start = sealed
                session = security.lookup(addr, ssid)
                try:
                    plaintext = session.channel.open_sealed_untrusted(data, packet_number, start)
                except ReplayedPacket:
                    security.count("replays")
                    return
                except AuthenticationFailed:
                    security.on_authentication_failed(addr, session, now)
                    return
                security.on_opened(addr, session, now)
                if plaintext and plaintext[0] < 0x80:
                    app_id, payload = plaintext[0], plaintext[1:]
                else:
                    app_id, payload = split_app_untrusted(plaintext)
                self._receive_command(
                    app_id,
                    op_count,
                    None,
                    payload,
                    addr,
                    now,
                    len(data),
                    session.peer_identity,
                    session.permissions,
                    session.channel,
                )
                return
            dnp, packet = decode_frame_untrusted(data)
            identity: OID | None = None
            permissions: PermissionSet | None = None
            channel: SecureChannel | None = None
            if packet.security is not None:
                if security is None:
                    self._counts["unsupported_datagrams"] += 1
                    return
                session = security.lookup(addr, packet.security.ssid)
                try:
                    # Opened from the packet decoded above: one parse per datagram.
                    packet = session.channel.open_packet_untrusted(dnp, packet)
                except ReplayedPacket:
                    security.count("replays")
                    return
                except AuthenticationFailed:
                    security.on_authentication_failed(addr, session, now)
                    return
                security.on_opened(addr, session, now)
                identity, permissions = session.peer_identity, session.permissions
                channel = session.channel
            elif security is not None and packet.app_id not in _PLAINTEXT_APPS:
                # In the clear only by explicit choice (PlaintextPolicy.ALLOW), and
                # never from a peer secured with us: anyone can send from its address.
                if not security.plaintext_allowed(addr):
                    security.count("plaintext_refused")
                    return
                security.used_plaintext(addr, sent=False)
            self._receive_packet(packet, addr, now, len(data), identity, permissions, channel)
        except BadPacket:
            self._counts["bad_datagrams"] += 1

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outgoing = self._outgoing, []
        self._counts["datagrams_sent"] += len(out)
        return out

    def get_timer(self) -> float | None:
        timers = [p.retry.next_timer() for p in self._pending.values() if p.retry is not None]
        if self._security is not None and (deadline := self._security.get_timer()) is not None:
            timers.append(deadline)
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        if self._security is not None:
            self._security.handle_timer(now)
        for pending in list(self._pending.values()):
            state = pending.retry
            if state is None:
                continue
            if state.expired(now):
                del self._pending[pending.request_id]
                self._counts["requests_timed_out"] += 1
                self._fail(pending, self._timed_out(pending, state.attempts, now), now)
            elif state.due(now):
                state.record_send(now)
                self._counts["retransmissions"] += 1
                self._emit_command(pending, state.retry_byte, now)

    # -- events and statistics -----------------------------------------------------

    def next_event(self) -> NodeEvent | None:
        """The oldest event not yet taken, or ``None``."""
        return self._events.popleft() if self._events else None

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            **self._counts,
            duplicate_cache_evictions=self._duplicates.evicted,
            peers=len(self._peers),
            pending_commands=len(self._pending),
            security=None if self._security is None else self._security.statistics(),
        )

    def peer_state(self, peer: Address) -> PeerState:
        known = self._peers.get(peer)
        return PeerState.IDLE if known is None else known.state

    # -- sending -------------------------------------------------------------------

    def send_command(
        self,
        peer: Address,
        app_id: int,
        payload: bytes,
        now: float,
        *,
        expect_response: bool = True,
        retry: RetryPolicy | None = None,
        identity: OID | None = None,
    ) -> int:
        """Send an application command; returns its request id (the op count).

        With ``expect_response`` the command is retransmitted under ``retry``
        (default: the node's policy) until :class:`ResponseReceived` or
        :class:`RequestFailed` ends it. Without, it is sent once and forgotten.

        With ``identity`` (or an entry for ``peer`` in the security
        configuration's ``peer_identities``) the command is bound to that
        authenticated identity: it is sent only inside a secure session with
        it (one is started, or a new handshake when the current session at
        ``peer`` is with someone else) and only a response from such a session
        ends it. A handshake that authenticates anyone else fails at once,
        and with it the commands waiting: :class:`RequestFailed` with
        :class:`~dofpy.errors.PeerIdentityMismatch`.
        """
        expected = self.expected_identity(peer, identity)
        return self._start(
            peer, app_id, payload, now, expect_response, retry, None, identity=expected
        )

    def expected_identity(self, peer: Address, identity: OID | None = None) -> OID | None:
        """The identity a command to ``peer`` is bound to: ``identity``, else
        the ``peer_identities`` entry for ``peer``, else ``None``. Raises
        ``LocalProtocolError`` without a security configuration (nothing can
        authenticate a peer) or when the two disagree."""
        security = self._security
        if security is None:
            if identity is not None:
                raise LocalProtocolError(
                    "a request bound to an identity needs a SecurityConfig: "
                    "no peer is authenticated in the clear"
                )
            return None
        configured = security.config.peer_identities.get(peer)
        if identity is not None and configured is not None and identity != configured:
            raise LocalProtocolError(
                f"identity {identity} for {peer[0]}:{peer[1]} contradicts "
                f"peer_identities ({configured})"
            )
        return identity if identity is not None else configured

    def send_response(
        self,
        peer: Address,
        op_count: int | None,
        app_id: int,
        payload: bytes,
        now: float,
        *,
        identity: OID | _Unset | None = _Unset.CURRENT,
    ) -> None:
        """Answer the command ``op_count`` from ``peer``; duplicates of the command
        will be answered with this same response (sealed anew when secure).

        ``identity`` is the one the command came from (its
        :class:`CommandReceived` ``identity``; ``None`` for a command in the
        clear): the response is sent only inside a secure session with that
        identity, and remembered for its duplicates only. Left out, it is the
        identity of the current session with ``peer``."""
        self._respond(peer, op_count, app_id, payload, now, limit=None, identity=identity)

    def response_size(self, peer: Address, op_count: int, app_id: int, payload: bytes) -> int:
        """How long the datagram :meth:`send_response` would send ``peer`` now
        is, at most (sealed when a secure session with ``peer`` exists); compare
        it with ``config.max_datagram`` before answering."""
        clear = len(
            encode_frame(
                DppPacket(
                    app_id=app_id,
                    payload=payload,
                    is_response=True,
                    op_id_type=OpIdType.IMPLIED_RECEIVER,
                    op_count=op_count,
                )
            )
        )
        session = None if self._security is None else self._security.session(peer)
        return clear if session is None else clear + session.channel.max_overhead

    def secure_session(self, peer: Address, now: float) -> None:
        """Start a secure session with ``peer`` now (commands start one anyway
        when ``require_security`` is set); :class:`SecureSessionEstablished` or
        :class:`SecureSessionEnded` follows."""
        if self._security is None:
            raise LocalProtocolError("this node has no SecurityConfig")
        self._security.ensure_session(peer, now)

    def end_secure_session(self, peer: Address, now: float) -> bool:
        """End the secure session with ``peer`` (a sealed TEP End Session);
        False when there was none. Later commands to it start a new one."""
        if self._security is None:
            raise LocalProtocolError("this node has no SecurityConfig")
        return self._security.end_session(peer, now)

    def answer_authenticator(self, token: int, answer: TrpPdu, now: float) -> bool:
        """Resume the handshake that :class:`AuthenticatorRequested` ``token`` waits
        on (``defer_authenticator``) with the Authenticator's ``answer``: a
        :class:`~dofpy.wire.trp.RequestSessionResponse` sends the Accept, a
        :class:`~dofpy.wire.trp.TrpReject` (or anything else) refuses the
        handshake, as an in-process authenticator's answer would.

        Returns False, counted as ``authenticator_answers_ignored``, when nothing
        waits on ``token`` any more (answered already, handshake timed out,
        never issued): a late worker is harmless, never an error.
        """
        if self._security is None:
            raise LocalProtocolError("this node has no SecurityConfig")
        return self._security.answer_authenticator(token, answer, now)

    def peer_identity(self, peer: Address) -> OID | None:
        """The authenticated identity of ``peer``, when a secure session exists."""
        session = None if self._security is None else self._security.session(peer)
        return None if session is None else session.peer_identity

    def cancel(self, request_id: int) -> bool:
        """Stop retransmitting ``request_id``; True if it was still pending.

        A response that arrives later is counted as unmatched and dropped.
        """
        return self._pending.pop(request_id, None) is not None

    def ping(self, peer: Address, now: float) -> int:
        """Send a DPP ping; completes as :class:`ResponseReceived` (app COMMON)."""
        return self._start(
            peer, AppId.COMMON, encode_common(Ping()), now, True, None, _Internal.PING
        )

    def open_session(self, peer: Address, now: float) -> int:
        """Send a DSP Open; :class:`SessionOpened` follows on success."""
        self._transition(self._peer(peer, now), PeerState.OPENING)
        return self._start(
            peer, AppId.DSP, encode_dsp(DspOpen()), now, True, None, _Internal.DSP_OPEN
        )

    def terminate_session(self, peer: Address, now: float) -> None:
        """Send a DSP Terminate and fail every command pending with ``peer``."""
        known = self._peers.get(peer)
        self._start(
            peer, AppId.DSP, encode_dsp(DspTerminate()), now, True, None, _Internal.DSP_TERMINATE
        )
        if known is not None:
            self._close_peer(known, by_peer=False, now=now)

    def send_heartbeat(self, peer: Address, now: float) -> None:
        """Send a DPP heartbeat (no response is expected)."""
        self._start(peer, AppId.COMMON, encode_common(Heartbeat()), now, False, None, None)

    # -- internals: sending ----------------------------------------------------------

    def _allocate_op(self, *, unpredictable: bool = False) -> int:
        security = self.config.security
        if unpredictable and security is not None:
            for _ in range(8):
                op = int.from_bytes(security.rng(4), "big") & C4_MAX
                if op not in self._pending:
                    return op
        for _ in range(len(self._pending) + 1):
            op = self._next_op
            self._next_op = 0 if op >= C4_MAX else op + 1
            if op not in self._pending:
                return op
        raise LocalProtocolError("no free operation count")  # pragma: no cover

    def _start(
        self,
        peer: Address,
        app_id: int,
        payload: bytes,
        now: float,
        expect_response: bool,
        retry: RetryPolicy | None,
        internal: _Internal | None,
        op: int | None = None,
        identity: OID | None = None,
    ) -> int:
        if expect_response and len(self._pending) >= self.config.max_pending_commands:
            raise LocalProtocolError(
                f"{len(self._pending)} commands pending: limit max_pending_commands reached"
            )
        if op is None:
            op = self._allocate_op(unpredictable=internal in (_Internal.TEP, _Internal.TRP))
        state = RetryState.start(retry or self.config.retry, now) if expect_response else None
        pending = _Pending(op, peer, app_id, payload, state, internal, identity)
        if expect_response:
            self._pending[op] = pending
        if not self._emit_command(pending, 0, now) and not expect_response:
            # A one-way command has no retransmission to carry it once the
            # secure session exists: hold it (bounded) until then.
            held = self._held.setdefault(peer, deque())
            if len(held) >= _MAX_HELD_PER_PEER:
                held.popleft()
                self._counts["held_dropped"] += 1
            held.append(pending)
        return op

    def _emit_command(self, pending: _Pending, retry_byte: int, now: float) -> bool:
        security = self._security
        if security is not None and pending.identity is not None:
            session = security.session(pending.peer)
            if session is None or session.peer_identity != pending.identity:
                # Bound to an identity: never in the clear, never on a session
                # with anyone else. A handshake of our own decides (the
                # current session may be one the peer's address started).
                security.ensure_session(pending.peer, now)
                return False
        if security is not None and pending.app_id not in _ALWAYS_PLAIN_APPS:
            session = security.session(pending.peer)
            if session is not None:
                # What _transmit does with the packet below, sealed straight
                # from its fields (SecureChannel.seal_command): no packet built.
                if not security.ready_to_seal(pending.peer, session, now):
                    return False  # the key is used up: held for the new one
                sealed = session.channel.seal_command(
                    pending.app_id,
                    pending.payload,
                    pending.request_id,
                    retry_byte if pending.retry is not None else None,
                )
                self._outgoing.append((sealed, pending.peer))
                return True
        packet = DppPacket(
            app_id=pending.app_id,
            payload=pending.payload,
            op_id_type=OpIdType.IMPLIED_SENDER,
            op_count=pending.request_id,
            retry=retry_byte if pending.retry is not None else None,
        )
        # Held back until a secure session exists, when one is required; the
        # session's arrival re-emits every held command at once.
        return self._transmit(pending.peer, packet, now)

    def _transmit(self, peer: Address, packet: DppPacket, now: float) -> bool:
        """Put ``packet`` on the wire to ``peer``: sealed when a secure session
        exists, in the clear when allowed. False when it was held back."""
        security = self._security
        if security is not None and packet.app_id not in _ALWAYS_PLAIN_APPS:
            session = security.session(peer)
            if session is not None:
                if not security.ready_to_seal(peer, session, now):
                    return False  # the key is used up: held for the new one
                self._outgoing.append((session.channel.seal(packet), peer))
                return True
            if packet.app_id == AppId.TRP and security.config.seal_authenticator:
                security.ensure_session(peer, now)
                return False
            if packet.app_id not in _PLAINTEXT_APPS:
                if not security.plaintext_allowed(peer):
                    # Policy REFUSE, or a peer once secured: a handshake, never the clear.
                    security.ensure_session(peer, now)
                    return False
                security.used_plaintext(peer, sent=True)
        self._outgoing.append((encode_frame(packet), peer))
        return True

    def _respond(
        self,
        peer: Address,
        op_count: int | None,
        app_id: int,
        payload: bytes,
        now: float,
        limit: int | None,
        identity: OID | _Unset | None = _Unset.CURRENT,
    ) -> None:
        if op_count is None:
            raise LocalProtocolError("a command without an operation id cannot be answered")
        security = self._security
        current = None if security is None else security.session(peer)
        if identity is _Unset.CURRENT:
            identity = None if current is None else current.peer_identity
        packet = DppPacket(
            app_id=app_id,
            payload=payload,
            is_response=True,
            op_id_type=OpIdType.IMPLIED_RECEIVER,
            op_count=op_count,
        )
        if limit is not None and self._unvalidated(peer) and len(encode_frame(packet)) > limit:
            # Never answer an address we have not validated with more bytes
            # than it sent us (no amplification through spoofed sources).
            assert self._security is not None
            self._security.count("amplification_drops")
            return
        self._duplicates.add_response((peer, identity, op_count), packet, now)
        if identity is not None and (current is None or current.peer_identity != identity):
            # The command's identity no longer holds the session at this
            # address: its answer is kept for its retransmission (answered
            # through its own session), never sent to whoever holds it now.
            self._counts["responses_withheld"] += 1
            return
        self._transmit(peer, packet, now)

    def _timed_out(self, pending: _Pending, attempts: int, now: float) -> DofTimeoutError:
        """Why ``pending`` got no answer: when it waited for a handshake of
        ours, that handshake's most likely cause (a :class:`SecureSessionTimeout`)."""
        security = self._security
        if security is not None and pending.app_id not in _ALWAYS_PLAIN_APPS:
            session = security.session(pending.peer)
            if session is None or (
                pending.identity is not None and session.peer_identity != pending.identity
            ):
                diagnosis = security.diagnose(pending.peer, now)
                if diagnosis is not None:
                    return diagnosis
        waiting = (
            " (no secure session with it yet: the handshake did not complete)"
            if self._unvalidated(pending.peer) and pending.app_id not in _PLAINTEXT_APPS
            else ""
        )
        return DofTimeoutError(
            f"no response from {pending.peer[0]}:{pending.peer[1]} to request "
            f"{pending.request_id} after {attempts} attempts{waiting}"
        )

    def _attempts(self, request_id: int) -> int:
        """Copies of pending command ``request_id`` sent so far (0: not pending)."""
        pending = self._pending.get(request_id)
        return 0 if pending is None or pending.retry is None else pending.retry.attempts

    def _unvalidated(self, peer: Address) -> bool:
        security = self._security
        return (
            security is not None
            and security.config.require_security
            and security.session(peer) is None
        )

    # -- internals: the security layer's hooks -----------------------------------------

    def _expected_identities(self, peer: Address) -> set[OID]:
        """Every identity a handshake with ``peer`` must authenticate: the
        configured one and those the commands waiting for it are bound to."""
        expected = {p.identity for p in self._pending.values() if p.peer == peer}
        expected.update(p.identity for p in self._held.get(peer, ()))
        if self._security is not None:
            configured = self._security.config.peer_identities.get(peer)
            expected.add(configured)
        return {identity for identity in expected if identity is not None}

    def _send_internal_command(
        self,
        peer: Address,
        app_id: int,
        payload: bytes,
        now: float,
        kind: str,
        op: int | None = None,
    ) -> int:
        internal = _Internal.TEP if kind == "tep" else _Internal.TRP
        return self._start(peer, app_id, payload, now, True, None, internal, op=op)

    def _send_plain_response(
        self, peer: Address, op: int, app_id: int, payload: bytes, limit: int | None = None
    ) -> bool:
        datagram = encode_frame(
            DppPacket(
                app_id=app_id,
                payload=payload,
                is_response=True,
                op_id_type=OpIdType.IMPLIED_RECEIVER,
                op_count=op,
            )
        )
        if limit is not None and len(datagram) > limit:
            return False
        self._outgoing.append((datagram, peer))
        return True

    def _on_secure_session(
        self, peer: Address, identity: OID, ssid: int, initiator: bool, key: bytes, now: float
    ) -> None:
        self._session_identities[peer] = identity
        self._emit_event(
            SecureSessionEstablished(peer, identity, ssid, initiator, key), droppable=False
        )
        for pending in list(self._pending.values()):
            if pending.peer == peer and pending.internal is not _Internal.TEP:
                retry_byte = 0 if pending.retry is None else pending.retry.retry_byte
                self._emit_command(pending, retry_byte, now)
        for pending in self._held.pop(peer, ()):
            if not self._emit_command(pending, 0, now):
                # Bound to another identity than this session's: it waits for
                # the handshake that emit started (bounded as before).
                self._held.setdefault(peer, deque()).append(pending)

    def _on_secure_session_failed(self, peer: Address, error: DofError, now: float) -> None:
        self._counts["held_dropped"] += len(self._held.pop(peer, ()))
        for pending in [p for p in self._pending.values() if p.peer == peer]:
            del self._pending[pending.request_id]
            if pending.internal is not _Internal.TEP:
                self._fail(pending, error, now)
        self._emit_event(SecureSessionEnded(peer, error), droppable=False)

    def _fail_bound_elsewhere(
        self, peer: Address, identity: OID, error: DofError, now: float
    ) -> None:
        """Fail the commands to ``peer`` bound to an identity other than
        ``identity`` (the session that stays): the handshake they waited for
        failed, and no other session may carry them."""

        def elsewhere(pending: _Pending) -> bool:
            return pending.identity is not None and pending.identity != identity

        held = self._held.get(peer)
        if held:
            kept = deque(p for p in held if not elsewhere(p))
            self._counts["held_dropped"] += len(held) - len(kept)
            self._held[peer] = kept
        for pending in [p for p in self._pending.values() if p.peer == peer and elsewhere(p)]:
            del self._pending[pending.request_id]
            self._fail(pending, error, now)

    def _on_secure_session_ended(self, peer: Address, error: DofError) -> None:
        identity = self._session_identities.pop(peer, None)
        if identity is not None:
            # Its answers go with it: a later session (whose permissions the
            # Authenticator may have changed) has its commands checked anew.
            self._duplicates.forget(lambda key: key[:2] == (peer, identity))
        self._emit_event(SecureSessionEnded(peer, error), droppable=False)

    def _send_sealed_command(
        self, peer: Address, channel: SecureChannel, payload: bytes, now: float
    ) -> None:
        packet = DppPacket(
            app_id=AppId.TEP,
            payload=payload,
            op_id_type=OpIdType.IMPLIED_SENDER,
            op_count=self._allocate_op(),
        )
        self._outgoing.append((channel.seal(packet, final=True), peer))

    def _emit_event(self, event: NodeEvent, *, droppable: bool) -> bool:
        if droppable and len(self._events) >= self.config.max_events:
            self._counts["events_dropped"] += 1
            return False
        self._events.append(event)
        return True

    def _fail(self, pending: _Pending, error: DofError, now: float) -> None:
        if pending.internal is _Internal.TEP and self._security is not None:
            attempts = 0 if pending.retry is None else pending.retry.attempts
            self._security.on_handshake_failure(
                pending.peer, pending.request_id, error, now, attempts
            )
        elif pending.internal is _Internal.TRP and self._security is not None:
            self._security.on_trp_failure(pending.request_id, error, now)
        elif pending.internal in (None, _Internal.PING):
            self._emit_event(
                RequestFailed(pending.request_id, pending.peer, error), droppable=False
            )
        elif pending.internal is _Internal.DSP_OPEN:
            known = self._peers.get(pending.peer)
            if known is not None and known.state is PeerState.OPENING:
                self._transition(known, PeerState.CLOSED)
            self._emit_event(
                RequestFailed(pending.request_id, pending.peer, error), droppable=False
            )

    # -- internals: peers ------------------------------------------------------------

    def _peer(self, address: Address, now: float) -> _Peer:
        known = self._peers.get(address)
        if known is None:
            if len(self._peers) >= self.config.max_peers:
                # Forget the peer heard from least recently that has nothing pending.
                busy = {p.peer for p in self._pending.values()}
                idle = [p for p in self._peers.values() if p.address not in busy]
                if idle:
                    del self._peers[min(idle, key=lambda p: p.last_heard).address]
            known = _Peer(address, last_heard=now)
            self._peers[address] = known
        known.last_heard = now
        return known

    def _transition(self, peer: _Peer, new: PeerState) -> None:
        if new not in _PEER_TRANSITIONS[peer.state]:
            raise LocalProtocolError(f"peer {peer.address}: {peer.state.value} -> {new.value}")
        peer.state = new

    def _close_peer(self, peer: _Peer, *, by_peer: bool, now: float) -> None:
        if peer.state is not PeerState.CLOSED:
            self._transition(peer, PeerState.CLOSED)
        error: DofError = (
            BrokenResourceError(f"peer {peer.address} terminated the session")
            if by_peer
            else ClosedResourceError(f"session with {peer.address} terminated by us")
        )
        for pending in [p for p in self._pending.values() if p.peer == peer.address]:
            if pending.internal is _Internal.DSP_TERMINATE:
                continue
            del self._pending[pending.request_id]
            self._fail(pending, error, now)
        self._emit_event(PeerClosed(peer.address, by_peer), droppable=False)

    # -- internals: receiving --------------------------------------------------------

    def _receive_packet(
        self,
        packet: DppPacket,
        addr: Address,
        now: float,
        size: int,
        identity: OID | None,
        permissions: PermissionSet | None,
        channel: SecureChannel | None = None,
    ) -> None:
        if packet.security is not None or packet.app_id is None:
            # A secure packet inside a secure packet: nothing sends that.
            self._counts["unsupported_datagrams"] += 1
            return
        if packet.is_response:
            self._receive_response(packet, packet.app_id, addr, now, identity, permissions)
        else:
            self._receive_command(
                packet.app_id,
                packet.op_count if packet.op_id_type is OpIdType.IMPLIED_SENDER else None,
                packet.retry,
                packet.payload,
                addr,
                now,
                size,
                identity,
                permissions,
                channel,
            )

    def _receive_response(
        self,
        packet: DppPacket,
        app_id: int,
        addr: Address,
        now: float,
        identity: OID | None = None,
        permissions: PermissionSet | None = None,
    ) -> None:
        pending = (
            self._pending.get(packet.op_count)
            if packet.op_id_type is OpIdType.IMPLIED_RECEIVER and packet.op_count is not None
            else None
        )
        if pending is None or pending.peer != addr or pending.app_id != app_id:
            self._counts["unmatched_responses"] += 1
            if self._security is not None and app_id in (AppId.TEP, AppId.TRP, AppId.DSP):
                self._security.count("control_ignored")
            return
        if (
            identity is None
            and app_id != AppId.TEP
            and (security := self._security) is not None
            and security.config.require_security
            and security.session(addr) is not None
        ):
            # A peer we share a secure session with seals every answer but
            # TEP's: a clear one (a TRP Reject to a sealed TRP request, a DSP
            # answer) is forged.
            security.count("control_ignored")
            return
        if pending.identity is not None and identity != pending.identity:
            # From the address asked, but not from the identity asked (another
            # session at that address, or in the clear): not the answer. The
            # command goes on waiting for one from the identity it is bound to.
            self._counts["responses_wrong_identity"] += 1
            return
        # Validate an internal response before consuming the pending command:
        # a malformed answer must leave the command to its retransmissions.
        if pending.internal is _Internal.PING:
            decode_common_untrusted(packet.payload, True)
        dsp_reply = (
            decode_dsp_untrusted(packet.payload, True)
            if pending.internal is _Internal.DSP_OPEN
            else None
        )
        if pending.internal is _Internal.TEP and self._security is not None:
            # The handshake decides whether this answer ends the command (a
            # late copy of an Accept must not end the Confirm that reuses the
            # Rekey's operation id); it may already have put a new command in
            # the same slot.
            if self._security.on_tep_response(addr, pending.request_id, packet.payload, now):
                if self._pending.get(pending.request_id) is pending:
                    del self._pending[pending.request_id]
            else:
                self._counts["unmatched_responses"] += 1
            return
        del self._pending[pending.request_id]
        if pending.internal is _Internal.TRP and self._security is not None:
            self._security.on_trp_response(pending.request_id, packet.payload, now)
            return
        peer = self._peer(addr, now)
        match pending.internal:
            case None:
                self._emit_event(
                    ResponseReceived(
                        pending.request_id, addr, app_id, packet.payload, identity, permissions
                    ),
                    droppable=False,
                )
            case _Internal.PING:
                self._emit_event(
                    ResponseReceived(pending.request_id, addr, app_id, packet.payload),
                    droppable=False,
                )
            case _Internal.DSP_OPEN:
                pdu = dsp_reply
                if isinstance(pdu, DspOpenResponse):
                    peer.applications = pdu.app_ids
                    if peer.state is not PeerState.CLOSED:
                        self._transition(peer, PeerState.OPEN)
                    self._emit_event(
                        SessionOpened(pending.request_id, addr, pdu.app_ids), droppable=False
                    )
                else:
                    self._fail(
                        pending,
                        BrokenResourceError(f"peer {addr} refused DSP Open: {pdu!r}"),
                        now,
                    )
            case _:
                pass  # Terminate / Query responses need no action.

    def _receive_command(
        self,
        app_id: int,
        op: int | None,
        retry: int | None,
        payload: bytes,
        addr: Address,
        now: float,
        size: int,
        identity: OID | None,
        permissions: PermissionSet | None,
        channel: SecureChannel | None = None,
    ) -> None:
        """A command (``op``: its implied-sender operation count, if any),
        through the secure session ``channel`` (authenticated as ``identity``)
        or in the clear."""
        if app_id == AppId.TEP and self._security is not None:
            if identity is not None:
                self._security.on_sealed_tep_command(addr, payload)
                return
            # Handshakes keep their own per-operation state (a Confirm reuses
            # the Rekey's operation id); no state for unvalidated addresses.
            self._security.on_tep_command(addr, op, payload, size, now)
            return
        if app_id not in self.config.applications:
            self._counts["unsupported_datagrams"] += 1
            return
        # Only commands that carry a retry byte may come again as retries; those
        # are the ones remembered, so one-way traffic (block transfer signals)
        # does not churn the duplicate cache.
        remember = op is not None and retry is not None
        # Remembered per authenticated identity (per address in the clear):
        # another identity at the same address with the same operation id is
        # a new command, checked and answered afresh, never given the answer
        # meant for the first.
        key = (addr, identity, op)
        if remember:
            seen = self._duplicates.lookup(key, now)
            if seen is not None:
                self._counts["duplicate_commands"] += 1
                if seen is not PENDING:
                    assert isinstance(seen, list)
                    for response in seen:
                        if channel is not None:
                            # Back through the session the copy came on: the
                            # requestor's, whichever is current at the address.
                            if channel.exhausted:
                                # Its key is used up: the requestor retries
                                # under the new one, answered from here then.
                                self._counts["duplicate_responses_held"] += 1
                                continue
                            self._outgoing.append((channel.seal(response), addr))
                        else:
                            self._transmit(addr, response, now)
                        self._counts["duplicate_responses_resent"] += 1
                return
        peer = self._peer(addr, now)
        if peer.state is PeerState.CLOSED:
            self._transition(peer, PeerState.IDLE)
        # DSP and common operations are decoded before they are remembered: a
        # malformed copy must not make a later good retry look like a duplicate.
        if app_id == AppId.DSP:
            dsp = decode_dsp_untrusted(payload, False)
            if (
                isinstance(dsp, DspTerminate)
                and identity is None
                and self._security is not None
                and self._security.config.require_security
            ):
                # Anyone can send a clear Terminate under our peer's address:
                # with security required only a sealed one ends the session.
                self._security.count("control_ignored")
                return
            if remember:
                self._duplicates.begin(key, now)
            self._receive_dsp(dsp, peer, op, now, size, identity)
        elif app_id == AppId.COMMON:
            common = decode_common_untrusted(payload, False)
            if remember:
                self._duplicates.begin(key, now)
            self._receive_common(common, peer, op, now, size, identity)
        else:
            handler = self._command_handler
            if (
                handler is not None
                and not remember
                and handler(addr, op, app_id, payload, identity, permissions, now)
            ):
                return
            event = CommandReceived(addr, op, app_id, payload, retry or 0, identity, permissions)
            if not self._emit_event(event, droppable=True):
                self._counts["commands_refused"] += 1
                return
            if remember:
                self._duplicates.begin(key, now)

    def _receive_dsp(
        self,
        pdu: DspPdu,
        peer: _Peer,
        op: int | None,
        now: float,
        size: int,
        identity: OID | None = None,
    ) -> None:
        match pdu:
            case DspOpen():
                if peer.state is not PeerState.OPEN:
                    self._transition(peer, PeerState.OPEN)
                reply = encode_dsp(DspOpenResponse(self._apps()))
                self._answer(peer, op, AppId.DSP, reply, now, size, identity)
            case DspQuery():
                reply = encode_dsp(DspQueryResponse(self._apps()))
                self._answer(peer, op, AppId.DSP, reply, now, size, identity)
            case DspConfigRequest(options=options):
                # dofpy negotiates nothing yet: any option is refused, none is
                # silently accepted.
                answer = DspConfigReject() if options else DspConfigAck()
                self._answer(peer, op, AppId.DSP, encode_dsp(answer), now, size, identity)
            case DspTerminate():
                self._answer(
                    peer, op, AppId.DSP, encode_dsp(DspTerminateResponse()), now, size, identity
                )
                self._close_peer(peer, by_peer=True, now=now)
            case DspNop():
                pass

    def _receive_common(
        self,
        pdu: CommonPdu,
        peer: _Peer,
        op: int | None,
        now: float,
        size: int,
        identity: OID | None = None,
    ) -> None:
        match pdu:
            case Ping():
                self._answer(
                    peer, op, AppId.COMMON, encode_common(PingResponse()), now, size, identity
                )
            case Query():
                reply = QueryResponse(self.config.node_id)
                self._answer(peer, op, AppId.COMMON, encode_common(reply), now, size, identity)
            case _:
                pass  # Heartbeat and source management need no answer here.

    def _answer(
        self,
        peer: _Peer,
        op: int | None,
        app_id: int,
        payload: bytes,
        now: float,
        size: int,
        identity: OID | None,
    ) -> None:
        if op is not None:
            self._respond(peer.address, op, app_id, payload, now, limit=size, identity=identity)

    def _apps(self) -> tuple[int, ...]:
        return tuple(a for a in self.config.applications if a not in (AppId.DSP, AppId.COMMON))
