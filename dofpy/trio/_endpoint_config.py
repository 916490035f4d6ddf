"""What a UDP endpoint is told and what it tells: its typed configuration
(:class:`EndpointConfig`), the snapshot of its counters
(:class:`EndpointStatistics`) and the hook it calls after every input.

Apart from :mod:`dofpy.trio._endpoint` (the endpoint's loops and socket work)
so that the openers and nodes that only configure or report an endpoint do not
need its machinery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dofpy.trio._sockets import MAX_UDP_PAYLOAD

__all__ = [
    "DEFAULT_RECV_BATCH",
    "DEFAULT_RECV_BUFFER",
    "DEFAULT_SEND_QUEUE_LIMIT",
    "EndpointConfig",
    "EndpointStatistics",
    "InputHook",
]

DEFAULT_RECV_BUFFER = 4 * 1024 * 1024
DEFAULT_SEND_QUEUE_LIMIT = 1024
DEFAULT_RECV_BATCH = 64

InputHook = Callable[[], None]
"""Called after every input the endpoint hands its core (a datagram, a timer):
what turns the core's events into the application's (see :attr:`UdpEndpoint.on_input`)."""


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """How a UDP endpoint uses its socket (see :func:`open_udp_endpoint`):
    ``recv_buffer`` / ``send_buffer`` the ``SO_RCVBUF`` / ``SO_SNDBUF`` to ask
    for (``None``: the OS default), datagrams longer than ``max_datagram``
    dropped, at most ``send_queue_limit`` datagrams waiting for the kernel's
    send buffer, at most ``recv_batch`` read per scheduling round, and
    ``offload``: UDP segmentation and receive offload where Linux has them
    (``None``: the opener's default, on for block transfer, off otherwise)."""

    recv_buffer: int | None = DEFAULT_RECV_BUFFER
    send_buffer: int | None = None
    max_datagram: int = MAX_UDP_PAYLOAD
    send_queue_limit: int = DEFAULT_SEND_QUEUE_LIMIT
    recv_batch: int = DEFAULT_RECV_BATCH
    offload: bool | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_datagram <= MAX_UDP_PAYLOAD:
            raise ValueError(f"max_datagram must be 1..{MAX_UDP_PAYLOAD}, not {self.max_datagram}")
        if self.send_queue_limit < 1:
            raise ValueError(f"send_queue_limit must be at least 1, not {self.send_queue_limit}")
        if self.recv_batch < 1:
            raise ValueError(f"recv_batch must be at least 1, not {self.recv_batch}")
        for name, size in (("recv_buffer", self.recv_buffer), ("send_buffer", self.send_buffer)):
            if size is not None and size < 1:
                raise ValueError(f"{name} must be positive or None, not {size}")


@dataclass(frozen=True, slots=True)
class EndpointStatistics:
    """Counters of one endpoint, as a snapshot.

    ``receive_buffer_granted`` is what the kernel reports for ``SO_RCVBUF``
    after our request (Linux reports twice the usable size, capped by
    ``net.core.rmem_max`` unless the process may force it).
    """

    datagrams_sent: int
    bytes_sent: int
    datagrams_received: int
    bytes_received: int
    send_errors: int
    """Datagrams the kernel refused to send (dropped), or with an unusable address."""
    receive_errors: int
    """Errors the kernel reported when receiving (e.g. ICMP port unreachable)."""
    dropped_oversize: int
    """Received datagrams longer than ``max_datagram``, dropped unread."""
    dropped_malformed: int
    """Received datagrams the core rejected by raising ``BadPacket``."""
    dropped_send_queue_full: int
    """Datagrams the core wanted sent while the send queue was full."""
    send_queue_length: int
    """Datagrams waiting for the kernel's send buffer, now."""
    timer_fires: int
    """Calls to ``core.handle_timer``."""
    pcap_records_written: int
    segmentation_offload: bool
    """Whether runs of datagrams to one peer go out in one ``UDP_SEGMENT`` send."""
    receive_offload: bool
    """Whether the kernel may coalesce received datagrams (``UDP_GRO``)."""
    segmented_sends: int
    """``sendmsg`` calls that carried more than one datagram."""
    coalesced_receives: int
    """Receives that returned more than one datagram."""
    receive_buffer_requested: int | None
    receive_buffer_granted: int
    last_send_error: str | None
    last_receive_error: str | None

    @property
    def datagrams_dropped(self) -> int:
        """Every datagram dropped by the endpoint, whatever the reason."""
        return (
            self.dropped_oversize
            + self.dropped_malformed
            + self.dropped_send_queue_full
            + self.send_errors
        )
