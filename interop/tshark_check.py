"""Interop check against Wireshark's DOF dissector.

Runs a provider and a requestor over loopback, capturing every datagram to a
pcap file, through DSP Open, OAP Provide, Get, Set, Invoke, Subscribe (property
changes), Register (events), an Exception and a DPP ping. Then runs ``tshark``
on the capture and fails on any malformed packet or expert warning.

``python -m interop.tshark_check [--pcap PATH] [--keep]``; exit status 0 only
when tshark decoded every packet cleanly. Without tshark it fails with the
command to install it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from dofpy.oap.errors import ProviderException
from dofpy.oap.interface import (
    EventDef,
    ExceptionDef,
    Interface,
    Method,
    Param,
    Property,
    ValueType,
)
from dofpy.testing.tshark import find_tshark
from dofpy.testing.tshark import run_tshark as oracle
from dofpy.trio import Provider, open_node
from dofpy.wire.oid import OID

SENSOR = Interface.define(
    "[1:{01000042}]",
    "InteropSensor",
    [
        Property(1, "reading", ValueType.INT, observable=True),
        Property(2, "label", ValueType.TEXT, writable=True),
        Method(3, "scale", (Param("factor", ValueType.INT),), (Param("scaled", ValueType.INT),)),
        EventDef(4, "alarm", (Param("reason", ValueType.TEXT),)),
        ExceptionDef(5, "OutOfRange", (Param("limit", ValueType.INT),)),
    ],
)
SENSOR_OID = OID(3, b"sensor@interop.example")


class Sensor(Provider):
    def __init__(self) -> None:
        self.reading = 17
        self.label = "lab"

    def get_reading(self) -> int:
        return self.reading

    def get_label(self) -> str:
        return self.label

    def set_label(self, value: str) -> None:
        self.label = value

    def scale(self, factor: int) -> int:
        if factor > 100:
            raise ProviderException(SENSOR.exception("OutOfRange"), [100])
        return self.reading * factor


async def exchange(pcap: Path) -> list[str]:
    """Run the scripted exchange, capturing at the provider; what it did."""
    done: list[str] = []
    async with (
        open_node(("127.0.0.1", 0), pcap_path=pcap) as provider,
        open_node(("127.0.0.1", 0)) as requestor,
    ):
        provider.provide(SENSOR_OID, SENSOR, Sensor())
        peer = provider.local_address
        with trio.fail_after(30):
            await requestor.open_session(peer)
            done.append("DSP open")
            provider.announce(requestor.local_address, SENSOR_OID, SENSOR)
            done.append("OAP provide")
            await requestor.ping(peer)
            done.append("DPP ping")
            assert await requestor.get(peer, SENSOR_OID, SENSOR, "reading") == 17
            done.append("OAP get")
            await requestor.set(peer, SENSOR_OID, SENSOR, "label", "field")
            done.append("OAP set")
            assert await requestor.invoke(peer, SENSOR_OID, SENSOR, "scale", 3) == (51,)
            done.append("OAP invoke")
            try:
                await requestor.invoke(peer, SENSOR_OID, SENSOR, "scale", 1000)
            except ProviderException:
                done.append("OAP exception")
            async with (
                requestor.subscribe(peer, SENSOR_OID, SENSOR, "reading") as readings,
                requestor.subscribe(peer, SENSOR_OID, SENSOR, "alarm") as alarms,
            ):
                done.append("OAP subscribe + register")
                for value in (18, 19):
                    provider.notify_change(SENSOR_OID, SENSOR, "reading", value)
                    assert (await readings.receive()).values == (value,)
                provider.signal(SENSOR_OID, SENSOR, "alarm", "threshold")
                assert (await alarms.receive()).values == ("threshold",)
                done.append("OAP change + signal events")
        # Every datagram was captured when the provider sent or received it;
        # the requestor has received the last one, so the capture is complete.
    return done


@dataclass(frozen=True)
class TsharkReport:
    packets: int
    problems: list[str]
    protocols: Counter[str]
    infos: list[str]


def run_tshark(pcap: Path, port: int, extra: Sequence[str] = ()) -> TsharkReport:
    tshark = find_tshark()
    if tshark is None:
        raise SystemExit(
            "tshark not found: apt-get update && "
            "DEBIAN_FRONTEND=noninteractive apt-get install -y tshark"
        )
    result = oracle(pcap, port, extra, tshark=tshark, verbose=False)
    protocols: Counter[str] = Counter()
    for stack, info in zip(result.protocols, result.info, strict=True):
        # frame.protocols names only some DOF layers (dof, dof.oap, dof.esp for
        # DSP); the Info column names the application: DSP, OAP, DPP, TEP...
        if "dof" in stack.split(":"):
            protocols[info.split(" ", 1)[0] or "?"] += 1
    return TsharkReport(result.packets, result.problems, protocols, result.info)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pcap", type=Path, help="where to write the capture (default: temp)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pcap = args.pcap or Path(tmp) / "interop.pcap"
        done = trio.run(exchange, pcap)
        port = _provider_port(pcap)
        report = run_tshark(pcap, port)
        print(f"exchange: {', '.join(done)}")
        print(f"capture: {pcap} ({report.packets} packets, provider port {port})")
        print(f"tshark decoded {report.packets} packets; DOF applications seen (by Info):")
        for name, count in sorted(report.protocols.items()):
            print(f"  {name:12} {count}")
        kinds = Counter(info.split(" [")[0].strip() for info in report.infos)
        print("Info column, by kind:")
        for info, count in sorted(kinds.items()):
            print(f"  {count:3}  {info}")
        print(f"malformed packets or warnings: {len(report.problems)}")
        for line in report.problems:
            print(f"  PROBLEM {line}")
        return 1 if report.problems or report.packets == 0 else 0


def _provider_port(pcap: Path) -> int:
    """The provider's UDP port: the capture is written at the provider, so it is
    the port common to every packet."""
    data = pcap.read_bytes()
    offset = 24  # pcap global header
    counts: Counter[int] = Counter()
    while offset + 16 <= len(data):
        length = int.from_bytes(data[offset + 8 : offset + 12], "little")
        packet = data[offset + 16 : offset + 16 + length]
        header = 20 if packet[0] >> 4 == 4 else 40
        counts[int.from_bytes(packet[header : header + 2], "big")] += 1
        counts[int.from_bytes(packet[header + 2 : header + 4], "big")] += 1
        offset += 16 + length
    port, _ = counts.most_common(1)[0]
    return port


if __name__ == "__main__":
    sys.exit(main())
