"""The Authenticator daemon: an OAP node that also answers TRP commands.

:class:`TrpResponder` (sans-IO) takes the TRP commands an OAP node with TRP
among its applications hands up, and the Request Sessions of handshakes with
the Authenticator itself (``defer_authenticator``); it refuses at once what needs
no store, asks the :class:`~dofpy.security.authenticator.TrpAuthenticator` for the
rest (or hands them to a shell) and answers. :class:`AuthenticatorCore` is a
:class:`dofpy.DatagramCore` deciding on the spot, for the simulator.
:class:`TrpShell` is the daemon's trio side: decisions in worker threads,
audit lines batched; the service declaration
(:mod:`dofpy_services.authenticator.service`) puts it on the daemon framework.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

import trio

from dofpy._core import Address
from dofpy.errors import BadPacket, SecureSessionCause
from dofpy.oap.core import OapConfig, OapCore
from dofpy.security.authenticator import Decision, TrpAuthenticator
from dofpy.security.keylog import format_keylog_line as format_session_key_line
from dofpy.security.keylog import open_keylog
from dofpy.session.node import (
    AuthenticatorRequested,
    CommandReceived,
    IncomingHandshakeFailed,
    Node,
    NodeConfig,
    NodeStatistics,
    SecurityConfig,
)
from dofpy.wire.dpp import AppId
from dofpy.wire.oid import OID
from dofpy.wire.trp import (
    RequestSessionCommand,
    TrpError,
    TrpPdu,
    TrpReject,
    decode_trp_untrusted,
    encode_trp,
)
from dofpy_services.authenticator.limits import (
    DEFAULT_RATE_LIMIT,
    DEFAULT_SEALED_RATE_LIMIT,
    HostRateLimiter,
    RateLimit,
)
from dofpy_services.authenticator.store import (
    AsyncAuthenticatorStore,
    AuthenticatorStore,
    StoreError,
)
from dofpy_services.daemon.service import InFlight

__all__ = [
    "AUTHENTICATOR_APPLICATIONS",
    "AUTHENTICATOR_NODE",
    "AuditThrottle",
    "AuthenticatorCore",
    "TrpCommand",
    "TrpResponder",
    "TrpShell",
    "format_keylog_line",
    "open_keylog",
    "own_security",
]

logger = logging.getLogger("dofpy.daemon.authenticator")

AUTHENTICATOR_NODE = OID(3, b"authenticator")


@dataclass(frozen=True, slots=True)
class TrpCommand:
    """A TRP decision handed to the shell (see ``on_command``): it decides
    (``authenticator.decide(pdu)``, store lookups: in a worker thread) unless
    ``decision`` is already made (a refusal needing no store), then answers
    with :meth:`TrpResponder.answer`.

    Either a TRP command from ``peer`` (``op_count`` to answer it; ``identity``
    the responder its secure session authenticated, for a sealed command) or,
    with ``token``, the Request Session of a handshake with the Authenticator
    itself (a responder opening a sealed-TRP session: ``defer_authenticator``)."""

    peer: Address
    op_count: int | None
    pdu: TrpPdu | None
    decision: Decision | None
    identity: OID | None
    token: int | None = None


_CLEAR_REFUSAL = encode_trp(TrpReject(TrpError.ACCESS_DENIED))
"""The one answer to every TRP command in the clear while sealed-only: the
same bytes whatever was asked, so it tells nothing of who is enrolled,
revoked or granted what (two bytes of TRP: at most a byte more than the
smallest command, and rate-limited per host)."""

_NO_SEALED_TRP = (
    "a sealed-only Authenticator (the default) needs its own identity (security=): "
    "without one, answering TRP in the clear is an explicit choice (sealed_only=False)"
)


AUDIT_CLEAR_REFUSED = "trp-clear-refused"
"""Audit kind: TRP commands in the clear refused by a sealed-only Authenticator."""
AUDIT_RATE_LIMITED = "trp-rate-limited"
"""Audit kind: TRP commands or handshakes over a host's rate, dropped (or High Load)."""
AUDIT_BUSY = "trp-busy"
"""Audit kind: commands answered High Load because the decision queue was full."""
AUDIT_HANDSHAKE_FAILED = "handshake-failed"
"""Audit kind: a handshake with the Authenticator itself failed (its cause named)."""


class AuditThrottle:
    """Bounds the audit lines that unauthenticated traffic can cause.

    Anyone can send TRP in the clear, flood, or start a handshake from an
    address it holds: auditing each would let them fill the audit log. Of each
    kind at most ``per_window`` lines are written per ``window`` seconds; the
    rest are counted, and the next line of that kind after the window (its
    own, written) says how many were left out (``suppressed=N``). Sans-IO:
    ``admit`` takes the time and returns the detail to audit, or None.
    """

    def __init__(self, per_window: int = 20, window: float = 60.0) -> None:
        if per_window < 1 or window <= 0:
            raise ValueError("per_window must be >= 1 and window > 0")
        self._per_window = per_window
        self._window = window
        self._kinds: dict[str, _AuditWindow] = {}

    def admit(self, kind: str, detail: str, now: float) -> str | None:
        """The detail to audit for one ``kind`` event now (None: left out)."""
        state = self._kinds.get(kind)
        if state is None:
            state = self._kinds[kind] = _AuditWindow(now)
        if now - state.start >= self._window:
            state.start, state.written = now, 0
        if state.written >= self._per_window:
            state.left_out += 1
            return None
        state.written += 1
        left_out, state.left_out = state.left_out, 0
        return f"{detail} suppressed={left_out}" if left_out else detail


@dataclass(slots=True)
class _AuditWindow:
    start: float
    written: int = 0
    left_out: int = 0  # since the last line written


class TrpResponder:
    """The sans-IO TRP side of an Authenticator node: takes the node's TRP
    commands and its deferred authenticator requests (``on_event``), refuses at
    once what needs no store (a malformed command, a sealed request for
    another responder than the session's) and answers the rest with
    ``authenticator``.

    **Sealed only by default**: TRP in the clear would tell anyone who asks
    who is enrolled, revoked and granted what, and hand out grants (and audit
    rows) to unauthenticated askers. While ``sealed_only`` (the default; the
    node then needs a security configuration) a command in the clear is
    answered with one constant Access Denied, never decided, never handed to
    ``on_command`` (so never audited), and counted in ``clear_refused``.
    ``sealed_only=False`` answers TRP in the clear too: an explicit choice.

    **Rate-limited per host**: with ``rate_limit`` (on by default) every
    command and handshake first takes a token from its source host's bucket
    (:class:`~dofpy_services.authenticator.limits.HostRateLimiter`), a sealed
    command from its authenticated identity's (``sealed_rate_limit``); one
    finding it empty is dropped, counted in ``rate_limited`` (a handshake's
    Request Session is refused with High Load so that the node frees its
    half-open state at once). Other hosts are served meanwhile.
    ``on_unserved(reason)`` hears of each (``"clear"``, ``"rate-limited"``).

    **Audited**: with ``on_audit(kind, detail, now)`` every refusal that needs
    no decision (TRP in the clear while sealed only, over the rate, the
    decision queue full) and every failed handshake with this node
    (:meth:`on_handshake_failed`: no Confirm after the Accept, a mode mismatch,
    no answer in time...) becomes an audit line, bounded by an
    :class:`AuditThrottle` since anyone can cause them. Decisions are audited
    by whoever makes them (``on_decision``, :class:`TrpShell`).

    By default it decides each command as it arrives, calling the authenticator
    (and so its store) on the spot: right for the simulator and an in-memory
    store. With ``on_command`` it hands each over (a :class:`TrpCommand`) and
    the shell answers it later with :meth:`answer`, so that store lookups run
    off the event loop. When ``on_command`` returns False (the shell is full or
    draining) the command is answered at once with High Load.
    """

    def __init__(
        self,
        node: Node,
        authenticator: TrpAuthenticator,
        *,
        sealed_only: bool = True,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        sealed_rate_limit: RateLimit | None = DEFAULT_SEALED_RATE_LIMIT,
        on_command: Callable[[TrpCommand], bool] | None = None,
        on_decision: Callable[[Decision, Address, float], None] | None = None,
        on_unserved: Callable[[str], None] | None = None,
        on_audit: Callable[[str, str, float], None] | None = None,
        audit_throttle: AuditThrottle | None = None,
    ) -> None:
        if sealed_only and node.config.security is None:
            raise ValueError(_NO_SEALED_TRP)
        self._on_audit = on_audit
        self._throttle = audit_throttle or AuditThrottle()
        self._node = node
        self._authenticator = authenticator
        self._sealed_only = sealed_only
        self._limiter = None if rate_limit is None else HostRateLimiter(rate_limit)
        self._sealed_limiter = (
            None if sealed_rate_limit is None else HostRateLimiter(sealed_rate_limit)
        )
        self._on_command = on_command
        self._on_decision = on_decision
        self._on_unserved = on_unserved
        self.decisions = 0
        """Commands and handshakes answered by a decision (each one audited
        by the daemon)."""
        self.clear_refused = 0
        """TRP commands in the clear refused (sealed only)."""
        self.rate_limited = 0
        """Commands and handshakes dropped by the per-host rate limit."""

    @property
    def limiter(self) -> HostRateLimiter | None:
        """The per-host rate limiter (None when unlimited)."""
        return self._limiter

    def _allowed(self, event: CommandReceived | AuthenticatorRequested, now: float) -> bool:
        """A sealed command takes a token of its authenticated identity's
        bucket; anything else, of its source host's."""
        if isinstance(event, CommandReceived) and event.identity is not None:
            sealed = self._sealed_limiter
            return sealed is None or sealed.allow_key(str(event.identity), now)
        return self._limiter is None or self._limiter.allow(event.peer, now)

    def on_event(self, event: CommandReceived | AuthenticatorRequested, now: float) -> None:
        """One TRP command, or one handshake's Request Session, to answer."""
        if not self._allowed(event, now):
            self.rate_limited += 1
            self._unserved("rate-limited")
            sealed = event.identity if isinstance(event, CommandReceived) else None
            self._audit(
                AUDIT_RATE_LIMITED,
                f"peer={_host_port(event.peer)} reason=over the "
                + (f"rate limit of {sealed}" if sealed is not None else "per-host rate limit")
                + (
                    " (handshake refused High Load)"
                    if isinstance(event, AuthenticatorRequested)
                    else ""
                ),
                now,
            )
            if isinstance(event, AuthenticatorRequested):
                self._node.answer_authenticator(event.token, TrpReject(TrpError.HIGH_LOAD), now)
            return
        if isinstance(event, AuthenticatorRequested):
            command = TrpCommand(event.peer, None, event.command, None, None, event.token)
        elif event.identity is None and self._sealed_only:
            self.clear_refused += 1
            self._unserved("clear")
            self._audit(
                AUDIT_CLEAR_REFUSED,
                f"peer={_host_port(event.peer)} reason=TRP in the clear to a sealed-only"
                " Authenticator (the asker needs seal_authenticator)",
                now,
            )
            if event.op_count is not None:
                self._node.send_response(event.peer, event.op_count, AppId.TRP, _CLEAR_REFUSAL, now)
            return
        else:
            command = self._command(event)
        decision = command.decision
        if self._on_command is not None:
            if self._on_command(command):
                return
            decision = Decision(TrpReject(TrpError.HIGH_LOAD), False, "the authenticator is busy")
            self._audit(
                AUDIT_BUSY,
                f"peer={_host_port(event.peer)} reason=the decision queue is full (High Load)",
                now,
            )
        elif decision is None:
            assert command.pdu is not None
            decision = self._authenticator.decide(command.pdu)
        self.answer(command, decision, now)

    def on_handshake_failed(self, event: IncomingHandshakeFailed, now: float) -> None:
        """A handshake with this node failed: audit it (bounded). A refusal by a
        decision is audited with the decision already (deferred decisions, the
        daemon's), so it is not audited twice."""
        security = self._node.config.security
        if (
            event.error.cause is SecureSessionCause.AUTHENTICATOR_REFUSED
            and security is not None
            and security.defer_authenticator
        ):
            return
        self._audit(
            AUDIT_HANDSHAKE_FAILED,
            f"peer={_host_port(event.peer)} initiator={event.claimed_identity}"
            f" cause={event.error.cause.value} reason={event.error}",
            now,
        )

    def _audit(self, kind: str, detail: str, now: float) -> None:
        if self._on_audit is None:
            return
        admitted = self._throttle.admit(kind, detail, now)
        if admitted is not None:
            self._on_audit(kind, admitted, now)

    def _unserved(self, reason: str) -> None:
        if self._on_unserved is not None:
            self._on_unserved(reason)

    def _command(self, event: CommandReceived) -> TrpCommand:
        pdu: TrpPdu | None = None
        decision: Decision | None = None
        try:
            pdu = decode_trp_untrusted(event.payload, is_response=False)
        except BadPacket as exc:
            decision = self._authenticator.decide_bad_payload(exc)
        else:
            refusal = self._refusal(pdu, event.identity)
            if refusal is not None:
                decision = Decision(TrpReject(TrpError.ACCESS_DENIED), False, refusal)
        return TrpCommand(event.peer, event.op_count, pdu, decision, event.identity)

    def answer(self, command: TrpCommand, decision: Decision, now: float) -> None:
        """Send ``decision``'s response to ``command`` (the caller then wakes
        the endpoint) and report it to ``on_decision``."""
        self.decisions += 1
        if command.token is not None:
            self._node.answer_authenticator(command.token, decision.response, now)
        elif command.op_count is not None:
            # To the identity that asked only (a decision made in a worker
            # thread may come after another identity took the address).
            self._node.send_response(
                command.peer,
                command.op_count,
                AppId.TRP,
                encode_trp(decision.response),
                now,
                identity=command.identity,
            )
        if self._on_decision is not None:
            self._on_decision(decision, command.peer, now)

    @staticmethod
    def _refusal(pdu: TrpPdu, identity: OID | None) -> str | None:
        """Why a TRP command is refused before the authenticator decides, if it is."""
        if (
            identity is not None
            and isinstance(pdu, RequestSessionCommand)
            and pdu.responder.identity.node != identity
        ):
            return f"{identity} asked for a session as {pdu.responder.identity.node}"
        return None


AUTHENTICATOR_APPLICATIONS = (AppId.DSP, AppId.OAP, AppId.TRP, AppId.COMMON)
"""The DPP applications of an Authenticator node: TRP besides OAP (the daemon
object, health) and the common operations."""


class AuthenticatorCore:
    """A DatagramCore answering TRP commands with ``authenticator``, deciding on
    the spot (the simulator, in-memory stores; the daemon runs a
    :class:`TrpResponder` on its OAP node instead, deciding in worker threads).

    ``security`` is the Authenticator's own identity in the domain, keyed by
    ``authenticator`` itself as its ``local_authenticator`` (or ``defer_authenticator``,
    then its handshakes go through the responder and its rate limit too):
    responders talk TRP to it inside a secure session, and a sealed Request
    Session is granted only to the responder the session authenticated. TRP
    in the clear is refused unless ``sealed_only=False`` (which a core without
    ``security`` needs: it then answers in the clear, an explicit choice).
    ``rate_limit`` bounds the requests of each source host (see
    :class:`TrpResponder`).
    """

    def __init__(
        self,
        authenticator: TrpAuthenticator,
        on_decision: Callable[[Decision, Address, float], None] | None = None,
        node_id: OID = AUTHENTICATOR_NODE,
        *,
        security: SecurityConfig | None = None,
        sealed_only: bool = True,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        sealed_rate_limit: RateLimit | None = DEFAULT_SEALED_RATE_LIMIT,
        on_audit: Callable[[str, str, float], None] | None = None,
    ) -> None:
        if sealed_only and security is None:
            raise ValueError(_NO_SEALED_TRP)
        self._core = OapCore(
            OapConfig(
                node=NodeConfig(
                    node_id=node_id if security is None else security.identity,
                    applications=AUTHENTICATOR_APPLICATIONS,
                    security=security,
                )
            )
        )
        self.responder = TrpResponder(
            self._core.node,
            authenticator,
            sealed_only=sealed_only,
            rate_limit=rate_limit,
            sealed_rate_limit=sealed_rate_limit,
            on_decision=on_decision,
            on_audit=on_audit,
        )

    @property
    def decisions(self) -> int:
        """Commands and handshakes decided (see :class:`TrpResponder`)."""
        return self.responder.decisions

    @property
    def clear_refused(self) -> int:
        """TRP commands in the clear refused (sealed only)."""
        return self.responder.clear_refused

    @property
    def rate_limited(self) -> int:
        """Commands and handshakes dropped by the per-host rate limit."""
        return self.responder.rate_limited

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._core.receive_datagram(data, addr, now)
        self._drain(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self._core.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self._core.get_timer()

    def handle_timer(self, now: float) -> None:
        self._core.handle_timer(now)
        self._drain(now)

    def _drain(self, now: float) -> None:
        while (event := self._core.next_event()) is not None:
            if isinstance(event, AuthenticatorRequested) or (
                isinstance(event, CommandReceived) and event.app_id == AppId.TRP
            ):
                self.responder.on_event(event, now)
            elif isinstance(event, IncomingHandshakeFailed):
                self.responder.on_handshake_failed(event, now)

    def statistics(self) -> NodeStatistics:
        """The session layer's counters."""
        return self._core.node.statistics()


def format_keylog_line(decision: Decision) -> str:
    """One key-log line for a granted session (the format of
    :mod:`dofpy.security.keylog`, shared with every node's key log)."""
    if decision.session_key is None:
        raise ValueError("only a granted decision has a session key")
    return format_session_key_line(decision.session_key, decision.initiator, decision.responder)


def _host_port(peer: Address) -> str:
    return f"{peer[0]}:{peer[1]}"


def _audit_detail(decision: Decision, peer: Address) -> str:
    return (
        f"peer={peer[0]}:{peer[1]} initiator={decision.initiator}"
        f" responder={decision.responder} reason={decision.reason}"
    )


class TrpShell:
    """The trio side of a deferred :class:`TrpResponder`: takes each
    :class:`TrpCommand` (``on_command``), and in worker tasks decides it with
    ``authenticator.decide`` in a worker thread (store lookups, never on the
    loop), writes its audit record (batched with others, see
    :class:`~dofpy_services.authenticator.store.AsyncAuthenticatorStore`) and
    the key-log line, then answers it on the loop. Answering after the audit
    write keeps "no session granted without its audit record".

    At most ``max_pending`` commands wait; more, or any while ``accepting``
    is False (draining), are answered High Load by the responder. A store that
    fails (a lost PostgreSQL connection) gets the command answered Internal
    Error at once: the requestor hears of it instead of timing out.
    """

    def __init__(
        self,
        authenticator: TrpAuthenticator,
        store: AsyncAuthenticatorStore,
        in_thread: Callable[..., Awaitable[Any]],
        *,
        keylog: TextIO | None = None,
        max_pending: int = 1024,
        on_answer: Callable[[TrpCommand, Decision, float], None] | None = None,
        in_flight: InFlight | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._store = store
        self._in_thread = in_thread
        self._keylog = keylog
        self._on_answer = on_answer
        self._send, self._receive = trio.open_memory_channel[TrpCommand](max_pending)
        self._audit_send, self._audit_receive = trio.open_memory_channel[tuple[str, str]](
            max_pending
        )
        self.audit_dropped = 0
        """Audit lines of :meth:`audit_soon` dropped: the queue was full."""
        self.accepting = True
        self.in_flight = in_flight if in_flight is not None else InFlight()
        """Commands taken and not yet answered (a drain waits for them)."""

    def take(self, command: TrpCommand) -> bool:
        """The responder's ``on_command``."""
        if not self.accepting:
            return False
        try:
            self._send.send_nowait(command)
        except trio.WouldBlock:
            return False
        self.in_flight.begin()
        return True

    def audit_soon(self, kind: str, detail: str, now: float) -> None:
        """The responder's ``on_audit``: log the line now and queue it for the
        store (written by :meth:`run`, never on the receive path; a drain waits
        for it like for a command)."""
        logger.info("%s %s", kind, detail)
        try:
            self._audit_send.send_nowait((kind, detail))
        except trio.WouldBlock:
            self.audit_dropped += 1
        else:
            self.in_flight.begin()

    async def _write_audit(self) -> None:
        async for kind, detail in self._audit_receive:
            try:
                # The audit log keeps wall-clock time.
                await self._store.audit(time.time(), kind, detail)
            except StoreError as exc:
                logger.error("audit write failed (%s %s): %s", kind, detail, exc)
            finally:
                self.in_flight.end()

    async def _decide_and_record(self, command: TrpCommand) -> Decision:
        decision = command.decision
        if decision is None:
            assert command.pdu is not None
            decision = await self._in_thread(self._authenticator.decide, command.pdu)
        outcome = "granted" if decision.granted else "refused"
        # The audit log keeps wall-clock time.
        await self._store.audit(
            time.time(), f"trp-{outcome}", _audit_detail(decision, command.peer)
        )
        if self._keylog is not None and decision.session_key is not None:
            self._keylog.write(format_keylog_line(decision))
            self._keylog.flush()
        return decision

    async def run(self, responder: TrpResponder, wakeup: Callable[[], None], workers: int) -> None:
        """Answer commands with ``workers`` tasks until cancelled; ``wakeup``
        sends what the node has to send."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_audit)
            for _ in range(workers):
                nursery.start_soon(self._work, responder, wakeup)

    async def _work(self, responder: TrpResponder, wakeup: Callable[[], None]) -> None:
        async for command in self._receive:
            try:
                try:
                    decision = await self._decide_and_record(command)
                except StoreError as exc:
                    # The requestor hears of it now rather than timing out.
                    logger.error("trp store error: %s", exc)
                    decision = Decision(TrpReject(TrpError.INTERNAL_ERROR), False, str(exc))
                now = trio.current_time()
                responder.answer(command, decision, now)
                wakeup()
                if self._on_answer is not None:
                    self._on_answer(command, decision, now)
            finally:
                self.in_flight.end()


def own_security(
    store: AuthenticatorStore,
    domain: OID,
    node: OID,
    secret: bytes | None = None,
    *,
    authenticator: TrpAuthenticator | None = None,
) -> SecurityConfig:
    """The Authenticator's own :class:`SecurityConfig` as ``node`` of ``domain``
    (a blocking store lookup: call it in a worker thread). ``secret``, from a
    credentials file, must be the one the store derives for the node.

    Responders handshaking with it (sealed TRP) are keyed by the Authenticator
    itself: by ``authenticator`` on the spot when given (the simulator), else
    deferred (``defer_authenticator``: the node asks its application, which decides
    in a worker thread, so the loop never waits on the store)."""
    record = store.lookup(domain, node)
    if record is None or record.revoked:
        raise StoreError(f"{node} is not an active node of {domain}")
    if secret is not None and not hmac.compare_digest(secret, record.credential.secret):
        raise StoreError(f"the credentials of {node} are not its current identity secret")
    return SecurityConfig(
        domain=domain,
        identity=node,
        secret=record.credential.secret,
        rng=secrets.token_bytes,
        cookie_key=secrets.token_bytes(32),
        permissions=record.permissions,
        local_authenticator=authenticator,
        defer_authenticator=authenticator is None,
    )
