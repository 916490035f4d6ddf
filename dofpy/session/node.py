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

from collections import deque

from dofpy._core import Address
from dofpy.errors import (
    ClosedResourceError,
    DofError,
    DofTimeoutError,
    LocalProtocolError,
)
from dofpy.session._dedup import DuplicateCache
from dofpy.session._retry import RetryPolicy
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
from dofpy.session.inbound import Inbound
from dofpy.session.operations import PeerOperations
from dofpy.session.outbound import ALWAYS_PLAIN_APPS, PLAINTEXT_APPS, Outbound, Unset
from dofpy.session.peers import PeerState
from dofpy.session.secure_tables import SecureTables
from dofpy.wire._codec import C4_MAX
from dofpy.wire.dpp import (
    DppPacket,
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


def _payload_size(packet: DppPacket) -> int:
    return len(packet.payload)


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
        self._events: deque[NodeEvent] = deque()
        # Keyed by (address, authenticated identity or None, operation id).
        self._duplicates: DuplicateCache[DppPacket] = DuplicateCache(
            self.config.duplicate_entries,
            self.config.duplicate_lifetime,
            max_bytes=self.config.duplicate_bytes,
            weigh=_payload_size,
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
                "events_dropped",
                "commands_refused",
                "responses_wrong_identity",
                "responses_withheld",
            ),
            0,
        )
        self._out = Outbound(self._duplicates, self._counts, fast_paths=self.config.fast_paths)
        self._commands = CommandTable(
            limit=self.config.max_pending_commands,
            retry=self.config.retry,
            first_op=first_op,
            rng=None if security is None else security.rng,
            emit=self._out.emit_command,
            describe_timeout=self._timed_out,
            on_timeout=self._retire_silent_session,
        )
        self._operations = PeerOperations(self.config, self._commands, self._out, self._emit_event)
        self._security = (
            None
            if security is None
            else SecureTables(
                security,
                self._commands,
                send=self._out.send,
                send_plain_response=self._out.send_plain_response,
                report=self._on_report,
                expected_identities=self._expected_identities,
            )
        )
        self._out.security = self._security
        # The identity of the current secure session at each address.
        self._session_identities: dict[Address, OID] = {}
        self._inbound = Inbound(
            self.config,
            self._counts,
            self._commands,
            self._operations,
            self._out,
            self._security,
            self._duplicates,
            self._emit_event,
        )

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
        self._inbound.command_handler = handler

    # -- DatagramCore ------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._inbound.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = self._out.take()
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
        # The command table acts only on what its own timer says is due.
        if (due := self._commands.get_timer()) is not None and due <= now:
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
            duplicate_cache_bytes=self._duplicates.bytes,
            peers=len(self._operations.peers),
            pending_commands=len(self._commands),
            security=None if self._security is None else self._security.statistics(),
        )

    def peer_state(self, peer: Address) -> PeerState:
        known = self._operations.peers.get(peer)
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
        identity: OID | Unset | None = Unset.CURRENT,
    ) -> None:
        """Answer the command ``op_count`` from ``peer``; duplicates of the command
        will be answered with this same response (sealed anew when secure).

        ``identity`` is the one the command came from (its
        :class:`CommandReceived` ``identity``; ``None`` for a command in the
        clear): the response is sent only inside a secure session with that
        identity, and remembered for its duplicates only. Left out, it is the
        identity of the current session with ``peer``."""
        self._out.respond(peer, op_count, app_id, payload, now, limit=None, identity=identity)

    def response_size(self, peer: Address, op_count: int, app_id: int, payload: bytes) -> int:
        """How long the datagram :meth:`send_response` would send ``peer`` now
        is, at most (sealed when a secure session with ``peer`` exists); compare
        it with ``config.max_datagram`` before answering."""
        return self._out.response_size(peer, op_count, app_id, payload)

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
        return self._operations.ping(peer, now)

    def open_session(self, peer: Address, now: float) -> int:
        """Send a DSP Open; :class:`SessionOpened` follows on success."""
        return self._operations.open_session(peer, now)

    def terminate_session(self, peer: Address, now: float) -> None:
        """Send a DSP Terminate and fail every command pending with ``peer``."""
        self._operations.terminate_session(peer, now)

    def send_heartbeat(self, peer: Address, now: float) -> None:
        """Send a DPP heartbeat (no response is expected)."""
        self._operations.send_heartbeat(peer, now)

    # -- internals: sending ----------------------------------------------------------

    def _silent_since(self, pending: PendingCommand) -> float | None:
        """When ``pending`` first went out, for a secured request with
        retransmissions whose peer's session has been silent since (nothing
        authenticated from it); else None."""
        security = self._security
        if security is None or pending.app_id in ALWAYS_PLAIN_APPS or pending.retry is None:
            return None
        since = pending.retry.started
        return since if security.channels.is_silent(pending.peer, since) else None

    def _retire_silent_session(self, pending: PendingCommand, now: float) -> None:
        """The command table's timeout hook. A timeout is the one sign that a
        secured peer lost its session keys (restarted): with nothing
        authenticated from it since the request went out, the session is
        retired (ChannelTable.retire_if_silent)."""
        since = self._silent_since(pending)
        if since is not None:
            assert self._security is not None
            self._security.channels.retire_if_silent(pending.peer, since, now)

    def _timed_out(self, pending: PendingCommand, attempts: int, now: float) -> DofTimeoutError:
        """Why ``pending`` got no answer (it only describes: the command table
        then calls :meth:`_retire_silent_session`): a session silent since it
        went out, which is retired; when it waited for a handshake of ours,
        that handshake's most likely cause (a :class:`SecureSessionTimeout`)."""
        security = self._security
        if security is not None and pending.app_id not in ALWAYS_PLAIN_APPS:
            if self._silent_since(pending) is not None:
                return DofTimeoutError(
                    f"no response from {pending.peer[0]}:{pending.peer[1]} to request"
                    f" {pending.request_id} after {attempts} attempts, and nothing"
                    " authenticated from it since: its secure session is retired (it may have"
                    " restarted) and the next request starts a new handshake"
                )
            session = security.channels.session(pending.peer)
            if session is None or (
                pending.identity is not None and session.peer_identity != pending.identity
            ):
                diagnosis = security.initiator.diagnose(pending.peer, now)
                if diagnosis is not None:
                    return diagnosis
        waiting = (
            " (no secure session with it yet: the handshake did not complete)"
            if self._out.unvalidated(pending.peer) and pending.app_id not in PLAINTEXT_APPS
            else ""
        )
        return DofTimeoutError(
            f"no response from {pending.peer[0]}:{pending.peer[1]} to request "
            f"{pending.request_id} after {attempts} attempts{waiting}"
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

    def _on_application_response(
        self,
        pending: PendingCommand,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        self._operations.peers.touch(pending.peer, now)
        self._emit_event(
            ResponseReceived(
                pending.request_id, pending.peer, pending.app_id, payload, identity, permissions
            ),
            droppable=False,
        )
        return True

    # -- internals: peers ------------------------------------------------------------

    # -- internals: receiving --------------------------------------------------------
