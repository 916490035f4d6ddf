"""The trio shell: the only part of dofpy that does I/O.

- :func:`open_node` — an OAP node (providers and requestors) on a UDP socket,
  with an awaitable API; :func:`current_request` tells a provider's handler
  who asks.
- :func:`open_transfer_node` — a block-transfer provider, caching relay and
  requestor (``await node.fetch(manifest, providers)``) on a UDP socket.
- :func:`open_udp_endpoint` — drive any sans-IO ``DatagramCore`` over UDP
  (:class:`EndpointConfig`: how the socket is used).
- :class:`PcapWriter` — a pcap file of datagrams; one writer given to several
  endpoints (``shared_pcap=``) is one capture of all of them.
- :func:`lone_exceptions_unwrapped` — what these context managers do with
  trio's exception groups (a lone exception leaves as itself), for code that
  stacks its own nurseries on them.
"""

from dofpy.trio._endpoint import UdpEndpoint, open_udp_endpoint
from dofpy.trio._endpoint_config import EndpointConfig, EndpointStatistics
from dofpy.trio._groups import lone_exceptions_unwrapped
from dofpy.trio._node import DofNode, DofNodeStatistics, PendingAnswer, Subscription
from dofpy.trio._open import open_node
from dofpy.trio._pcapfile import PcapWriter
from dofpy.trio._provider import Provider, current_request
from dofpy.trio._transfer import (
    FetchProgress,
    TransferNode,
    TransferNodeStatistics,
    open_transfer_node,
)

__all__ = [
    "DofNode",
    "DofNodeStatistics",
    "EndpointConfig",
    "EndpointStatistics",
    "FetchProgress",
    "PcapWriter",
    "PendingAnswer",
    "Provider",
    "Subscription",
    "TransferNode",
    "TransferNodeStatistics",
    "UdpEndpoint",
    "current_request",
    "lone_exceptions_unwrapped",
    "open_node",
    "open_transfer_node",
    "open_udp_endpoint",
]
