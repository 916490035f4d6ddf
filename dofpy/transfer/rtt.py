"""Round-trip time estimate and retransmission timeout (RFC 6298 style).

``SRTT``/``RTTVAR`` are smoothed with gains 1/8 and 1/4; the timeout is
``SRTT + max(granularity, 4 * RTTVAR)`` clamped to ``[min_rto, max_rto]``,
doubled after every timeout without a new sample (exponential back-off),
and never above ``max_rto``. The minimum RTT seen is kept as the path's
propagation delay (the congestion controller compares the smoothed RTT with
it to tell queueing from random loss).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RttConfig", "RttEstimator"]


@dataclass(frozen=True, slots=True)
class RttConfig:
    """Parameters of the estimator, in seconds."""

    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 8.0
    granularity: float = 0.001

    def __post_init__(self) -> None:
        if not 0 < self.min_rto <= self.initial_rto <= self.max_rto:
            raise ValueError("need 0 < min_rto <= initial_rto <= max_rto")
        if self.granularity <= 0:
            raise ValueError("granularity must be > 0")


class RttEstimator:
    """Smoothed RTT, variance, minimum and the backed-off retransmission timeout."""

    __slots__ = ("_backoff", "config", "latest", "min_rtt", "rttvar", "samples", "srtt")

    def __init__(self, config: RttConfig | None = None) -> None:
        self.config = config or RttConfig()
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.min_rtt: float | None = None
        self.latest: float | None = None
        self.samples = 0
        self._backoff = 0

    def sample(self, rtt: float) -> None:
        """Take one RTT measurement (seconds, already net of the peer's hold time)."""
        rtt = max(rtt, self.config.granularity)
        self.latest = rtt
        self.samples += 1
        self._backoff = 0
        self.min_rtt = rtt if self.min_rtt is None else min(self.min_rtt, rtt)
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def on_timeout(self) -> None:
        """A retransmission timeout fired: double the next timeout (up to the cap)."""
        self._backoff = min(self._backoff + 1, 30)

    @property
    def backoff(self) -> int:
        """Timeouts since the last sample."""
        return self._backoff

    def rto(self) -> float:
        """The current retransmission timeout, back-off included."""
        cfg = self.config
        if self.srtt is None:
            base = cfg.initial_rto
        else:
            base = self.srtt + max(cfg.granularity, 4 * self.rttvar)
        base = min(max(base, cfg.min_rto), cfg.max_rto)
        return float(min(base * (1 << self._backoff), cfg.max_rto))
