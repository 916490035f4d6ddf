"""The Authenticator daemon on the real PostgreSQL while its connections are
killed (``pg_terminate_backend``, as a server restart or a failover would):
every TRP request is still answered — granted, or refused Internal Error at
once while the pool reconnects — the daemon keeps serving, and every grant
it answered has its audit line (no committed write lost)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import trio

from dofpy.wire.dpp import decode_frame_untrusted
from dofpy.wire.trp import RequestSessionResponse, TrpError, TrpReject, decode_trp_untrusted
from dofpy_services.authenticator.service import AUTHENTICATOR, AuthenticatorConfig
from dofpy_services.authenticator.store import open_store
from tests.services.test_authenticator import CLIENT, enrol, exchange, request
from tests.services.test_daemon_runner import WAIT, running

ATTEMPTS = 40  # requests after the kill, at most, for the pool to have reconnected


def terminate(admin_url: str, application_name: str) -> int:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
            " FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def outcome(answer: bytes) -> str:
    _, packet = decode_frame_untrusted(answer)
    response = decode_trp_untrusted(packet.payload, True)
    if isinstance(response, RequestSessionResponse):
        return "granted"
    assert isinstance(response, TrpReject), response
    assert response.error == TrpError.INTERNAL_ERROR, response
    return "internal-error"


async def test_authenticator_keeps_serving_through_killed_connections(
    postgres_url: str, postgres_admin_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name = f"dofpy-test-{secrets.token_hex(4)}"  # this test's sessions alone
    url = f"{postgres_url}&application_name={name}"
    enrol(url, capsys)
    # Probed with TRP in the clear: an explicit choice.
    settings = AuthenticatorConfig(listen=("127.0.0.1", 0), db=url, sealed_only=False)
    outcomes: list[str] = []
    async with running(AUTHENTICATOR, settings) as daemon:
        with trio.fail_after(WAIT):
            outcomes.append(outcome(await exchange(daemon.udp, request(CLIENT), 1)))
        killed = await trio.to_thread.run_sync(terminate, postgres_admin_url, name)
        for op in range(2, 2 + ATTEMPTS):
            with trio.fail_after(WAIT):
                outcomes.append(outcome(await exchange(daemon.udp, request(CLIENT), op)))
            if outcomes[-1] == "granted" and outcomes.count("granted") >= 3:
                break
            await trio.sleep(0.1)  # pacing while the pool reconnects, not an assertion
        await daemon.signals.send(15)
    assert killed >= 1
    assert outcomes[0] == "granted"
    assert outcomes.count("granted") >= 3, outcomes
    assert daemon.status == 0
    with open_store(url) as store:
        granted = [e for e in store.audit_log() if e.event == "trp-granted"]
    assert len(granted) == outcomes.count("granted")
