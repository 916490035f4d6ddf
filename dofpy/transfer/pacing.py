"""The provider-wide side of serving: the rate cap over all transfers (a
token bucket) and what was served to each requestor (bounded counters)."""

from __future__ import annotations

from dofpy._core import Address
from dofpy.transfer.events import ServedStatistics

__all__ = ["ProviderRateCap", "ServedCounters"]

_CREDIT_SLACK = 1e-3  # bytes of credit deficit treated as none


class ProviderRateCap:
    """A token bucket of ``cap`` bytes/s (``None``: no cap) holding at most
    ``burst`` bytes: a payload may go when the credit is not in deficit, and
    what it carried is then taken from the credit (which may go negative)."""

    def __init__(self, cap: float | None, burst: int) -> None:
        self.cap = cap
        self._burst = float(burst)
        self._credit = 0.0
        self._time = 0.0

    @property
    def last_time(self) -> float:
        """When the credit was last brought up to date."""
        return self._time

    def ready(self, now: float) -> bool:
        """Whether a payload may go at ``now`` (refilling the credit to ``now``)."""
        cap = self.cap
        if cap is None:
            return True
        self._credit = min(self._burst, self._credit + (now - self._time) * cap)
        self._time = now
        # The slack absorbs float rounding: a deficit of 1e-11 bytes would
        # otherwise ask for a timer at this very instant, forever.
        return self._credit >= -_CREDIT_SLACK

    def spend(self, size: int) -> None:
        if self.cap is not None:
            self._credit -= size

    def not_before(self, earliest: float | None) -> float | None:
        """``earliest`` (when a sender could next send) pushed back to when
        the credit's deficit is paid off, if it is in deficit."""
        cap = self.cap
        if earliest is not None and cap is not None and self._credit < -_CREDIT_SLACK:
            earliest = max(earliest, self._time + (-self._credit) / cap)
        return earliest


class ServedCounters:
    """What was served to each requestor: the ``limit`` most recently served
    kept (the least recent dropped first)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._served: dict[Address, ServedStatistics] = {}

    def count(self, peer: Address, size: int, cache_hits: int) -> None:
        served = self._served.pop(peer, None)
        if served is None:
            served = ServedStatistics()
            if len(self._served) >= self._limit:
                del self._served[next(iter(self._served))]
        served.blocks += 1
        served.bytes += size
        served.cache_hits += cache_hits
        self._served[peer] = served  # most recent last

    def get(self, peer: Address) -> ServedStatistics:
        """A copy of ``peer``'s counters (zeros for a peer never served)."""
        served = self._served.get(peer)
        return (
            ServedStatistics()
            if served is None
            else ServedStatistics(served.blocks, served.bytes, served.cache_hits)
        )
