"""The configuration of an OAP core (the node's own limits are in ``node``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dofpy.session.node import NodeConfig

__all__ = ["OapConfig"]


@dataclass(frozen=True, slots=True)
class OapConfig:
    """Configuration of an OAP core (the node's own limits are in ``node``)."""

    node: NodeConfig = field(default_factory=NodeConfig)
    subscription_lease: float = 60.0
    subscription_refresh: float = 20.0
    max_subscribers: int = 65536
    max_subscriptions: int = 4096
    max_incoming: int = 4096
    """Requests in progress (received, not yet answered) at most; more are
    refused with an OAP Exception BUSY."""
    max_incoming_per_peer: int = 256
    """Requests in progress from one requestor at most (its authenticated
    identity; its address for a command in the clear): one peer flooding
    slow requests cannot take every slot from the others."""
    max_incoming_bytes: int = 64 * 2**20
    """Bytes of the requests in progress (their OAP payloads) at most: what
    they hold while the application works is bounded in memory, not only in
    count (4,096 requests of 64 KiB would pin 256 MiB)."""

    def __post_init__(self) -> None:
        if not 0 < self.subscription_refresh < self.subscription_lease:
            raise ValueError("need 0 < subscription_refresh < subscription_lease")
        for name in (
            "max_subscribers",
            "max_subscriptions",
            "max_incoming",
            "max_incoming_per_peer",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_incoming_bytes < self.node.max_datagram:
            # Else a request of the largest datagram could never be served.
            raise ValueError(
                f"max_incoming_bytes must be >= node.max_datagram ({self.node.max_datagram})"
            )
