"""The trio shell: the only part of dofpy that does I/O.

- :func:`open_node` — an OAP node (providers and requestors) on a UDP socket,
  with an awaitable API.
- :func:`open_udp_endpoint` — drive any sans-IO ``DatagramCore`` over UDP.
"""

from dofpy.trio._endpoint import EndpointStatistics, UdpEndpoint, open_udp_endpoint
from dofpy.trio._node import DofNode, NodeStatistics, Provider, Subscription, open_node

__all__ = [
    "DofNode",
    "EndpointStatistics",
    "NodeStatistics",
    "Provider",
    "Subscription",
    "UdpEndpoint",
    "open_node",
    "open_udp_endpoint",
]
