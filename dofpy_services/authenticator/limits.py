"""Rate limits for the Authenticator: per host on its unauthenticated paths,
per identity on its sealed one (sans-IO).

Every TRP command and every handshake with the Authenticator costs it a store
lookup and an audit row; one address asking without end would fill the audit
log and starve everyone else of worker threads. :class:`HostRateLimiter` keeps
a token bucket per source host in a bounded table: each request takes a
token, tokens come back at ``rate`` per second up to ``burst``, a request
finding the bucket empty is refused (the caller drops it and counts it).

Buckets are keyed by host, not by (host, port): a sender picks its port
freely, so a bucket per port would give every flood a fresh one. The table
holds at most ``max_hosts`` buckets; when a new host arrives in a full table
the least recently seen bucket is forgotten (it comes back full, which a
bucket idle that long would be anyway).

A TRP command inside a secure session comes from an enrolled node the
session authenticated; its bucket is that identity's (:meth:`allow_key`),
with its own, larger limit (:data:`DEFAULT_SEALED_RATE_LIMIT`): a responder
asks once for every session it accepts, so a service taking a fleet's
reconnections asks hundreds of times a second, and several services (or a
NAT) may share one host. Keyed by host, they would share the 20 a second
meant for strangers; keyed by identity, each service has its own and no
sender can spend another's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from dofpy._core import Address

__all__ = ["DEFAULT_RATE_LIMIT", "DEFAULT_SEALED_RATE_LIMIT", "HostRateLimiter", "RateLimit"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``rate`` requests per second from one host, bursts of ``burst``,
    ``max_hosts`` hosts tracked at once."""

    rate: float = 20.0
    burst: int = 40
    max_hosts: int = 4096

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError("rate must be > 0 requests per second")
        if self.burst < 1 or self.max_hosts < 1:
            raise ValueError("burst and max_hosts must be >= 1")


DEFAULT_RATE_LIMIT = RateLimit()
"""20 requests per second per host, bursts of 40: far above what a device
needs (one Request Session per session it accepts), far below a flood."""

DEFAULT_SEALED_RATE_LIMIT = RateLimit(rate=2000.0, burst=4000, max_hosts=4096)
"""2,000 sealed requests per second per authenticated identity, bursts of
4,000: a service accepting a fleet's sessions after an outage, bounded still
(an enrolled node gone rogue cannot take every worker thread)."""


class HostRateLimiter:
    """Token buckets per source host (see the module docstring)."""

    def __init__(self, limit: RateLimit = DEFAULT_RATE_LIMIT) -> None:
        self.limit = limit
        # host -> (tokens, time of the last refill), least recently seen first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.evictions = 0
        """Buckets forgotten to make room for a new host."""

    def allow(self, peer: Address, now: float) -> bool:
        """Whether one more request from ``peer``'s host is served at ``now``
        (taking a token if it is)."""
        return self.allow_key(peer[0], now)

    def allow_key(self, host: str, now: float) -> bool:
        """Whether one more request of bucket ``host`` (a host, or an
        authenticated identity) is served at ``now``."""
        limit = self.limit
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= limit.max_hosts:
                self._buckets.popitem(last=False)
                self.evictions += 1
            tokens = float(limit.burst)
        else:
            tokens, last = bucket
            # A clock going backwards refills nothing.
            tokens = min(float(limit.burst), tokens + max(0.0, now - last) * limit.rate)
            self._buckets.move_to_end(host)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[host] = (tokens, now)
        return allowed

    @property
    def hosts(self) -> int:
        """Hosts tracked now (at most ``limit.max_hosts``)."""
        return len(self._buckets)
