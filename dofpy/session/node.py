r"""The sans-IO DPS node: the façade over the session layer's tables.

A :class:`Node` speaks DNP/DPP with any number of peers over one datagram
socket (driven by :mod:`dofpy.trio` or :mod:`dofpy.testing.netsim`). It knows
nothing of OAP: the layer above sends application commands and responses
through :meth:`Node.send_command` / :meth:`Node.send_response` and learns what
arrived from :meth:`Node.next_event`.

The node routes; the tables keep the state: the command table
(:mod:`~dofpy.session.commands`: operation ids, retransmission, the held
queue), the channel table (:mod:`~dofpy.session.channels`: secure sessions),
the handshakes (:mod:`~dofpy.session.initiator`,
:mod:`~dofpy.session.responder`), the peer table
(:mod:`~dofpy.session.peers`) and the duplicate cache. The tables report to
the node through :data:`~dofpy.session.events.SessionReport`\ s, never by
calling into it. A retransmitted command is answered from the
:class:`DuplicateCache` instead of being handed up again, so a retried Set or
Invoke executes at most once.
"""

from __future__ import annotations

import enum
from collections import deque

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
from dofpy.session._retry import RetryPolicy
from dofpy.session.channels import ChannelTable
from dofpy.session.commands import CommandTable, PendingCommand
from dofpy.session.config import NodeConfig, PlaintextPolicy, SecurityConfig
from dofpy.session.events import (
    AuthenticatorRequested,
    ChannelClosed,
    ChannelOpened,
    CommandHandler,
    CommandReceived,
    HandshakeFailed,
    IncomingHandshakeFailed,
    NodeEvent,
    NodeStatistics,
    PeerClosed,
    PlaintextUsed,
    RequestFailed,
    ResponseReceived,
    SecureSessionEnded,
    SecureSessionEstablished,
    SecurityStatistics,
    SessionOpened,
    SessionReport,
)
from dofpy.session.initiator import Initiator
from dofpy.session.peers import Peer, PeerInput, PeerState, PeerTable
from dofpy.session.responder import Responder
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
    "PlaintextPolicy",
    "PlaintextUsed",
    "RequestFailed",
    "ResponseReceived",
    "SecureSessionEnded",
    "SecureSessionEstablished",
    "SecurityConfig",
    "SecurityStatistics",
    "SessionOpened",
]


# Applications that may travel in the clear when security is required: session
# set-up (DSP), key exchange (TEP, TRP) and the common operations (ping).
_PLAINTEXT_APPS = frozenset({AppId.DSP, AppId.TEP, AppId.TRP, AppId.COMMON})
# Applications never sealed by the generic path: TEP (a Rekey names its domain
# only in the clear; the one sealed TEP command, End Session, is sealed apart).
# TRP is sealed when a session with the Authenticator exists (seal_authenticator).
_ALWAYS_PLAIN_APPS = frozenset({AppId.TEP})

_SECURITY_COUNTS = tuple(
    name
    for name in SecurityStatistics.__dataclass_fields__
    if name not in ("sessions", "half_open", "authenticator_pending", "keys")
)


class _Security:
    """The secure-session tables of a node with a :class:`SecurityConfig`."""

    def __init__(self, node: Node, config: SecurityConfig, commands: CommandTable) -> None:
        self.config = config
        self.counts = dict.fromkeys(_SECURITY_COUNTS, 0)
        self.channels = ChannelTable(
            config,
            self.counts,
            commands,
            send=node._send,
            report=node._on_report,
            # Late-bound: the initiator is built next, over this table.
            start_handshake=lambda peer, now: self.initiator.ensure_session(peer, now),  # noqa: PLW0108
            handshaking=lambda peer: self.initiator.handshaking(peer),  # noqa: PLW0108
        )
        self.initiator = Initiator(
            config,
            self.counts,
            commands,
            self.channels,
            report=node._on_report,
            expected_identities=node._expected_identities,
        )
        self.responder = Responder(
            config,
            self.counts,
            commands,
            self.channels,
            self.initiator,
            send=node._send_plain_response,
            report=node._on_report,
        )

    def count(self, name: str) -> None:
        self.counts[name] += 1

    def statistics(self) -> SecurityStatistics:
        return SecurityStatistics(
            **self.counts,
            sessions=len(self.channels),
            half_open=self.responder.half_open,
            authenticator_pending=self.responder.authenticator_pending,
            keys=self.channels.keys,
        )

    def get_timer(self) -> float | None:
        deadlines = [
            d
            for d in (
                self.initiator.get_timer(),
                self.responder.get_timer(),
                self.channels.get_timer(),
            )
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        self.initiator.handle_timer(now)
        self.responder.handle_timer(now)
        self.channels.handle_timer(now)


class _Unset(enum.Enum):
    CURRENT = "current"  # send_response: the identity of the current session


class Node:
    """A sans-IO DPS node. Implements :class:`dofpy._core.DatagramCore`."""

    def __init__(self, config: NodeConfig | None = None) -> None:
        self.config = config or NodeConfig()
        security = self.config.security
        # With security, op ids start at a random value so that an off-path
        # spoofer cannot guess the ids of our pending commands (a forged
        # Reject must name one); handshake commands take a fresh random id each.
        if self.config.first_op_count is not None:
            first_op = self.config.first_op_count
        elif security is None:
            first_op = 1
        else:
            first_op = int.from_bytes(security.rng(4), "big") & C4_MAX
        self._outgoing: list[tuple[bytes, Address]] = []
        self._events: deque[NodeEvent] = deque()
        self._commands = CommandTable(
            limit=self.config.max_pending_commands,
            retry=self.config.retry,
            first_op=first_op,
            rng=None if security is None else security.rng,
            emit=self._emit_command,
            describe_timeout=self._timed_out,
        )
        self._peers = PeerTable(self.config.max_peers, self._commands.busy_peers)
        # Keyed by (address, authenticated identity or None, operation id).
        self._duplicates: DuplicateCache[DppPacket] = DuplicateCache(
            self.config.duplicate_entries, self.config.duplicate_lifetime
        )
        self._security = None if security is None else _Security(self, security, self._commands)
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
                "events_dropped",
                "commands_refused",
                "responses_wrong_identity",
                "responses_withheld",
            ),
            0,
        )
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
                session = security.channels.lookup(addr, ssid)
                try:
                    plaintext = session.channel.open_sealed_untrusted(data, packet_number, start)
                except ReplayedPacket:
                    security.count("replays")
                    return
                except AuthenticationFailed:
                    security.channels.on_authentication_failed(addr, session, now)
                    return
                security.channels.on_opened(addr, session, now)
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
                session = security.channels.lookup(addr, packet.security.ssid)
                try:
                    # Opened from the packet decoded above: one parse per datagram.
                    packet = session.channel.open_packet_untrusted(dnp, packet)
                except ReplayedPacket:
                    security.count("replays")
                    return
                except AuthenticationFailed:
                    security.channels.on_authentication_failed(addr, session, now)
                    return
                security.channels.on_opened(addr, session, now)
                identity, permissions = session.peer_identity, session.permissions
                channel = session.channel
            elif security is not None and packet.app_id not in _PLAINTEXT_APPS:
                # In the clear only by explicit choice (PlaintextPolicy.ALLOW), and
                # never from a peer secured with us: anyone can send from its address.
                if not security.channels.plaintext_allowed(addr):
                    security.count("plaintext_refused")
                    return
                security.channels.used_plaintext(addr, sent=False, now=now)
            self._receive_packet(packet, addr, now, len(data), identity, permissions, channel)
        except BadPacket:
            self._counts["bad_datagrams"] += 1

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outgoing = self._outgoing, []
        self._counts["datagrams_sent"] += len(out)
        return out

    def get_timer(self) -> float | None:
        deadline = self._commands.get_timer()
        if self._security is not None and (secure := self._security.get_timer()) is not None:
            deadline = secure if deadline is None else min(deadline, secure)
        return deadline

    def handle_timer(self, now: float) -> None:
        if self._security is not None:
            self._security.handle_timer(now)
        self._commands.handle_timer(now)

    # -- events and statistics -----------------------------------------------------

    def next_event(self) -> NodeEvent | None:
        """The oldest event not yet taken, or ``None``."""
        return self._events.popleft() if self._events else None

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            **self._counts,
            **self._commands.counts,
            duplicate_cache_evictions=self._duplicates.evicted,
            peers=len(self._peers),
            pending_commands=len(self._commands),
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
        return self._commands.start(
            peer,
            app_id,
            payload,
            now,
            expect_response=expect_response,
            retry=retry,
            on_response=self._on_application_response,
            on_failure=self._on_request_failed,
            identity=expected,
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
        session = None if self._security is None else self._security.channels.session(peer)
        return clear if session is None else clear + session.channel.max_overhead

    def secure_session(self, peer: Address, now: float) -> None:
        """Start a secure session with ``peer`` now (commands start one anyway
        when ``require_security`` is set); :class:`SecureSessionEstablished` or
        :class:`SecureSessionEnded` follows."""
        if self._security is None:
            raise LocalProtocolError("this node has no SecurityConfig")
        self._security.initiator.ensure_session(peer, now)

    def end_secure_session(self, peer: Address, now: float) -> bool:
        """End the secure session with ``peer`` (a sealed TEP End Session);
        False when there was none. Later commands to it start a new one."""
        if self._security is None:
            raise LocalProtocolError("this node has no SecurityConfig")
        channels = self._security.channels
        if channels.session(peer) is None:
            return False
        # A new key we were still making with the peer would outlive the End
        # Session on one side only (the peer drops it on the End Session).
        self._security.initiator.abandon(peer)
        channels.end(peer, ClosedResourceError(f"secure session with {peer} ended by us"), now)
        return True

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
        return self._security.responder.answer_authenticator(token, answer, now)

    def peer_identity(self, peer: Address) -> OID | None:
        """The authenticated identity of ``peer``, when a secure session exists."""
        session = None if self._security is None else self._security.channels.session(peer)
        return None if session is None else session.peer_identity

    def cancel(self, request_id: int) -> bool:
        """Stop retransmitting ``request_id``; True if it was still pending.

        A response that arrives later is counted as unmatched and dropped.
        """
        return self._commands.cancel(request_id)

    def ping(self, peer: Address, now: float) -> int:
        """Send a DPP ping; completes as :class:`ResponseReceived` (app COMMON)."""
        return self._commands.start(
            peer,
            AppId.COMMON,
            encode_common(Ping()),
            now,
            on_response=self._on_ping_response,
            on_failure=self._on_request_failed,
        )

    def open_session(self, peer: Address, now: float) -> int:
        """Send a DSP Open; :class:`SessionOpened` follows on success."""
        self._peers.touch(peer, now).move(PeerInput.WE_OPEN)
        return self._commands.start(
            peer,
            AppId.DSP,
            encode_dsp(DspOpen()),
            now,
            on_response=self._on_open_response,
            on_failure=self._on_open_failed,
        )

    def terminate_session(self, peer: Address, now: float) -> None:
        """Send a DSP Terminate and fail every command pending with ``peer``."""
        known = self._peers.get(peer)
        self._commands.start(
            peer,
            AppId.DSP,
            encode_dsp(DspTerminate()),
            now,
            on_response=self._on_control_response,
            survives_close=True,
        )
        if known is not None:
            self._close_peer(known, by_peer=False, now=now)

    def send_heartbeat(self, peer: Address, now: float) -> None:
        """Send a DPP heartbeat (no response is expected)."""
        self._commands.start(
            peer, AppId.COMMON, encode_common(Heartbeat()), now, expect_response=False
        )

    # -- internals: sending ----------------------------------------------------------

    def _emit_command(self, pending: PendingCommand, retry_byte: int, now: float) -> bool:
        security = self._security
        if security is not None and pending.identity is not None:
            session = security.channels.session(pending.peer)
            if session is None or session.peer_identity != pending.identity:
                # Bound to an identity: never in the clear, never on a session
                # with anyone else. A handshake of our own decides (the
                # current session may be one the peer's address started).
                security.initiator.ensure_session(pending.peer, now)
                return False
        if security is not None and pending.app_id not in _ALWAYS_PLAIN_APPS:
            session = security.channels.session(pending.peer)
            if session is not None:
                # What _transmit does with the packet below, sealed straight
                # from its fields (SecureChannel.seal_command): no packet built.
                if not security.channels.ready_to_seal(pending.peer, session, now):
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
            session = security.channels.session(peer)
            if session is not None:
                if not security.channels.ready_to_seal(peer, session, now):
                    return False  # the key is used up: held for the new one
                self._outgoing.append((session.channel.seal(packet), peer))
                return True
            if packet.app_id == AppId.TRP and security.config.seal_authenticator:
                security.initiator.ensure_session(peer, now)
                return False
            if packet.app_id not in _PLAINTEXT_APPS:
                if not security.channels.plaintext_allowed(peer):
                    # Policy REFUSE, or a peer once secured: a handshake, never the clear.
                    security.initiator.ensure_session(peer, now)
                    return False
                security.channels.used_plaintext(peer, sent=True, now=now)
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
        current = None if security is None else security.channels.session(peer)
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

    def _timed_out(self, pending: PendingCommand, attempts: int, now: float) -> DofTimeoutError:
        """Why ``pending`` got no answer: when it waited for a handshake of
        ours, that handshake's most likely cause (a :class:`SecureSessionTimeout`)."""
        security = self._security
        if security is not None and pending.app_id not in _ALWAYS_PLAIN_APPS:
            session = security.channels.session(pending.peer)
            if session is None or (
                pending.identity is not None and session.peer_identity != pending.identity
            ):
                diagnosis = security.initiator.diagnose(pending.peer, now)
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

    def _unvalidated(self, peer: Address) -> bool:
        security = self._security
        return (
            security is not None
            and security.config.require_security
            and security.channels.session(peer) is None
        )

    # -- internals: the security layer's hooks -----------------------------------------

    def _expected_identities(self, peer: Address) -> set[OID]:
        """Every identity a handshake with ``peer`` must authenticate: the
        configured one and those the commands waiting for it are bound to."""
        expected = self._commands.bound_identities(peer)
        if self._security is not None:
            configured = self._security.config.peer_identities.get(peer)
            if configured is not None:
                expected.add(configured)
        return expected

    def _send(self, datagram: bytes, peer: Address) -> None:
        self._outgoing.append((datagram, peer))

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

    def _on_report(self, report: SessionReport, now: float) -> None:
        """What a table of the session layer tells the node."""
        commands = self._commands
        match report:
            case ChannelOpened(peer=peer, identity=identity):
                self._session_identities[peer] = identity
                self._emit_event(
                    SecureSessionEstablished(
                        peer, identity, report.ssid, report.initiator, report.key
                    ),
                    droppable=False,
                )
                commands.flush(peer, now)
            case ChannelClosed(peer=peer, error=error):
                closed = self._session_identities.pop(peer, None)
                if closed is not None:
                    # Its answers go with it: a later session (whose permissions
                    # the Authenticator may have changed) has its commands
                    # checked anew.
                    self._duplicates.forget(lambda key: key[:2] == (peer, closed))
                self._emit_event(SecureSessionEnded(peer, error), droppable=False)
            case HandshakeFailed(peer=peer, error=error, kept=None):
                commands.drop_held(peer, lambda p: True)
                # The handshake's own commands end with it, unfailed.
                for pending in commands.with_peer(peer):
                    commands.finish(pending)
                    if not pending.handshake:
                        pending.on_failure(pending, error, now)
                self._emit_event(SecureSessionEnded(peer, error), droppable=False)
            case HandshakeFailed(peer=peer, error=error, kept=kept):
                # Commands bound to another identity than the session that
                # stays waited for this handshake; no other session may carry them.
                def elsewhere(pending: PendingCommand) -> bool:
                    return pending.identity is not None and pending.identity != kept

                commands.drop_held(peer, elsewhere)
                commands.fail_where(peer, elsewhere, error, now)
            case AuthenticatorRequested():
                # Not droppable: at most max_half_open of these wait at a time.
                self._emit_event(report, droppable=False)
            case IncomingHandshakeFailed() | PlaintextUsed():
                self._emit_event(report, droppable=True)

    def _emit_event(self, event: NodeEvent, *, droppable: bool) -> bool:
        if droppable and len(self._events) >= self.config.max_events:
            self._counts["events_dropped"] += 1
            return False
        self._events.append(event)
        return True

    # -- the handlers of the node's own commands ----------------------------------------

    def _on_request_failed(self, pending: PendingCommand, error: DofError, now: float) -> None:
        self._emit_event(RequestFailed(pending.request_id, pending.peer, error), droppable=False)

    def _on_open_failed(self, pending: PendingCommand, error: DofError, now: float) -> None:
        known = self._peers.get(pending.peer)
        if known is not None:
            known.move(PeerInput.OPEN_FAILED)
        self._on_request_failed(pending, error, now)

    def _on_application_response(
        self,
        pending: PendingCommand,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        self._peers.touch(pending.peer, now)
        self._emit_event(
            ResponseReceived(
                pending.request_id, pending.peer, pending.app_id, payload, identity, permissions
            ),
            droppable=False,
        )
        return True

    def _on_ping_response(
        self,
        pending: PendingCommand,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        # Validated before it ends the ping: a malformed answer leaves it to
        # its retransmissions.
        decode_common_untrusted(payload, True)
        self._peers.touch(pending.peer, now)
        self._emit_event(
            ResponseReceived(pending.request_id, pending.peer, pending.app_id, payload),
            droppable=False,
        )
        return True

    def _on_open_response(
        self,
        pending: PendingCommand,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        pdu = decode_dsp_untrusted(payload, True)
        self._commands.finish(pending)
        peer = self._peers.touch(pending.peer, now)
        if isinstance(pdu, DspOpenResponse):
            peer.applications = pdu.app_ids
            peer.move(PeerInput.OPEN_ANSWERED)
            self._emit_event(
                SessionOpened(pending.request_id, peer.address, pdu.app_ids), droppable=False
            )
        else:
            self._on_open_failed(
                pending, BrokenResourceError(f"peer {peer.address} refused DSP Open: {pdu!r}"), now
            )
        return True

    def _on_control_response(
        self,
        pending: PendingCommand,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        self._peers.touch(pending.peer, now)  # Terminate responses need no action
        return True

    # -- internals: peers ------------------------------------------------------------

    def _close_peer(self, peer: Peer, *, by_peer: bool, now: float) -> None:
        peer.move(PeerInput.CLOSE)
        error: DofError = (
            BrokenResourceError(f"peer {peer.address} terminated the session")
            if by_peer
            else ClosedResourceError(f"session with {peer.address} terminated by us")
        )
        self._commands.fail_where(peer.address, lambda p: not p.survives_close, error, now)
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
            self._commands.get(packet.op_count)
            if packet.op_id_type is OpIdType.IMPLIED_RECEIVER
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
            and security.channels.session(addr) is not None
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
        if pending.on_response is None:
            self._commands.finish(pending)
            self._peers.touch(addr, now)
        elif not self._commands.answered(pending, packet.payload, identity, permissions, now):
            # A late or repeated copy of a handshake's answer (a late Accept
            # must not end the Confirm that reuses the Rekey's operation id).
            self._counts["unmatched_responses"] += 1

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
                self._security.channels.on_sealed_tep_command(addr, payload, now)
                return
            # Handshakes keep their own per-operation state (a Confirm reuses
            # the Rekey's operation id); no state for unvalidated addresses.
            self._security.responder.on_tep_command(addr, op, payload, size, now)
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
        peer = self._peers.touch(addr, now)
        peer.move(PeerInput.PEER_SPEAKS)
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
        peer: Peer,
        op: int | None,
        now: float,
        size: int,
        identity: OID | None = None,
    ) -> None:
        match pdu:
            case DspOpen():
                peer.move(PeerInput.PEER_OPENS)
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
        peer: Peer,
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
        peer: Peer,
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
