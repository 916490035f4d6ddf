"""Smoke tests of the benchmark peers and the lossy proxy: small, bounded, over loopback.

Each peer must move a 64 KiB file intact; the proxy must drop about the configured share
with a fixed seed. Peers whose package or tool is absent are skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import trio

from benchmarks import peers
from benchmarks._util import Result, Target, check_targets, format_table
from benchmarks.lossy_proxy import ProxyConfig, ProxyStatistics, open_lossy_proxy

SIZE = 64 * 1024

needs_tftpy = pytest.mark.skipif(
    importlib.util.find_spec("tftpy") is None, reason="tftpy not installed (the bench extra)"
)
needs_aioquic = pytest.mark.skipif(
    importlib.util.find_spec("aioquic") is None, reason="aioquic not installed (the bench extra)"
)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return peers.make_test_file(tmp_path / "image.bin", SIZE, seed=7)


@pytest.mark.parametrize("datagram_size", [1200, 8192])
async def test_raw_trio_udp_moves_the_bytes(datagram_size: int) -> None:
    result = await peers.raw_trio_udp_async(SIZE, datagram_size, window=16, deadline=10)
    assert result.nbytes == SIZE
    assert result.extra["verified"] is True
    assert result.mb_per_s > 0


def test_raw_trio_udp_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError, match="datagram_size"):
        peers.raw_trio_udp(SIZE, 4)
    with pytest.raises(ValueError, match="window"):
        peers.raw_trio_udp(SIZE, 1200, window=0)


@needs_tftpy
def test_tftpy_moves_the_file(image: Path) -> None:
    result = peers.tftpy_transfer(image, deadline=20)
    assert result is not None
    assert (result.nbytes, result.extra["verified"]) == (SIZE, True)


@needs_tftpy
def test_tftpy_through_the_lossy_proxy(image: Path) -> None:
    # No loss but duplicates and reordering: the proxy must carry TFTP (which answers from a
    # new port) and tftpy must still get the file right.
    result = peers.tftpy_transfer(
        image, proxy=ProxyConfig(duplicate=0.05, reorder=0.05, seed=3), deadline=20
    )
    assert result is not None
    assert (result.nbytes, result.extra["verified"]) == (SIZE, True)
    assert result.extra["dropped"] == 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_moves_the_file(image: Path, tmp_path: Path) -> None:
    output = tmp_path / "download.bin"
    result = peers.http_curl(image, output=str(output), deadline=20)
    assert result is not None
    assert (result.nbytes, result.extra["verified"]) == (SIZE, True)
    assert output.read_bytes() == image.read_bytes()


@needs_aioquic
def test_aioquic_moves_the_file(image: Path) -> None:
    result = peers.aioquic_transfer(image, deadline=20)
    assert result is not None
    assert (result.nbytes, result.extra["verified"]) == (SIZE, True)


def _handled(stats: ProxyStatistics) -> int:
    """Datagrams the proxy has finished with towards the server (no reordering here)."""
    counts = stats.to_server
    return counts.forwarded - counts.duplicated + counts.dropped + counts.send_errors


async def _send_through_proxy(config: ProxyConfig, count: int) -> tuple[ProxyStatistics, int]:
    """Send ``count`` datagrams client -> proxy -> server; return the proxy's counts and how
    many the server got."""
    server = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    client = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    with server, client:
        await server.bind(("127.0.0.1", 0))
        await client.bind(("127.0.0.1", 0))
        host, port = server.getsockname()[:2]
        received = 0
        async with open_lossy_proxy((host, port), config) as proxy:
            with trio.fail_after(10):
                for index in range(count):
                    await client.sendto(index.to_bytes(4, "big"), proxy.address)
                    # Drain as we go so no socket buffer can overflow: the only loss is the
                    # proxy's.
                    while _handled(proxy.statistics()) <= index:
                        await trio.sleep(0)
                    while received < proxy.statistics().to_server.forwarded:
                        await server.recv(16)
                        received += 1
            return proxy.statistics(), received


async def test_proxy_drops_about_the_configured_share() -> None:
    stats, received = await _send_through_proxy(ProxyConfig(loss=0.1, seed=1), 2000)
    to_server = stats.to_server
    assert to_server.received == 2000
    assert 150 <= to_server.dropped <= 250
    assert to_server.forwarded == received == 2000 - to_server.dropped
    assert stats.clients == 1


async def test_proxy_decisions_follow_the_seed() -> None:
    first, _ = await _send_through_proxy(ProxyConfig(loss=0.2, duplicate=0.1, seed=5), 300)
    second, _ = await _send_through_proxy(ProxyConfig(loss=0.2, duplicate=0.1, seed=5), 300)
    assert first.to_server == second.to_server
    assert first.to_server.duplicated > 0


def test_proxy_config_refuses_bad_shares() -> None:
    with pytest.raises(ValueError, match="loss"):
        ProxyConfig(loss=1.5)


def test_format_table_prints_ratios_and_targets() -> None:
    results = [Result("raw", 2_000_000, 1.0), Result("dofpy", 1_000_000, 1.0, {"retx": 3})]
    targets = [Target("dofpy", "raw", 0.4), Target("dofpy", "raw", 0.6), Target("x", "raw", 1)]
    text = format_table(results, baseline="raw", targets=targets, skipped={"quic": "absent"})
    assert "0.500x" in text
    assert "retx=3" in text
    assert "quic: skipped (absent)" in text
    assert "0.50x, met" in text
    assert "0.50x, NOT met" in text
    assert "not measured" in text
    assert [check.met for check in check_targets(results, targets)] == [True, False, None]
