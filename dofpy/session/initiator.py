"""The initiator side of TEP: Rekey (with a cookie round), Accept, Confirm.

It sends through the command table (each Rekey and Confirm carries its own
response and failure handlers), installs the agreed key in the channel table
and reports a failure as :class:`HandshakeFailed`; it never touches the node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dofpy._core import Address
from dofpy.errors import (
    BadPacket,
    DofError,
    DofTimeoutError,
    PeerIdentityMismatch,
    SecureSessionCause,
    SecureSessionRefused,
    SecureSessionTimeout,
)
from dofpy.security.authenticator import TicketRole, open_session_ticket
from dofpy.security.crypto import build_confirm, build_rekey, session_key_from_accept
from dofpy.session.channels import ChannelTable
from dofpy.session.commands import CommandTable, PendingCommand
from dofpy.session.config import SecurityConfig
from dofpy.session.events import HandshakeFailed, Report
from dofpy.session.handshake import (
    COOKIE_REJECT_CODE,
    COOKIE_SIZE,
    HANDSHAKE_REJECT_CODE,
    MODE_REJECT_CODE,
    NONCE_SIZE,
    Handshake,
    HandshakeInput,
    HandshakeTable,
    Phase,
    initiator_wake_at,
    where,
)
from dofpy.session.refusals import initiator_timed_out, refused
from dofpy.wire.ccm import CcmOptions
from dofpy.wire.dpp import AppId
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet
from dofpy.wire.security import InitiatorBlock
from dofpy.wire.tep import TepAccept, TepConfirmAck, TepReject, decode_tep_untrusted, encode_tep
from dofpy.wire.trp import RequestSessionCommand

__all__ = ["Initiator"]

logger = logging.getLogger("dofpy.session.handshake")


class Initiator:
    """The handshakes this node starts, one per peer at most."""

    def __init__(
        self,
        config: SecurityConfig,
        counts: dict[str, int],
        commands: CommandTable,
        channels: ChannelTable,
        *,
        report: Report,
        expected_identities: Callable[[Address], set[OID]],
    ) -> None:
        self.config = config
        self._counts = counts
        self._commands = commands
        self._channels = channels
        self._report = report
        self._expected_identities = expected_identities
        self._running: HandshakeTable[Address] = HandshakeTable(initiator_wake_at)
        self.get_timer: Callable[[], float | None] = self._running.next_wakeup
        """When a handshake is next due (asked after every datagram: the
        table's own method, without a call around it)."""

    def handshaking(self, peer: Address) -> bool:
        return peer in self._running

    def ensure_session(self, peer: Address, now: float) -> None:
        """Start a handshake with ``peer`` unless one is running."""
        if peer in self._running:
            return
        self._start(peer, now, self.config.rng(NONCE_SIZE), cookie_rounds=0)

    def _start(
        self,
        peer: Address,
        now: float,
        nonce: bytes,
        cookie_rounds: int,
        cookie: bytes = b"",
        earlier: Handshake | None = None,
    ) -> None:
        block, op = self._send_rekey(peer, nonce, now)
        handshake = Handshake(
            peer,
            Phase.REKEY_SENT,
            now + self.config.handshake_timeout,
            block,
            op,
            cookie_rounds,
            cookie,
            started=now if earlier is None else earlier.started,
        )
        if earlier is not None:
            handshake.rekeys_sent = earlier.rekeys_sent + self._commands.attempts(earlier.rekey_op)
            handshake.bad_accepts = earlier.bad_accepts
        self._running[peer] = handshake
        if cookie_rounds == 0:
            self._counts["handshakes_started"] += 1

    def _send(self, peer: Address, payload: bytes, now: float, op: int | None = None) -> int:
        return self._commands.start(
            peer,
            AppId.TEP,
            payload,
            now,
            on_response=self._on_response,
            on_failure=self._on_command_failed,
            op=op,
            unpredictable=True,
            handshake=True,
        )

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
        return rekey.initiator, self._send(peer, encode_tep(rekey), now)

    def _retry_busy(self, handshake: Handshake, now: float) -> None:
        """Come back to a busy responder: a new Rekey (new nonce, same cookie)."""
        handshake.retry_at = None
        handshake.rekeys_sent += self._commands.attempts(handshake.rekey_op)
        nonce = (
            handshake.cookie + self.config.rng(NONCE_SIZE - COOKIE_SIZE)
            if handshake.cookie
            else self.config.rng(NONCE_SIZE)
        )
        handshake.block, handshake.rekey_op = self._send_rekey(handshake.peer, nonce, now)

    def _on_response(
        self,
        pending: PendingCommand,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        """A TEP response to one of our commands (Accept, Reject, Confirm Ack).

        True when it was the answer the handshake waited for (the command is
        done); False for a late or repeated copy, which is ignored.
        """
        peer = pending.peer
        handshake = self._running.get(peer)
        if handshake is None or handshake.rekey_op != pending.request_id:
            return False
        pdu = decode_tep_untrusted(
            payload, is_response=True, answers_rekey=handshake.phase is Phase.REKEY_SENT
        )
        match pdu:
            case TepReject(code=code, description=cookie) if (
                code == COOKIE_REJECT_CODE
                and handshake.phase is Phase.REKEY_SENT
                and len(cookie) == COOKIE_SIZE
                and handshake.cookie_rounds < 2
            ):
                del self._running[peer]
                nonce = cookie + self.config.rng(NONCE_SIZE - COOKIE_SIZE)
                self._start(
                    peer, now, nonce, handshake.cookie_rounds + 1, cookie, earlier=handshake
                )
            case TepReject(code=code, description=b"busy") if (
                code == HANDSHAKE_REJECT_CODE
                and handshake.phase in (Phase.REKEY_SENT, Phase.CONFIRM_SENT)
            ):
                self._on_busy(handshake, code, now)
            case TepReject() if handshake.phase is not Phase.REKEY_SENT:
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
                self._fail(handshake, refused(peer, code, description, self.config), now)
            case TepAccept() if handshake.phase is Phase.REKEY_SENT:
                self._on_accept(handshake, pdu, now)
            case TepConfirmAck() if handshake.phase is Phase.CONFIRM_SENT:
                self._establish(handshake, now)
            case _:
                return False
        return True

    def _on_busy(self, handshake: Handshake, code: int, now: float) -> None:
        peer = handshake.peer
        if handshake.phase is Phase.CONFIRM_SENT:
            # A full responder evicted our handshake after its Accept:
            # start over (same cookie) after the back-off.
            handshake.move(HandshakeInput.BUSY)
            handshake = Handshake(
                peer,
                Phase.REKEY_SENT,
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
            self._running[peer] = handshake
        else:
            handshake.move(HandshakeInput.BUSY)
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
                    f"no secure session with {where(peer)}: it stayed busy"
                    f" ({handshake.busy_rounds} Rejects 'busy'): it holds too many"
                    " half-open handshakes (a flood, or a slow Authenticator)",
                    code,
                ),
                now,
            )
        else:
            handshake.retry_at = retry_at
            if self._running.get(peer) is handshake:
                self._running.reschedule(peer)

    def _on_accept(self, handshake: Handshake, accept: TepAccept, now: float) -> None:
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
                where(handshake.peer),
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
        for expected in self._expected_identities(handshake.peer):
            if expected != actual:
                self._counts["identity_mismatches"] += 1
                self._fail(handshake, PeerIdentityMismatch(handshake.peer, expected, actual), now)
                return
        confirm = build_confirm(key, handshake.block, accept)
        handshake.accept = accept
        handshake.session_key = key
        handshake.ssid = accept.responder_init.ssid
        handshake.move(HandshakeInput.ACCEPT_VERIFIED)
        self._send(handshake.peer, encode_tep(confirm), now, op=handshake.rekey_op)

    def _establish(self, handshake: Handshake, now: float) -> None:
        accept = handshake.accept
        assert accept is not None and handshake.session_key is not None
        assert handshake.ssid is not None
        handshake.move(HandshakeInput.CONFIRM_ACKED)
        del self._running[handshake.peer]
        duration = max(accept.authenticator.granted_duration, 1) * 60.0
        self._channels.install(
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

    def _on_command_failed(self, pending: PendingCommand, error: DofError, now: float) -> None:
        """The Rekey or Confirm command itself timed out (or its peer went away)."""
        handshake = self._running.get(pending.peer)
        if handshake is not None and handshake.rekey_op == pending.request_id:
            if isinstance(error, DofTimeoutError):
                attempts = 0 if pending.retry is None else pending.retry.attempts
                error = initiator_timed_out(handshake, now, attempts, self.config)
            self._fail(handshake, error, now)

    def diagnose(self, peer: Address, now: float) -> SecureSessionTimeout | None:
        """The most likely reason the handshake with ``peer`` is not done yet
        (None when none is running): for commands that time out waiting for it."""
        handshake = self._running.get(peer)
        if handshake is None:
            return None
        attempts = self._commands.attempts(handshake.rekey_op)
        return initiator_timed_out(handshake, now, attempts, self.config)

    def _fail(self, handshake: Handshake, error: DofError, now: float) -> None:
        if handshake.finished:
            return
        logger.debug("handshake with %s failed: %s", where(handshake.peer), error)
        handshake.move(HandshakeInput.FAIL)
        self._counts["handshakes_failed"] += 1
        if self._running.get(handshake.peer) is handshake:
            del self._running[handshake.peer]
            current = self._channels.session(handshake.peer)
            # Only a new key failed: the current one still serves the commands
            # waiting (and a new key is sought again later) — except those
            # bound to another identity than its own, which were waiting for
            # this very handshake.
            kept = (
                current.peer_identity
                if current is not None and not current.channel.exhausted
                else None
            )
            self._report(HandshakeFailed(handshake.peer, error, kept), now)

    def abandon(self, peer: Address) -> None:
        """Stop the handshake with ``peer`` (its session is being ended)."""
        handshake = self._running.pop(peer)
        if handshake is not None:
            handshake.move(HandshakeInput.FAIL)
            self._commands.cancel(handshake.rekey_op)

    def handle_timer(self, now: float) -> None:
        for handshake in self._running.due(now):
            if now >= handshake.deadline:
                attempts = self._commands.attempts(handshake.rekey_op)
                self._fail(
                    handshake, initiator_timed_out(handshake, now, attempts, self.config), now
                )
            elif handshake.retry_at is not None and now >= handshake.retry_at:
                self._retry_busy(handshake, now)
