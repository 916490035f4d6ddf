"""The responder side of TEP: stateless cookies, the half-open table, the
Authenticator's answer (over TRP, in-process, or deferred to the
application), Accept and Confirm.

It answers through ``send`` (plain TEP responses), asks a remote Authenticator
through the command table, installs the agreed key in the channel table and
reports what the application hears (:class:`IncomingHandshakeFailed`,
:class:`AuthenticatorRequested`); it never touches the node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dofpy._core import Address
from dofpy.errors import (
    BadPacket,
    DofError,
    PeerIdentityMismatch,
    SecureSessionCause,
    SecureSessionFailed,
    SecureSessionRefused,
)
from dofpy.security.authenticator import TicketRole, open_session_ticket
from dofpy.security.crypto import build_accept, verify_confirm
from dofpy.session.admission import plan_admission
from dofpy.session.channels import ChannelTable
from dofpy.session.commands import CommandTable, PendingCommand
from dofpy.session.config import SecurityConfig
from dofpy.session.events import AuthenticatorRequested, IncomingHandshakeFailed, Report
from dofpy.session.handshake import (
    AUTHENTICATOR_REJECT_CODE,
    COOKIE_REJECT_CODE,
    COOKIE_SIZE,
    HANDSHAKE_REJECT_CODE,
    MODE_REJECT_CODE,
    NONCE_SIZE,
    Handshake,
    HandshakeInput,
    HandshakeTable,
    Phase,
    cookie_valid,
    make_cookie,
    responder_wake_at,
    where,
)
from dofpy.session.initiator import Initiator
from dofpy.session.refusals import (
    ASKED_IN_CLEAR,
    AUTHENTICATOR_TROUBLE,
    TICKET_INVALID,
    incoming_refusal,
    mode_mismatch,
    responder_timed_out,
)
from dofpy.wire.dpp import AppId
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet
from dofpy.wire.security import KeyRequest, SecurityIdentity
from dofpy.wire.tep import (
    ResponderInit,
    TepAccept,
    TepConfirm,
    TepConfirmAck,
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

__all__ = ["Responder"]

logger = logging.getLogger("dofpy.session.handshake")

# A responder waits this share of its handshake timeout for its Authenticator,
# then refuses the handshake naming why: the initiator (whose timeout is
# normally the same) hears the cause before its own deadline.
_AUTHENTICATOR_SHARE = 2 / 3


SendResponse = Callable[[Address, int, int, bytes, "int | None"], bool]
"""``send(peer, op, app_id, payload, limit)``: a plain response; False when it
would be longer than ``limit`` (not sent)."""


class Responder:
    """The handshakes peers start with this node, by (address, operation id)."""

    def __init__(
        self,
        config: SecurityConfig,
        counts: dict[str, int],
        commands: CommandTable,
        channels: ChannelTable,
        initiator: Initiator,
        *,
        send: SendResponse,
        report: Report,
    ) -> None:
        self.config = config
        self._counts = counts
        self._commands = commands
        self._channels = channels
        self._initiator = initiator
        self._send = send
        self._report = report
        self._responding: HandshakeTable[tuple[Address, int]] = HandshakeTable(responder_wake_at)
        self.get_timer: Callable[[], float | None] = self._responding.next_wakeup
        """When a handshake is next due (asked after every datagram: the
        table's own method, without a call around it)."""
        # Keys of handshakes maybe still half-open: admission skips the finished
        # ones kept until their deadline (thousands at a high handshake rate).
        self._maybe_open: dict[tuple[Address, int], None] = {}
        self._authenticator_requests: dict[int, tuple[Address, int]] = {}
        # defer_authenticator: the handshakes waiting on the application, by token.
        self._deferred: dict[int, Handshake] = {}
        self._next_token = 1

    @property
    def half_open(self) -> int:
        return len(self._open_handshakes())

    def _open_handshakes(self) -> list[Handshake]:
        """The handshakes not DONE; a key whose handshake finished or went
        (both final) is pruned, once."""
        found = []
        for key in list(self._maybe_open):
            handshake = self._responding.get(key)
            if handshake is None or handshake.phase is Phase.DONE:
                del self._maybe_open[key]
            else:
                found.append(handshake)
        return found

    @property
    def authenticator_pending(self) -> int:
        return len(self._deferred)

    # -- TEP commands ------------------------------------------------------------------

    def on_tep_command(
        self, peer: Address, op: int | None, payload: bytes, received_size: int, now: float
    ) -> None:
        """A TEP command from ``peer``: Rekey (new or repeated) or Confirm."""
        if op is None:
            raise BadPacket("TEP command without an operation id")
        existing = self._responding.get((peer, op))
        pdu = decode_tep_untrusted(payload, is_response=False)
        match pdu:
            case TepRekey():
                if existing is not None:
                    if existing.accept is not None and existing.phase is Phase.ACCEPT_SENT:
                        self._reply(peer, op, existing.accept, now)
                    return  # still asking the authenticator: the Accept will come
                self._on_rekey(peer, op, pdu, received_size, now)
            case TepConfirm():
                if existing is not None and existing.phase is Phase.DONE:
                    self._reply(peer, op, TepConfirmAck(), now)
                    return
                if existing is None or existing.phase is not Phase.ACCEPT_SENT:
                    # Well-formed but out of place (a late retransmission after the
                    # handshake was forgotten, or a stray): ignored, not malformed.
                    self._counts["control_ignored"] += 1
                    state = "no handshake" if existing is None else existing.phase.value
                    logger.debug("TEP Confirm from %s ignored: %s", where(peer), state)
                    return
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
        if not cookie_valid(self.config, peer, identity, request.nonce, now):
            bucket = int(now // cfg.cookie_lifetime)
            if request.nonce[:COOKIE_SIZE] and len(request.nonce) == NONCE_SIZE:
                self._counts["cookies_rejected"] += 1
            if self._reject_small(
                peer,
                op,
                COOKIE_REJECT_CODE,
                make_cookie(self.config.cookie_key, peer, identity, bucket),
                received_size,
            ):
                self._counts["cookies_sent"] += 1
            return
        mismatch = mode_mismatch(rekey.initiator, self.config.tag_length)
        if mismatch is not None:
            # Refused here, named on both sides: a session whose two ends use
            # different tag lengths would fail every packet.
            self._counts["mode_mismatches"] += 1
            self._counts["handshakes_failed"] += 1
            self._reject_small(peer, op, MODE_REJECT_CODE, mismatch.encode(), received_size)
            self._report(
                IncomingHandshakeFailed(
                    peer,
                    identity,
                    SecureSessionRefused(
                        peer,
                        SecureSessionCause.MODE_MISMATCH,
                        f"handshake from {where(peer)} (claims {identity}) refused: it asked"
                        f" for another security mode: {mismatch}",
                        MODE_REJECT_CODE,
                    ),
                ),
                now,
            )
            return
        if not self._make_half_open_room(peer, identity, now):
            self._counts["half_open_refused"] += 1
            self._reject_small(peer, op, HANDSHAKE_REJECT_CODE, b"busy", received_size)
            return
        responder = KeyRequest(SecurityIdentity(cfg.identity), cfg.rng(NONCE_SIZE), cfg.permissions)
        command = RequestSessionCommand(cfg.domain, responder, rekey.initiator)
        handshake = Handshake(
            peer,
            Phase.ASKING_AUTHENTICATOR,
            now + cfg.handshake_timeout,
            rekey.initiator,
            op,
            command=command,
            responder=responder,
            started=now,
        )
        self._responding[(peer, op)] = handshake
        self._maybe_open[(peer, op)] = None
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
            self._report(AuthenticatorRequested(token, peer, command, handshake.deadline), now)
        elif cfg.authenticator is not None:
            request_id = self._commands.start(
                cfg.authenticator,
                AppId.TRP,
                encode_trp(command),
                now,
                on_response=self._on_trp_response,
                on_failure=self._on_trp_failure,
                unpredictable=True,
            )
            self._authenticator_requests[request_id] = (peer, op)
            handshake.trp_request = request_id
            handshake.ask_deadline = now + cfg.handshake_timeout * _AUTHENTICATOR_SHARE
            if self._responding.get((peer, op)) is handshake:
                self._responding.reschedule((peer, op))
        else:
            self._refuse_handshake(
                handshake,
                b"no authenticator configured",
                now,
                cause=SecureSessionCause.AUTHENTICATOR_FAILED,
                message=incoming_refusal(
                    handshake, "this node has no Authenticator (authenticator=...)"
                ),
            )

    def _make_half_open_room(self, peer: Address, identity: OID, now: float) -> bool:
        """Room for one more half-open handshake from ``peer`` claiming
        ``identity`` (the rules: :mod:`dofpy.session.admission`)."""
        cfg = self.config
        evict, admitted = plan_admission(
            self._open_handshakes(),
            peer[0],
            identity,
            max_half_open=cfg.max_half_open,
            max_per_source=cfg.max_half_open_per_source,
            draw=cfg.rng,
        )
        for handshake in evict:
            self._evict_half_open(handshake, now)
        return admitted

    def _evict_half_open(self, handshake: Handshake, now: float) -> None:
        self._counts["half_open_replaced"] += 1
        self._counts["handshakes_failed"] += 1
        handshake.move(HandshakeInput.FAIL)
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
            or handshake.phase is not Phase.ASKING_AUTHENTICATOR
            or self._responding.get((handshake.peer, handshake.rekey_op)) is not handshake
            or now >= handshake.deadline
        ):
            # A timed-out handshake is swept by handle_timer (and counted failed there).
            self._counts["authenticator_answers_ignored"] += 1
            return False
        self._on_authenticator_answer(handshake, answer, now)
        return True

    def _on_trp_response(
        self,
        pending: PendingCommand,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        # Ended whatever it says: a garbled answer refuses the handshake.
        self._commands.finish(pending)
        self._on_trp_answer(pending.request_id, payload, now)
        return True

    def _on_trp_answer(self, request_id: int, payload: bytes, now: float) -> None:
        key = self._authenticator_requests.pop(request_id, None)
        handshake = None if key is None else self._responding.get(key)
        if handshake is None or handshake.phase is not Phase.ASKING_AUTHENTICATOR:
            return
        try:
            pdu = decode_trp_untrusted(payload, True)
        except BadPacket:
            self._refuse_handshake(
                handshake,
                b"bad authenticator answer",
                now,
                cause=SecureSessionCause.AUTHENTICATOR_FAILED,
                message=incoming_refusal(handshake, "the Authenticator's answer is garbled"),
            )
            raise
        if not isinstance(pdu, RequestSessionResponse | TrpReject):
            self._refuse_handshake(
                handshake,
                b"bad authenticator answer",
                now,
                cause=SecureSessionCause.AUTHENTICATOR_FAILED,
                message=incoming_refusal(
                    handshake, f"the Authenticator answered with a {type(pdu).__name__}"
                ),
            )
            return
        self._on_authenticator_answer(handshake, pdu, now)

    def _on_trp_failure(self, pending: PendingCommand, error: DofError, now: float) -> None:
        request_id = pending.request_id
        key = self._authenticator_requests.pop(request_id, None)
        handshake = None if key is None else self._responding.get(key)
        if handshake is not None and handshake.phase is Phase.ASKING_AUTHENTICATOR:
            if isinstance(error, SecureSessionFailed):
                cause = error.cause.value
            elif isinstance(error, PeerIdentityMismatch):
                cause = "identity-mismatch"
            else:
                cause = SecureSessionCause.NO_ANSWER.value
            at = where(self.config.authenticator or ("?", 0))
            self._refuse_handshake(
                handshake,
                AUTHENTICATOR_TROUBLE + cause.encode(),
                now,
                cause=SecureSessionCause.AUTHENTICATOR_FAILED,
                message=incoming_refusal(
                    handshake, f"no answer from the Authenticator at {at}: {error}"
                ),
            )

    def _on_authenticator_answer(
        self, handshake: Handshake, answer: object, now: float, reason: str = ""
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
                description += ASKED_IN_CLEAR
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
                message=incoming_refusal(handshake, text),
            )
            return
        if not isinstance(answer, RequestSessionResponse):
            self._refuse_handshake(
                handshake,
                b"bad authenticator answer",
                now,
                cause=SecureSessionCause.AUTHENTICATOR_FAILED,
                message=incoming_refusal(
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
                TICKET_INVALID,
                now,
                cause=SecureSessionCause.TICKET_NOT_VERIFIED,
                message=incoming_refusal(
                    handshake,
                    "the Authenticator's ticket for this node did not verify with its identity"
                    f" secret: this node's secret ({self.config.identity}), or the"
                    " Authenticator's record of it, is wrong",
                ),
            )
            return
        ssid = self._channels.allocate_ssid(handshake.peer, handshake.block.request.identity.node)
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
        handshake.move(HandshakeInput.TICKETS)
        self._reply(handshake.peer, handshake.rekey_op, accept, now)

    def _on_confirm(self, handshake: Handshake, confirm: TepConfirm, now: float) -> None:
        accept = handshake.accept
        assert accept is not None and handshake.session_key is not None
        assert handshake.ssid is not None
        try:
            verify_confirm(confirm, handshake.session_key, handshake.block, accept)
        except BadPacket:
            # Forged, or a broken initiator: wait on for one that verifies.
            self._counts["authentication_failures"] += 1
            handshake.bad_confirms += 1
            logger.debug("TEP Confirm from %s did not verify", where(handshake.peer))
            raise
        handshake.move(HandshakeInput.CONFIRM_VERIFIED)
        # Keep the finished handshake until its deadline so that a repeated
        # Confirm is answered again, but not its key.
        session_key, handshake.session_key = handshake.session_key, None
        duration = max(accept.authenticator.granted_duration, 1) * 60.0
        self._reply(handshake.peer, handshake.rekey_op, TepConfirmAck(), now)
        assert session_key is not None
        self._channels.install(
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
        handshake: Handshake,
        reason: bytes,
        now: float,
        code: int = HANDSHAKE_REJECT_CODE,
        cause: SecureSessionCause | None = None,
        message: str = "",
    ) -> None:
        handshake.move(HandshakeInput.FAIL)
        self._counts["handshakes_failed"] += 1
        self._forget_handshake(handshake)
        self._reply(handshake.peer, handshake.rekey_op, TepReject(code, reason[:64]), now)
        if cause is not None:
            self._incoming_failed(
                handshake, SecureSessionRefused(handshake.peer, cause, message, code), now
            )

    def _incoming_failed(
        self, handshake: Handshake, error: SecureSessionFailed, now: float
    ) -> None:
        """Tell the application that a handshake we answered failed, and why."""
        claimed = handshake.block.request.identity.node
        logger.debug(
            "handshake from %s (claims %s) failed: %s", where(handshake.peer), claimed, error
        )
        self._report(IncomingHandshakeFailed(handshake.peer, claimed, error), now)

    def _authenticator_trouble(self, handshake: Handshake, now: float) -> tuple[str, str]:
        """Why the remote Authenticator has not answered ``handshake``'s Request
        Session: (a cause for the initiator's Reject, a message for our log)."""
        address = self.config.authenticator
        assert address is not None
        at = where(address)
        if self.config.seal_authenticator and self._channels.session(address) is None:
            ours = self._initiator.diagnose(address, now)
            if ours is not None:
                return ours.cause.value, (
                    f"the Authenticator at {at} gave no answer: this node's secure"
                    f" session with it is not up ({ours})"
                )
        sent = (
            0 if handshake.trp_request is None else self._commands.attempts(handshake.trp_request)
        )
        return SecureSessionCause.NO_ANSWER.value, (
            f"the Authenticator at {at} did not answer the Request Session"
            f" ({sent} sent in {now - handshake.started:.1f} s): is it running and reachable?"
        )

    def _authenticator_gave_no_answer(self, handshake: Handshake, now: float) -> None:
        """The share of the handshake timeout for the Authenticator is over:
        refuse now, naming why, rather than let the initiator time out blind."""
        if handshake.trp_request is not None:
            self._authenticator_requests.pop(handshake.trp_request, None)
            self._commands.cancel(handshake.trp_request)
        cause, text = self._authenticator_trouble(handshake, now)
        self._refuse_handshake(
            handshake,
            AUTHENTICATOR_TROUBLE + cause.encode(),
            now,
            cause=SecureSessionCause.AUTHENTICATOR_FAILED,
            message=incoming_refusal(handshake, text),
        )

    def _forget_handshake(self, handshake: Handshake) -> None:
        key = (handshake.peer, handshake.rekey_op)
        if self._responding.get(key) is handshake:
            del self._responding[key]
        if handshake.token is not None:
            self._deferred.pop(handshake.token, None)

    def _reply(self, peer: Address, op: int, pdu: object, now: float) -> None:
        assert isinstance(pdu, TepAccept | TepReject | TepConfirmAck)
        self._send(peer, op, AppId.TEP, encode_tep(pdu), None)

    def _reject_small(
        self, peer: Address, op: int, code: int, description: bytes, received_size: int
    ) -> bool:
        """Answer an unvalidated address, never with more bytes than it sent."""
        sent = self._send(
            peer, op, AppId.TEP, encode_tep(TepReject(code, description)), received_size
        )
        if not sent:
            self._counts["amplification_drops"] += 1
        return sent

    def handle_timer(self, now: float) -> None:
        for handshake in self._responding.due(now):
            if now >= handshake.deadline:
                if handshake.phase is not Phase.DONE:
                    self._counts["handshakes_failed"] += 1
                    trouble = (
                        self._authenticator_trouble(handshake, now)[1]
                        if handshake.phase is Phase.ASKING_AUTHENTICATOR and handshake.token is None
                        else ""
                    )
                    self._incoming_failed(
                        handshake, responder_timed_out(handshake, now, trouble), now
                    )
                self._forget_handshake(handshake)
            elif (
                handshake.phase is Phase.ASKING_AUTHENTICATOR
                and handshake.ask_deadline is not None
                and now >= handshake.ask_deadline
            ):
                self._authenticator_gave_no_answer(handshake, now)
