"""``dofpy update plan`` against a simulated campaign: run at the plan's
rate and bandwidth, every device succeeds before the deadline the plan
says it meets."""

from __future__ import annotations

from pathlib import Path

from dofpy_services.update.campaign import CampaignState
from dofpy_services.update.planning import Capacity, CapacityFigure, PlanRequest, plan_campaign
from dofpy_services.update.tracking import DeviceState
from dofpy_services.update.worker import CampaignWorker
from tests.image.signing_fixtures import NOW
from tests.update.campaign_fixtures import (
    IMAGE_SIZE,
    SERVICE_KEY,
    campaign_state,
    make_fleet,
    make_spec,
    opened,
    records,
    run_until_settled,
    start,
)
from tests.update.campaign_sim import CHUNK

TICK = 10.0


def test_the_plans_deadline_is_met_in_a_simulated_campaign(tmp_path: Path) -> None:
    population, window = 40, 4 * 3600.0
    # The simulated device fetches at most 4 chunks per tick: its capacity.
    device_rate = CHUNK * 4 / TICK
    capacity = Capacity(
        CapacityFigure(50e6, "B/s", "test"),
        CapacityFigure(50e6, "B/s", "test"),
        CapacityFigure(device_rate, "B/s", "the simulated device"),
        CapacityFigure(1000.0, "reports/s", "test"),
    )
    plan = plan_campaign(
        PlanRequest(
            population=population,
            image_size=IMAGE_SIZE,
            window=window,
            capacity=capacity,
            relays=False,
            canary_share=0.1,
            wave_growth=2.0,
            wave_soak=0.0,
        )
    )
    assert plan.meets_deadline, plan.warnings
    spec = make_spec(
        terms={"deadline": int(NOW + window)},
        devices_per_minute=plan.rate * 60.0,
        bytes_per_second=plan.device_bytes_per_second,
        canary_share=0.1,
        growth=2.0,
        success_threshold=0.9,
    )
    fleet = make_fleet(spec, count=population)
    with opened(str(tmp_path / "c.db")) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        start(worker, spec, fleet)
        run_until_settled(worker, fleet, dt=TICK, max_ticks=int(window / TICK) + 10)
        assert campaign_state(db, spec.name) is CampaignState.COMPLETED
        got = records(db, spec.name)
        assert all(r.state is DeviceState.SUCCEEDED for r in got.values())
        finished = max(r.transitions[-1].time for r in got.values())
        assert finished <= NOW + window
        # The caps held it back: it did not finish in a fraction of the plan.
        assert finished - NOW >= plan.duration * 0.5
