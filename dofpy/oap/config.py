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

    def __post_init__(self) -> None:
        if not 0 < self.subscription_refresh < self.subscription_lease:
            raise ValueError("need 0 < subscription_refresh < subscription_lease")
        for name in ("max_subscribers", "max_subscriptions", "max_incoming"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
