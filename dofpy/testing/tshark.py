"""tshark as the wire oracle: write datagrams to a pcap file, run tshark's DOF
dissector on it, and report malformed packets, expert warnings and what it
decoded. An independent implementation reading our bytes is the check that
encoders and decoders written together cannot give.

    result = check_datagrams([Datagram(request), Datagram(reply, from_client=False)])
    assert result.problems == []
    assert result.info == ["OAP Get ", "OAP Get Response "]

A test that needs tshark calls :func:`require_tshark` (``check_datagrams`` and
``run_tshark`` do it themselves): it skips with a visible reason on a
developer's machine and fails when ``CI=true``. Scripts outside pytest pass
the path of tshark (:func:`find_tshark`) to :func:`run_tshark` instead.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dofpy.pcap import PCAP_GLOBAL_HEADER, pcap_record
from dofpy.testing.external import unavailable

__all__ = [
    "PORT",
    "Datagram",
    "OracleResult",
    "check_datagrams",
    "find_tshark",
    "require_tshark",
    "run_tshark",
    "write_pcap",
]

PORT = 3567
"""The UDP port tshark is told carries DOF (``-d udp.port==PORT,dof``)."""

WARNING_LEVEL = 6291456  # _ws.expert.severity of "Warning" (and above: "Error")
INSTALL = "apt-get install tshark"
TIMEOUT = 120.0  # seconds for one tshark run: a hung tshark fails, never blocks


def find_tshark() -> str | None:
    """The path of the tshark executable, or ``None`` when it is not installed."""
    return shutil.which("tshark")


def require_tshark() -> str:
    """The path of tshark; skips the test without it (fails when ``CI=true``)."""
    path = find_tshark()
    if path is None:
        unavailable(f"tshark not installed ({INSTALL})")
    return path


@dataclass(frozen=True)
class Datagram:
    """One UDP payload, sent by the client (to :data:`PORT`) or by the server."""

    payload: bytes
    from_client: bool = True


@dataclass(frozen=True)
class OracleResult:
    """What tshark made of a capture, one entry per packet where listed."""

    problems: list[str]
    """One line per malformed packet or expert warning: frame, Info, message."""
    protocols: list[str]
    """``frame.protocols`` of each packet, e.g. ``raw:ip:udp:dof:dof.oap``."""
    info: list[str]
    """The Info column of each packet, e.g. ``OAP Get``."""
    verbose: str
    """The full ``-V`` dump, for assertions on decoded fields (empty unless asked)."""

    @property
    def packets(self) -> int:
        return len(self.protocols)


def write_pcap(path: Path, datagrams: Iterable[Datagram | bytes], port: int = PORT) -> None:
    """Write ``datagrams`` (bare bytes: from the client) to a pcap file, between
    127.0.0.1:40001 and 127.0.0.1:``port``, one millisecond apart."""
    client, server = ("127.0.0.1", 40001), ("127.0.0.1", port)
    with path.open("wb") as out:
        out.write(PCAP_GLOBAL_HEADER)
        for index, item in enumerate(datagrams):
            datagram = item if isinstance(item, Datagram) else Datagram(item)
            src, dst = (client, server) if datagram.from_client else (server, client)
            out.write(pcap_record(1_700_000_000 + index * 0.001, src, dst, datagram.payload))


def run_tshark(
    pcap: Path,
    port: int = PORT,
    extra: Sequence[str] = (),
    *,
    tshark: str | None = None,
    verbose: bool = True,
) -> OracleResult:
    """Run tshark on ``pcap``, DOF on UDP ``port``, with ``extra`` options (keys
    to decrypt with, for instance). ``tshark`` is its path (by default
    :func:`require_tshark`'s); ``verbose=False`` skips the ``-V`` dump, which
    is slow on large captures."""
    executable = tshark if tshark is not None else require_tshark()
    base = [executable, "-n", "-r", str(pcap), "-2", "-d", f"udp.port=={port},dof", *extra]
    problems = _run(
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
        ]
    ).splitlines()
    fields = _run(
        [*base, "-T", "fields", "-E", "separator=|", "-e", "frame.protocols", "-e", "_ws.col.Info"]
    ).splitlines()
    protocols, info = [], []
    for line in fields:
        stack, _, column = line.partition("|")
        protocols.append(stack)
        info.append(column)
    dump = _run([*base, "-V"]) if verbose else ""
    return OracleResult([p for p in problems if p.strip()], protocols, info, dump)


def check_datagrams(
    datagrams: Iterable[Datagram | bytes], extra: Sequence[str] = ()
) -> OracleResult:
    """Write the datagrams to a temporary pcap and run the oracle on it."""
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "check.pcap"
        write_pcap(pcap, datagrams)
        return run_tshark(pcap, extra=extra)


def _run(command: list[str]) -> str:
    return subprocess.run(  # noqa: S603 - a fixed argument list, no shell
        command, capture_output=True, text=True, check=True, timeout=TIMEOUT
    ).stdout
