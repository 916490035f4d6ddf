"""tshark as the wire oracle for tests: write datagrams to a pcap, run tshark,
report malformed packets, expert warnings and what was decoded.

A test that needs tshark calls ``require_tshark()``: it skips with a visible
reason on a developer's machine and fails when ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from dofpy.pcap import PCAP_GLOBAL_HEADER, pcap_record

PORT = 3567
WARNING_LEVEL = 6291456


def require_tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        message = "tshark not installed (apt-get install tshark)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " -- required when CI=true")
        pytest.skip(message)
    return path


@dataclass(frozen=True)
class Datagram:
    payload: bytes
    from_client: bool = True


@dataclass(frozen=True)
class OracleResult:
    problems: list[str]  # one line per malformed packet or expert warning
    protocols: list[str]  # frame.protocols per packet
    info: list[str]  # Info column per packet
    verbose: str  # full -V dump, for assertions on decoded fields


def write_pcap(path: Path, datagrams: Iterable[Datagram | bytes], port: int = PORT) -> None:
    client, server = ("127.0.0.1", 40001), ("127.0.0.1", port)
    with path.open("wb") as out:
        out.write(PCAP_GLOBAL_HEADER)
        for index, item in enumerate(datagrams):
            dg = item if isinstance(item, Datagram) else Datagram(item)
            src, dst = (client, server) if dg.from_client else (server, client)
            out.write(pcap_record(1_700_000_000 + index * 0.001, src, dst, dg.payload))


def run_tshark(pcap: Path, port: int = PORT, extra: Sequence[str] = ()) -> OracleResult:
    tshark = require_tshark()
    base = [tshark, "-n", "-r", str(pcap), "-2", "-d", f"udp.port=={port},dof", *extra]
    problems = subprocess.run(
        [
            *base,
            "-Y",
            f"_ws.malformed || _ws.expert.severity >= {WARNING_LEVEL}",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "_ws.col.Info",
            "-e",
            "_ws.expert.message",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    fields = subprocess.run(
        [*base, "-T", "fields", "-E", "separator=|", "-e", "frame.protocols", "-e", "_ws.col.Info"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    verbose = subprocess.run(
        [*base, "-V"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    protocols, info = [], []
    for line in fields:
        proto, _, col = line.partition("|")
        protocols.append(proto)
        info.append(col)
    return OracleResult([p for p in problems if p.strip()], protocols, info, verbose)


def check_datagrams(
    datagrams: Iterable[Datagram | bytes], extra: Sequence[str] = ()
) -> OracleResult:
    """Write the datagrams to a temporary pcap and run the oracle on it."""
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "check.pcap"
        write_pcap(pcap, datagrams)
        return run_tshark(pcap, extra=extra)
