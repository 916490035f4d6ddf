"""Planning a campaign to its deadline: the seed's "determine required scale".

:func:`plan_campaign` is pure: a :class:`PlanRequest` (population, image
size, time frame, urgency, per-node capacity, limits, prices) in, a
:class:`CampaignPlan` out — the device rate, the waves with their start
times, the Image provider and relay nodes, the server bandwidth, the cost,
and warnings when the deadline cannot be met with the limits given. The plan
is a typed value so that a simulated campaign (the campaign engine, issue 14
Build 1, still to come) can check that the plan's promise is kept.

The model (docs/operations.md, "Planning a campaign"):

- The campaign aims to finish within a share of its window: ``0.8`` of it
  for a *convenience* update (the rest is margin for retries and devices
  that come late), ``0.25`` for an *urgent* one (as fast as capacity allows).
- Waves: a canary of ``canary_share`` of the population (at least one
  device), then groups ``wave_growth`` times the previous one; between two
  waves the campaign waits ``wave_soak`` seconds for the success threshold.
  The device rate is what sends the population through the waves in the
  time left after the soaks: ``population / (target - soaks)``.
- Image traffic is ``rate x image size``. With relays (the default), devices
  fetch from relays, ``ceil(traffic / relay capacity)`` of them, and each
  relay fetches each image once from the providers: the server's bandwidth
  is ``relays x image size / duration``. Without relays, the providers serve
  the devices: ``ceil(traffic / provider capacity)`` providers and the whole
  traffic on the server. At least one provider always.
- Confirmations: each device reports its new version to the Version service
  after it boots; ``ceil(rate / version capacity)`` Version processes.
- Cost: node-hours (every planned node for the campaign's duration) times
  ``price_node_hour``, plus the server's bytes times ``price_gb`` (per 10^9
  bytes). The prices are inputs, not measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "DEFAULT_CAPACITY",
    "CampaignPlan",
    "Capacity",
    "CapacityFigure",
    "PlanRequest",
    "PlannedWave",
    "Urgency",
    "plan_campaign",
]


class Urgency(Enum):
    CONVENIENCE = "convenience"
    URGENT = "urgent"


TARGET_SHARE = {Urgency.CONVENIENCE: 0.8, Urgency.URGENT: 0.25}
"""Share of the window a campaign plans to finish in, by urgency."""


@dataclass(frozen=True, slots=True)
class CapacityFigure:
    """A per-node capacity and where the number comes from."""

    value: float
    unit: str
    source: str


@dataclass(frozen=True, slots=True)
class Capacity:
    """Per-node capacity: image bytes per second a provider and a relay
    serve, bytes per second one device fetches and installs, and version
    reports per second one Version process records."""

    provider_bytes_per_second: CapacityFigure
    relay_bytes_per_second: CapacityFigure
    device_bytes_per_second: CapacityFigure
    version_reports_per_second: CapacityFigure


DEFAULT_CAPACITY = Capacity(
    provider_bytes_per_second=CapacityFigure(
        47.4e6,
        "B/s",
        "docs/operations.md Capacity (python -m benchmarks.image): serve 64 MiB over "
        "loopback, 8 KiB blocks, 47.4 MB/s",
    ),
    relay_bytes_per_second=CapacityFigure(
        47.4e6,
        "B/s",
        "assumed equal to a provider's (a relay serves its cached blocks by the same code; "
        "not measured separately)",
    ),
    device_bytes_per_second=CapacityFigure(
        4 * 2**30 / 263,
        "B/s",
        "docs/operations.md Capacity (python -m benchmarks.image soak): 4 GiB fetched by "
        "block and installed in 263 s",
    ),
    version_reports_per_second=CapacityFigure(
        1000.0,
        "reports/s",
        "docs/operations.md Version Sizing (python -m benchmarks.version): one service "
        "process on SQLite checked in 1,114-2,900/s on this project's test machines since "
        "the record codec's rewrite (808/s before); a round figure under all of them",
    ),
)


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """What a plan is asked for. Times are seconds; ``window`` is deadline
    minus start. ``max_nodes`` (Image providers plus relays) and
    ``max_server_bytes_per_second`` are limits (``None``: unlimited)."""

    population: int
    image_size: int
    window: float
    urgency: Urgency = Urgency.CONVENIENCE
    capacity: Capacity = DEFAULT_CAPACITY
    relays: bool = True
    canary_share: float = 0.01
    wave_growth: float = 4.0
    wave_soak: float = 3600.0
    max_nodes: int | None = None
    max_server_bytes_per_second: float | None = None
    price_node_hour: float = 0.10
    price_gb: float = 0.05

    def __post_init__(self) -> None:
        if self.population < 1:
            raise ValueError("the population is at least one device")
        if self.image_size < 1:
            raise ValueError("the image size is at least one byte")
        if self.window <= 0:
            raise ValueError("the deadline must come after the start")
        if not 0 < self.canary_share <= 1:
            raise ValueError("the canary share is in (0, 1]")
        if self.wave_growth <= 1:
            raise ValueError("waves must grow: wave growth > 1")
        if self.wave_soak < 0:
            raise ValueError("the wave soak is >= 0 seconds")


@dataclass(frozen=True, slots=True)
class PlannedWave:
    """One wave: ``devices`` of them, from ``start`` for ``duration``
    seconds (offsets from the campaign's start)."""

    index: int
    devices: int
    start: float
    duration: float


@dataclass(frozen=True, slots=True)
class CampaignPlan:
    """What a campaign needs to meet its deadline (or, with ``warnings``,
    what the limits allow and when it would finish)."""

    request: PlanRequest
    rate: float
    """Devices started per second."""
    waves: tuple[PlannedWave, ...]
    duration: float
    """Seconds from start to the last wave's end (soaks included)."""
    concurrent_devices: int
    """Devices transferring at once at the planned rate."""
    provider_nodes: int
    relay_nodes: int
    version_nodes: int
    device_bytes_per_second: float
    """Image traffic to devices (from relays, or from providers without)."""
    server_bytes_per_second: float
    """Image traffic leaving the Image providers."""
    server_bytes: int
    node_hours: float
    cost: float
    meets_deadline: bool
    warnings: tuple[str, ...] = field(default=())

    @property
    def transfer_time(self) -> float:
        """Seconds the waves spend starting devices (the duration without soaks)."""
        return sum(w.duration for w in self.waves)


def _wave_sizes(population: int, canary_share: float, growth: float) -> list[int]:
    sizes: list[int] = []
    left = population
    size = max(1, math.ceil(population * canary_share))
    while left > 0:
        take = min(size, left)
        sizes.append(take)
        left -= take
        size = max(size + 1, math.ceil(size * growth))
    return sizes


def _nodes_for(traffic: float, per_node: float) -> int:
    return max(1, math.ceil(traffic / per_node - 1e-9)) if traffic > 0 else 1


def plan_campaign(request: PlanRequest) -> CampaignPlan:
    """The plan for ``request`` (see the module's model)."""
    capacity = request.capacity
    sizes = _wave_sizes(request.population, request.canary_share, request.wave_growth)
    soaks = request.wave_soak * (len(sizes) - 1)
    target = request.window * TARGET_SHARE[request.urgency]
    warnings: list[str] = []
    sending_time = target - soaks
    if sending_time <= 0:
        warnings.append(
            f"the {len(sizes)} waves' soaks ({soaks:.0f} s) leave no time within the "
            f"planned {target:.0f} s: shorten --wave-soak or move the deadline"
        )
        sending_time = max(request.window - soaks, 0.0)
    wanted_rate = request.population / sending_time if sending_time > 0 else math.inf
    rate = wanted_rate
    per_relay = capacity.relay_bytes_per_second.value
    per_provider = capacity.provider_bytes_per_second.value
    size = request.image_size
    node_share = per_relay if request.relays else per_provider
    # The limits cap the rate: at most max_nodes serving nodes, at most the
    # server's bandwidth.
    if request.max_nodes is not None:
        serving = request.max_nodes - (1 if request.relays else 0)
        if serving < 1:
            raise ValueError("max nodes: relays need at least one provider and one relay")
        rate = min(rate, serving * node_share / size)
    if request.max_server_bytes_per_second is not None and not request.relays:
        rate = min(rate, request.max_server_bytes_per_second / size)
    if not math.isfinite(rate) or rate <= 0:
        rate = request.population / max(request.window, 1.0)
    send = [n / rate for n in sizes]
    waves: list[PlannedWave] = []
    clock = 0.0
    for index, (devices, duration) in enumerate(zip(sizes, send, strict=True)):
        waves.append(PlannedWave(index, devices, clock, duration))
        clock += duration + (request.wave_soak if index < len(sizes) - 1 else 0.0)
    duration = clock
    traffic = rate * size
    if request.relays:
        relay_nodes = _nodes_for(traffic, per_relay)
        server_bytes = relay_nodes * size
        server_rate = server_bytes / max(duration, 1e-9)
        provider_nodes = _nodes_for(server_rate, per_provider)
    else:
        relay_nodes = 0
        provider_nodes = _nodes_for(traffic, per_provider)
        server_bytes = request.population * size
        server_rate = traffic
    if request.max_server_bytes_per_second is not None and server_rate > (
        request.max_server_bytes_per_second
    ):
        warnings.append(
            f"the server needs {server_rate / 1e6:.1f} MB/s, more than the "
            f"{request.max_server_bytes_per_second / 1e6:.1f} MB/s allowed"
        )
    version_nodes = _nodes_for(rate, capacity.version_reports_per_second.value)
    concurrent = max(1, math.ceil(rate * size / capacity.device_bytes_per_second.value))
    device_time = size / capacity.device_bytes_per_second.value
    finish = duration + device_time  # the last device started still has to install
    meets = finish <= request.window and not warnings
    if finish > request.window:
        warnings.append(
            f"the deadline cannot be met with the given limits: the last device finishes "
            f"{finish:.0f} s after the start, the window is {request.window:.0f} s"
        )
    node_hours = (provider_nodes + relay_nodes) * duration / 3600.0
    cost = node_hours * request.price_node_hour + server_bytes / 1e9 * request.price_gb
    return CampaignPlan(
        request=request,
        rate=rate,
        waves=tuple(waves),
        duration=duration,
        concurrent_devices=concurrent,
        provider_nodes=provider_nodes,
        relay_nodes=relay_nodes,
        version_nodes=version_nodes,
        device_bytes_per_second=traffic,
        server_bytes_per_second=server_rate,
        server_bytes=server_bytes,
        node_hours=node_hours,
        cost=cost,
        meets_deadline=meets,
        warnings=tuple(warnings),
    )
