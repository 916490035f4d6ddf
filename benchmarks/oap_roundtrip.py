"""OAP Get round trips per second over loopback, beside raw trio UDP ping-pong
measured in the same run (the ceiling for a lock-step exchange in trio)."""

from __future__ import annotations

import time

import trio

from dofpy.oap.interface import Interface, Property, ValueType
from dofpy.trio import Provider, open_node
from dofpy.wire.oid import OID

COUNTER = Interface.define("[1:{01000077}]", "BenchCounter", [Property(1, "value", ValueType.INT)])
COUNTER_OID = OID(3, b"counter@bench.example")


class Counter(Provider):
    def get_value(self) -> int:
        return 7


async def oap_get_rate(count: int) -> float:
    async with open_node() as provider, open_node() as requestor:
        provider.provide(COUNTER_OID, COUNTER, Counter())
        peer = provider.local_address
        await requestor.get(peer, COUNTER_OID, COUNTER, "value")  # warm up
        start = time.perf_counter()
        for _ in range(count):
            await requestor.get(peer, COUNTER_OID, COUNTER, "value")
        return count / (time.perf_counter() - start)


async def raw_udp_rate(count: int) -> float:
    server = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    client = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    with server, client:
        await server.bind(("127.0.0.1", 0))
        await client.bind(("127.0.0.1", 0))
        target = server.getsockname()

        async def echo() -> None:
            while True:
                data, addr = await server.recvfrom(2048)
                await server.sendto(data, addr)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            payload = b"x" * 40
            start = time.perf_counter()
            for _ in range(count):
                await client.sendto(payload, target)
                await client.recvfrom(2048)
            elapsed = time.perf_counter() - start
            nursery.cancel_scope.cancel()
    return count / elapsed


async def run(count: int) -> list[tuple[str, float, str]]:
    raw = await raw_udp_rate(count)
    oap = await oap_get_rate(count)
    return [
        ("raw trio UDP ping-pong", raw, "round trips/s"),
        ("dofpy OAP Get (plaintext)", oap, "round trips/s"),
        ("dofpy / raw ratio", oap / raw, ""),
    ]
