"""Secure sessions: TEP handshakes per second, and secure versus plaintext OAP
Get round trips per second, measured in the same run over loopback.

Handshakes are measured with the sans-IO cores on the simulator (no network:
the cost of the cryptography and the protocol logic, both ends and the
Authenticator in one process) and over real UDP sockets with an in-process
Authenticator (one client node per handshake, each to the same provider).
"""

from __future__ import annotations

import time

import trio

from benchmarks.oap_roundtrip import COUNTER, COUNTER_OID, Counter
from dofpy.oap.core import OapConfig, OapCore
from dofpy.session.node import SecureSessionEstablished
from dofpy.testing import LocalDomain, Network, grant
from dofpy.trio import open_node
from dofpy.wire.oid import OID

DOMAIN = OID(6, b"bench.example")
PROVIDER_ID = OID(3, b"provider@bench.example")


class _World:
    def __init__(self, clients: int) -> None:
        self.local = LocalDomain(DOMAIN)
        self.local.enrol(PROVIDER_ID, grant("p", interface=COUNTER.iid))
        self.client_ids = [OID(3, f"client-{i}@bench.example".encode()) for i in range(clients)]
        for identity in self.client_ids:
            self.local.enrol(identity, grant("r", interface=COUNTER.iid))

    def config(self, identity: OID) -> OapConfig:
        return OapConfig(node=self.local.node_config(identity))


def sansio_handshakes(count: int) -> float:
    """Handshakes per second, both ends and the authenticator in one process."""
    world = _World(count)
    network = Network(1)
    provider = OapCore(world.config(PROVIDER_ID))
    network.add(provider, ("10.0.0.1", 3567))
    clients = []
    for index, identity in enumerate(world.client_ids):
        core = OapCore(world.config(identity))
        address = ("10.0.1.1", 10000 + index)
        network.add(core, address)
        clients.append((core, address))
    established = 0

    def done() -> bool:
        nonlocal established
        for core, _ in clients:
            while (event := core.next_event()) is not None:
                if isinstance(event, SecureSessionEstablished):
                    established += 1
        while provider.next_event() is not None:
            pass
        return established == count

    start = time.perf_counter()
    for core, address in clients:
        core.node.secure_session(("10.0.0.1", 3567), network.now)
        network.wakeup(address)
    network.run_until(done, max_time=600)
    elapsed = time.perf_counter() - start
    if established != count:
        raise RuntimeError(f"only {established} of {count} handshakes completed")
    return count / elapsed


async def udp_handshakes(count: int) -> float:
    """Handshakes per second over loopback UDP (sequential, one client each)."""
    world = _World(count)
    async with open_node(config=world.config(PROVIDER_ID)) as provider:
        provider.provide(COUNTER_OID, COUNTER, Counter())
        start = time.perf_counter()
        for identity in world.client_ids:
            async with open_node(config=world.config(identity)) as client:
                await client.secure_session(provider.local_address)
        return count / (time.perf_counter() - start)


async def get_rates(count: int) -> tuple[float, float]:
    """(plaintext, secure) OAP Get round trips per second, lock-step."""
    world = _World(1)

    async def measure(provider_config: OapConfig | None, client_config: OapConfig | None) -> float:
        async with (
            open_node(config=provider_config) as provider,
            open_node(config=client_config) as client,
        ):
            provider.provide(COUNTER_OID, COUNTER, Counter())
            peer = provider.local_address
            await client.get(peer, COUNTER_OID, COUNTER, "value")  # handshake / warm-up
            start = time.perf_counter()
            for _ in range(count):
                await client.get(peer, COUNTER_OID, COUNTER, "value")
            return count / (time.perf_counter() - start)

    plain = await measure(None, None)
    secure = await measure(world.config(PROVIDER_ID), world.config(world.client_ids[0]))
    return plain, secure


def run(quick: bool) -> list[tuple[str, float, str]]:
    handshakes = 50 if quick else 300
    gets = 500 if quick else 5000
    sansio = sansio_handshakes(handshakes)
    udp = trio.run(udp_handshakes, handshakes // 2)
    plain, secure = trio.run(get_rates, gets)
    return [
        ("TEP handshakes, sans-IO (both ends + AS)", sansio, "handshakes/s"),
        ("TEP handshakes over loopback UDP", udp, "handshakes/s"),
        ("OAP Get, plaintext", plain, "round trips/s"),
        ("OAP Get, AES-256-CCM session", secure, "round trips/s"),
        ("secure / plaintext ratio", secure / plain, ""),
    ]
