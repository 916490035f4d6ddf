"""Updating the updater through the agent, on both layouts: the new
Reprogram image is written into the Reprogram slot while the accepted Normal
image runs (the safety net), booted on trial, health-checked and accepted by
the Update service and the bootloader, and the device returns to its Normal
image. A new Reprogram image that fails its health check, or never comes up,
leaves the device on its accepted Normal image with the failure reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from dofpy.testing.transfer import make_object
from dofpy_services.device.boot_records import Layout, Slot, SlotState
from dofpy_services.device.simulated import FirmwareImage
from dofpy_services.update.device_interface import Assignment, InstallOutcome, Stage
from dofpy_services.update.device_provider import PlannedUpdate
from tests.device.test_agent_update import (
    DEVICE,
    MANIFEST_DIGEST,
    OLD,
    RESCUE,
    NetsimImages,
    World,
    world,
)

UPDATER = FirmwareImage(make_object(6_500, 4), "r2", 2)


def updater_world(tmp_path: Path, layout: Layout, **kwargs: object) -> World:
    w = world(tmp_path, layout, images=NetsimImages(loss=0.03, image=UPDATER), **kwargs)  # type: ignore[arg-type]
    assignment = Assignment("c1", MANIFEST_DIGEST, "r2", UPDATER.sequence, 0.0, 1e9, updater=True)
    w.updates.plan.assign(
        DEVICE, PlannedUpdate(assignment, UPDATER.slot_image().digest, RESCUE.slot_image().digest)
    )
    return w


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB], ids=lambda layout: layout.name)
async def test_the_updater_is_updated_with_normal_as_its_safety_net(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    w = updater_world(tmp_path, layout)
    await w.run_update()
    booted = w.boot.booted()
    assert (booted.image, booted.accepted, booted.slot.is_normal) == (OLD.slot_image(), True, True)
    reprogram = w.boot.slot_record(Slot.REPROGRAM)
    assert (reprogram.state, reprogram.image) == (SlotState.VALID, UPDATER.slot_image())
    assert w.boot.read_slot(Slot.REPROGRAM, 0, len(UPDATER.data)) == UPDATER.data
    assert w.reboots == 2  # into the new Reprogram image on trial, back to Normal
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.intended_digest, report.running_version) == (
        InstallOutcome.SUCCEEDED, UPDATER.slot_image().digest, "1.0",
    )  # fmt: skip
    boots = w.updates.progress[DEVICE].boots
    assert [(b.image_kind.value, b.image_digest, b.accepted) for b in boots] == [
        ("reprogram", UPDATER.slot_image().digest, True)
    ]
    assert w.versions.reports[-1].version == "1.0"
    # The next update goes through the new Reprogram image.
    assert w.boot.record().slot(Slot.REPROGRAM).image == UPDATER.slot_image()


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB], ids=lambda layout: layout.name)
async def test_a_new_updater_that_fails_its_health_check_leaves_normal_running(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    async def sick() -> str:
        return "the rescue daemon did not start"

    w = updater_world(tmp_path, layout, health=sick)
    await w.run_update()
    booted = w.boot.booted()
    assert (booted.image, booted.accepted) == (OLD.slot_image(), True)
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.failed_stage, report.reason) == (
        InstallOutcome.FAILED, Stage.REPROGRAM_MODE, "the rescue daemon did not start",
    )  # fmt: skip
    assert w.boot.record().accepted.is_normal


async def test_a_new_updater_that_never_boots_falls_back_to_normal(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The bootloader's trial boots of the new Reprogram image all fail (the
    platform resets before the agent runs): it falls back to the accepted
    Normal image, and the agent reports the failure."""
    w = updater_world(tmp_path, Layout.SEED)
    original = w.boot.reboot

    def reboot():  # type: ignore[no-untyped-def]
        info = original()
        while info.slot is Slot.REPROGRAM and not info.accepted:
            info = original()  # the new image dies before the agent starts
        return info

    w.boot.reboot = reboot  # type: ignore[method-assign]
    await w.run_update()
    booted = w.boot.booted()
    assert (booted.image, booted.accepted) == (OLD.slot_image(), True)
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.failed_stage, report.reason) == (
        InstallOutcome.FAILED, Stage.INSTALLING, "the new Reprogram image did not boot",
    )  # fmt: skip


async def test_an_updater_assignment_in_reprogram_mode_is_refused_before_anything_changes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Running the Reprogram image (the seed's layout after a failed write),
    the Reprogram slot is the running image: refused, nothing written."""
    w = updater_world(tmp_path, Layout.SEED)
    w.boot.set_boot_target(Slot.REPROGRAM)
    w.boot.reboot()
    w.boot.accept()
    before = w.boot.record()
    await w.run_update()
    assert w.boot.record() == before and w.images.transfers == 0
    report = w.updates.progress[DEVICE].report
    assert report is not None and report.outcome is InstallOutcome.FAILED
    assert report.reason == "the Reprogram image is updated from the Normal image"
