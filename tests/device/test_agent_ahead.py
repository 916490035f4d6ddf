"""Downloading ahead of the maintenance window (A/B devices): assigned an
update whose window opens in two hours, an A/B device transfers the image
into its free Normal slot and checks it whole at once, while the accepted
image runs, and switches to it (the install) only once the window has opened,
after the authorisation. The seed's layout (its download is written in
Reprogram mode over the old image: it is the install) and a confidential
image (its content key comes only with the authorisation) download inside
the window, as before. A power cut anywhere in the download ahead resumes
and ends the same. Trio's MockClock is the device's clock too."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import trio
import trio.testing

from dofpy_services.device.boot_records import Layout, Slot, SlotRecord, SlotState
from dofpy_services.device.fs import cut_points
from dofpy_services.device.simulated import SimulatedBootloader
from dofpy_services.update.device_interface import InstallOutcome, Stage
from dofpy_services.update.device_provider import StageEntry
from dofpy_services.version.store import open_version_store
from tests.device.test_agent_confidential import DEVICE_KEY, confidential_world
from tests.device.test_agent_power_cuts import check_end, fresh, update_with_cuts
from tests.device.test_agent_update import DEVICE, NEW, OLD, World, world

OPENS = 7200.0
"""The window opens two hours after the test starts (MockClock time 0)."""
CLOSES = OPENS + 3600.0


def in_two_hours(w: World, start: float = 0.0) -> World:
    """``w``'s assignment, its window moved to [start + OPENS, start + CLOSES)."""
    planned = w.updates.plan.updates[DEVICE]
    assignment = dataclasses.replace(
        planned.assignment, window_start=start + OPENS, window_end=start + CLOSES
    )
    w.updates.plan.assign(DEVICE, dataclasses.replace(planned, assignment=assignment))
    return w


def stages(w: World, stage: Stage) -> list[StageEntry]:
    return [entry for entry in w.updates.progress[DEVICE].stages if entry.stage is stage]


def watch_switches(boot: SimulatedBootloader) -> list[tuple[float, Slot]]:
    """Every boot target the agent sets on ``boot``, with its time."""
    switches: list[tuple[float, Slot]] = []
    original = boot.set_boot_target

    def set_boot_target(slot: Slot) -> None:
        switches.append((trio.current_time(), slot))
        original(slot)

    boot.set_boot_target = set_boot_target  # type: ignore[method-assign]
    return switches


def watch_verified(w: World) -> list[tuple[float, SlotRecord, Slot]]:
    """At each VERIFYING report: the time, the free slot's record, the boot target."""
    seen: list[tuple[float, SlotRecord, Slot]] = []
    original = w.updates.record_progress

    def record_progress(device: object, campaign: str, stage: str, reason: str, now: float) -> None:
        if stage == Stage.VERIFYING.value:
            seen.append((now, w.boot.slot_record(Slot.NORMAL_B), w.boot.record().target))
        original(device, campaign, stage, reason, now)  # type: ignore[arg-type]

    w.updates.record_progress = record_progress  # type: ignore[method-assign,assignment]
    return seen


def assert_succeeded(w: World) -> None:
    booted = w.boot.booted()
    assert (booted.image, booted.accepted, booted.slot.is_normal) == (NEW.slot_image(), True, True)
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.running_version) == (InstallOutcome.SUCCEEDED, "2.0")


async def test_an_ab_device_downloads_before_the_window_and_installs_inside_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    w = in_two_hours(world(tmp_path, Layout.AB))
    switches = watch_switches(w.boot)
    verified = watch_verified(w)
    asked: list[float] = []
    authorise = w.updates.authorise

    def counted(*args: object) -> object:
        asked.append(trio.current_time())
        return authorise(*args)  # type: ignore[arg-type]

    w.updates.authorise = counted  # type: ignore[method-assign,assignment]
    await w.run_update()
    assert_succeeded(w)
    # Downloaded and checked whole before the window opened, the accepted
    # old image still the boot target.
    ((at, slot, target),) = verified
    assert at < OPENS
    assert (slot.state, slot.image, target) == (SlotState.VALID, NEW.slot_image(), Slot.NORMAL)
    assert all(entry.at < OPENS for entry in stages(w, Stage.TRANSFERRING))
    # The switch (the install) only after the window opened, once, into that slot.
    assert [slot for _, slot in switches] == [Slot.NORMAL_B]
    assert all(OPENS <= at < CLOSES for at, _ in switches)
    # The agent waited for the window itself: asked once (no NotNow spent an
    # attempt), and was authorised.
    assert len(asked) == 1 and OPENS <= asked[0] < CLOSES
    authorised = stages(w, Stage.AUTHORISED)
    assert authorised and all(OPENS <= entry.at < CLOSES for entry in authorised)
    assert all(entry.at >= OPENS for entry in stages(w, Stage.INSTALLING))
    assert w.images.transfers == 1  # not fetched again inside the window
    assert w.reboots == 1 and w.boot.rollback_slot() is Slot.NORMAL


async def test_the_seed_layout_downloads_only_inside_the_window(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    w = in_two_hours(world(tmp_path, Layout.SEED))
    before = w.boot.slot_record(Slot.NORMAL)
    switches = watch_switches(w.boot)
    await w.run_update()
    assert_succeeded(w)
    transferring = stages(w, Stage.TRANSFERRING)
    assert transferring and all(entry.at >= OPENS for entry in transferring)
    # Nothing switched or written before the window: into Reprogram mode first.
    assert switches and all(at >= OPENS for at, _ in switches)
    assert switches[0][1] is Slot.REPROGRAM
    assert before.image == OLD.slot_image()


async def test_a_confidential_image_is_not_downloaded_ahead(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Its content key comes only with the authorisation, inside the window."""
    w = in_two_hours(confidential_world(tmp_path, Layout.AB, DEVICE_KEY, DEVICE_KEY))
    await w.run_update()
    assert_succeeded(w)
    transferring = stages(w, Stage.TRANSFERRING)
    assert transferring and all(entry.at >= OPENS for entry in transferring)
    assert all(entry.at >= OPENS for entry in stages(w, Stage.AUTHORISED))


async def test_inside_the_window_an_ab_device_is_authorised_first(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The window already open: authorised before anything is transferred."""
    w = world(tmp_path, Layout.AB)
    await w.run_update()
    assert_succeeded(w)
    kinds = [entry.stage for entry in w.updates.progress[DEVICE].stages]
    assert kinds.index(Stage.AUTHORISED) < kinds.index(Stage.TRANSFERRING)
    assert Stage.VERIFYING not in kinds


async def test_a_power_cut_anywhere_in_the_download_ahead_resumes_and_ends_the_same(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Every operation of the download ahead (each write also torn after its
    first byte and half way) cut in turn: the device boots its accepted image
    meanwhile, the download resumes (or begins again), and the update ends
    installed inside the window, recorded as it runs."""

    def ahead(directory: Path, store: object) -> tuple[World, list[tuple[float, int]]]:
        # Each run's window two hours after it starts (the clock runs on).
        w = in_two_hours(fresh(directory, Layout.AB, store), trio.current_time())  # type: ignore[arg-type]
        # At each VERIFYING report: the time and the operations done so far.
        marks: list[tuple[float, int]] = []
        original = w.updates.record_progress

        def record_progress(
            device: object, campaign: str, stage: str, reason: str, now: float
        ) -> None:
            if stage == Stage.VERIFYING.value:
                # (A device switched on after a cut counts none.)
                done = getattr(w.boot.fs, "operations", [])
                marks.append((now, len(done)))
            original(device, campaign, stage, reason, now)  # type: ignore[arg-type]

        w.updates.record_progress = record_progress  # type: ignore[method-assign,assignment]
        return w, marks

    with open_version_store(tmp_path / "uncut.sqlite") as store:
        w, marks = ahead(tmp_path / "uncut", store)
        operations, _ = await update_with_cuts(w, [], count=True)
        check_end(w, store)
    ((_, downloaded),) = marks
    sizes = {n: op.size for n, op in enumerate(operations)}
    points = [
        p for p in cut_points(operations[:downloaded]) if p.torn_bytes in (0, 1, sizes[p.at] // 2)
    ]
    assert any(op.kind == "write" and op.name.startswith("slot") for op in operations[:downloaded])
    for n, point in enumerate(points):
        run = tmp_path / f"run-{n}"
        with open_version_store(tmp_path / f"run-{n}.sqlite") as store:
            opens = trio.current_time() + OPENS
            w, marks = ahead(run, store)
            _, fell = await update_with_cuts(w, [point])
            assert fell == 1, point
            check_end(w, store)
            # Verified before the window (once, or again after the cut), and
            # switched to inside it.
            assert marks and all(at < opens for at, _ in marks), point
            installing = stages(w, Stage.INSTALLING)
            assert installing and all(entry.at >= opens for entry in installing), point
        shutil.rmtree(run)
        (tmp_path / f"run-{n}.sqlite").unlink()
