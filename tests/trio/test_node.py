"""The async OAP API over real UDP sockets on 127.0.0.1 (trio's MockClock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dofpy.errors import DofTimeoutError
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID, Thermostat
from dofpy.trio import open_node
from dofpy.wire.oid import OID


async def test_get_set_invoke_exception_ping() -> None:
    thermostat = Thermostat()
    async with open_node() as provider, open_node() as requestor:
        provider.provide(THERMOSTAT_OID, THERMOSTAT, thermostat)
        peer = provider.local_address
        await requestor.open_session(peer)
        assert await requestor.get(peer, THERMOSTAT_OID, THERMOSTAT, "temperature") == 21
        await requestor.set(peer, THERMOSTAT_OID, THERMOSTAT, "label", "kitchen")
        assert thermostat.label == "kitchen"
        assert await requestor.invoke(peer, THERMOSTAT_OID, THERMOSTAT, "add", 2, 3) == (5,)
        with pytest.raises(ProviderException) as info:
            await requestor.invoke(peer, THERMOSTAT_OID, THERMOSTAT, "add", 999, 3)
        assert info.value.definition.name == "Overflow"
        assert info.value.values == (1000,)
        rtt = await requestor.ping(peer)
        assert rtt >= 0
        with pytest.raises(OapError) as refused:
            await requestor.get(peer, OID(3, b"nobody@example.org"), THERMOSTAT, "temperature")
        assert refused.value.error_code is OapErrorCode.NOT_FOUND
        assert provider.statistics().oap.requests_refused == 1


async def test_subscribe_receives_events_and_changes() -> None:
    async with open_node() as provider, open_node() as requestor:
        provider.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())
        peer = provider.local_address
        async with (
            requestor.subscribe(peer, THERMOSTAT_OID, THERMOSTAT, "alarm") as alarms,
            requestor.subscribe(peer, THERMOSTAT_OID, THERMOSTAT, "temperature") as temps,
        ):
            assert provider.signal(THERMOSTAT_OID, THERMOSTAT, "alarm", "too hot") == 1
            assert provider.notify_change(THERMOSTAT_OID, THERMOSTAT, "temperature", 30) == 1
            first = await alarms.receive()
            change = await temps.receive()
        assert first.values == ("too hot",)
        assert first.missed == 0
        assert change.values == (30,)


async def test_request_to_silent_peer_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async with open_node() as requestor:
        silent = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        await silent.bind(("127.0.0.1", 0))
        with silent, pytest.raises(DofTimeoutError):
            await requestor.get(silent.getsockname(), THERMOSTAT_OID, THERMOSTAT, "temperature")
        assert requestor.statistics().oap.node.requests_timed_out == 1
