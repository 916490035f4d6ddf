"""A seeded lossy UDP proxy for the benchmarks (trio).

Clients send to the proxy's address; each client gets its own upstream socket towards the
server, so the server sees one address per client. The proxy follows the address the server
answers from (as a NAT does), which TFTP needs: a TFTP server answers from a fresh port per
transfer. In each direction it drops a share of datagrams, and optionally duplicates or
reorders some (a reordered datagram is held until the next one in the same direction has been
sent, or until ``reorder_hold`` seconds have passed). Every decision comes from a
``random.Random`` seeded from ``seed``, one stream per direction, and is counted.

In process: ``async with open_lossy_proxy(upstream, ProxyConfig(loss=0.01)) as proxy`` and
send to ``proxy.address``. In its own process (so that a blocking peer such as tftpy does not
share the GIL with it): ``with spawn_lossy_proxy(upstream, config) as handle`` and read
``handle.statistics`` after the block. From the shell:
``python -m benchmarks.lossy_proxy --upstream 127.0.0.1:6969 --loss 0.05 --seed 1``
prints the listening address, runs until its standard input closes, then prints its counts
as one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import trio

from benchmarks._util import read_first_line, set_receive_buffer

Address = tuple[str, int]

MAX_DATAGRAM = 65_535
RECEIVE_BUFFER = 4 * 2**20


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """What the proxy does to traffic; shares are probabilities per datagram, per direction."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    seed: int = 0
    reorder_hold: float = 0.005
    max_clients: int = 4096

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be a share between 0 and 1, got {share!r}")
        if self.reorder_hold <= 0:
            raise ValueError("reorder_hold must be positive")
        if self.max_clients < 1:
            raise ValueError("max_clients must be at least 1")


@dataclass(slots=True)
class DirectionCounts:
    """What happened to the datagrams flowing in one direction."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    send_errors: int = 0


@dataclass(slots=True)
class ProxyStatistics:
    """Counts for both directions, plus clients refused because ``max_clients`` was reached."""

    to_server: DirectionCounts = field(default_factory=DirectionCounts)
    to_client: DirectionCounts = field(default_factory=DirectionCounts)
    clients: int = 0
    refused: int = 0

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly copy."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ProxyStatistics:
        """Rebuild from :meth:`as_dict` output (as printed by the proxy process)."""
        to_server = data["to_server"]
        to_client = data["to_client"]
        assert isinstance(to_server, dict) and isinstance(to_client, dict)
        clients = data["clients"]
        refused = data["refused"]
        assert isinstance(clients, int) and isinstance(refused, int)
        return cls(DirectionCounts(**to_server), DirectionCounts(**to_client), clients, refused)


def _udp_socket() -> trio.socket.SocketType:
    """A trio UDP socket with a receive buffer large enough for a window of bursts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    set_receive_buffer(sock, RECEIVE_BUFFER)
    return trio.socket.from_stdlib_socket(sock)


class _Direction:
    """Loss, duplication and reordering for one direction, with its own random stream."""

    def __init__(self, config: ProxyConfig, seed: str, counts: DirectionCounts) -> None:
        self._config = config
        self._random = random.Random(seed)
        self.counts = counts
        self.held: tuple[trio.socket.SocketType, bytes, Address] | None = None
        self.held_since_tick = False

    async def forward(self, sock: trio.socket.SocketType, data: bytes, dest: Address) -> None:
        self.counts.received += 1
        config = self._config
        if config.loss and self._random.random() < config.loss:
            self.counts.dropped += 1
            return
        if config.reorder and self.held is None and self._random.random() < config.reorder:
            self.counts.reordered += 1
            self.held = (sock, data, dest)
            self.held_since_tick = False
            return
        copies = 1
        if config.duplicate and self._random.random() < config.duplicate:
            self.counts.duplicated += 1
            copies = 2
        for _ in range(copies):
            await self._send(sock, data, dest)
        await self.release()

    async def release(self) -> None:
        if self.held is not None:
            sock, data, dest = self.held
            self.held = None
            await self._send(sock, data, dest)

    async def _send(self, sock: trio.socket.SocketType, data: bytes, dest: Address) -> None:
        try:
            await sock.sendto(data, dest)
        except OSError:
            # The peer went away (ICMP unreachable) or the buffer is full: as a link would.
            self.counts.send_errors += 1
        else:
            self.counts.forwarded += 1


class LossyProxy:
    """A UDP proxy from ``listen`` to ``upstream`` that loses datagrams as configured."""

    def __init__(
        self, upstream: Address, config: ProxyConfig, listen: Address = ("127.0.0.1", 0)
    ) -> None:
        self.upstream = upstream
        self.config = config
        self._listen = listen
        self._stats = ProxyStatistics()
        self._to_server = _Direction(config, f"{config.seed}:to-server", self._stats.to_server)
        self._to_client = _Direction(config, f"{config.seed}:to-client", self._stats.to_client)
        self._socket: trio.socket.SocketType | None = None
        # Per client: its upstream socket and the server address it currently talks to.
        self._sessions: dict[Address, tuple[trio.socket.SocketType, list[Address]]] = {}

    @property
    def address(self) -> Address:
        """Where clients send; valid once :meth:`serve` has started."""
        if self._socket is None:
            raise RuntimeError("the proxy is not serving yet")
        host, port = self._socket.getsockname()[:2]
        return (str(host), int(port))

    def statistics(self) -> ProxyStatistics:
        """A snapshot of the counters."""
        return ProxyStatistics(
            dataclasses.replace(self._stats.to_server),
            dataclasses.replace(self._stats.to_client),
            self._stats.clients,
            self._stats.refused,
        )

    async def serve(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled; reports the listening address through ``task_status``."""
        sock = _udp_socket()
        with sock:
            await sock.bind(self._listen)
            self._socket = sock
            try:
                async with trio.open_nursery() as nursery:
                    if self.config.reorder:
                        nursery.start_soon(self._flush_held)
                    task_status.started(self.address)
                    await self._from_clients(sock, nursery)
            finally:
                for upstream_sock, _ in self._sessions.values():
                    upstream_sock.close()
                self._sessions.clear()

    async def _from_clients(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        buffer = bytearray(MAX_DATAGRAM)
        while True:
            try:
                size, raw_addr = await sock.recvfrom_into(buffer)
            except OSError:
                continue
            client: Address = (str(raw_addr[0]), int(raw_addr[1]))
            session = self._sessions.get(client)
            if session is None:
                if len(self._sessions) >= self.config.max_clients:
                    self._stats.refused += 1
                    continue
                upstream_sock = _udp_socket()
                await upstream_sock.bind((self._listen[0], 0))
                session = (upstream_sock, [self.upstream])
                self._sessions[client] = session
                self._stats.clients += 1
                nursery.start_soon(self._from_server, sock, client, session)
            upstream_sock, server = session
            await self._to_server.forward(upstream_sock, bytes(buffer[:size]), server[0])

    async def _from_server(
        self,
        client_sock: trio.socket.SocketType,
        client: Address,
        session: tuple[trio.socket.SocketType, list[Address]],
    ) -> None:
        upstream_sock, server = session
        buffer = bytearray(MAX_DATAGRAM)
        while True:
            try:
                size, raw_addr = await upstream_sock.recvfrom_into(buffer)
            except OSError:
                continue
            if raw_addr[0] != self.upstream[0]:
                continue  # only the server's host may answer through this session
            # Follow the server's reply port (a TFTP server answers from a new one).
            server[0] = (str(raw_addr[0]), int(raw_addr[1]))
            await self._to_client.forward(client_sock, bytes(buffer[:size]), client)

    async def _flush_held(self) -> None:
        # A held datagram waits for the next one in its direction; if none comes within
        # about ``reorder_hold`` seconds, send it anyway so a lock-step peer does not stall.
        while True:
            await trio.sleep(self.config.reorder_hold)
            for direction in (self._to_server, self._to_client):
                if direction.held is not None:
                    if direction.held_since_tick:
                        await direction.release()
                    else:
                        direction.held_since_tick = True


@asynccontextmanager
async def open_lossy_proxy(
    upstream: Address, config: ProxyConfig, listen: Address = ("127.0.0.1", 0)
) -> AsyncIterator[LossyProxy]:
    """Run a :class:`LossyProxy` for the duration of the block; it stops when the block ends."""
    proxy = LossyProxy(upstream, config, listen)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()


@dataclass(slots=True)
class ProxyProcess:
    """A proxy running in a child process; ``statistics`` is filled in when it has stopped."""

    address: Address
    process: subprocess.Popen[str]
    statistics: ProxyStatistics | None = None


@contextmanager
def spawn_lossy_proxy(
    upstream: Address, config: ProxyConfig, start_timeout: float = 10.0
) -> Iterator[ProxyProcess]:
    """Run the proxy in its own Python process for the duration of the block.

    The child stops when its standard input closes; its counts are read back then. A child
    that does not stop within a few seconds is killed (its counts are then missing).
    """
    command = [
        sys.executable,
        "-m",
        "benchmarks.lossy_proxy",
        "--upstream",
        f"{upstream[0]}:{upstream[1]}",
        "--loss",
        repr(config.loss),
        "--duplicate",
        repr(config.duplicate),
        "--reorder",
        repr(config.reorder),
        "--seed",
        str(config.seed),
    ]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        line = read_first_line(process, start_timeout)
        host, _, port = line.strip().rpartition(":")
        handle = ProxyProcess((host, int(port)), process)
        yield handle
        try:
            out, _ = process.communicate(timeout=5)  # closes its standard input first
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        else:
            for text in out.splitlines():
                if text.startswith("{"):
                    handle.statistics = ProxyStatistics.from_dict(json.loads(text))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _parse_address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return (host or "127.0.0.1", int(port))


async def _run_until_stdin_closes(proxy: LossyProxy) -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(proxy.serve)
        print(f"{address[0]}:{address[1]}", flush=True)
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        while await stdin.receive_some():
            pass
        nursery.cancel_scope.cancel()
    print(json.dumps(proxy.statistics().as_dict()), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: run a proxy until standard input closes, then print its counts."""
    parser = argparse.ArgumentParser(description="Seeded lossy UDP proxy")
    parser.add_argument("--upstream", required=True, help="server host:port")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port to listen on")
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--duplicate", type=float, default=0.0)
    parser.add_argument("--reorder", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = ProxyConfig(
        loss=args.loss, duplicate=args.duplicate, reorder=args.reorder, seed=args.seed
    )
    proxy = LossyProxy(_parse_address(args.upstream), config, _parse_address(args.listen))
    trio.run(_run_until_stdin_closes, proxy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
