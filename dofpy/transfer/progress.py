"""The requestor's rate floor (:mod:`dofpy.transfer.receiver`): a provider
whose progress stays below ``min_rate`` bytes/s over ``rate_window`` seconds
(a slow drip) is replaced by the next one."""

from __future__ import annotations

__all__ = ["ProgressFloor"]


class ProgressFloor:
    """Bytes the provider asked delivered in the current rate window."""

    __slots__ = ("delivered", "due", "min_rate", "rate_window", "start")

    def __init__(self, min_rate: float | None, rate_window: float, now: float) -> None:
        self.min_rate = min_rate
        self.rate_window = rate_window
        self.due: float | None = None
        """When the window ends (None: no floor)."""
        self.start = now
        self.delivered = 0
        self.restart(now)

    def restart(self, now: float) -> None:
        """A new window from ``now`` (a new provider, or the last one ended)."""
        self.start, self.delivered = now, 0
        if self.min_rate is not None:
            self.due = now + self.rate_window

    def end_window(self, now: float, remaining: int) -> str | None:
        """The window ends (``remaining``: bytes still to verify): why the
        provider is too slow, or None when it delivered at least the floor (or
        all that was left). A new window starts."""
        floor = self.min_rate
        assert floor is not None
        window = now - self.start
        delivered = self.delivered
        self.restart(now)
        if delivered >= min(floor * window, remaining + delivered):
            return None
        return (
            f"delivered {delivered} bytes in {window:.1f} s, below the floor of {floor:g} bytes/s"
        )
