"""Identity binding through the async API over UDP on 127.0.0.1: a request
bound to the identity at the address is served, one bound to another identity
fails with PeerIdentityMismatch, and one bound to an identity not granted the
binding fails with ProviderNotPermitted."""

from __future__ import annotations

import random

import pytest
import trio

import dofpy
from dofpy.testing import LocalDomain, open_secure_node, open_secure_pair
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID, Thermostat
from dofpy.testing.secure import CLIENT_ID, DOMAIN_OID, PROVIDER_ID, thermostat_grant
from dofpy.wire.oid import OID

UNGRANTED_ID = OID(3, b"ungranted@example.org")


async def test_bound_requests_over_udp() -> None:
    local = LocalDomain(DOMAIN_OID, rng=random.Random(3).randbytes)
    local.enrol(PROVIDER_ID, thermostat_grant("p"))
    local.enrol(CLIENT_ID, thermostat_grant("rwxs"))
    local.enrol(UNGRANTED_ID)
    with trio.fail_after(20):
        async with (
            open_secure_pair(local, PROVIDER_ID, CLIENT_ID) as pair,
            open_secure_node(local, UNGRANTED_ID) as ungranted,
        ):
            pair.provider.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())
            ungranted.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())
            bound = THERMOSTAT.client(
                pair.requestor, pair.peer, THERMOSTAT_OID, identity=PROVIDER_ID
            )
            assert await bound.add(2, 3) == 5
            wrong = THERMOSTAT.client(
                pair.requestor, pair.peer, THERMOSTAT_OID, identity=UNGRANTED_ID
            )
            with pytest.raises(dofpy.PeerIdentityMismatch) as mismatch:
                await wrong.add(2, 3)
            assert (mismatch.value.expected, mismatch.value.actual) == (UNGRANTED_ID, PROVIDER_ID)
            assert await bound.temperature.get() == await pair.requestor.get(
                pair.peer, THERMOSTAT_OID, THERMOSTAT, "temperature"
            )
            with pytest.raises(dofpy.ProviderNotPermitted):
                await pair.requestor.invoke(
                    ungranted.local_address,
                    THERMOSTAT_OID,
                    THERMOSTAT,
                    "add",
                    2,
                    3,
                    identity=UNGRANTED_ID,
                )
            # Unbound, the same node answers (it is enrolled; nothing binds it).
            assert await pair.requestor.invoke(
                ungranted.local_address, THERMOSTAT_OID, THERMOSTAT, "add", 2, 3
            ) == (5,)
