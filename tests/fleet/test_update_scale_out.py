"""Two ``dofpy update serve`` daemons on one PostgreSQL campaign store, six
real device agents split between them (device n talks to daemon n mod 2
only: its polls, its pushes and every device call), a campaign to
completion. Either daemon may notify a device (the one whose step claims
it); the device then talks to its own daemon, which must be able to drive
it: the lease follows the device (docs/operations.md, "Scaling out"). One
device's new image fails its health check and ends failed; every other
device succeeds. The record matches each device's own state, no transition
is logged twice, and every transition a device's own report caused was
written by the daemon that device talks to (holding its lease). Then one
of the two killed mid-campaign and replaced on its address."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dofpy_services.device.boot_records import Slot
from dofpy_services.device.simulated import SimulatedBootloader
from dofpy_services.fleet.simulate import FleetFaults, FleetServices, run_fleet
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.campaign import CampaignState
from dofpy_services.update.device_interface import InstallOutcome
from dofpy_services.update.engine import PROGRESS_ORDER
from dofpy_services.update.service import UPDATE
from dofpy_services.update.tracking import DeviceState, Stage
from tests.fleet.world import CLASS_NAME, DEVICE_CLASS, NEW_DIGEST, VENDOR, world
from tests.services.test_daemon_runner import WAIT, running
from tests.update.campaign_fixtures import assert_log_consistent, opened

DEVICES = 6
UPDATES = 2
_ORDER = {s: n for n, s in enumerate((DeviceState.SCHEDULED, *PROGRESS_ORDER))}
_DEVICE_REPORTED = frozenset(PROGRESS_ORDER) - {DeviceState.NOTIFIED}
"""States only a device's own report moves its row to (a step notifies)."""


def test_each_device_talks_to_one_update_process() -> None:
    one = FleetServices(("v", 1), ("u", 2), (("i", 3),))
    assert one.updates == (("u", 2),) and one.update_for(7) == ("u", 2)
    two = FleetServices(("v", 1), (("u", 2), ("u", 3)), (("i", 3),))
    assert [two.update_for(n) for n in range(4)] == [("u", 2), ("u", 3), ("u", 2), ("u", 3)]
    with pytest.raises(ValueError, match="at least one"):
        FleetServices(("v", 1), (), (("i", 3),))


async def test_two_update_daemons_on_postgres_drive_a_split_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    # Waves of 2 then 4 devices: a step claims a whole wave (up to 200
    # devices, no devices-per-minute cap), so the daemon whose step comes
    # first notifies all four of the second, of which at least one talks
    # to the other daemon. The devices poll only every 1,000 s, longer than
    # the test may run: each learns its assignment by a push from the daemon
    # it watches at, whichever daemon notified it.
    async with world(
        tmp_path, capsys, DEVICES, campaign_store=postgres_url, updates=UPDATES,
        canary_share=0.3,
    ) as w:  # fmt: skip
        starting = trio.Event()

        async def start_when_checked_in() -> None:
            await starting.wait()
            await trio.to_thread.run_sync(w.start_campaign)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(start_when_checked_in)
            with trio.fail_after(12 * WAIT):
                result = await run_fleet(
                    w.devices, w.services, trust_root=w.trust_root, vendor_id=VENDOR,
                    class_id=DEVICE_CLASS, class_name=CLASS_NAME,
                    faults=FleetFaults(unhealthy=1, seed=5), poll_interval=1000.0,
                    duration=10 * WAIT, done=w.campaign_settled, on_checked_in=starting.set,
                    stop_grace=WAIT,
                )  # fmt: skip
        with opened(w.campaigns) as db:
            campaign = db.read(lambda tx: cs.load_campaign(tx, w.spec.name))
            rows = {r.device: r for r in db.read(lambda tx: cs.load_devices(tx, w.spec.name))}
            transitions = db.read(
                lambda tx: tx.rows(
                    "SELECT device, revision, state, writer FROM campaign_transitions"
                    " WHERE campaign = ? ORDER BY device, revision",
                    (w.spec.name,),
                )
            )
            assert_log_consistent(db, w.spec.name)
    logs: dict[str, list[tuple[DeviceState, str]]] = {}
    for device, _, state, writer in transitions:
        logs.setdefault(device, []).append((DeviceState(state), writer))
    seen = "\n".join(
        f"{d}: " + ", ".join(f"{s.value} by {writer}" for s, writer in log)
        for d, log in logs.items()
    )
    assert campaign.state is CampaignState.COMPLETED, f"{campaign.reason}\n{seen}"
    assert result.counts() == {"succeeded": DEVICES - 1, "failed": 1}, seen
    crossed = []
    for device, outcome in zip(w.devices, result.devices, strict=True):
        name = str(device.identity)
        row = rows[name]
        log = logs[name]
        # No retry in this run: each state once, forward only.
        states = [s for s, _ in log]
        progress = [s for s in states if s in _ORDER]
        assert progress == sorted(progress, key=_ORDER.__getitem__), log
        assert len(set(states)) == len(states), log
        # Its own reports reached the daemon it talks to, which took its
        # lease and wrote them, whichever daemon notified it.
        own = f"update-{device.number % UPDATES + 1}"
        reported = [(s, writer) for s, writer in log if s in _DEVICE_REPORTED]
        assert reported and all(writer == own for _, writer in reported), (own, log)
        (notifier,) = [writer for s, writer in log if s is DeviceState.NOTIFIED]
        assert notifier in {f"update-{n}" for n in range(1, UPDATES + 1)}, log
        if notifier != own:
            crossed.append(name)
        # The device's own last report, the record and the device itself agree.
        boot = SimulatedBootloader(device.directory).booted()
        (report,) = outcome.reports
        assert row.actual_version == boot.image.version == report.running_version
        if outcome.unhealthy:
            assert report.outcome is InstallOutcome.FAILED
            assert (row.state, row.stage) == (DeviceState.FAILED, Stage.BOOT), row
            assert (boot.slot, boot.image.version, boot.accepted) == (Slot.REPROGRAM, "r1", True)
        else:
            assert report.outcome is InstallOutcome.SUCCEEDED
            assert row.state is DeviceState.SUCCEEDED, row
            assert (boot.slot, boot.image.digest, boot.accepted) == (Slot.NORMAL, NEW_DIGEST, True)
    assert campaign.waves == 2
    assert crossed, seen  # a device notified by one daemon, driven by the other


async def test_an_update_daemon_killed_mid_campaign_is_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    """update-2 exits at once (a second stop signal: nothing released, its
    leases held) while a device it drives is mid-update; a new process,
    update-3, takes its address (a replacement behind the same name). Its
    devices' reports move their leases to update-3, what update-2 held
    passes on, and the campaign completes with the record matching every
    device and no transition twice. (The daemons run in this process: the
    kill is the daemon's immediate exit at a second stop signal, not a
    SIGKILL; tests/update/test_campaign_crash.py SIGKILLs worker processes.)"""
    async with world(
        tmp_path, capsys, DEVICES, campaign_store=postgres_url, updates=UPDATES,
        canary_share=0.3,
    ) as w:  # fmt: skip
        doomed = w.updates[1]
        port = w.services.updates[1][1]
        starting, finished = trio.Event(), trio.Event()
        held: list[str] = []

        def mid_update() -> list[str]:
            """Devices update-2 holds mid-update (authorised, not settled)."""
            with opened(w.campaigns) as db:
                rows = db.read(
                    lambda tx: tx.rows(
                        "SELECT device, state FROM campaign_devices WHERE lease_owner = ?",
                        ("update-2",),
                    )
                )
            return [d for d, state in rows if DeviceState(state) in _DEVICE_REPORTED]

        async def start_then_kill() -> None:
            await starting.wait()
            await trio.to_thread.run_sync(w.start_campaign)
            with trio.fail_after(4 * WAIT):
                while not held:
                    held.extend(await trio.to_thread.run_sync(mid_update))
                    await trio.sleep(0.02)
            await doomed.signals.send(15)
            await doomed.signals.send(15)  # the second: exit at once
            with trio.fail_after(WAIT):
                await doomed.done.wait()
            assert w.update_config is not None
            async with running(UPDATE, w.update_config("update-3", port)) as replacement:
                await finished.wait()
                await replacement.signals.send(15)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(start_then_kill)
            with trio.fail_after(12 * WAIT):
                result = await run_fleet(
                    w.devices, w.services, trust_root=w.trust_root, vendor_id=VENDOR,
                    class_id=DEVICE_CLASS, class_name=CLASS_NAME,
                    faults=FleetFaults(unhealthy=1, seed=5), poll_interval=0.2,
                    duration=10 * WAIT, done=w.campaign_settled, on_checked_in=starting.set,
                    stop_grace=WAIT,
                )  # fmt: skip
            finished.set()
        with opened(w.campaigns) as db:
            campaign = db.read(lambda tx: cs.load_campaign(tx, w.spec.name))
            rows = {r.device: r for r in db.read(lambda tx: cs.load_devices(tx, w.spec.name))}
            transitions = db.read(
                lambda tx: tx.rows(
                    "SELECT device, state, writer FROM campaign_transitions"
                    " WHERE campaign = ? ORDER BY device, revision",
                    (w.spec.name,),
                )
            )
            assert_log_consistent(db, w.spec.name)
    assert doomed.status == 128 + 15
    logs: dict[str, list[tuple[DeviceState, str]]] = {}
    for device, state, writer in transitions:
        logs.setdefault(device, []).append((DeviceState(state), writer))
    seen = "\n".join(
        f"{d}: " + ", ".join(f"{s.value} by {writer}" for s, writer in log)
        for d, log in logs.items()
    )
    assert campaign.state is CampaignState.COMPLETED, f"{campaign.reason}\n{seen}"
    assert result.counts() == {"succeeded": DEVICES - 1, "failed": 1}, seen
    for device, outcome in zip(w.devices, result.devices, strict=True):
        row = rows[str(device.identity)]
        boot = SimulatedBootloader(device.directory).booted()
        assert row.actual_version == boot.image.version == outcome.reports[-1].running_version
        expected = DeviceState.FAILED if outcome.unhealthy else DeviceState.SUCCEEDED
        assert row.state is expected, seen
    # What update-2 held mid-update was finished by the process now at the
    # device's address (update-3 for update-2's devices).
    at_address = {0: "update-1", 1: "update-3"}
    for device in w.devices:
        name = str(device.identity)
        if name in held:
            last_state, last_writer = logs[name][-1]
            assert last_state in (DeviceState.SUCCEEDED, DeviceState.FAILED), seen
            assert last_writer == at_address[device.number % UPDATES], seen
