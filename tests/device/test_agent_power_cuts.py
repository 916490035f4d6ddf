"""The power cut at every write (and every torn-write point) of the agent's
full update, on both layouts: the simulated bootloader's files go through a
PowerCutFs that fails at operation N (a write, an fsync, a rename, a
directory fsync; a torn write keeps its first bytes); the device is switched
on again and a fresh agent continues. After every cut the device boots a
whole image (never neither), and at the end it runs the new image, accepted,
and the Version service's last record matches what it runs.

The agent's own state file and transfer marks are written with the real file
system's atomic replace, outside the PowerCutFs: what is cut here is the
bootloader's slots and records."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio
import trio.testing

from dofpy_services.device.agent import Rebooted
from dofpy_services.device.boot_records import Layout
from dofpy_services.device.fs import PowerCut, PowerCutFs
from dofpy_services.device.simulated import SimulatedBootloader
from dofpy_services.device.table import State
from tests.device.test_agent_update import DEVICE, NEW, OLD, RESCUE, World, world

WHOLE = {OLD.slot_image(), NEW.slot_image(), RESCUE.slot_image()}


async def update_with_cut(w: World, cut_at: int | None, torn: int) -> tuple[int, bool]:
    """Run the update with the power cut at operation ``cut_at``; switch on
    again and finish. Returns the operations counted and whether it cut."""
    template = w.boot.directory
    w.boot = SimulatedBootloader(template, fs=PowerCutFs(template, cut_at=cut_at, torn_bytes=torn))
    counted = w.boot.fs
    cut = False
    for _ in range(30):
        agent = w.agent()
        try:
            await agent.run(
                until=lambda a: (
                    (p := w.updates.progress.get(DEVICE)) is not None
                    and p.report is not None
                    and a.machine.state is State.IDLE
                )
            )
        except Rebooted:
            try:
                w.boot.reboot()
            except PowerCut:  # during the boot decision's own record write
                cut = True
                switch_on(w, template)
            continue
        except PowerCut:
            cut = True
            switch_on(w, template)
            continue
        break
    else:
        raise AssertionError("the update did not end within 30 boots")
    assert isinstance(counted, PowerCutFs)
    return len(counted.operations), cut


def switch_on(w: World, template: Path) -> None:
    """Power on after a cut: it boots a whole image, old or new, never neither."""
    w.boot = SimulatedBootloader(template)
    booted = w.boot.booted()
    assert booted.image in WHOLE
    assert booted.accepted or booted.boot_attempts > 0


def fresh(tmp_path: Path, layout: Layout, n: int) -> World:
    directory = tmp_path / f"run-{n}"
    directory.mkdir()
    return world(directory, layout)


@pytest.mark.parametrize("torn", [0, 5])
@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB])
async def test_a_power_cut_at_every_operation_never_bricks_the_device(
    tmp_path: Path, layout: Layout, torn: int, autojump_clock: trio.testing.MockClock
) -> None:
    total, cut = await update_with_cut(fresh(tmp_path, layout, -1), None, 0)
    assert not cut and total > 20  # the uncut run: how many operations to cut at
    for n in range(total):
        w = fresh(tmp_path, layout, n)
        _, cut = await update_with_cut(w, n, torn)
        assert cut, n
        booted = w.boot.booted()
        assert (booted.image, booted.accepted) == (NEW.slot_image(), True), n
        last = w.versions.reports[-1]
        assert (last.version, last.image_digest, last.boot.accepted) == (
            "2.0",
            booted.image.digest,
            True,
        )
        report = w.updates.progress[DEVICE].report
        assert report is not None and report.running_version == "2.0", n
        shutil.rmtree(w.directory)
