"""Campaign planning: the plan's rate x time covers the population, more
capacity never needs more nodes, impossible deadlines warn; the CLI prints
each default capacity with its source."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy_services.cli import main
from dofpy_services.update.planning import (
    DEFAULT_CAPACITY,
    Capacity,
    CapacityFigure,
    PlanRequest,
    Urgency,
    plan_campaign,
)
from dofpy_services.version.store import open_version_store
from tests.services.version_helpers import fleet

requests = st.builds(
    PlanRequest,
    population=st.integers(1, 10_000_000),
    image_size=st.integers(1, 8 * 2**30),
    window=st.floats(60, 60 * 86400),
    urgency=st.sampled_from(list(Urgency)),
    relays=st.booleans(),
    canary_share=st.floats(0.001, 1.0),
    wave_growth=st.floats(1.5, 10.0),
    wave_soak=st.floats(0, 7200),
    max_nodes=st.one_of(st.none(), st.integers(2, 500)),
)


@settings(max_examples=300, deadline=None)
@given(requests)
def test_rate_times_time_covers_the_population(request: PlanRequest) -> None:
    plan = plan_campaign(request)
    assert sum(w.devices for w in plan.waves) == request.population
    assert plan.rate * plan.transfer_time >= request.population * (1 - 1e-9)
    assert plan.waves[0].devices >= 1
    for before, after in zip(plan.waves, plan.waves[1:], strict=False):
        assert after.start >= before.start + before.duration + request.wave_soak - 1e-6
    if plan.meets_deadline:
        assert not plan.warnings
        assert plan.waves[-1].start + plan.waves[-1].duration <= request.window


def scaled(capacity: Capacity, factor: float) -> Capacity:
    def up(figure: CapacityFigure) -> CapacityFigure:
        return dataclasses.replace(figure, value=figure.value * factor)

    return Capacity(
        up(capacity.provider_bytes_per_second),
        up(capacity.relay_bytes_per_second),
        up(capacity.device_bytes_per_second),
        up(capacity.version_reports_per_second),
    )


@settings(max_examples=300, deadline=None)
@given(requests, st.floats(1.0, 100.0))
def test_more_capacity_never_needs_more_nodes(request: PlanRequest, factor: float) -> None:
    base = plan_campaign(request)
    bigger = plan_campaign(dataclasses.replace(request, capacity=scaled(request.capacity, factor)))
    assert bigger.provider_nodes <= base.provider_nodes
    assert bigger.relay_nodes <= base.relay_nodes
    assert bigger.version_nodes <= base.version_nodes


def test_a_feasible_campaign_meets_its_deadline() -> None:
    plan = plan_campaign(PlanRequest(population=100_000, image_size=300_000_000, window=7 * 86400))
    assert plan.meets_deadline and not plan.warnings
    assert plan.relay_nodes == 2  # 100,000 x 300 MB in 0.8 x 7 days minus 4 soaks: 64 MB/s
    assert plan.provider_nodes == 1
    assert [w.devices for w in plan.waves] == [1000, 4000, 16000, 64000, 15000]


def test_an_urgent_campaign_plans_more_nodes_than_a_convenient_one() -> None:
    request = PlanRequest(population=1_000_000, image_size=100_000_000, window=3 * 86400)
    slow = plan_campaign(request)
    fast = plan_campaign(dataclasses.replace(request, urgency=Urgency.URGENT))
    assert fast.rate > slow.rate
    assert fast.relay_nodes > slow.relay_nodes


def test_without_relays_the_server_carries_everything() -> None:
    request = PlanRequest(population=10_000, image_size=10**9, window=86400, relays=False)
    plan = plan_campaign(request)
    assert plan.relay_nodes == 0
    assert plan.server_bytes == 10_000 * 10**9
    assert plan.server_bytes_per_second == pytest.approx(plan.rate * 10**9)


def test_node_limit_that_cannot_meet_the_deadline_warns() -> None:
    request = PlanRequest(
        population=1_000_000, image_size=4 * 2**30, window=86400, wave_soak=0, max_nodes=3
    )
    plan = plan_campaign(request)
    assert not plan.meets_deadline
    assert plan.provider_nodes + plan.relay_nodes <= 3
    assert any("cannot be met" in w for w in plan.warnings)


def test_server_limit_warns() -> None:
    request = PlanRequest(
        population=100_000,
        image_size=10**9,
        window=86400,
        relays=False,
        max_server_bytes_per_second=10e6,
    )
    plan = plan_campaign(request)
    assert plan.server_bytes_per_second <= 10e6 * (1 + 1e-9)
    assert not plan.meets_deadline


def test_cost_is_node_hours_and_bytes() -> None:
    request = PlanRequest(
        population=1000, image_size=10**9, window=86400, price_node_hour=2.0, price_gb=0.5
    )
    plan = plan_campaign(request)
    hours = (plan.provider_nodes + plan.relay_nodes) * plan.duration / 3600
    assert plan.node_hours == pytest.approx(hours)
    assert plan.cost == pytest.approx(hours * 2.0 + plan.server_bytes / 1e9 * 0.5)


def test_cli_prints_the_plan_and_each_default_source(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        ["update", "plan", "--population", "100000", "--image-size", "300MB", "--deadline", "7d"]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "relays            2" in out
    for figure in (
        DEFAULT_CAPACITY.provider_bytes_per_second,
        DEFAULT_CAPACITY.device_bytes_per_second,
        DEFAULT_CAPACITY.version_reports_per_second,
    ):
        assert figure.source in out
    assert "the deadline can be met" in out
    # The caps to create the campaign with: its rate, and its device traffic
    # as bytes/s (the one an urgent campaign keeps).
    plan = plan_campaign(PlanRequest(population=100_000, image_size=300 * 10**6, window=7 * 86400))
    caps = f"--devices-per-minute {plan.rate * 60:.2f} --bytes-per-second "
    caps += f"{plan.rate * 300 * 10**6:.0f}"
    assert f"campaign caps     {caps}\n" in out


def test_cli_warns_and_exits_3_when_the_deadline_cannot_be_met(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["update", "plan", "--population", "1000000", "--image-size", "4GiB"]
    status = main([*argv, "--deadline", "6h", "--max-nodes", "4", "--wave-soak", "0", "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert status == 3
    assert plan["meets_deadline"] is False
    caps = plan["campaign_caps"]
    assert caps["devices_per_minute"] == pytest.approx(plan["rate"] * 60)
    assert caps["bytes_per_second"] == pytest.approx(plan["rate"] * 4 * 2**30)
    assert any("cannot be met" in w for w in plan["warnings"])


def test_cli_counts_the_population_in_a_version_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "version.db")
    with open_version_store(db) as store:
        fleet(store, 60)  # 30 sensors, of which 10 run 2.0
    argv = ["update", "plan", "--db", db, "--class", "sensor", "--not-version", "2.0"]
    status = main([*argv, "--image-size", "1MB", "--deadline", "1d", "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert status == 0
    assert sum(w["devices"] for w in plan["waves"]) == 20
