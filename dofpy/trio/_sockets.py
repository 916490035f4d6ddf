"""Socket plumbing of the UDP endpoint: binding and adopting sockets, the
offload options (``UDP_SEGMENT``, ``UDP_GRO``), address forms, and the GSO
run planning (a pure function: which datagrams leave in one ``sendmsg``)."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import sys
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import trio

from dofpy._core import Address

MAX_UDP_PAYLOAD = 65535

# UDP segmentation offload (Linux >= 4.18) and receive offload (>= 5.0): one
# sendmsg carries a run of equal-size datagrams to one peer (the last may be
# shorter) and the kernel cuts it; one recvmsg may return several datagrams of
# ``gso_size`` bytes back to back. Python < 3.12 lacks the constants.
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(socket, "UDP_GRO", 104)
GSO_MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS before Linux 6.9
GSO_MAX_BYTES = 65507 - 64  # payload of one IPv4 UDP datagram, with margin
GRO_CMSG_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
GSO_SIZE = struct.Struct("=H")
GRO_SIZE = struct.Struct("=i")
# sendmsg errors that mean "this socket or route cannot segment": stop trying.
GSO_UNSUPPORTED = frozenset(
    {errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
)


def enable_gso(sock: socket.socket) -> bool:
    """Whether this kernel segments UDP sends for ``sock`` (``UDP_SEGMENT``)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # A zero default segment size: only sends that carry their own cmsg segment.
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
    except OSError:
        return False
    return True


def enable_gro(sock: socket.socket) -> bool:
    """Ask the kernel to coalesce received datagrams (``UDP_GRO``) for ``sock``."""
    if not sys.platform.startswith("linux") or not GRO_CMSG_SPACE:
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def strip_scope(host: str) -> str:
    return host.partition("%")[0]


def peer_ipv4(raw: tuple[Any, ...]) -> Address:
    return (raw[0], raw[1])


def peer_ipv6(raw: tuple[Any, ...]) -> Address:
    host: str = raw[0]
    if host.startswith("::ffff:") and "." in host:
        return (host[7:], raw[1])
    return (strip_scope(host), raw[1])


def pcap_local(local: Address, peer: Address) -> Address:
    """Our address as a capture should show it to ``peer``: same family as the peer."""
    local_v4 = ":" not in local[0]
    peer_v4 = ":" not in peer[0]
    if local_v4 == peer_v4:
        return local
    if peer_v4:
        # A dual-stack socket talking IPv4: the kernel does not tell us which of
        # our IPv4 addresses was used, so the capture shows the unspecified one.
        host = local[0]
        mapped = host[7:] if host.startswith("::ffff:") and "." in host else "0.0.0.0"  # noqa: S104 (a label)
        return (mapped, local[1])
    return ("::", local[1])


async def bind_udp(
    local: Address, recv_buffer: int | None, send_buffer: int | None
) -> socket.socket:
    host, port = local
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP, flags=socket.AI_PASSIVE
    )
    if not infos:
        raise OSError(f"cannot resolve local address {local!r}")
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        if family == socket.AF_INET6 and ipaddress.ip_address(sockaddr[0]).is_unspecified:
            # "::" means every address: accept IPv4 too where the OS allows it.
            with suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if recv_buffer is not None:
            set_receive_buffer(sock, recv_buffer)
        if send_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        sock.bind(sockaddr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def adopt_udp(sock: socket.socket, recv_buffer: int | None, send_buffer: int | None) -> None:
    """Check that a caller's socket is a bound UDP socket, and configure it."""
    if sock.type != socket.SOCK_DGRAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError("sock must be an IPv4 or IPv6 UDP socket")
    if sock.getsockname()[1] == 0:
        raise ValueError("sock must be bound")
    if recv_buffer is not None:
        set_receive_buffer(sock, recv_buffer)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.setblocking(False)


def set_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a receive buffer of ``size`` bytes; take what the kernel grants.

    A burst of a window of large datagrams overflows the default buffer (about
    200 KiB on Linux) and stalls the peer; ``SO_RCVBUF`` is capped by
    ``net.core.rmem_max``, so a privileged process also tries ``SO_RCVBUFFORCE``.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    # Linux reports (and books) twice the size asked for.
    full = 2 * size if sys.platform.startswith("linux") else size
    if force is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < full:
        with suppress(OSError):  # not privileged: keep what SO_RCVBUF granted
            sock.setsockopt(socket.SOL_SOCKET, force, size)


def segment_run_end(out: Sequence[tuple[bytes, Address]], start: int, gso_limit: int) -> int:
    """The end (exclusive) of the run of ``out`` that starts at ``start`` and
    can leave in one ``UDP_SEGMENT`` send: datagrams to one peer, each as long
    as the first except the last, which may be shorter, at most
    ``GSO_MAX_SEGMENTS`` of them and ``GSO_MAX_BYTES`` in all. A first
    datagram of ``gso_limit`` bytes or more (a size the route refused to
    segment; 0: no segmentation at all) makes a run of one. ``start + 1``
    means "send it alone"."""
    data, addr = out[start]
    size = len(data)
    end = start + 1
    if size >= gso_limit:
        return end
    total = size
    count = len(out)
    while (
        end < count
        and end - start < GSO_MAX_SEGMENTS
        and total + size <= GSO_MAX_BYTES
        and out[end][1] == addr
        and len(out[end][0]) <= size
    ):
        total += len(out[end][0])
        end += 1
        if len(out[end - 1][0]) < size:
            break  # a shorter datagram can only end a run
    return end
