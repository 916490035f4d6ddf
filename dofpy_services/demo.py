"""End-to-end demo: a small fleet of device nodes and a console, over loopback UDP.

Each device is its own OpenDOF node (its own UDP socket) providing a ``Device``
interface: its type and firmware version (properties), ``label`` (writable),
``self_test`` (a method) and ``status`` (an event). The console opens a DSP
session with every device, reads their versions, relabels them, runs their
self-tests, registers for their status events and pings them; it prints a live
progress line and a closing table, and captures everything to a pcap file that
Wireshark (``tshark -d udp.port==PORT,dof``) decodes.

Run it with ``make demo`` or ``python -m dofpy_services.demo [--devices N]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import trio

from dofpy.oap.errors import ProviderException
from dofpy.oap.interface import (
    Event,
    ExceptionDef,
    Interface,
    Method,
    Param,
    Property,
    ValueType,
)
from dofpy.trio import DofNode, Provider, open_node
from dofpy.wire.oid import OID

DEVICE = Interface.define(
    "[1:{01000100}]",
    "Device",
    [
        Property(1, "device_type", ValueType.TEXT),
        Property(2, "version", ValueType.TEXT, observable=True),
        Property(3, "label", ValueType.TEXT, writable=True),
        Method(4, "self_test", (Param("depth", ValueType.INT),), (Param("ok", ValueType.BOOL),)),
        Event(5, "status", (Param("state", ValueType.TEXT),)),
        ExceptionDef(6, "TestFailed", (Param("component", ValueType.TEXT),)),
    ],
)


class DemoDevice(Provider):
    def __init__(self, index: int) -> None:
        self.index = index
        self.device_type = ("meter", "valve", "gateway")[index % 3]
        self.version = f"1.{index % 4}.0"
        self.label = f"unit-{index}"

    def get_device_type(self) -> str:
        return self.device_type

    def get_version(self) -> str:
        return self.version

    def get_label(self) -> str:
        return self.label

    def set_label(self, value: str) -> None:
        self.label = value

    def self_test(self, depth: int) -> bool:
        if self.index % 7 == 6 and depth > 1:
            raise ProviderException(DEVICE.exception("TestFailed"), ["flash"])
        return True


@dataclass
class Row:
    oid: OID
    address: tuple[str, int]
    device_type: str = "?"
    version: str = "?"
    label: str = "?"
    self_test: str = "?"
    status: str = "-"
    rtt_ms: float = 0.0
    steps: list[str] = field(default_factory=list)


async def manage(console: DofNode, row: Row, progress: list[int]) -> None:
    peer = row.address
    await console.open_session(peer)
    row.device_type = await console.get(peer, row.oid, DEVICE, "device_type")
    row.version = await console.get(peer, row.oid, DEVICE, "version")
    await console.set(peer, row.oid, DEVICE, "label", f"{row.device_type}-{peer[1]}")
    row.label = await console.get(peer, row.oid, DEVICE, "label")
    try:
        (ok,) = await console.invoke(peer, row.oid, DEVICE, "self_test", 2)
        row.self_test = "passed" if ok else "failed"
    except ProviderException as exc:
        row.self_test = f"{exc.definition.name}{exc.values}"
    row.rtt_ms = 1000 * await console.ping(peer)
    progress[0] += 1
    print(f"\r  managed {progress[0]:3}/{progress[1]} devices", end="", flush=True)


async def run_demo(devices: int, pcap: Path | None) -> int:
    print(f"dofpy demo: {devices} device nodes and one console on 127.0.0.1 (UDP)")
    async with AsyncExitStack() as stack:
        console = await stack.enter_async_context(open_node(pcap_path=pcap))
        nodes: list[DofNode] = []
        rows: list[Row] = []
        for index in range(devices):
            node = await stack.enter_async_context(open_node())
            oid = OID(3, f"device-{index}@demo.example".encode())
            node.provide(oid, DEVICE, DemoDevice(index))
            nodes.append(node)
            rows.append(Row(oid, node.local_address))
        progress = [0, devices]
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for row in rows:
                    nursery.start_soon(manage, console, row, progress)
            print()
            # Events: register with every device, then each reports a status.
            async with AsyncExitStack() as subs:
                streams = [
                    await subs.enter_async_context(
                        console.subscribe(row.address, row.oid, DEVICE, "status")
                    )
                    for row in rows
                ]
                for node, row in zip(nodes, rows, strict=True):
                    node.signal(row.oid, DEVICE, "status", f"ready ({row.version})")
                for stream, row in zip(streams, rows, strict=True):
                    (row.status,) = (await stream.receive()).values
        print()
        print(
            f"  {'device':31} {'type':8} {'version':8} {'label':14} {'self-test':22} "
            f"{'status':16} {'ping':>8}"
        )
        for row in rows:
            print(
                f"  {row.oid!s:31} {row.device_type:8} {row.version:8} {row.label:14} "
                f"{row.self_test:22} {row.status:16} {row.rtt_ms:6.2f}ms"
            )
        stats = console.statistics()
        print()
        print(
            f"  console: {stats.endpoint.datagrams_sent} datagrams sent, "
            f"{stats.endpoint.datagrams_received} received, "
            f"{stats.oap.node.retransmissions} retransmissions, "
            f"{stats.oap.node.bad_datagrams} bad datagrams, "
            f"{stats.oap.notifications_received} events received"
        )
        if pcap is not None:
            port = console.local_address[1]
            print(f"  capture: {pcap}  (tshark -r {pcap} -d udp.port=={port},dof)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="dofpy end-to-end demo")
    parser.add_argument("--devices", type=int, default=12, help="device nodes (default 12)")
    parser.add_argument(
        "--pcap", type=Path, default=Path("out/demo.pcap"), help="capture file (default out/)"
    )
    args = parser.parse_args(argv)
    if args.devices < 1:
        parser.error("--devices must be at least 1")
    args.pcap.parent.mkdir(parents=True, exist_ok=True)
    return trio.run(run_demo, args.devices, args.pcap)


if __name__ == "__main__":
    sys.exit(main())
