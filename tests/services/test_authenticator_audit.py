"""The Authenticator audits what it can see of refused and failed handshakes
(issue 9, Build 2): refusals that need no decision (TRP in the clear while
sealed only, over the rate), failed handshakes with itself, each kind bounded
so that unauthenticated traffic cannot fill the audit log; a refusal that was
decided is audited once, with its decision."""

from __future__ import annotations

from pathlib import Path

import trio

from dofpy.errors import SecureSessionCause, SecureSessionRefused, SecureSessionTimeout
from dofpy.security.crypto import build_rekey
from dofpy.session.node import AuthenticatorRequested, CommandReceived, IncomingHandshakeFailed
from dofpy.testing.secure import (
    AUTHENTICATOR_ADDRESS,
    CLIENT_ID,
    PROVIDER,
    PROVIDER_ID,
    SecureDomain,
    thermostat_grant,
)
from dofpy.wire.dpp import AppId
from dofpy.wire.security import KeyRequest, SecurityIdentity
from dofpy.wire.trp import RequestSessionCommand, TrpError, TrpReject
from dofpy_services.authenticator.daemon import (
    AUDIT_BUSY,
    AUDIT_CLEAR_REFUSED,
    AUDIT_HANDSHAKE_FAILED,
    AUDIT_RATE_LIMITED,
    AuditThrottle,
    AuthenticatorCore,
    TrpResponder,
    TrpShell,
)
from dofpy_services.authenticator.limits import RateLimit
from dofpy_services.authenticator.store import open_async_store, open_store
from tests.services.test_authenticator_hardening import (
    ATTACKER,
    FakeNode,
    Sink,
    clear_request,
    genuine_get,
)


def test_the_throttle_bounds_each_kind_and_says_how_many_it_left_out() -> None:
    throttle = AuditThrottle(per_window=2, window=10.0)
    admitted = [throttle.admit("a", f"line {i}", float(i)) for i in range(5)]
    assert admitted == ["line 0", "line 1", None, None, None]
    # Another kind has its own budget.
    assert throttle.admit("b", "other", 4.0) == "other"
    # The next window: the first line written says how many were left out.
    assert throttle.admit("a", "line 10", 10.0) == "line 10 suppressed=3"
    assert throttle.admit("a", "line 11", 11.0) == "line 11"


def test_clear_trp_refusals_are_audited_bounded_and_name_the_fix() -> None:
    world = SecureDomain()
    audits: list[tuple[str, str]] = []
    core = AuthenticatorCore(
        world.authenticator,
        security=world.authenticator_security(),
        rate_limit=None,
        on_audit=lambda kind, detail, now: audits.append((kind, detail)),
    )
    world.net.add(core, AUTHENTICATOR_ADDRESS)
    sink = Sink()
    world.net.add(sink, ATTACKER)
    for op in range(100):
        world.net.inject(clear_request(world, CLIENT_ID, op), ATTACKER, AUTHENTICATOR_ADDRESS)
    assert world.net.run_until(lambda: len(sink.received) == 100, max_time=5)
    assert core.clear_refused == 100
    # At most 20 lines a minute however many come; each names the source and
    # the fix, never what was asked (nothing decided, nothing learnt).
    assert [kind for kind, _ in audits] == [AUDIT_CLEAR_REFUSED] * 20
    assert all(d.startswith(f"peer={ATTACKER[0]}:{ATTACKER[1]} ") for _, d in audits)
    assert all("seal_authenticator" in d and "console" not in d for _, d in audits)
    # The genuine sealed provider is still served, and its grant is not audited
    # here (the decision's audit is its maker's: on_decision / TrpShell).
    assert genuine_get(world)
    assert core.decisions == 1 and len(audits) == 20


def test_rate_limited_commands_and_handshakes_are_audited() -> None:
    world = SecureDomain()
    node = FakeNode(config=type("Config", (), {"security": world.authenticator_security()})())
    audits: list[tuple[str, str]] = []
    responder = TrpResponder(
        node,  # type: ignore[arg-type]
        world.authenticator,
        rate_limit=RateLimit(rate=1, burst=2, max_hosts=8),
        on_audit=lambda kind, detail, now: audits.append((kind, detail)),
    )
    command = RequestSessionCommand(
        world.domain.oid,
        KeyRequest(SecurityIdentity(PROVIDER_ID), bytes(16), thermostat_grant("p")),
        build_rekey(world.domain.oid, CLIENT_ID, bytes(16)).initiator,
    )
    for token in range(5):
        responder.on_event(AuthenticatorRequested(token, ATTACKER, command, 10.0), 0.0)
    responder.on_event(CommandReceived(ATTACKER, 9, AppId.TRP, b"\x00", 0), 0.0)
    assert responder.rate_limited == 4
    limited = [d for kind, d in audits if kind == AUDIT_RATE_LIMITED]
    assert len(limited) == 4
    assert sum("handshake refused High Load" in d for d in limited) == 3
    assert all(d.startswith(f"peer={ATTACKER[0]}:") for d in limited)


def test_commands_answered_high_load_for_a_full_queue_are_audited() -> None:
    world = SecureDomain()
    node = FakeNode(config=type("Config", (), {"security": world.authenticator_security()})())
    audits: list[tuple[str, str]] = []
    responder = TrpResponder(
        node,  # type: ignore[arg-type]
        world.authenticator,
        rate_limit=None,
        on_command=lambda command: False,  # the shell is full
        on_audit=lambda kind, detail, now: audits.append((kind, detail)),
    )
    command = RequestSessionCommand(
        world.domain.oid,
        KeyRequest(SecurityIdentity(PROVIDER_ID), bytes(16), thermostat_grant("p")),
        build_rekey(world.domain.oid, CLIENT_ID, bytes(16)).initiator,
    )
    responder.on_event(AuthenticatorRequested(1, PROVIDER, command, 10.0), 0.0)
    reason = "reason=the decision queue is full (High Load)"
    assert audits == [(AUDIT_BUSY, f"peer={PROVIDER[0]}:{PROVIDER[1]} {reason}")]
    assert node.answers[0][1] == TrpReject(TrpError.HIGH_LOAD)


def _failure(cause: SecureSessionCause) -> IncomingHandshakeFailed:
    error = (
        SecureSessionTimeout(PROVIDER, cause, f"handshake from 10.1.0.1:3567 failed: {cause.value}")
        if cause is SecureSessionCause.NO_CONFIRM
        else SecureSessionRefused(PROVIDER, cause, "refused: ACCESS_DENIED", 0xC1)
    )
    return IncomingHandshakeFailed(PROVIDER, PROVIDER_ID, error)


def test_failed_handshakes_are_audited_and_decided_refusals_only_once() -> None:
    world = SecureDomain()
    audits: list[tuple[str, str]] = []

    def responder(defer: bool) -> TrpResponder:
        security = world.authenticator_security(
            **({"defer_authenticator": True, "local_authenticator": None} if defer else {})
        )
        node = FakeNode(config=type("Config", (), {"security": security})())
        return TrpResponder(
            node,  # type: ignore[arg-type]
            world.authenticator,
            on_audit=lambda kind, detail, now: audits.append((kind, detail)),
        )

    deferring = responder(defer=True)
    deferring.on_handshake_failed(_failure(SecureSessionCause.NO_CONFIRM), 0.0)
    # Refused by a decision: the decision's own audit row says so already.
    deferring.on_handshake_failed(_failure(SecureSessionCause.AUTHENTICATOR_REFUSED), 0.0)
    assert [kind for kind, _ in audits] == [AUDIT_HANDSHAKE_FAILED]
    detail = audits[0][1]
    assert f"peer={PROVIDER[0]}:{PROVIDER[1]} initiator={PROVIDER_ID} cause=no-confirm" in detail
    # Keyed in-process, nobody else audits the decision: the refusal is audited.
    responder(defer=False).on_handshake_failed(
        _failure(SecureSessionCause.AUTHENTICATOR_REFUSED), 0.0
    )
    assert [kind for kind, _ in audits] == [AUDIT_HANDSHAKE_FAILED] * 2
    assert "cause=authenticator-refused" in audits[1][1]


async def test_the_shell_writes_queued_audit_lines_to_the_store(tmp_path: Path) -> None:
    db = tmp_path / "as.db"
    world = SecureDomain()

    async def in_thread(function: object, *args: object) -> object:
        return await trio.to_thread.run_sync(function, *args)  # type: ignore[arg-type]

    async with open_async_store(db) as store:
        shell = TrpShell(world.authenticator, store, in_thread)
        shell.audit_soon(AUDIT_HANDSHAKE_FAILED, "peer=10.1.0.1:3567 cause=no-confirm", 0.0)
        shell.audit_soon(AUDIT_CLEAR_REFUSED, "peer=10.6.6.6:40000 reason=clear", 0.0)
        assert shell.in_flight.count == 2
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shell.run, None, lambda: None, 1)
            with trio.fail_after(10):
                await shell.in_flight.wait_idle()
            nursery.cancel_scope.cancel()
    with open_store(db) as sync:
        entries = [(e.event, e.detail) for e in sync.audit_log()]
    assert entries[-2:] == [
        (AUDIT_HANDSHAKE_FAILED, "peer=10.1.0.1:3567 cause=no-confirm"),
        (AUDIT_CLEAR_REFUSED, "peer=10.6.6.6:40000 reason=clear"),
    ]
