"""Campaigns with simulated devices, on SQLite and PostgreSQL: success only on
a confirmed boot, reverts counted failed, silence timing out, retries, waves
halting on failures by themselves, pause/resume/stop/cancel, approvals
required (and from the right parties), the audit trail verified and a
tampered one detected, a user deferring, installs held for a window, rate
caps in simulated time."""

from __future__ import annotations

import pytest

from dofpy.image import Party
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.approvals import CampaignRefused, sign_approval
from dofpy_services.update.audit import TamperKind, TrailTampered, verify_trail
from dofpy_services.update.campaign import (
    CampaignState,
    DeadlineBehaviour,
    RunPolicy,
    Window,
    in_window,
    next_window_open,
)
from dofpy_services.update.engine import Command
from dofpy_services.update.planning import Urgency
from dofpy_services.update.reports import build_report
from dofpy_services.update.tracking import DeviceState, Stage
from dofpy_services.update.worker import CampaignWorker
from tests.image.signing_fixtures import DAY, NOW
from tests.update.campaign_fixtures import (
    KEYS,
    ROOT,
    SERVICE_KEY,
    assert_log_consistent,
    assert_matches_fleet,
    campaign_state,
    in_progress,
    make_fleet,
    make_spec,
    opened,
    records,
    run_until_settled,
    start,
)


def test_success_counts_only_a_confirmed_boot(db_location: str) -> None:
    spec = make_spec(success_threshold=0.7)
    fleet = make_fleet(spec, {"dev-003": "reverts", "dev-007": "silent", "dev-011": "flaky"})
    with opened(db_location) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        assert start(worker, spec, fleet) == 20
        run_until_settled(worker, fleet)
        assert campaign_state(db, spec.name) is CampaignState.COMPLETED
        got = records(db, spec.name)
        # Installed and booted the new version, then fell back: failed at boot.
        reverted = got["dev-003"]
        assert reverted.state is DeviceState.FAILED
        assert reverted.failure is not None and reverted.failure.stage is Stage.BOOT
        assert reverted.intended_version == "2.0" and reverted.actual_version == "1.0"
        assert reverted.first([DeviceState.NORMAL_MODE]) is not None
        # Never came back after the notification: timed out, not "in progress".
        silent = got["dev-007"]
        assert silent.state is DeviceState.TIMED_OUT
        notified = silent.first([DeviceState.NOTIFIED])
        assert notified is not None
        assert silent.transitions[-1].time - notified.time >= spec.silence_timeout
        # It says where it went silent and for how long, and so does the
        # report (not "failed at timed-out").
        last = silent.transitions[-1]
        assert (silent.transitions[-2].state, last.stage) == (DeviceState.NOTIFIED, Stage.NOTIFY)
        assert last.reason == f"silent for {spec.silence_timeout:g} s"
        label = build_report(spec.name, list(got.values())).failure_reasons
        assert label["timed out in notified"] == {last.reason: 1}
        # A retryable transfer failure: tried again, then succeeded.
        flaky = got["dev-011"]
        assert flaky.state is DeviceState.SUCCEEDED and flaky.attempts == 2
        assert [t.state for t in flaky.transitions].count(DeviceState.NOTIFIED) == 2
        others = [r for d, r in got.items() if d not in {"dev-003", "dev-007", "dev-011"}]
        assert all(r.state is DeviceState.SUCCEEDED and r.actual_version == "2.0" for r in others)
        # Succeeded only after the device's trial boot was seen accepted.
        for record in others:
            booted = record.first([DeviceState.NORMAL_MODE])
            assert booted is not None and record.transitions[-1].time > booted.time
        assert_log_consistent(db, spec.name)
        assert_matches_fleet(db, fleet)


def test_a_non_retryable_failure_is_final_with_its_stage_and_reason(db_location: str) -> None:
    spec = make_spec(success_threshold=0.0, failure_threshold=1.0)
    fleet = make_fleet(spec, {"dev-001": "bad-image"}, count=5)
    with opened(db_location) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        start(worker, spec, fleet)
        run_until_settled(worker, fleet)
        bad = records(db, spec.name)["dev-001"]
        assert bad.state is DeviceState.FAILED and bad.attempts == 1
        assert bad.failure is not None
        assert (bad.failure.stage, bad.failure.reason) == (Stage.VERIFY, "bad-signature")


def test_a_failure_threshold_halts_the_campaign_by_itself(db_location: str) -> None:
    spec = make_spec(failure_threshold=0.3, success_threshold=0.0)
    fleet = make_fleet(spec, {f"dev-{n:03d}": "bad-image" for n in range(0, 20, 2)})
    with opened(db_location) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        start(worker, spec, fleet)
        run_until_settled(worker, fleet)
        campaign = db.read(lambda tx: cs.load_campaign(tx, spec.name))
        assert campaign.state is CampaignState.HALTED
        assert "failure threshold" in campaign.reason
        got = records(db, spec.name).values()
        halting = [r for r in got if r.wave == campaign.wave]
        failed = [r for r in halting if r.state is DeviceState.FAILED]
        assert len(failed) / len(halting) > spec.failure_threshold
        # No device of a later wave was ever started.
        assert all(not r.started for r in got if r.wave > campaign.wave)
        trail = verify_trail(db.read(cs.audit_trail), SERVICE_KEY.public_key, root=ROOT)
        assert [e.action for e in trail.entries][-1] == "halted"


def test_pause_resume_stop_and_cancel(db_location: str) -> None:
    spec = make_spec(success_threshold=0.0, devices_per_minute=6.0)
    fleet = make_fleet(spec, count=20)
    with opened(db_location) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        start(worker, spec, fleet)
        for _ in range(3):
            fleet.tick(worker, 10.0)
        started_before = {d for d, r in records(db, spec.name).items() if r.started}
        assert started_before
        worker.command(spec.name, Command.PAUSE, now=fleet.now, actor="operator")
        with pytest.raises(ValueError, match="cannot pause"):
            worker.command(spec.name, Command.PAUSE, now=fleet.now, actor="operator")
        for _ in range(100):
            fleet.tick(worker, 10.0)
        paused = records(db, spec.name)
        # Paused: no new device started; the running ones finished.
        assert {d for d, r in paused.items() if r.started} == started_before
        assert all(paused[d].state is DeviceState.SUCCEEDED for d in started_before)
        worker.command(spec.name, Command.RESUME, now=fleet.now, actor="operator")
        for _ in range(12):
            fleet.tick(worker, 10.0)
        running = in_progress(db, spec.name)
        assert running
        worker.command(spec.name, Command.STOP, now=fleet.now, actor="operator")
        run_until_settled(worker, fleet)
        stopped = records(db, spec.name)
        assert campaign_state(db, spec.name) is CampaignState.STOPPED
        # Stopped: the running devices finished, the unstarted ones never started.
        assert all(stopped[d].state is DeviceState.SUCCEEDED for d in running)
        never = [r for r in stopped.values() if not r.started]
        assert never and all(
            r.state is DeviceState.CANCELLED and r.transitions[-1].reason == "campaign stopped"
            for r in never
        )
        assert_log_consistent(db, spec.name)
        assert_matches_fleet(db, fleet)


def test_cancel_aborts_running_devices(db_location: str) -> None:
    spec = make_spec(success_threshold=0.0)
    fleet = make_fleet(spec, count=10)
    with opened(db_location) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        start(worker, spec, fleet)
        for _ in range(3):
            fleet.tick(worker, 10.0)
        running = in_progress(db, spec.name)
        assert running
        worker.command(spec.name, Command.CANCEL, now=fleet.now, actor="operator")
        run_until_settled(worker, fleet)
        got = records(db, spec.name)
        assert all(r.state is DeviceState.CANCELLED for r in got.values())
        # Running devices were told to abort and are back on their old version.
        assert all(fleet.devices[d].version == "1.0" for d in running)
        assert_matches_fleet(db, fleet)
        with pytest.raises(ValueError, match="cannot resume"):
            worker.command(spec.name, Command.RESUME, now=fleet.now, actor="operator")


def test_refused_without_approvals_or_with_the_wrong_party(db_location: str) -> None:
    spec = make_spec()
    fleet = make_fleet(spec, count=3)
    terms = spec.terms
    with opened(db_location) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        worker.create(spec, now=NOW, actor="operator")

        def try_start() -> None:
            worker.start(
                spec.name, ROOT, lambda _s: [(d, 0) for d in fleet.devices], now=NOW, actor="op"
            )

        with pytest.raises(CampaignRefused, match="manufacturer"):
            try_start()
        # The operator's key claiming to be a manufacturer does not count as one,
        # nor does a key the trust root does not list.
        for wrong in (KEYS.op, KEYS.outsider):
            with pytest.raises(CampaignRefused, match="not counted"):
                worker.approve(
                    spec.name,
                    sign_approval(terms, wrong, Party.MANUFACTURER, now=NOW),
                    ROOT,
                    now=NOW,
                    actor="x",
                )
        worker.approve(
            spec.name,
            sign_approval(terms, KEYS.m1, Party.MANUFACTURER, now=NOW),
            ROOT,
            now=NOW,
            actor="m1",
        )
        worker.approve(
            spec.name,
            sign_approval(terms, KEYS.op, Party.OPERATOR, now=NOW),
            ROOT,
            now=NOW,
            actor="op",
        )
        with pytest.raises(CampaignRefused) as refused:
            try_start()
        assert not refused.value.report.met
        assert campaign_state(db, spec.name) is CampaignState.CREATED
        assert db.read(lambda tx: cs.load_devices(tx, spec.name)) == []
        worker.approve(
            spec.name,
            sign_approval(terms, KEYS.m2, Party.MANUFACTURER, now=NOW),
            ROOT,
            now=NOW,
            actor="m2",
        )
        try_start()
        assert campaign_state(db, spec.name) is CampaignState.RUNNING
        trail = verify_trail(db.read(cs.audit_trail), SERVICE_KEY.public_key, root=ROOT)
        actions = [e.action for e in trail.entries]
        assert actions.count("start-refused") == 2 and actions[-1] == "start"
        assert actions.count("approval-refused") == 2
        assert len(trail.approvals) == 3


def test_a_tampered_audit_trail_is_detected(db_location: str) -> None:
    spec = make_spec()
    fleet = make_fleet(spec, count=3)
    with opened(db_location) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        start(worker, spec, fleet)
        worker.command(spec.name, Command.PAUSE, now=fleet.now, actor="operator")
        trail = db.read(cs.audit_trail)
        assert len(verify_trail(trail, SERVICE_KEY.public_key, root=ROOT).entries) == len(trail)
        # Someone with database access rewrites the pause as a start...
        changed = bytearray(trail[-1])
        changed[changed.index(b"pause")] = ord("q")
        db.write(
            lambda tx: tx.execute(
                "UPDATE update_audit SET signed = ? WHERE seq = ?", (bytes(changed), len(trail) - 1)
            )
        )
        with pytest.raises(TrailTampered) as caught:
            verify_trail(db.read(cs.audit_trail), SERVICE_KEY.public_key)
        assert caught.value.kind is TamperKind.CHANGED
        # ... or deletes an approval's entry.
        db.write(
            lambda tx: tx.execute(
                "UPDATE update_audit SET signed = ? WHERE seq = ?", (trail[-1], len(trail) - 1)
            )
        )
        db.write(lambda tx: tx.execute("DELETE FROM update_audit WHERE seq = 2"))
        with pytest.raises(TrailTampered) as caught:
            verify_trail(db.read(cs.audit_trail), SERVICE_KEY.public_key)
        assert caught.value.kind is TamperKind.OUT_OF_SEQUENCE


def test_a_user_defers_a_manual_update(db_location: str) -> None:
    spec = make_spec(
        run_policy=RunPolicy.MANUAL,
        deadline_behaviour=DeadlineBehaviour.SKIP,
        success_threshold=0.0,
        canary_share=1.0,
        terms={"deadline": NOW + DAY},
    )
    fleet = make_fleet(
        spec, {"dev-000": "defers", "dev-001": "defers", "dev-002": "refuses"}, count=4
    )
    fleet.devices["dev-000"].defer_until = NOW + 3600.0
    fleet.devices["dev-001"].defer_until = NOW + 2 * DAY  # past the deadline
    with opened(db_location) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        start(worker, spec, fleet)
        run_until_settled(worker, fleet, dt=60.0)
        got = records(db, spec.name)
        later = got["dev-000"]
        deferred = later.first([DeviceState.DEFERRED])
        assert deferred is not None and later.state is DeviceState.SUCCEEDED
        installing = later.first([DeviceState.INSTALLING])
        assert installing is not None and installing.time >= NOW + 3600.0
        assert got["dev-001"].state is DeviceState.CANCELLED
        assert got["dev-001"].transitions[-1].reason == "deferred past deadline"
        assert got["dev-002"].transitions[-1].reason == "refused by the user"
        assert got["dev-003"].state is DeviceState.SUCCEEDED
        assert_matches_fleet(db, fleet)


def test_install_is_held_until_the_local_maintenance_window(db_location: str) -> None:
    # NOW is 08:00 UTC; the window is 02:00-03:00 local time.
    window = Window.parse("02:00-03:00")
    spec = make_spec(windows=(window,), success_threshold=0.0, canary_share=1.0)
    fleet = make_fleet(spec, count=4)
    offsets = {"dev-000": 0, "dev-001": 3600 * 5, "dev-002": -3600 * 7, "dev-003": 3600 * 19}
    with opened(db_location) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        start(worker, spec, fleet, offsets)
        run_until_settled(worker, fleet, dt=60.0)
        for device, record in records(db, spec.name).items():
            assert record.state is DeviceState.SUCCEEDED, device
            verified = record.first([DeviceState.VERIFYING])
            installing = record.first([DeviceState.INSTALLING])
            assert verified is not None and installing is not None
            # Downloaded at once, outside the window; installed only inside it.
            assert not in_window((window,), verified.time, offsets[device])
            assert in_window((window,), installing.time, offsets[device]), device
            assert installing.time >= next_window_open((window,), verified.time, offsets[device])


def test_devices_downloading_ahead_are_held_for_their_window_and_by_a_pause(
    db_location: str,
) -> None:
    """A/B devices download and verify at once, never authorised: held (not
    timed out) until their window opens 18 hours on; a pause over the
    window's opening holds them too (not authorised, they have not begun to
    install); resumed inside the window, they install there."""
    window = Window.parse("02:00-03:00")  # NOW is 08:00 UTC
    spec = make_spec(windows=(window,), success_threshold=0.0, canary_share=1.0)
    fleet = make_fleet(spec, {f"dev-{n:03d}": "ahead" for n in range(4)}, count=4)
    opens = next_window_open((window,), float(NOW), 0)
    with opened(db_location) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        start(worker, spec, fleet)
        for _ in range(20):
            fleet.tick(worker, 10.0)
        ahead = records(db, spec.name)
        assert all(r.state is DeviceState.VERIFYING for r in ahead.values()), ahead
        worker.command(spec.name, Command.PAUSE, now=fleet.now, actor="operator")
        while fleet.now < opens + 1800:
            fleet.tick(worker, 600.0)
        paused = records(db, spec.name)
        assert all(r.state is DeviceState.VERIFYING for r in paused.values()), paused
        worker.command(spec.name, Command.RESUME, now=fleet.now, actor="operator")
        run_until_settled(worker, fleet, dt=60.0)
        for device, record in records(db, spec.name).items():
            assert record.state is DeviceState.SUCCEEDED, device
            assert record.first([DeviceState.AUTHORISED]) is None  # downloaded ahead
            verified = record.first([DeviceState.VERIFYING])
            installing = record.first([DeviceState.INSTALLING])
            assert verified is not None and installing is not None
            assert verified.time < opens
            assert opens + 1800 <= installing.time < opens + 3600
        assert_log_consistent(db, spec.name)
        assert_matches_fleet(db, fleet)


def test_the_devices_per_minute_cap_is_honoured_in_simulated_time(db_location: str) -> None:
    spec = make_spec(devices_per_minute=3.0, success_threshold=0.0, canary_share=1.0)
    fleet = make_fleet(spec, count=12)
    with opened(db_location) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        start(worker, spec, fleet)
        run_until_settled(worker, fleet)
        got = records(db, spec.name)
        assert all(r.state is DeviceState.SUCCEEDED for r in got.values())
        starts = sorted(
            t.time for r in got.values() for t in r.transitions if t.state is DeviceState.NOTIFIED
        )
        for first in starts:
            within = [s for s in starts if first <= s < first + 60.0]
            assert len(within) <= 3 + 1
        assert starts[-1] - starts[0] >= (len(starts) - 2) * 20.0
        assert sum(b for _, b in fleet.sent_bytes) == 12 * spec.image_size
        assert sum(r.bytes_served for r in got.values()) == 12 * spec.image_size


MIB = 2**20


@pytest.mark.parametrize(
    ("urgency", "devices_per_minute"),
    [
        (Urgency.CONVENIENCE, 0.0),  # the bytes/s cap alone
        (Urgency.CONVENIENCE, 600.0),  # both, the bytes/s cap the lower
        (Urgency.URGENT, 1.0),  # urgent: devices per minute ignored, bytes/s kept
    ],
)
def test_the_bytes_per_second_cap_paces_the_starts_in_simulated_time(
    db_location: str, urgency: Urgency, devices_per_minute: float
) -> None:
    """200 devices, a 1 MiB image, 100 KiB/s for 10 simulated minutes: the
    image bytes started (one image per start) in any window of T seconds
    stay within B * T + max(S, 15 * B) + S, and the cap is reached."""
    rate, size, minutes = 100 * 1024.0, MIB, 10
    spec = make_spec(
        image_size=size,
        bytes_per_second=rate,
        devices_per_minute=devices_per_minute,
        urgency=urgency,
        success_threshold=0.0,
        canary_share=1.0,
    )
    fleet = make_fleet(spec, count=200)
    with opened(db_location) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "w1")
        start(worker, spec, fleet)
        for _ in range(minutes * 6):
            fleet.tick(worker, 10.0)
        got = records(db, spec.name)
    starts = sorted(
        t.time for r in got.values() for t in r.transitions if t.state is DeviceState.NOTIFIED
    )
    slack = max(size, 15.0 * rate) + size
    for first, begin in enumerate(starts):
        for last in range(first, len(starts)):
            span = starts[last] - begin
            assert (last - first + 1) * size <= rate * span + slack, (begin, span)
    # Reached: the starts the steps' span allows (and the one token at the start).
    span = (minutes * 6 - 1) * 10.0
    assert len(starts) >= rate * span / size
    # What the devices fetched is what the starts let them.
    assert sum(b for _, b in fleet.sent_bytes) <= len(starts) * size
    succeeded = sum(r.state is DeviceState.SUCCEEDED for r in got.values())
    assert succeeded >= len(starts) - 10  # the last ones still on their way
