"""Client proxies over real UDP sockets on 127.0.0.1: every kind of item."""

from __future__ import annotations

import pytest

from dofpy.oap.errors import ProviderException
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID, Thermostat
from dofpy.trio import open_node


async def test_a_proxy_gets_sets_invokes_subscribes_and_registers() -> None:
    thermostat = Thermostat()
    async with open_node() as provider, open_node() as requestor:
        provider.provide(THERMOSTAT_OID, THERMOSTAT, thermostat)
        thermo = THERMOSTAT.client(requestor, provider.local_address, THERMOSTAT_OID)
        assert await thermo.add(2, 3) == 5
        with pytest.raises(ProviderException) as overflow:
            await thermo.add(999, 3)
        assert overflow.value.definition.name == "Overflow"
        assert await thermo.temperature.get() == 21
        await thermo.label.set("kitchen")
        assert thermostat.label == "kitchen"
        assert await thermo.label.get() == "kitchen"
        async with (
            thermo.temperature.subscribe() as changes,
            thermo.alarm.register() as signals,
        ):
            provider.notify_change(THERMOSTAT_OID, THERMOSTAT, "temperature", 30)
            provider.signal(THERMOSTAT_OID, THERMOSTAT, "alarm", "too hot")
            assert (await changes.receive()).values == (30,)
            assert (await signals.receive()).values == ("too hot",)
        assert await thermo.count_calls() == 2
