"""UDP segmentation / receive offload in the endpoint (UDP_SEGMENT, UDP_GRO) and its fallback.

Whatever the kernel offers, the same datagrams must arrive, intact and in order; on Linux
with offload, a run of equal-size datagrams to one peer goes out in fewer system calls.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any

import pytest
import trio

from dofpy._core import Address
from dofpy.trio._endpoint import open_udp_endpoint

LIMIT = 10.0


class Collector:
    """Keeps what it receives; sends what it is given."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.outgoing: list[tuple[bytes, Address]] = []

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.received.append(data)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.outgoing = self.outgoing, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def burst(count: int, size: int) -> list[bytes]:
    """``count`` datagrams of ``size`` bytes (numbered), then one shorter, then a longer one."""
    body = [(b"%05d" % i).ljust(size, b"x") for i in range(count)]
    return [*body, b"short tail", b"L" * (size + 100)]


async def exchange(datagrams: list[bytes], **options: Any) -> tuple[list[bytes], Any, Any]:
    receiver, sender = Collector(), Collector()
    with trio.fail_after(LIMIT):
        async with (
            open_udp_endpoint(receiver, **options) as receiving,
            open_udp_endpoint(sender, **options) as sending,
        ):
            sender.outgoing = [(d, receiving.local_address) for d in datagrams]
            sending.wakeup()
            while len(receiver.received) < len(datagrams):
                await trio.sleep(0.001)
            return receiver.received, sending.statistics(), receiving.statistics()


@pytest.mark.parametrize("offload", [True, False])
@pytest.mark.parametrize("size", [1100, 8300])
async def test_every_datagram_arrives_intact_and_in_order(offload: bool, size: int) -> None:
    datagrams = burst(150, size)
    received, sent_stats, received_stats = await exchange(datagrams, offload=offload)
    assert received == datagrams
    assert sent_stats.datagrams_sent == len(datagrams)
    assert received_stats.datagrams_received == len(datagrams)
    if not offload:
        assert not sent_stats.segmentation_offload and sent_stats.segmented_sends == 0
        assert not received_stats.receive_offload and received_stats.coalesced_receives == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="UDP_SEGMENT is Linux's")
async def test_linux_segments_runs_of_equal_datagrams() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with probe:
        try:
            probe.setsockopt(17, 103, 0)  # SOL_UDP, UDP_SEGMENT
        except OSError:
            pytest.skip("this kernel has no UDP_SEGMENT")
    datagrams = burst(150, 1100)
    received, sent_stats, _ = await exchange(datagrams, offload=True)
    assert received == datagrams
    assert sent_stats.segmentation_offload
    # 150 equal datagrams and a short tail fit 3 runs of at most 64; the long one alone.
    assert 1 <= sent_stats.segmented_sends <= 4


class NoSegmentationSocket(socket.socket):
    """A socket whose device cannot segment: every sendmsg fails with EIO, as a NIC
    without checksum offload answers."""

    attempts = 0

    def sendmsg(self, *args: Any, **kwargs: Any) -> int:
        NoSegmentationSocket.attempts += 1
        raise OSError(errno.EIO, "no segmentation here")


async def test_a_refused_segmented_send_falls_back_to_one_datagram_per_call() -> None:
    sock = NoSegmentationSocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    receiver, sender = Collector(), Collector()
    first, second = burst(20, 600), burst(20, 700)
    with trio.fail_after(LIMIT):
        async with (
            open_udp_endpoint(receiver, offload=True) as receiving,
            open_udp_endpoint(sender, sock=sock, offload=True) as sending,
        ):
            sender.outgoing = [(d, receiving.local_address) for d in first]
            sending.wakeup()
            sender.outgoing = [(d, receiving.local_address) for d in second]
            sending.wakeup()
            while len(receiver.received) < len(first) + len(second):
                await trio.sleep(0.001)
            stats = sending.statistics()
    assert receiver.received == first + second
    assert stats.send_errors == 0 and stats.segmented_sends == 0
    assert not stats.segmentation_offload  # given up after the first refusal
    assert NoSegmentationSocket.attempts <= 1
