"""The trio UDP endpoint, driven by small toy cores written here.

Real sockets on loopback (port 0); time from trio, so the timer tests run under
``autojump_clock`` without waiting. No wall-clock sleeps: tests wait on events
set by the toy cores, bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import socket
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from dofpy._core import Address
from dofpy.errors import BadPacket, ClosedResourceError
from dofpy.pcap import PCAP_GLOBAL_HEADER, read_pcap_untrusted
from dofpy.testing.tshark import require_tshark
from dofpy.trio import PcapWriter
from dofpy.trio._endpoint import open_udp_endpoint
from dofpy.trio._endpoint_config import EndpointStatistics

LIMIT = 10  # seconds of real time a loopback test may take before it fails


class EchoCore:
    """Sends every datagram back to where it came from; rejects b"bad" with BadPacket."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Address]] = []
        self._outgoing: list[tuple[bytes, Address]] = []

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if data == b"bad":
            raise BadPacket("toy core rejects b'bad'")
        self.received.append((data, addr))
        self._outgoing.append((data, addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        raise AssertionError("EchoCore has no timer")


class ClientCore:
    """Sends what the test queues (then ``wakeup()``) and optionally retransmits.

    With ``retransmit_interval``, each queued datagram is sent again every
    interval until an echo of it arrives, at most ``max_sends`` times in all.
    ``on_change`` is called after every reply and every timer.
    """

    def __init__(
        self,
        retransmit_interval: float | None = None,
        max_sends: int = 1,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.replies: list[tuple[bytes, Address]] = []
        self.send_times: list[float] = []
        self.gave_up: list[bytes] = []
        self.interval = retransmit_interval
        self._max_sends = max_sends
        self.on_change = on_change
        self._new: list[tuple[bytes, Address]] = []
        self._pending: dict[bytes, tuple[Address, int, float]] = {}  # data -> (to, sends, due)
        self._due_now: list[tuple[bytes, Address]] = []

    def queue(self, data: bytes, addr: Address) -> None:
        self._new.append((data, addr))

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.replies.append((data, addr))
        self._pending.pop(data, None)
        self.on_change()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = self._due_now + self._new
        self._due_now, self._new = [], []
        for data, addr in out:
            self.send_times.append(now)
            if self.interval is not None:
                sends = self._pending.get(data, (addr, 0, 0.0))[1] + 1
                if sends < self._max_sends:
                    self._pending[data] = (addr, sends, now + self.interval)
                else:
                    self._pending.pop(data, None)
                    self.gave_up.append(data)
        return out

    def get_timer(self) -> float | None:
        return min((due for _, _, due in self._pending.values()), default=None)

    def handle_timer(self, now: float) -> None:
        for data, (addr, _sends, due) in list(self._pending.items()):
            if due <= now:
                self._due_now.append((data, addr))
        self.on_change()


def closed_port(family: socket.AddressFamily = socket.AF_INET) -> int:
    """A UDP port on loopback that nothing listens on (bound, then released)."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def dual_stack_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
    except OSError:
        return False
    return True


async def exchange(
    client_local: Address, server_local: Address, count: int, **options: object
) -> tuple[ClientCore, EchoCore, EndpointStatistics, EndpointStatistics]:
    """``count`` datagrams from a client endpoint to an echo endpoint and back."""
    done = trio.Event()
    client = ClientCore(on_change=lambda: done.set() if len(client.replies) >= count else None)
    server = EchoCore()
    with trio.fail_after(LIMIT):
        async with (
            open_udp_endpoint(server, server_local, **options) as server_endpoint,  # type: ignore[arg-type]
            open_udp_endpoint(client, client_local) as client_endpoint,
        ):
            for index in range(count):
                client.queue(b"ping %d" % index, server_endpoint.local_address)
            client_endpoint.wakeup()
            await done.wait()
            return client, server, client_endpoint.statistics(), server_endpoint.statistics()


async def test_two_endpoints_exchange_ipv4() -> None:
    client, server, client_stats, server_stats = await exchange(
        ("127.0.0.1", 0), ("127.0.0.1", 0), 50
    )
    sent = [b"ping %d" % index for index in range(50)]
    assert sorted(data for data, _ in client.replies) == sorted(sent)
    assert sorted(data for data, _ in server.received) == sorted(sent)
    client_addr = server.received[0][1]
    assert client_addr[0] == "127.0.0.1"
    assert all(addr == client_addr for _, addr in server.received)
    assert client_stats.datagrams_sent == 50
    assert client_stats.datagrams_received == 50
    assert client_stats.bytes_sent == sum(map(len, sent))
    assert server_stats.datagrams_received == server_stats.datagrams_sent == 50
    assert server_stats.datagrams_dropped == 0
    assert client_stats.send_errors == client_stats.receive_errors == 0


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
async def test_two_endpoints_exchange_ipv6() -> None:
    client, server, _, server_stats = await exchange(("::1", 0), ("::1", 0), 10)
    assert len(client.replies) == 10
    assert server.received[0][1][0] == "::1"
    assert all(addr[0] == "::1" for _, addr in client.replies)
    assert server_stats.datagrams_sent == 10


@pytest.mark.skipif(not dual_stack_available(), reason="no dual-stack IPv6 socket")
async def test_dual_stack_endpoint_talks_ipv4_with_plain_ipv4_addresses() -> None:
    done = trio.Event()
    client = ClientCore(on_change=done.set)
    server = EchoCore()
    with trio.fail_after(LIMIT):
        async with (
            open_udp_endpoint(server, ("::", 0)) as server_endpoint,
            open_udp_endpoint(client, ("127.0.0.1", 0)) as client_endpoint,
        ):
            assert server_endpoint.local_address[0] == "::"
            client.queue(b"over v4", ("127.0.0.1", server_endpoint.local_address[1]))
            client_endpoint.wakeup()
            await done.wait()
    # The server's core saw a plain IPv4 peer, and its reply went back over IPv4.
    assert server.received[0][1] == ("127.0.0.1", client_endpoint.local_address[1])
    assert client.replies == [(b"over v4", ("127.0.0.1", server_endpoint.local_address[1]))]


async def test_timer_retransmits_under_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    client = ClientCore(retransmit_interval=1.5, max_sends=4)
    dead = ("127.0.0.1", closed_port())
    async with open_udp_endpoint(client) as endpoint:
        start = trio.current_time()
        client.queue(b"anyone?", dead)
        endpoint.wakeup()
        await trio.sleep(60)  # virtual seconds: the clock jumps
        stats = endpoint.statistics()
    assert [round(t - start, 9) for t in client.send_times] == [0.0, 1.5, 3.0, 4.5]
    assert client.gave_up == [b"anyone?"]
    assert stats.timer_fires == 3
    # Nothing listens there: on Linux the datagrams simply vanish; wherever the
    # kernel reports it (ICMP port unreachable), it is counted, never raised.
    assert stats.datagrams_sent + stats.send_errors == 4


async def test_earlier_deadline_rearms_the_timer(autojump_clock: trio.testing.MockClock) -> None:
    client = ClientCore(retransmit_interval=100.0, max_sends=2)
    dead = ("127.0.0.1", closed_port())
    async with open_udp_endpoint(client) as endpoint:
        start = trio.current_time()
        client.queue(b"slow", dead)
        endpoint.wakeup()  # deadline start + 100
        await trio.sleep(1)
        client.interval = 2.0
        client.queue(b"fast", dead)
        endpoint.wakeup()  # deadline start + 3, earlier than the armed one
        await trio.sleep(2.5)
        assert endpoint.statistics().timer_fires == 1
        assert [round(t - start, 9) for t in client.send_times] == [0.0, 1.0, 3.0]


async def test_send_to_closed_port_is_counted_and_endpoint_keeps_working() -> None:
    done = trio.Event()
    client = ClientCore(on_change=done.set)
    server = EchoCore()
    with trio.fail_after(LIMIT):
        async with (
            open_udp_endpoint(server) as server_endpoint,
            open_udp_endpoint(client) as client_endpoint,
        ):
            for _ in range(20):
                client.queue(b"into the void", ("127.0.0.1", closed_port()))
            client.queue(b"hello", server_endpoint.local_address)
            client_endpoint.wakeup()
            await done.wait()
            stats = client_endpoint.statistics()
    assert client.replies == [(b"hello", server_endpoint.local_address)]
    assert stats.datagrams_sent + stats.send_errors == 21


async def test_unsendable_datagrams_are_send_errors_not_crashes() -> None:
    done = trio.Event()
    client = ClientCore(on_change=done.set)
    server = EchoCore()
    with trio.fail_after(LIMIT):
        async with (
            open_udp_endpoint(server) as server_endpoint,
            open_udp_endpoint(client) as client_endpoint,
        ):
            port = server_endpoint.local_address[1]
            client.queue(b"x" * 70_000, ("127.0.0.1", port))  # larger than UDP allows
            client.queue(b"named", ("localhost", port))  # not numeric: no DNS here
            client.queue(b"family", ("::1", port))  # IPv6 on an IPv4 socket
            client.queue(b"port", ("127.0.0.1", 0))
            client.queue(b"after", ("127.0.0.1", port))
            client_endpoint.wakeup()
            await done.wait()
            stats = client_endpoint.statistics()
    assert stats.send_errors == 4
    assert stats.datagrams_sent == 1
    assert stats.last_send_error is not None
    assert client.replies == [(b"after", ("127.0.0.1", port))]


async def test_oversize_and_malformed_datagrams_are_dropped_and_counted() -> None:
    done = trio.Event()
    client = ClientCore(on_change=done.set)
    server = EchoCore()
    with trio.fail_after(LIMIT):
        async with (
            open_udp_endpoint(server, max_datagram=100) as server_endpoint,
            open_udp_endpoint(client) as client_endpoint,
        ):
            to = server_endpoint.local_address
            client.queue(b"y" * 101, to)
            client.queue(b"bad", to)
            client.queue(b"z" * 100, to)
            client_endpoint.wakeup()
            await done.wait()
            stats = server_endpoint.statistics()
    assert client.replies == [(b"z" * 100, to)]
    assert stats.dropped_oversize == 1
    assert stats.dropped_malformed == 1
    assert stats.datagrams_received == 2  # the oversize one is not counted as received
    assert stats.datagrams_dropped == 2


async def test_receive_buffer_is_requested_and_reported() -> None:
    async with open_udp_endpoint(EchoCore(), recv_buffer=4 * 1024 * 1024) as endpoint:
        stats = endpoint.statistics()
    assert stats.receive_buffer_requested == 4 * 1024 * 1024
    assert stats.receive_buffer_granted > 0
    async with open_udp_endpoint(EchoCore(), recv_buffer=None) as endpoint:
        assert endpoint.statistics().receive_buffer_requested is None


class PushBackSocket(socket.socket):
    """A UDP socket whose kernel "send buffer" is full on every ``every``-th send."""

    def __init__(self, every: int) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_DGRAM)
        self.every = every
        self.attempts = 0
        self.refused = 0

    def sendto(self, data: object, address: object) -> int:  # type: ignore[override]
        self.attempts += 1
        if self.attempts % self.every == 0:
            self.refused += 1
            raise BlockingIOError("send buffer full (simulated)")
        return super().sendto(data, address)  # type: ignore[call-overload, no-any-return]


class Sink(EchoCore):
    """Keeps what it receives, answers nothing."""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.received.append((data, addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return []


async def test_kernel_push_back_queues_in_order_and_drops_beyond_the_limit() -> None:
    count, limit = 100, 10
    sink = Sink()
    client = ClientCore()
    sock = PushBackSocket(every=7)
    sock.bind(("127.0.0.1", 0))
    with trio.fail_after(LIMIT):
        async with (
            open_udp_endpoint(sink) as sink_endpoint,
            open_udp_endpoint(client, sock=sock, send_queue_limit=limit) as endpoint,
        ):
            for index in range(count):
                client.queue(b"%03d" % index, sink_endpoint.local_address)
            endpoint.wakeup()
            # First try: 6 sent, the 7th would block; it and the next 9 wait, 84 dropped.
            stats = endpoint.statistics()
            assert stats.datagrams_sent == 6
            assert stats.send_queue_length == limit
            assert stats.dropped_send_queue_full == count - 6 - limit
            while endpoint.statistics().send_queue_length:
                await trio.sleep(0)  # the sender task drains; bounded by fail_after
            client.queue(b"later", sink_endpoint.local_address)
            endpoint.wakeup()
            while len(sink.received) < 6 + limit + 1:
                await trio.sleep(0)
            stats = endpoint.statistics()
    assert stats.datagrams_sent == 6 + limit + 1
    assert stats.send_errors == 0
    assert sock.refused >= 2
    expected = [b"%03d" % index for index in range(6 + limit)] + [b"later"]
    assert [data for data, _ in sink.received] == expected


async def test_adopted_socket_is_checked_and_closed_on_exit() -> None:
    unbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with unbound, pytest.raises(ValueError, match="bound"):
        async with open_udp_endpoint(EchoCore(), sock=unbound):
            pass
    stream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with stream, pytest.raises(ValueError, match="UDP"):
        async with open_udp_endpoint(EchoCore(), sock=stream):
            pass
    bound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bound.bind(("127.0.0.1", 0))
    async with open_udp_endpoint(EchoCore(), sock=bound) as endpoint:
        assert endpoint.local_address == bound.getsockname()
    assert bound.fileno() == -1


async def test_pcap_records_every_datagram(tmp_path: Path) -> None:
    capture = tmp_path / "endpoint.pcap"
    done = trio.Event()
    client = ClientCore(on_change=lambda: done.set() if len(client.replies) == 3 else None)
    with trio.fail_after(LIMIT):
        async with (
            open_udp_endpoint(EchoCore(), pcap_path=capture) as server_endpoint,
            open_udp_endpoint(client) as client_endpoint,
        ):
            for index in range(3):
                client.queue(b"record %d" % index, server_endpoint.local_address)
            client_endpoint.wakeup()
            await done.wait()
    assert server_endpoint.statistics().pcap_records_written == 6
    raw = capture.read_bytes()
    assert raw.startswith(PCAP_GLOBAL_HEADER)
    offset, payloads = len(PCAP_GLOBAL_HEADER), []
    while offset < len(raw):
        _, _, caplen, _ = struct.unpack_from("<IIII", raw, offset)
        packet = raw[offset + 16 : offset + 16 + caplen]
        payloads.append(packet[28:])  # IPv4 (20) + UDP (8) headers
        offset += 16 + caplen
    assert sorted(payloads) == sorted([b"record %d" % i for i in range(3)] * 2)


async def test_a_shared_pcap_records_each_datagram_once_and_stays_open(tmp_path: Path) -> None:
    """Two endpoints, one capture: each records what it sends, not what it
    receives (its sender did), so every datagram appears once, in the
    direction it went; the writer is left open for its maker."""
    writer = PcapWriter(tmp_path / "shared.pcap")
    done = trio.Event()
    client = ClientCore(on_change=lambda: done.set() if len(client.replies) == 3 else None)
    with trio.fail_after(LIMIT):
        async with (
            open_udp_endpoint(EchoCore(), shared_pcap=writer) as server_endpoint,
            open_udp_endpoint(client, shared_pcap=writer) as client_endpoint,
        ):
            for index in range(3):
                client.queue(b"shared %d" % index, server_endpoint.local_address)
            client_endpoint.wakeup()
            await done.wait()
    assert not writer.closed
    writer.close()
    datagrams = read_pcap_untrusted((tmp_path / "shared.pcap").read_bytes()).datagrams
    server, near = server_endpoint.local_address, client_endpoint.local_address
    sent = sorted((d.src, d.dst, d.payload) for d in datagrams)
    expected = [(near, server, b"shared %d" % i) for i in range(3)]
    expected += [(server, near, b"shared %d" % i) for i in range(3)]
    assert sent == sorted(expected)
    with pytest.raises(ValueError, match="not both"):
        async with open_udp_endpoint(EchoCore(), pcap_path=tmp_path / "x", shared_pcap=writer):
            pass


async def test_pcap_is_readable_by_tshark(tmp_path: Path) -> None:
    tshark = require_tshark()
    capture = tmp_path / "endpoint.pcap"
    _, _, _, server_stats = await exchange(("127.0.0.1", 0), ("127.0.0.1", 0), 4, pcap_path=capture)
    assert server_stats.pcap_records_written == 8
    fields = subprocess.run(
        [tshark, "-n", "-r", str(capture), "-T", "fields", "-e", "udp.length", "-e", "data.data"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert len(fields) == 8
    assert {line.split("\t")[0] for line in fields} == {str(8 + len(b"ping 0"))}


async def test_shutdown_leaves_no_tasks_and_frees_the_port(tmp_path: Path) -> None:
    capture = tmp_path / "closed.pcap"
    task = trio.lowlevel.current_task()
    before = list(task.child_nurseries)
    async with open_udp_endpoint(EchoCore(), pcap_path=capture) as endpoint:
        assert len(task.child_nurseries) == len(before) + 1
        (nursery,) = set(task.child_nurseries) - set(before)
        assert len(nursery.child_tasks) == 3  # receive loop, timer, sender
        address = endpoint.local_address
    assert task.child_nurseries == before
    with pytest.raises(ClosedResourceError):
        endpoint.wakeup()
    # The socket is closed: its port can be bound again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
    assert capture.read_bytes() == PCAP_GLOBAL_HEADER


class ExplodingCore(EchoCore):
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        raise RuntimeError("core bug")


async def test_a_core_exception_ends_the_block_with_that_exception() -> None:
    client = ClientCore()
    with trio.fail_after(LIMIT), pytest.raises(RuntimeError, match="core bug"):
        async with (
            open_udp_endpoint(ExplodingCore()) as server_endpoint,
            open_udp_endpoint(client) as client_endpoint,
        ):
            client.queue(b"boom", server_endpoint.local_address)
            client_endpoint.wakeup()
            await trio.sleep_forever()


async def test_body_exception_is_not_wrapped_in_a_group() -> None:
    with pytest.raises(KeyError):
        async with open_udp_endpoint(EchoCore()):
            raise KeyError("from the body")


@pytest.mark.parametrize(
    "options",
    [
        {"max_datagram": 0},
        {"max_datagram": 65536},
        {"send_queue_limit": 0},
        {"recv_batch": 0},
        {"recv_buffer": 0},
        {"send_buffer": -1},
    ],
)
async def test_bad_options_are_refused(options: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        async with open_udp_endpoint(EchoCore(), **options):  # type: ignore[arg-type]
            pass
