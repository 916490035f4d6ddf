"""A campaign end to end with real parts: the Authenticator, Image, Version
and Update daemons on 127.0.0.1, a published signed image, a campaign
created and approved through the campaign API and started with ``dofpy
update campaign start`` (population resolved from the Version registry),
and five real device agents on simulated bootloaders (the seed's layout)
that check in, are notified in two waves by the engine, authorised through
``dofpy update serve``'s device interface, install through Reprogram mode,
and report signed install reports (with the image bytes each fetched,
which the report totals). One device's new image fails its health
check: it rolls back (to its Reprogram image) and ends failed. The campaign
completes; its record matches each device's own state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from dofpy_services.cli import main
from dofpy_services.device.agent_record import load_record
from dofpy_services.device.boot_records import Slot
from dofpy_services.device.simulated import SimulatedBootloader
from dofpy_services.fleet.simulate import FleetFaults, FleetResult, run_fleet
from dofpy_services.update import campaign_store as cs
from dofpy_services.update import device_keys as dk
from dofpy_services.update.audit import verify_trail
from dofpy_services.update.campaign import CampaignState
from dofpy_services.update.device_interface import InstallOutcome, verify_install_report
from dofpy_services.update.tracking import DeviceState, Stage
from tests.device.test_device_run import NEW, RESCUE
from tests.fleet.world import CLASS_NAME, DEVICE_CLASS, NEW_DIGEST, VENDOR, World, world
from tests.services.test_daemon_runner import WAIT
from tests.update.campaign_fixtures import ROOT, SERVICE_KEY, opened

DEVICES = 5


async def _fleet_through_campaign(w: World, **fleet: Any) -> FleetResult:
    """The world's fleet run (``fleet``: more of ``run_fleet``'s arguments),
    the campaign started once every device has checked in."""
    starting = trio.Event()

    async def start_when_checked_in() -> None:
        await starting.wait()
        await trio.to_thread.run_sync(w.start_campaign)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start_when_checked_in)
        with trio.fail_after(12 * WAIT):
            return await run_fleet(
                w.devices, w.services, trust_root=w.trust_root, vendor_id=VENDOR,
                class_id=DEVICE_CLASS, class_name=CLASS_NAME, poll_interval=0.2,
                duration=10 * WAIT, on_checked_in=starting.set, **fleet,
            )  # fmt: skip


async def test_a_campaign_updates_real_agents_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with world(tmp_path, capsys, DEVICES) as w:
        result = await _fleet_through_campaign(
            w, faults=FleetFaults(unhealthy=1, seed=3), done=w.campaign_settled
        )
        with opened(w.campaigns) as db:
            campaign = db.read(lambda tx: cs.load_campaign(tx, w.spec.name))
            rows = {r.device: r for r in db.read(lambda tx: cs.load_devices(tx, w.spec.name))}
            kept = db.read(lambda tx: dk.install_reports(tx, w.spec.name))
            keys = {d: db.read(lambda tx, d=d: dk.device_key(tx, d)) for d in rows}
            trail = db.read(cs.audit_trail)
            writers = db.read(
                lambda tx: {r[0] for r in tx.rows("SELECT writer FROM campaign_transitions")}
            )
        capsys.readouterr()  # what the commands so far printed
        status = await trio.to_thread.run_sync(
            main, ["update", "report", w.spec.name, "--db", w.campaigns, "--format", "json"]
        )
    out, err = capsys.readouterr()
    assert status == 0, err
    assert campaign.state is CampaignState.COMPLETED, campaign.reason
    assert campaign.waves == 2  # a canary of two, then the other three
    assert "update-1" in writers  # the daemon drove them, through the device interface
    verify_trail(trail, SERVICE_KEY.public_key, root=ROOT)

    unhealthy = [d for d in result.devices if d.unhealthy]
    assert len(unhealthy) == 1
    for device, outcome in zip(w.devices, result.devices, strict=True):
        row = rows[str(device.identity)]
        boot = SimulatedBootloader(device.directory).booted()
        # The device's own last report, the record and the device itself agree.
        (report,) = outcome.reports
        assert report.campaign == w.spec.name
        # The image bytes the device reports fetching are what the service
        # records for it: all of the new image (the seed's layout copies
        # nothing of the old one; the unhealthy one fetched it too).
        assert row.bytes_served == report.bytes_fetched == len(NEW), row
        assert report.intended_version == "2.0"
        assert row.actual_version == boot.image.version == report.running_version
        if outcome.unhealthy:
            assert report.outcome is InstallOutcome.FAILED
            assert (row.state, row.stage) == (DeviceState.FAILED, Stage.BOOT), row
            # Rolled back: the seed's layout keeps no old Normal image, so the
            # device runs its accepted Reprogram image and waits.
            assert (boot.slot, boot.image.version, boot.accepted) == (Slot.REPROGRAM, "r1", True)
            assert boot.image == RESCUE.slot_image()
        else:
            assert report.outcome is InstallOutcome.SUCCEEDED
            assert row.state is DeviceState.SUCCEEDED, row
            assert (boot.slot, boot.image.digest, boot.accepted) == (Slot.NORMAL, NEW_DIGEST, True)
            assert boot.image.size == len(NEW)
    # Every install report was kept as signed, and verifies against the
    # device's enrolled key.
    assert sorted(d for d, _, _ in kept) == sorted(rows)
    for device, data, signature in kept:
        key = keys[device]
        assert key is not None
        identity = next(d.identity for d in w.devices if str(d.identity) == device)
        verify_install_report(key, identity, data, signature)
    summary = json.loads(out)
    assert (summary["scheduled"], summary["started"]) == (DEVICES, DEVICES)
    assert (summary["succeeded"], summary["failed"]) == (DEVICES - 1, 1)
    assert list(summary["failure_reasons"]) == ["boot"]
    fetched = sum(report.bytes_fetched for d in result.devices for report in d.reports)
    assert summary["bytes_served"] == fetched == DEVICES * len(NEW)
    assert result.counts() == {"succeeded": DEVICES - 1, "failed": 1}


async def test_the_fleet_never_stops_with_a_device_mid_update(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``done`` here says stop as soon as any device is recorded transferring
    (as a campaign that counted slow devices timed out would say settled
    while they still install); the fleet asks it only while no device is
    inside an update on its own side, so none is switched off mid-update,
    even with no grace at the stop."""
    async with world(tmp_path, capsys, DEVICES) as w:

        def a_device_transferring() -> bool:
            with opened(w.campaigns) as db:
                rows = db.read(lambda tx: cs.load_devices(tx, w.spec.name))
            if any(r.state is DeviceState.TRANSFERRING for r in rows):
                return True
            return w.campaign_settled()

        result = await _fleet_through_campaign(
            w, faults=FleetFaults(seed=3), done=a_device_transferring, check_every=0.05,
            stop_grace=0.0,
        )  # fmt: skip
    assert not [d.error for d in result.devices if d.error]
    for device in w.devices:
        boot = SimulatedBootloader(device.directory)
        booted = boot.booted()
        record = load_record(boot.fs)
        # Between updates (idle, checking in or polling), on an accepted
        # image: before its update or after it, never inside.
        waiting = record.state in ("idle", "check_in", "poll")
        assert (waiting, booted.accepted) == (True, True), (device.identity, record)
        assert booted.slot.is_normal
