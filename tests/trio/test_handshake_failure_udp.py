"""A failed handshake through the async API over UDP on 127.0.0.1 (issue 9,
Build 2): the caller's request raises the diagnosed error itself, the
requestor logs it at WARNING, and the provider hands the handshake it answered
to its handshake failure handler and logs it at INFO."""

from __future__ import annotations

import logging
import random

import pytest
import trio

import dofpy
from dofpy.session.node import IncomingHandshakeFailed
from dofpy.testing import LocalDomain, open_secure_node
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID, Thermostat
from dofpy.testing.secure import CLIENT_ID, DOMAIN_OID, PROVIDER_ID, thermostat_grant


async def test_wrong_device_secret_raises_its_cause_and_both_sides_log_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    local = LocalDomain(DOMAIN_OID, rng=random.Random(5).randbytes)
    local.enrol(PROVIDER_ID, thermostat_grant("p"))
    local.enrol(CLIENT_ID, thermostat_grant("rwxs"))
    failures: list[IncomingHandshakeFailed] = []
    got_failure = trio.Event()

    def failed(event: IncomingHandshakeFailed) -> None:
        failures.append(event)
        got_failure.set()

    caplog.set_level(logging.INFO, logger="dofpy")
    with trio.fail_after(20):
        async with (
            open_secure_node(local, PROVIDER_ID, handshake_timeout=1.0) as provider,
            open_secure_node(
                local, CLIENT_ID, secret=bytes(range(32)), handshake_timeout=1.0
            ) as requestor,
        ):
            provider.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())
            provider.set_handshake_failure_handler(failed)
            with pytest.raises(dofpy.SecureSessionTimeout) as info:
                await requestor.get(
                    provider.local_address, THERMOSTAT_OID, THERMOSTAT, "temperature"
                )
            await got_failure.wait()
    error = info.value
    assert isinstance(error, dofpy.DofTimeoutError)
    assert error.cause is dofpy.SecureSessionCause.ACCEPT_NOT_VERIFIED
    assert "did not verify with this node's identity secret" in str(error)
    (failure,) = failures
    assert failure.claimed_identity == CLIENT_ID
    assert failure.error.cause is dofpy.SecureSessionCause.NO_CONFIRM
    warnings = [
        r for r in caplog.records if r.name == "dofpy.node" and r.levelno == logging.WARNING
    ]
    assert any(
        "did not verify with this node's identity secret" in r.getMessage() for r in warnings
    )
    infos = [r for r in caplog.records if r.name == "dofpy.node" and r.levelno == logging.INFO]
    assert any("sent no Confirm after this node's Accept" in r.getMessage() for r in infos)
