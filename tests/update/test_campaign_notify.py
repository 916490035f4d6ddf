"""Notification: a device with a live session is told at once, a polling one
at its next check-in (the offer kept in the store), with jittered polling
that spreads a fleet coming back from an outage."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from dofpy_services.update.engine import Action, ActionKind, DeviceEvent, EventKind
from dofpy_services.update.notify import Notifier, poll_interval
from dofpy_services.update.tracking import DeviceState
from dofpy_services.update.worker import CampaignWorker
from tests.update.campaign_fixtures import (
    SERVICE_KEY,
    make_fleet,
    make_spec,
    opened,
    records,
    start,
)


def test_live_sessions_are_told_at_once_polling_devices_at_check_in(tmp_path: Path) -> None:
    spec = make_spec(canary_share=1.0)
    fleet = make_fleet(spec, count=2)
    with opened(str(tmp_path / "c.db")) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        start(worker, spec, fleet)
        told: list[Action] = []
        notifier = Notifier(base_poll=300.0, jitter=0.5, rng=random.Random(7))
        notifier.attach("dev-000", told.append)
        held = notifier.deliver(worker.step(fleet.now))
        assert [(a.kind, a.device) for a in told] == [(ActionKind.NOTIFY, "dev-000")]
        assert [(a.kind, a.device) for a in held] == [(ActionKind.NOTIFY, "dev-001")]
        assert records(db, spec.name)["dev-001"].state is DeviceState.NOTIFIED
        # A later process (the offer is the row, not this notifier's memory)
        # answers the polling device's check-in with the offer.
        other = CampaignWorker(db, SERVICE_KEY, "w2", lease=60.0)
        answer = other.handle(
            spec.name, "dev-001", DeviceEvent(EventKind.CHECK_IN), now=fleet.now + 120
        )
        assert answer is not None
        fresh = Notifier(rng=random.Random(1))
        actions, wait = fresh.check_in("dev-001", answer)
        assert [(a.kind, a.device) for a in actions] == [(ActionKind.NOTIFY, "dev-001")]
        assert 150.0 <= wait <= 450.0
        # Told once, not again at the following check-in.
        assert fresh.check_in("dev-001")[0] == []


def test_jittered_polling_spreads_a_fleet_after_an_outage() -> None:
    rng = random.Random(3)
    devices = 1000
    # Every device checks in the moment the service is back (t = 0).
    times = [0.0] * devices
    for _ in range(3):
        times = [t + poll_interval(300.0, 0.5, rng) for t in times]
    per_minute = Counter(int(t // 60) for t in times)
    # Without jitter all 1000 would land in one minute; spread, no minute
    # holds more than a fraction of them.
    assert max(per_minute.values()) < devices * 0.2
    assert len(per_minute) >= 10
    with pytest.raises(ValueError):
        poll_interval(300.0, 1.0, rng)
