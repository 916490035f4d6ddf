"""Power cuts over the whole agent's full update, its rollback on command
and its update of the updater, on both layouts.

The simulated device's files -- its slots, its two record copies, and the
agent's own state (its record and the transfer's marks, on the bootloader's
DeviceFs) -- go through a PowerCutFs that fails at operation N: a write (torn
or not), an fsync, a rename, a directory fsync. The device is switched on
again (a boot decision on what was durable) and a fresh agent continues
from its state files. After every cut the device boots a whole image (old,
new or the Reprogram image; never neither); at the end it runs the new
image, accepted, and what the Version service's store (the real tables, on
SQLite) records matches what it runs.

- every cut point (each operation, each write also torn at 1 byte, a
  quarter, a half, three quarters, all but one byte and all of it; here
  each operation and each write torn at 1 byte and half way, every point
  under ``make soak``) of the uncut update, one cut per run; the same for a
  rollback after the update (instant on A/B, a re-install on the seed's
  layout), which ends on the old image, accepted and recorded; and for an
  update of the updater, which ends on the Normal image with the new
  Reprogram image in its slot;
- seeded random runs (full updates and updater updates, both layouts): a
  random cut point, and after each power-on perhaps another one, until the
  update ends. 20 here; ``DOFPY_SOAK=1`` (``make soak``) runs 1,000.
"""

from __future__ import annotations

import os
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing

from dofpy.transfer.core import TransferCore
from dofpy_services.device.agent import MARKS_FILE, RECORD_FILE, ImageToInstall, Installed, Rebooted
from dofpy_services.device.boot_records import Layout, Slot
from dofpy_services.device.fs import CutPoint, Operation, PowerCut, PowerCutFs, cut_points
from dofpy_services.device.ports import InProcessVersion
from dofpy_services.device.simulated import FirmwareImage, SimulatedBootloader
from dofpy_services.device.table import State
from dofpy_services.update.device_interface import Assignment, InstallOutcome
from dofpy_services.update.device_provider import PlannedUpdate
from dofpy_services.version.store import SyncVersionStore, open_version_store
from tests.device.test_agent_update import (
    DEVICE,
    MANIFEST_DIGEST,
    NEW,
    OLD,
    RESCUE,
    World,
    world,
)
from tests.device.test_agent_updater import UPDATER, updater_world

WHOLE = {OLD.slot_image(), NEW.slot_image(), RESCUE.slot_image(), UPDATER.slot_image()}
SOAK = bool(os.environ.get("DOFPY_SOAK"))
RANDOM_RUNS = 1000 if SOAK else 20


def finished(w: World, campaign: str):  # type: ignore[no-untyped-def]
    def done(agent: object) -> bool:
        progress = w.updates.progress.get(DEVICE)
        return (
            progress is not None
            and progress.report is not None
            and progress.report.campaign == campaign
            and agent.machine.state is State.IDLE  # type: ignore[attr-defined]
        )

    return done


def switch_on(w: World, template: Path, pending: list[CutPoint]) -> int:
    """Power on after a cut, with the next cut point of ``pending`` (if any);
    a cut during the power-on's own boot decision powers on again. It boots
    a whole image, old, new or Reprogram, never neither. Returns the cuts
    that fell while powering on."""
    fell = 0
    for _ in range(len(pending) + 1):
        cut = pending.pop(0) if pending else None
        fs = None if cut is None else PowerCutFs(template, cut_at=cut.at, torn_bytes=cut.torn_bytes)
        try:
            w.boot = SimulatedBootloader(template, fs=fs)
        except PowerCut:
            fell += 1
            continue
        booted = w.boot.booted()
        assert booted.image in WHOLE
        assert booted.accepted or booted.boot_attempts > 0
        return fell
    raise AssertionError("the device did not power on")


async def update_with_cuts(
    w: World, cuts: list[CutPoint], *, count: bool = False, campaign: str = "c1"
) -> tuple[list[Operation], int]:
    """Run the update, the power cut at each of ``cuts`` in turn (each
    counted from the power-on before it); switch on again and carry on until
    it ends. Returns the operations of the first power-on (``count``: no cut,
    to learn them) and how many cuts fell."""
    template = w.boot.directory
    pending = list(cuts)
    first = pending.pop(0) if pending else None
    fs = PowerCutFs(
        template,
        cut_at=None if first is None else first.at,
        torn_bytes=0 if first is None else first.torn_bytes,
    )
    w.boot = SimulatedBootloader(template, fs=fs)
    counted = fs
    fell = 0
    for _ in range(60):
        agent = w.agent()
        try:
            await agent.run(until=finished(w, campaign))
        except Rebooted:
            try:
                w.boot.reboot()
            except PowerCut:  # during the boot decision's own record write
                fell += 1 + switch_on(w, template, pending)
            continue
        except PowerCut:
            fell += 1 + switch_on(w, template, pending)
            continue
        break
    else:
        raise AssertionError("the update did not end within 60 boots")
    assert count or fell >= 1
    return counted.operations, fell


def check_end(w: World, store: SyncVersionStore, runs: FirmwareImage = NEW) -> None:
    booted = w.boot.booted()
    assert (booted.image, booted.accepted) == (runs.slot_image(), True)
    record, _ = store.show(DEVICE, 1)
    assert record is not None
    assert (record.version, record.image_digest, record.boot.accepted) == (
        booted.image.version,
        booted.image.digest,
        True,
    )
    assert record.boot.image_kind == booted.kind
    report = w.updates.progress[DEVICE].report
    assert report is not None and report.running_version == runs.version


def fresh(
    directory: Path, layout: Layout, store: SyncVersionStore, *, updater: bool = False
) -> World:
    """A freshly provisioned device in ``directory``, its agent's files on the
    device, reporting to ``store`` (a Version store of its own, so what it
    records is this run's alone); ``updater``: assigned a new Reprogram image."""
    directory.mkdir()
    make = updater_world if updater else world
    w = make(directory, layout, versions=InProcessVersion(store, DEVICE))
    w.state_on_device = True
    return w


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB], ids=lambda layout: layout.name)
async def test_a_power_cut_at_every_point_never_bricks_the_device(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    with open_version_store(tmp_path / "uncut.sqlite") as store:
        w = fresh(tmp_path / "uncut", layout, store)
        operations, _ = await update_with_cuts(w, [], count=True)
        check_end(w, store)
    written = Counter(op.name for op in operations if op.kind == "write")
    # The agent's own files are among what is cut, torn writes included.
    assert written[RECORD_FILE + ".new"] > 10 and written[MARKS_FILE + ".new"] >= 1
    points = cut_points(operations)
    if not SOAK:
        # Here: every operation, each write also torn after its first byte
        # and half way (every torn point under ``make soak``).
        sizes = {n: op.size for n, op in enumerate(operations)}
        points = [p for p in points if p.torn_bytes in (0, 1, sizes[p.at] // 2)]
    assert len(points) > len(operations)
    for n, point in enumerate(points):
        run = tmp_path / f"run-{n}"
        with open_version_store(tmp_path / f"run-{n}.sqlite") as store:
            w = fresh(run, layout, store)
            _, fell = await update_with_cuts(w, [point])
            assert fell == 1, point
            check_end(w, store)
        shutil.rmtree(run)
        (tmp_path / f"run-{n}.sqlite").unlink()


async def test_power_cuts_at_random_points_never_brick_the_device(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Both layouts, a full update and an update of the updater, in turn."""
    scenarios = [
        (layout, updater) for layout in (Layout.SEED, Layout.AB) for updater in (False, True)
    ]
    totals: dict[tuple[Layout, bool], int] = {}
    for layout, updater in scenarios:
        name = f"uncut-{layout.name}-{updater}"
        with open_version_store(tmp_path / f"{name}.sqlite") as store:
            w = fresh(tmp_path / name, layout, store, updater=updater)
            operations, _ = await update_with_cuts(w, [], count=True)
        totals[(layout, updater)] = len(operations)
    cuts = 0
    for seed in range(RANDOM_RUNS):
        rng = random.Random(seed)
        layout, updater = scenarios[seed % len(scenarios)]
        # The first cut falls within the run from the template; the later
        # ones, counted from each power-on, fall while it recovers or not.
        total = totals[(layout, updater)]
        planned = [
            CutPoint(rng.randrange(total), rng.choice((0, 0, rng.randrange(1, 300))))
            for _ in range(rng.randint(1, 3))
        ]
        run = tmp_path / f"seed-{seed}"
        with open_version_store(tmp_path / f"seed-{seed}.sqlite") as store:
            w = fresh(run, layout, store, updater=updater)
            _, fell = await update_with_cuts(w, planned)
            assert fell >= 1, seed
            check_end(w, store, OLD if updater else NEW)
            if updater:
                assert w.boot.slot_record(Slot.REPROGRAM).image == UPDATER.slot_image(), seed
        cuts += fell
        shutil.rmtree(run)
        (tmp_path / f"seed-{seed}.sqlite").unlink()
    assert cuts > RANDOM_RUNS  # some runs were cut again while recovering


async def updated(directory: Path, layout: Layout, store: SyncVersionStore) -> World:
    """A device that installed NEW (uncut) and is then told to roll back to
    OLD: instant on A/B (the kept slot), a re-install through Reprogram mode
    on the seed's layout."""
    w = fresh(directory, layout, store)
    await update_with_cuts(w, [], count=True)
    rollback = Assignment("c2", MANIFEST_DIGEST, "1.0", 10, 0.0, 1e9, rollback=True)
    previous = OLD if layout is Layout.AB else NEW
    w.updates.plan.assign(
        DEVICE, PlannedUpdate(rollback, OLD.slot_image().digest, previous.slot_image().digest)
    )
    if layout is Layout.SEED:
        w.images.provider.publish(OLD.data)
        old_manifest = TransferCore().publish(OLD.data)

        async def verify_old(assignment: Assignment, installed: Installed) -> ImageToInstall:
            return ImageToInstall(old_manifest, OLD.slot_image())

        w.images.verify = verify_old  # type: ignore[method-assign]
    return w


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB], ids=lambda layout: layout.name)
async def test_a_power_cut_at_every_point_of_a_rollback_never_bricks_the_device(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    with open_version_store(tmp_path / "uncut.sqlite") as store:
        w = await updated(tmp_path / "uncut", layout, store)
        operations, _ = await update_with_cuts(w, [], count=True, campaign="c2")
        check_end(w, store, OLD)
    points = cut_points(operations)
    if not SOAK:
        sizes = {n: op.size for n, op in enumerate(operations)}
        points = [p for p in points if p.torn_bytes in (0, 1, sizes[p.at] // 2)]
    assert len(operations) >= 10
    for n, point in enumerate(points):
        run = tmp_path / f"run-{n}"
        with open_version_store(tmp_path / f"run-{n}.sqlite") as store:
            w = await updated(run, layout, store)
            _, fell = await update_with_cuts(w, [point], campaign="c2")
            assert fell == 1, point
            check_end(w, store, OLD)
            report = w.updates.progress[DEVICE].report
            assert report is not None and report.outcome is InstallOutcome.ROLLED_BACK, point
        shutil.rmtree(run)
        (tmp_path / f"run-{n}.sqlite").unlink()


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB], ids=lambda layout: layout.name)
async def test_a_power_cut_at_every_point_of_an_updater_update_never_bricks_the_device(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    def check(w: World, store: SyncVersionStore) -> None:
        check_end(w, store, OLD)
        assert w.boot.slot_record(Slot.REPROGRAM).image == UPDATER.slot_image()
        report = w.updates.progress[DEVICE].report
        assert report is not None and report.outcome is InstallOutcome.SUCCEEDED

    with open_version_store(tmp_path / "uncut.sqlite") as store:
        w = fresh(tmp_path / "uncut", layout, store, updater=True)
        operations, _ = await update_with_cuts(w, [], count=True)
        check(w, store)
    points = cut_points(operations)
    if not SOAK:
        sizes = {n: op.size for n, op in enumerate(operations)}
        points = [p for p in points if p.torn_bytes in (0, 1, sizes[p.at] // 2)]
    assert len(operations) >= 20
    for n, point in enumerate(points):
        run = tmp_path / f"run-{n}"
        with open_version_store(tmp_path / f"run-{n}.sqlite") as store:
            w = fresh(run, layout, store, updater=True)
            _, fell = await update_with_cuts(w, [point])
            assert fell == 1, point
            check(w, store)
        shutil.rmtree(run)
        (tmp_path / f"run-{n}.sqlite").unlink()
