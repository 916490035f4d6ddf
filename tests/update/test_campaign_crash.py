"""The Update service killed (SIGKILL) mid-campaign and restarted, and on
PostgreSQL one of two processes killed while the other goes on: no
transition lost, none counted twice, and the record matches every device's
own state at the end.

Each process runs :mod:`tests.update.campaign_sim`: a worker and the devices
talking to it, the devices' own state in a fleet file written atomically
after every tick (what the devices would keep across the outage)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from dofpy_services.update.campaign import CampaignState
from dofpy_services.update.tracking import DeviceState
from dofpy_services.update.worker import CampaignWorker
from tests.update.campaign_fixtures import (
    SERVICE_KEY,
    SERVICE_KEY_SEED,
    assert_log_consistent,
    assert_matches_fleet,
    campaign_state,
    make_fleet,
    make_spec,
    opened,
    records,
    start,
)
from tests.update.campaign_sim import Fleet, create_shared_clock

ROOT_DIR = Path(__file__).resolve().parents[2]
MAX_TICKS = 600


def _spawn(location: str, fleet: Path, seed: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT_DIR))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.update.campaign_sim",
            location,
            str(fleet),
            str(seed),
            str(MAX_TICKS),
            str(SERVICE_KEY_SEED),
        ],
        cwd=ROOT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def _wait_ticks(process: subprocess.Popen[str], ticks: int) -> None:
    assert process.stdout is not None
    for _ in range(ticks):
        line = process.stdout.readline()
        assert line.startswith("tick"), line


def _finish(process: subprocess.Popen[str]) -> None:
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0
    assert "settled" in out


def test_killed_and_restarted_mid_campaign(db_location: str, tmp_path: Path) -> None:
    spec = make_spec(success_threshold=0.0, canary_share=0.25, devices_per_minute=20.0)
    fleet = make_fleet(spec, {"dev-004": "flaky", "dev-009": "reverts"}, count=16)
    fleet_path = tmp_path / "fleet.json"
    with opened(db_location) as db:
        start(CampaignWorker(db, SERVICE_KEY, "operator"), spec, fleet)
        db.write(create_shared_clock)
    fleet.save(fleet_path)
    first = _spawn(db_location, fleet_path, 1)
    _wait_ticks(first, 8)
    first.send_signal(signal.SIGKILL)
    first.wait()
    with opened(db_location) as db:
        mid = records(db, spec.name)
    assert any(r.started for r in mid.values())
    assert not all(r.state is DeviceState.SUCCEEDED for r in mid.values())
    # The restart: a new process (a new lease owner) on the same store and fleet.
    _finish(_spawn(db_location, fleet_path, 2))
    with opened(db_location) as db:
        assert campaign_state(db, spec.name) is CampaignState.COMPLETED
        assert_log_consistent(db, spec.name)
        assert_matches_fleet(db, Fleet.load(fleet_path))
        got = records(db, spec.name)
        assert got["dev-009"].state is DeviceState.FAILED
        assert sum(r.state is DeviceState.SUCCEEDED for r in got.values()) == 15


def test_one_of_two_processes_killed_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    # The survivor keeps the shared simulated clock running while the killed
    # half is down, for a stretch that depends on the machine's load: a long
    # silence timeout keeps that half's devices from timing out meanwhile
    # (which would be right, but make the expected ending depend on timing).
    spec = make_spec(success_threshold=0.0, canary_share=0.25, silence_timeout=30 * 86_400.0)
    # Polling devices: an offer is the device's row in the store, so a device
    # learns it at its next check-in whichever process made it.
    fleet = make_fleet(spec, {"dev-005": "reverts"}, count=16, live=False, poll=30.0)
    with opened(postgres_url) as db:
        start(CampaignWorker(db, SERVICE_KEY, "operator"), spec, fleet)
        db.write(create_shared_clock)
    halves = []
    for number, names in enumerate((sorted(fleet.devices)[:8], sorted(fleet.devices)[8:])):
        half = Fleet(
            fleet.campaign,
            fleet.new_version,
            fleet.image_size,
            {n: fleet.devices[n] for n in names},
            fleet.now,
        )
        path = tmp_path / f"fleet-{number}.json"
        half.save(path)
        halves.append(path)
    doomed = _spawn(postgres_url, halves[0], 1)
    survivor = _spawn(postgres_url, halves[1], 2)
    _wait_ticks(doomed, 6)
    _wait_ticks(survivor, 6)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    # The killed half's devices come back through a new process; the
    # survivor takes over the killed one's leases once they expire.
    _finish(_spawn(postgres_url, halves[0], 3))
    _finish(survivor)
    with opened(postgres_url) as db:
        assert campaign_state(db, spec.name) is CampaignState.COMPLETED
        assert_log_consistent(db, spec.name)
        merged = {}
        for path in halves:
            merged.update(Fleet.load(path).devices)
        assert_matches_fleet(db, Fleet(fleet.campaign, fleet.new_version, fleet.image_size, merged))
        writers = db.read(
            lambda tx: {r[0] for r in tx.rows("SELECT DISTINCT writer FROM campaign_transitions")}
        )
        assert len(writers) >= 3  # the operator's start, and more than one process
        got = records(db, spec.name)
        assert got["dev-005"].state is DeviceState.FAILED
        assert sum(r.state is DeviceState.SUCCEEDED for r in got.values()) == 15
