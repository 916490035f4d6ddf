"""Notification: a device watching for pushes is told at once, a polling one
at its next check-in (the offer kept in the store), with jittered polling
that spreads a fleet coming back from an outage."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from dofpy.wire.oid import OID
from dofpy_services.update.engine import Action, ActionKind, DeviceEvent, EventKind
from dofpy_services.update.notify import NoticeObjects, poll_interval
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


def test_watching_devices_are_pushed_at_once_polling_devices_offered_at_check_in(
    tmp_path: Path,
) -> None:
    spec = make_spec(canary_share=1.0)
    fleet = make_fleet(spec, count=2)
    with opened(str(tmp_path / "c.db")) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        start(worker, spec, fleet)
        objects = NoticeObjects(b"\x01" * 32)
        watching = OID(3, b"dev-000")
        notices, _, _ = objects.watch(watching)
        actions = worker.step(fleet.now)
        assert sorted((a.kind, a.device) for a in actions) == [
            (ActionKind.NOTIFY, "dev-000"),
            (ActionKind.NOTIFY, "dev-001"),
        ]
        # The daemon's rows name a device by its identity's text; the
        # fleet's are plain names: dev-000 stands for the watching identity.
        named = [
            Action(a.kind, str(watching) if a.device == "dev-000" else a.device, a.campaign)
            for a in actions
        ]
        # Only the watching device is pushed; the other waits for its poll.
        assert objects.wanted(named) == [(watching, notices)]
        assert records(db, spec.name)["dev-001"].state is DeviceState.NOTIFIED
        # A later process (the offer is the row, not any process's memory)
        # answers the polling device's check-in with the offer.
        other = CampaignWorker(db, SERVICE_KEY, "w2", lease=60.0)
        answer = other.handle(
            spec.name, "dev-001", DeviceEvent(EventKind.CHECK_IN), now=fleet.now + 120
        )
        assert answer is not None
        assert [(a.kind, a.device) for a in answer] == [(ActionKind.NOTIFY, "dev-001")]


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
