"""Congestion control and pacing that tolerate random (non-congestive) loss.

The requestor runs the window (the transfer is pull-based): it asks for no
more than ``cwnd`` bytes of blocks outstanding, and tells the provider the
rate at which to pace them (``pacing_gain * cwnd / srtt``, capped).

The scheme is NewReno-like (slow start, additive increase of one block per
RTT, multiplicative decrease by ``beta``), with *loss discrimination*: a loss
reduces the window only when it looks congestive, that is when

* the smoothed RTT has grown above ``delay_threshold`` times the minimum RTT
  plus ``delay_margin`` (a queue is building), or
* the recent loss rate (an exponentially weighted average over about
  ``1 / loss_gain`` blocks) exceeds ``loss_threshold``.

Otherwise the loss is counted as random and the window is kept, so a link
that drops 1-30 % of datagrams at random keeps its throughput near
``(1 - loss)`` of the lossless one instead of collapsing to a few blocks.
At most one reduction happens per RTT (a recovery period). A retransmission
timeout also reduces the window (by ``beta``, not to one block: the path
may just have lost a burst).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CongestionConfig", "CongestionController"]


@dataclass(frozen=True, slots=True)
class CongestionConfig:
    """Parameters; window sizes in blocks, rates in bytes/s (``None`` = no cap)."""

    initial_window: int = 16
    min_window: int = 4
    max_window: int = 512
    beta: float = 0.7
    pacing_gain: float = 1.25
    delay_threshold: float = 1.5
    delay_margin: float = 0.005
    loss_gain: float = 1 / 64
    loss_threshold: float = 0.4
    rate_cap: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.min_window <= self.initial_window <= self.max_window:
            raise ValueError("need 1 <= min_window <= initial_window <= max_window")
        if not 0 < self.beta < 1:
            raise ValueError("beta must be in (0, 1)")
        if self.pacing_gain < 1:
            raise ValueError("pacing_gain must be >= 1")
        if not 0 < self.loss_gain < 1 or not 0 < self.loss_threshold <= 1:
            raise ValueError("loss_gain must be in (0, 1) and loss_threshold in (0, 1]")
        if self.rate_cap is not None and self.rate_cap <= 0:
            raise ValueError("rate_cap must be > 0 bytes/s")


class CongestionController:
    """The window (in blocks) and pacing rate of one transfer."""

    __slots__ = (
        "_recovery_until",
        "_ssthresh",
        "config",
        "cwnd",
        "loss_rate",
        "random_losses",
        "reductions",
    )

    def __init__(self, config: CongestionConfig | None = None) -> None:
        self.config = config or CongestionConfig()
        self.cwnd = float(self.config.initial_window)
        self._ssthresh = float(self.config.max_window)
        self._recovery_until = -1.0
        self.loss_rate = 0.0
        self.random_losses = 0
        self.reductions = 0

    @property
    def window(self) -> int:
        """Blocks allowed outstanding."""
        return int(self.cwnd)

    def on_delivered(self, blocks: int) -> None:
        """``blocks`` requested blocks arrived (verified or not: the path carried them)."""
        for _ in range(blocks):
            self.loss_rate *= 1 - self.config.loss_gain
            if self.cwnd < self._ssthresh:
                self.cwnd += 1
            else:
                self.cwnd += 1 / self.cwnd
        self.cwnd = min(self.cwnd, float(self.config.max_window))

    def on_lost(self, blocks: int, now: float, srtt: float | None, min_rtt: float | None) -> None:
        """``blocks`` outstanding blocks were declared lost at ``now``."""
        if blocks <= 0:
            return
        gain = self.config.loss_gain
        for _ in range(blocks):
            self.loss_rate = self.loss_rate * (1 - gain) + gain
        if now < self._recovery_until:
            return
        queueing = (
            srtt is not None
            and min_rtt is not None
            and srtt > min_rtt * self.config.delay_threshold + self.config.delay_margin
        )
        if queueing or self.loss_rate > self.config.loss_threshold:
            self._reduce()
            self._recovery_until = now + (srtt if srtt is not None else 0.0)
        else:
            self.random_losses += blocks

    def on_timeout(self) -> None:
        """A retransmission timeout: everything outstanding is presumed lost."""
        self._reduce()

    def _reduce(self) -> None:
        self.reductions += 1
        self.cwnd = max(self.cwnd * self.config.beta, float(self.config.min_window))
        self._ssthresh = self.cwnd

    def pacing_rate(self, block_bytes: int, srtt: float | None) -> float | None:
        """Bytes/s the provider should pace at, or ``None`` before any RTT sample
        (the initial window may go as one burst) and with no cap."""
        rate: float | None = None
        if srtt is not None and srtt > 0:
            rate = self.config.pacing_gain * self.cwnd * block_bytes / srtt
        cap = self.config.rate_cap
        if cap is not None:
            rate = cap if rate is None else min(rate, cap)
        return rate
