"""What a campaign is, as the engine runs it (:class:`CampaignSpec`), and the
pure rules the engine applies: maintenance windows in a device's local time,
capped exponential back-off with full jitter, wave sizes, and the campaign's
own states.

The approved part of a campaign is its :class:`~dofpy_services.update.approvals.CampaignTerms`
(image, population, approval policy, time frame); the spec adds how it is run
(policy, urgency, windows, rate caps, waves, thresholds, retries, timeouts).
Changing the terms needs new approvals; the spec's running settings are the
operator's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dofpy_services.update.approvals import CampaignTerms
from dofpy_services.update.planning import Urgency

__all__ = [
    "CampaignSpec",
    "CampaignState",
    "DeadlineBehaviour",
    "RetryPolicy",
    "RunPolicy",
    "Window",
    "backoff_delay",
    "in_window",
    "next_window_open",
    "wave_sizes",
]

DAY = 86_400.0


class CampaignState(Enum):
    """Where a campaign is. Only RUNNING starts new devices; PAUSED, STOPPING
    and HALTED let devices already started finish."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    """Stopped by the operator: no new device starts, running ones finish."""
    STOPPED = "stopped"
    HALTED = "halted"
    """Halted by itself: a wave's failures passed the failure threshold, or a
    settled wave did not reach the success threshold."""
    CANCELLED = "cancelled"
    COMPLETED = "completed"


FINAL_CAMPAIGN_STATES = frozenset(
    {CampaignState.STOPPED, CampaignState.CANCELLED, CampaignState.COMPLETED}
)


class RunPolicy(Enum):
    AUTOMATIC = "automatic"
    """Mandatory: the device installs when its window allows."""
    MANUAL = "manual"
    """The device's user is asked and may defer or refuse."""


class DeadlineBehaviour(Enum):
    """What a manual campaign does with a device still deferred at the deadline."""

    INSTALL = "install"
    """Install anyway: the update becomes mandatory at the deadline."""
    SKIP = "skip"
    """Leave the device on its version: cancelled, reason ``deferred past deadline``."""
    FAIL = "fail"
    """Count it failed (stage authorise, reason ``deferred past deadline``)."""


@dataclass(frozen=True, slots=True)
class Window:
    """A daily maintenance window in the device's local time: seconds after
    local midnight, ``start`` inclusive, ``end`` exclusive; ``end < start``
    wraps past midnight (22:00-04:00)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not (0 <= self.start < DAY and 0 <= self.end <= DAY) or self.start == self.end:
            raise ValueError("a window is two different times of day (seconds after midnight)")

    @classmethod
    def parse(cls, text: str) -> Window:
        """``"22:00-04:00"``."""
        try:
            first, second = text.split("-")
            return cls(_clock(first), _clock(second))
        except ValueError:
            raise ValueError(f"a window is HH:MM-HH:MM, not {text!r}") from None

    def describe(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


def _clock(text: str) -> int:
    hours, minutes = text.strip().split(":")
    value = int(hours) * 3600 + int(minutes) * 60
    if not 0 <= value <= DAY:
        raise ValueError(text)
    return value


def _hhmm(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def in_window(windows: Sequence[Window], now: float, utc_offset: int) -> bool:
    """Whether ``now`` (POSIX seconds) is inside one of ``windows`` on a device
    whose local time is UTC + ``utc_offset`` seconds. No windows: always."""
    if not windows:
        return True
    local = (now + utc_offset) % DAY
    for window in windows:
        if window.start < window.end:
            if window.start <= local < window.end:
                return True
        elif local >= window.start or local < window.end:
            return True
    return False


def next_window_open(windows: Sequence[Window], now: float, utc_offset: int) -> float:
    """The earliest time at or after ``now`` inside a window (``now`` itself
    when inside one)."""
    if in_window(windows, now, utc_offset):
        return now
    # From the device's local midnight (a whole number of seconds, as window
    # starts and offsets are): an opening computed as ``now`` plus a float
    # wait can round to just before the window and fall outside it.
    midnight = math.floor((now + utc_offset) / DAY) * DAY - utc_offset
    return min(
        opening
        for w in windows
        for opening in (midnight + w.start, midnight + w.start + DAY)
        if opening >= now
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failed device is tried again: at most ``max_attempts``
    attempts in all, the ``n``-th retry after a delay drawn uniformly from
    ``[0, min(cap, base * 2**(n-1))]`` (full jitter: retries after an outage
    spread out instead of arriving together), only for failure reasons in
    ``retryable`` (``"timeout"`` makes silence retryable too)."""

    max_attempts: int = 3
    base: float = 60.0
    cap: float = 3600.0
    retryable: frozenset[str] = frozenset({"transfer-interrupted", "storage-busy", "timeout"})

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base <= 0 or self.cap < self.base:
            raise ValueError("max_attempts >= 1 and 0 < base <= cap")


def backoff_delay(policy: RetryPolicy, retry: int, rng: random.Random) -> float:
    """The delay before retry number ``retry`` (1: the first retry)."""
    ceiling = min(policy.cap, policy.base * 2 ** max(0, retry - 1))
    return rng.uniform(0.0, ceiling)


def wave_sizes(population: int, canary_share: float, growth: float) -> list[int]:
    """How many devices each wave holds: a canary of ``canary_share`` of the
    population (at least one device), then waves each ``growth`` times the
    one before, the last taking what is left."""
    if population <= 0:
        return []
    if not 0 < canary_share <= 1 or growth < 1:
        raise ValueError("0 < canary share <= 1 and growth >= 1")
    sizes: list[int] = []
    size = max(1, math.ceil(population * canary_share))
    left = population
    while left > 0:
        take = min(left, size)
        sizes.append(take)
        left -= take
        size = max(1, math.ceil(size * growth))
    return sizes


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """A campaign as the engine runs it.

    ``terms``: what was approved. ``intended_version``: what a device must
    boot and accept to count succeeded; ``image_size``: bytes one device
    downloads. ``run_policy``/``deadline_behaviour``: automatic, or manual
    and what happens to a device still deferred at the deadline.
    ``devices_per_minute`` and ``bytes_per_second``: the rate caps (``0``:
    none); the first counts attempts started (each first notification of an
    attempt, retries included: a notified device goes on to fetch the image),
    the second image bytes, enforced by admission too (at most
    ``bytes_per_second / image_size`` starts a second: each started device
    fetches the image at most once; see
    :func:`~dofpy_services.update.engine.start_rate`); an URGENT campaign
    ignores the devices-per-minute cap (as fast as capacity allows) but never
    the bytes cap (the uplink's capacity, set explicitly).
    ``canary_share``/``growth``: the waves; ``success_threshold``: the share
    of a settled wave that must succeed before the next starts;
    ``failure_threshold``: the share of a wave whose failure halts the
    campaign at once. ``silence_timeout``: how long a started device may stay
    silent before it times out (never past the campaign's deadline plus this).
    ``image_sequence`` and ``image_digest``: the manifest's sequence number
    and the root digest of the image a device boots, as the device interface
    hands them out (the sequence tells a device whether it has the image
    already; the digest is the only Normal image whose boot the service
    accepts; empty: the device's own manifest check is the only one).
    """

    terms: CampaignTerms
    intended_version: str
    image_size: int
    run_policy: RunPolicy = RunPolicy.AUTOMATIC
    deadline_behaviour: DeadlineBehaviour = DeadlineBehaviour.SKIP
    urgency: Urgency = Urgency.CONVENIENCE
    windows: tuple[Window, ...] = ()
    devices_per_minute: float = 0.0
    bytes_per_second: float = 0.0
    canary_share: float = 0.05
    growth: float = 2.0
    success_threshold: float = 0.95
    failure_threshold: float = 0.2
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    silence_timeout: float = 3600.0
    image_sequence: int = 0
    image_digest: bytes = b""

    def __post_init__(self) -> None:
        if not self.intended_version or self.image_size < 0:
            raise ValueError("a campaign installs a named version of a known size")
        if not 0 <= self.success_threshold <= 1 or not 0 < self.failure_threshold <= 1:
            raise ValueError("thresholds are shares: 0..1")
        if self.devices_per_minute < 0 or self.bytes_per_second < 0 or self.silence_timeout <= 0:
            raise ValueError("rate caps are >= 0 and the silence timeout > 0")
        wave_sizes(1, self.canary_share, self.growth)  # validates both

    @property
    def name(self) -> str:
        return self.terms.name

    def to_json(self) -> dict[str, Any]:
        return {
            "terms": self.terms.to_json(),
            "intended_version": self.intended_version,
            "image_size": self.image_size,
            "run_policy": self.run_policy.value,
            "deadline_behaviour": self.deadline_behaviour.value,
            "urgency": self.urgency.value,
            "windows": [w.describe() for w in self.windows],
            "devices_per_minute": self.devices_per_minute,
            "bytes_per_second": self.bytes_per_second,
            "canary_share": self.canary_share,
            "growth": self.growth,
            "success_threshold": self.success_threshold,
            "failure_threshold": self.failure_threshold,
            "retry": {
                "max_attempts": self.retry.max_attempts,
                "base": self.retry.base,
                "cap": self.retry.cap,
                "retryable": sorted(self.retry.retryable),
            },
            "silence_timeout": self.silence_timeout,
            "image_sequence": self.image_sequence,
            "image_digest": self.image_digest.hex(),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> CampaignSpec:
        """From :meth:`to_json`'s form; ``ValueError`` for anything else."""
        try:
            retry = dict(value.get("retry", {}))
            defaults = RetryPolicy()
            return cls(
                terms=CampaignTerms.from_json(value["terms"]),
                intended_version=str(value["intended_version"]),
                image_size=int(value["image_size"]),
                run_policy=RunPolicy(value.get("run_policy", "automatic")),
                deadline_behaviour=DeadlineBehaviour(value.get("deadline_behaviour", "skip")),
                urgency=Urgency(value.get("urgency", Urgency.CONVENIENCE.value)),
                windows=tuple(Window.parse(str(w)) for w in value.get("windows", ())),
                devices_per_minute=float(value.get("devices_per_minute", 0.0)),
                bytes_per_second=float(value.get("bytes_per_second", 0.0)),
                canary_share=float(value.get("canary_share", 0.05)),
                growth=float(value.get("growth", 2.0)),
                success_threshold=float(value.get("success_threshold", 0.95)),
                failure_threshold=float(value.get("failure_threshold", 0.2)),
                retry=RetryPolicy(
                    int(retry.get("max_attempts", defaults.max_attempts)),
                    float(retry.get("base", defaults.base)),
                    float(retry.get("cap", defaults.cap)),
                    frozenset(str(r) for r in retry.get("retryable", defaults.retryable)),
                ),
                silence_timeout=float(value.get("silence_timeout", 3600.0)),
                image_sequence=int(value.get("image_sequence", 0)),
                image_digest=bytes.fromhex(str(value.get("image_digest", ""))),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"campaign spec: missing or malformed field {exc}") from None
