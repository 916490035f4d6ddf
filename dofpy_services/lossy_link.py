"""A seeded lossy UDP proxy in front of a service: what the transfer demo
(:mod:`dofpy_services.demo`) puts between its requestors and the relay, and
the fleet simulator (:mod:`dofpy_services.fleet.simulate`) between its
devices and each service."""

from __future__ import annotations

import random
import socket
from contextlib import suppress
from dataclasses import dataclass

import trio

from dofpy._core import Address
from dofpy.trio import PcapWriter

__all__ = ["LinkCounts", "LossyLink"]

_RECEIVE_BUFFER = 4 << 20
"""Each socket's receive buffer (4 MiB): a burst of blocks is not dropped
by the host before the link's loop reads it."""


@dataclass
class LinkCounts:
    """What the lossy link did, per direction."""

    forwarded: int = 0
    dropped: int = 0


class LossyLink:
    """A seeded lossy UDP proxy: requestors send to :attr:`address`, each gets its
    own socket towards ``upstream`` (so upstream sees one address per requestor),
    and each datagram is dropped with probability ``loss`` in each direction.

    Each (requestor, direction) draws from its own ``random.Random`` seeded from
    ``seed`` and the requestor's rank of arrival, so the drop pattern of a flow
    does not depend on how the flows interleave. The sockets are non-blocking
    and each is drained in batches after one readiness wait, as the endpoint
    does (a datagram costs one ``recvfrom`` and one ``sendto``)."""

    def __init__(
        self,
        upstream: Address,
        loss: float,
        seed: int,
        nursery: trio.Nursery,
        capture: PcapWriter | None = None,
    ) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        self.upstream = upstream
        self.loss = loss
        self.seed = seed
        self.to_upstream = LinkCounts()
        self.to_requestors = LinkCounts()
        self._nursery = nursery
        # What the link forwards is a datagram sent (by it): the shared capture
        # records it, as the endpoints record what they send.
        self._capture = capture
        self._front = _udp_socket()
        self._clients: dict[Address, tuple[socket.socket, random.Random]] = {}
        nursery.start_soon(self._front_loop)

    @property
    def address(self) -> Address:
        host, port = self._front.getsockname()[:2]
        return (host, port)

    def upstream_address(self, client: Address) -> Address | None:
        """The address the relay sees for ``client`` (its socket towards it)."""
        entry = self._clients.get(client)
        if entry is None:
            return None
        host, port = entry[0].getsockname()[:2]
        return (host, port)

    def close(self) -> None:
        for sock in [self._front] + [s for s, _ in self._clients.values()]:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def _front_loop(self) -> None:
        front = self._front
        while True:
            await trio.lowlevel.wait_readable(front)
            for _ in range(64):
                try:
                    data, client = front.recvfrom(65535)
                except BlockingIOError:
                    break
                except OSError:
                    continue
                entry = self._clients.get(client)
                if entry is None:
                    flow = len(self._clients)  # streams by order of arrival, not by port
                    entry = (_udp_socket(), random.Random(f"{self.seed}:{flow}:up"))
                    self._clients[client] = entry
                    drops = random.Random(f"{self.seed}:{flow}:down")
                    self._nursery.start_soon(self._back_loop, entry[0], client, drops)
                sock, drops = entry
                self._forward(sock, data, self.upstream, drops, self.to_upstream)

    async def _back_loop(self, sock: socket.socket, client: Address, drops: random.Random) -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(64):
                try:
                    data, _ = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                except OSError:
                    continue
                self._forward(self._front, data, client, drops, self.to_requestors)

    def _forward(
        self,
        sock: socket.socket,
        data: bytes,
        destination: Address,
        drops: random.Random,
        counts: LinkCounts,
    ) -> None:
        if drops.random() < self.loss:
            counts.dropped += 1
            return
        with suppress(OSError):  # a full send buffer drops, as a congested link would
            sock.sendto(data, destination)
            counts.forwarded += 1
            if self._capture is not None:
                host, port = sock.getsockname()[:2]
                self._capture.write((host, port), destination, data)


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock
