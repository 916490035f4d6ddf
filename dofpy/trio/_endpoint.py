"""The trio UDP endpoint: the only place where dofpy touches the network.

It drives one sans-IO :class:`~dofpy._core.DatagramCore` over one UDP socket
with three tasks in one nursery:

* a receive loop, which drains up to ``recv_batch`` waiting datagrams into
  ``core.receive_datagram`` and then flushes once;
* one timer task, which sleeps until ``core.get_timer()`` and calls
  ``core.handle_timer``; it is re-armed by poking an event whenever the core's
  deadline changes, never by a cancel scope per receive (that halves trio's
  datagram rate, as measured when this loop was written);
* a sender task that only works when the kernel's send buffer is full: it
  waits for the socket to become writable and drains the bounded send queue.

On Linux, runs of equal-size datagrams to one peer leave in one ``sendmsg``
with ``UDP_SEGMENT`` and received datagrams may arrive coalesced
(``UDP_GRO``), fewer system calls for the same datagrams on the wire; a kernel
or route without them falls back to one datagram per call.

Flushing is synchronous: the socket is non-blocking, and each datagram the core
returns from ``datagrams_to_send`` is handed to ``sendto`` directly, so there is
no scheduler round trip per datagram. When the kernel says "would block", the
rest waits in the send queue, and the core is not asked for more until the
queue has drained (its own pacing and congestion control then see the
back-pressure). Sending errors (ICMP port unreachable reported as
``ConnectionRefusedError``, oversized datagrams, unreachable networks) are
counted, and the datagram is dropped, as the network would drop it.

Its configuration and statistics types are in :mod:`dofpy.trio._endpoint_config`.

Time is ``trio.current_time()``, so ``trio.testing.MockClock`` drives tests.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from dofpy._core import Address, DatagramCore
from dofpy.errors import BadPacket, ClosedResourceError
from dofpy.trio._endpoint_config import (
    DEFAULT_RECV_BATCH,
    DEFAULT_RECV_BUFFER,
    DEFAULT_SEND_QUEUE_LIMIT,
    EndpointConfig,
    EndpointStatistics,
    InputHook,
)
from dofpy.trio._groups import lone_exceptions_unwrapped
from dofpy.trio._pcapfile import PcapWriter
from dofpy.trio._sockets import (
    GRO_CMSG_SPACE,
    GRO_SIZE,
    GSO_SIZE,
    GSO_UNSUPPORTED,
    MAX_UDP_PAYLOAD,
    SOL_UDP,
    UDP_GRO,
    UDP_SEGMENT,
    adopt_udp,
    bind_udp,
    enable_gro,
    enable_gso,
    pcap_local,
    peer_ipv4,
    peer_ipv6,
    segment_run_end,
    strip_scope,
)

__all__ = ["UdpEndpoint", "open_udp_endpoint"]

_ADDRESS_CACHE_LIMIT = 4096


class _UnusableAddress(Exception):
    """A destination the socket cannot send to (not numeric, wrong family)."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class UdpEndpoint:
    """One bound UDP socket driving one core. Made by :func:`open_udp_endpoint`."""

    def __init__(
        self,
        core: DatagramCore,
        sock: socket.socket,
        *,
        pcap: PcapWriter | None,
        max_datagram: int,
        send_queue_limit: int,
        recv_batch: int,
        receive_buffer_requested: int | None,
        offload: bool = False,
        pcap_shared: bool = False,
    ) -> None:
        self._core = core
        self.on_input: InputHook | None = None
        """Called after every datagram handed to the core and every timer it
        handled (set by whoever turns the core's events into the
        application's: :class:`~dofpy.trio.DofNode`, :class:`~dofpy.trio.TransferNode`)."""
        self._sock = sock
        self._family = sock.family
        self._pcap = pcap
        # A capture shared with the other endpoints of one process records each
        # datagram once, when it is sent (its receiver would record it again);
        # whoever made it closes it.
        self._pcap_shared = pcap_shared
        self._max_datagram = max_datagram
        self._send_queue_limit = send_queue_limit
        self._recv_batch = recv_batch
        self._receive_buffer_requested = receive_buffer_requested
        self._receive_buffer_granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        bound = sock.getsockname()
        self._local: Address = (strip_scope(bound[0]), bound[1])
        self._closed = False
        # (payload, destination as the core gave it, destination for sendto)
        self._send_queue: deque[tuple[bytes, Address, tuple[Any, ...]]] = deque()
        self._send_ready = trio.Event()
        self._timer_changed = trio.Event()
        self._armed_deadline: float | None = None
        self._sockaddrs: dict[Address, tuple[Any, ...]] = {}
        self._datagrams_sent = 0
        self._bytes_sent = 0
        self._datagrams_received = 0
        self._bytes_received = 0
        self._send_errors = 0
        self._receive_errors = 0
        self._dropped_oversize = 0
        self._dropped_malformed = 0
        self._dropped_send_queue_full = 0
        self._timer_fires = 0
        # Segment sizes at or above this are sent one by one (a route refused them).
        self._gso_limit = MAX_UDP_PAYLOAD + 1 if offload and enable_gso(sock) else 0
        self._gro = offload and enable_gro(sock)
        self._segmented_sends = 0
        self._coalesced_receives = 0
        self._last_send_error: str | None = None
        self._last_receive_error: str | None = None

    # ------------------------------------------------------------------ public

    @property
    def local_address(self) -> Address:
        """The bound ``(host, port)``; the port is the real one when 0 was asked."""
        return self._local

    @property
    def core(self) -> DatagramCore:
        """The core this endpoint drives."""
        return self._core

    def wakeup(self) -> None:
        """Send what the core now has to send and re-arm the timer.

        Call it from the trio run after calling into the core from application
        code (e.g. after starting a request); the endpoint cannot otherwise know
        that the core has something new.
        """
        if self._closed:
            raise ClosedResourceError("the UDP endpoint is closed")
        self._flush()

    def statistics(self) -> EndpointStatistics:
        """A snapshot of the endpoint's counters."""
        return EndpointStatistics(
            datagrams_sent=self._datagrams_sent,
            bytes_sent=self._bytes_sent,
            datagrams_received=self._datagrams_received,
            bytes_received=self._bytes_received,
            send_errors=self._send_errors,
            receive_errors=self._receive_errors,
            dropped_oversize=self._dropped_oversize,
            dropped_malformed=self._dropped_malformed,
            dropped_send_queue_full=self._dropped_send_queue_full,
            send_queue_length=len(self._send_queue),
            timer_fires=self._timer_fires,
            pcap_records_written=0 if self._pcap is None else self._pcap.records_written,
            segmentation_offload=self._gso_limit > 0,
            receive_offload=self._gro,
            segmented_sends=self._segmented_sends,
            coalesced_receives=self._coalesced_receives,
            receive_buffer_requested=self._receive_buffer_requested,
            receive_buffer_granted=self._receive_buffer_granted,
            last_send_error=self._last_send_error,
            last_receive_error=self._last_receive_error,
        )

    # ----------------------------------------------------------------- sending

    def _flush(self) -> None:
        """Send everything the core has, unless the send queue is backed up."""
        if self._closed:
            return
        if not self._send_queue:
            out = self._core.datagrams_to_send(trio.current_time())
            if self._gso_limit and len(out) > 1:
                self._send_segmented(out)
            else:
                for data, addr in out:
                    if self._send_queue:
                        self._enqueue(data, addr)
                    else:
                        self._send_or_enqueue(data, addr)
            if self._send_queue:
                self._send_ready.set()
        # else: the sender task asks the core for more once the queue drains.
        deadline = self._core.get_timer()
        armed = self._armed_deadline
        # Wake the timer task only for an earlier deadline: for a later one (a
        # retransmit timer pushed back by every acknowledgement) it wakes at the
        # old deadline, finds nothing due and sleeps again, which costs far less
        # than a wake-up per received batch.
        if deadline is not None and (armed is None or deadline < armed):
            self._timer_changed.set()

    def _sockaddr(self, addr: Address) -> tuple[Any, ...]:
        cached = self._sockaddrs.get(addr)
        if cached is not None:
            return cached
        host, port = addr
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise _UnusableAddress(f"not a numeric IP address: {host!r}") from None
        if not isinstance(port, int) or not 0 < port < 65536:
            raise _UnusableAddress(f"bad UDP port: {port!r}")
        if self._family == socket.AF_INET:
            if ip.version != 4:
                raise _UnusableAddress(f"IPv6 destination on an IPv4 socket: {host}")
            sockaddr: tuple[Any, ...] = (str(ip), port)
        elif ip.version == 4:
            sockaddr = (f"::ffff:{ip}", port, 0, 0)
        else:
            sockaddr = (str(ip), port, 0, 0)
        if len(self._sockaddrs) >= _ADDRESS_CACHE_LIMIT:
            self._sockaddrs.clear()
        self._sockaddrs[addr] = sockaddr
        return sockaddr

    def _send_or_enqueue(self, data: bytes, addr: Address) -> None:
        try:
            sockaddr = self._sockaddr(addr)
        except _UnusableAddress as exc:
            self._count_send_error(exc)
            return
        try:
            self._sock.sendto(data, sockaddr)
        except BlockingIOError:
            self._send_queue.append((data, addr, sockaddr))
        except OSError as exc:
            self._count_send_error(exc)
        else:
            self._count_sent(data, addr)

    def _send_segmented(self, out: list[tuple[bytes, Address]]) -> None:
        """Send ``out`` in order, each run of equal-size datagrams to one peer
        (the last of a run may be shorter) in one ``UDP_SEGMENT`` sendmsg."""
        index, count = 0, len(out)
        while index < count:
            data, addr = out[index]
            if self._send_queue:
                self._enqueue(data, addr)
                index += 1
                continue
            # Planned one run at a time: a refused run lowers the limit for the next.
            end = segment_run_end(out, index, self._gso_limit)
            if end - index == 1:
                self._send_or_enqueue(data, addr)
            else:
                self._send_run(out[index:end], addr, len(data))
            index = end

    def _send_run(self, run: list[tuple[bytes, Address]], addr: Address, size: int) -> None:
        try:
            sockaddr = self._sockaddr(addr)
        except _UnusableAddress as exc:
            for _ in run:
                self._count_send_error(exc)
            return
        try:
            self._sock.sendmsg(
                [b"".join(data for data, _ in run)],
                [(SOL_UDP, UDP_SEGMENT, GSO_SIZE.pack(size))],
                0,
                sockaddr,
            )
        except BlockingIOError:
            for data, _ in run:
                self._enqueue(data, addr)
            return
        except OSError as exc:
            # The route or device cannot segment (EIO: no checksum offload;
            # EINVAL/EMSGSIZE: segments larger than the path allows): send these
            # one by one, and stop segmenting what this size or more needs.
            if exc.errno in GSO_UNSUPPORTED:
                self._gso_limit = 0
            elif exc.errno in (errno.EINVAL, errno.EMSGSIZE):
                self._gso_limit = min(self._gso_limit, size)
            for data, _ in run:
                if self._send_queue:
                    self._enqueue(data, addr)
                else:
                    self._send_or_enqueue(data, addr)
            return
        self._segmented_sends += 1
        for data, _ in run:
            self._count_sent(data, addr)

    def _enqueue(self, data: bytes, addr: Address) -> None:
        if len(self._send_queue) >= self._send_queue_limit:
            self._dropped_send_queue_full += 1
            return
        try:
            sockaddr = self._sockaddr(addr)
        except _UnusableAddress as exc:
            self._count_send_error(exc)
            return
        self._send_queue.append((data, addr, sockaddr))

    def _count_sent(self, data: bytes, addr: Address) -> None:
        self._datagrams_sent += 1
        self._bytes_sent += len(data)
        if self._pcap is not None:
            self._pcap.write(pcap_local(self._local, addr), addr, data)

    def _count_send_error(self, exc: Exception) -> None:
        self._send_errors += 1
        self._last_send_error = _describe(exc)

    async def _send_loop(self) -> None:
        sock = self._sock
        queue = self._send_queue
        while True:
            while not queue:
                await self._send_ready.wait()
                self._send_ready = trio.Event()
            await trio.lowlevel.wait_writable(sock)
            while queue:
                data, addr, sockaddr = queue[0]
                try:
                    sock.sendto(data, sockaddr)
                except BlockingIOError:
                    break
                except OSError as exc:
                    self._count_send_error(exc)
                else:
                    self._count_sent(data, addr)
                queue.popleft()
            if not queue:
                self._flush()

    # --------------------------------------------------------------- receiving

    async def _receive_loop(self) -> None:
        sock = self._sock
        # With receive offload one read may hold up to 64 KiB of datagrams.
        buffer = bytearray(MAX_UDP_PAYLOAD + 1 if self._gro else self._max_datagram + 1)
        view = memoryview(buffer)
        peer = peer_ipv4 if self._family == socket.AF_INET else peer_ipv6
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(self._recv_batch):
                segment = 0
                try:
                    if self._gro:
                        size, ancillary, _flags, raw_addr = sock.recvmsg_into(
                            [buffer], GRO_CMSG_SPACE
                        )
                        for level, kind, value in ancillary:
                            if level == SOL_UDP and kind == UDP_GRO:
                                segment = GRO_SIZE.unpack_from(value)[0]
                    else:
                        size, raw_addr = sock.recvfrom_into(buffer)
                except BlockingIOError:
                    break
                except OSError as exc:
                    self._receive_errors += 1
                    self._last_receive_error = _describe(exc)
                    continue
                addr = peer(raw_addr)
                if 0 < segment < size:
                    self._coalesced_receives += 1
                    for offset in range(0, size, segment):
                        self._deliver(view[offset : min(offset + segment, size)], addr)
                else:
                    self._deliver(view[:size], addr)
            self._flush()

    def _deliver(self, datagram: memoryview, addr: Address) -> None:
        size = len(datagram)
        if size > self._max_datagram:
            self._dropped_oversize += 1
            return
        data = bytes(datagram)
        self._datagrams_received += 1
        self._bytes_received += size
        if self._pcap is not None and not self._pcap_shared:
            self._pcap.write(addr, pcap_local(self._local, addr), data)
        try:
            self._core.receive_datagram(data, addr, trio.current_time())
        except BadPacket:
            self._dropped_malformed += 1
        if self.on_input is not None:
            self.on_input()

    # ------------------------------------------------------------------ timer

    async def _timer_loop(self) -> None:
        core = self._core
        while True:
            deadline = core.get_timer()
            self._armed_deadline = deadline
            self._timer_changed = trio.Event()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._timer_changed.wait()
            now = trio.current_time()
            deadline = core.get_timer()
            if deadline is not None and now >= deadline:
                self._timer_fires += 1
                core.handle_timer(now)
                if self.on_input is not None:
                    self.on_input()
                self._flush()

    # ---------------------------------------------------------------- closing

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._send_queue.clear()
        try:
            trio.lowlevel.notify_closing(self._sock)
        finally:
            self._sock.close()
            if self._pcap is not None and not self._pcap_shared:
                self._pcap.close()


@asynccontextmanager
async def open_udp_endpoint(
    core: DatagramCore,
    local: Address = ("127.0.0.1", 0),
    *,
    pcap_path: str | os.PathLike[str] | None = None,
    shared_pcap: PcapWriter | None = None,
    recv_buffer: int | None = DEFAULT_RECV_BUFFER,
    send_buffer: int | None = None,
    sock: socket.socket | None = None,
    max_datagram: int = MAX_UDP_PAYLOAD,
    send_queue_limit: int = DEFAULT_SEND_QUEUE_LIMIT,
    recv_batch: int = DEFAULT_RECV_BATCH,
    offload: bool = False,
    on_input: InputHook | None = None,
) -> AsyncIterator[UdpEndpoint]:
    """Bind a UDP socket at ``local`` and drive ``core`` with it until the block exits.

    ``local`` picks the family: an IPv4 or IPv6 host (``"::"`` is dual-stack
    where the OS allows it), port 0 for any free port (see
    :attr:`UdpEndpoint.local_address`). ``recv_buffer`` is the ``SO_RCVBUF``
    to request (``None``: the OS default); ``send_buffer`` likewise for
    ``SO_SNDBUF``. With ``sock``, the endpoint uses that already bound UDP socket
    instead (bound before dropping privileges, or handed over by a service
    manager), ignores ``local``, and owns it: it is closed on exit. Datagrams
    longer than ``max_datagram`` are dropped and counted. At most
    ``send_queue_limit`` datagrams wait when the kernel's send buffer is full.
    ``recv_batch`` datagrams at most are read per scheduling round before the
    endpoint flushes and yields. With ``pcap_path``, every
    datagram sent and received is appended to that pcap file. ``shared_pcap``
    is one capture of several endpoints (all the parties of one process): each
    records into it the datagrams it sends, once, not those it receives (their
    sender did), and leaves it open for its maker to close. With ``offload``
    on Linux, runs of equal-size datagrams to one peer go out in
    one ``UDP_SEGMENT`` send and the kernel may coalesce received datagrams
    (``UDP_GRO``); where the kernel or route refuses, the endpoint sends and
    receives one datagram per system call (see :meth:`UdpEndpoint.statistics`).
    These socket options are those of :class:`EndpointConfig` (which checks
    them). ``on_input`` is called after every input handed to ``core`` (see
    :attr:`UdpEndpoint.on_input`).

    On exit the tasks are cancelled, queued datagrams discarded, the socket
    closed and the pcap file flushed and closed. An exception raised by the core
    (or by the body of the ``async with``) ends the block with that exception,
    not wrapped in an exception group when it is the only one.
    """
    EndpointConfig(recv_buffer, send_buffer, max_datagram, send_queue_limit, recv_batch, offload)
    if pcap_path is not None and shared_pcap is not None:
        raise ValueError("give pcap_path or shared_pcap, not both")
    if sock is None:
        sock = await bind_udp(local, recv_buffer, send_buffer)
    else:
        adopt_udp(sock, recv_buffer, send_buffer)
    try:
        pcap = shared_pcap if pcap_path is None else PcapWriter(pcap_path)
    except BaseException:
        sock.close()
        raise
    endpoint = UdpEndpoint(
        core,
        sock,
        pcap=pcap,
        pcap_shared=shared_pcap is not None,
        max_datagram=max_datagram,
        send_queue_limit=send_queue_limit,
        recv_batch=recv_batch,
        receive_buffer_requested=recv_buffer,
        offload=offload,
    )
    endpoint.on_input = on_input
    try:
        with lone_exceptions_unwrapped():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(endpoint._receive_loop)
                nursery.start_soon(endpoint._timer_loop)
                nursery.start_soon(endpoint._send_loop)
                try:
                    endpoint._flush()  # whatever the core had to send before we started
                    yield endpoint
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        endpoint._close()
