"""Scripted bootloader operations that can be cut anywhere, and what must hold after.

Each script is written as the device agent runs it: from whatever state the
device booted in, it does the next step, so that after a power cut and a
reboot the same script, run again, carries the operation on to its end. The
script's own persisted state (what an agent keeps in its state file) is the
``progress`` set, only ever added to after the step it names is durable.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dofpy_services.device import Layout, Slot, SlotState
from dofpy_services.device.fs import CutPoint, Operation, PowerCut, PowerCutFs, cut_points
from dofpy_services.device.simulated import SLOT_FILES, FirmwareImage, SimulatedBootloader

CHUNK = 1024
SYNC_EVERY = 2  # chunks between two syncs of a slot being written
MAX_BOOT_ATTEMPTS = 3
STEPS = 16  # a script converges in fewer steps than this, or fails

OLD = FirmwareImage(bytes(random.Random(1).randbytes(5 * CHUNK + 100)), "1.0", 10)
NEW = FirmwareImage(bytes(random.Random(2).randbytes(6 * CHUNK + 7)), "2.0", 20)
REPROGRAM_OLD = FirmwareImage(bytes(random.Random(3).randbytes(2 * CHUNK + 3)), "r1", 1)
REPROGRAM_NEW = FirmwareImage(bytes(random.Random(4).randbytes(2 * CHUNK + 50)), "r2", 2)
NORMAL_IMAGES = {OLD.slot_image(), NEW.slot_image()}
REPROGRAM_IMAGES = {REPROGRAM_OLD.slot_image(), REPROGRAM_NEW.slot_image()}

Script = Callable[[SimulatedBootloader, set[str]], None]


def write_slot(bootloader: SimulatedBootloader, slot: Slot, image: FirmwareImage) -> None:
    writer = bootloader.open_slot(slot)
    for index, offset in enumerate(range(0, len(image.data), CHUNK)):
        writer.write(offset, image.data[offset : offset + CHUNK])
        if index % SYNC_EVERY == SYNC_EVERY - 1:
            writer.sync()
    writer.finish(image.slot_image())


def install_normal(bootloader: SimulatedBootloader, image: FirmwareImage) -> None:
    """Bring the device to running ``image`` in a Normal slot, accepted: on the
    seed's layout through Reprogram mode, on A/B through the free slot."""
    wanted = image.slot_image()
    for _ in range(STEPS):
        info = bootloader.booted()
        if not info.accepted:
            bootloader.accept()  # every image here is healthy
        if info.slot.is_normal and info.image == wanted:
            return
        if bootloader.layout is Layout.SEED:
            if info.slot.is_normal:
                bootloader.set_boot_target(Slot.REPROGRAM)
            else:
                if bootloader.slot_record(Slot.NORMAL).image != wanted:
                    write_slot(bootloader, Slot.NORMAL, image)
                bootloader.set_boot_target(Slot.NORMAL)
        else:
            holding = [
                slot
                for slot in bootloader.slots()
                if slot.is_normal and bootloader.slot_record(slot).image == wanted
            ]
            if holding:
                bootloader.set_boot_target(holding[0])
            else:
                free = bootloader.free_normal_slot()
                assert free is not None
                write_slot(bootloader, free, image)
                bootloader.set_boot_target(free)
        bootloader.reboot()
    raise AssertionError("install did not converge")


def normal_update(bootloader: SimulatedBootloader, progress: set[str]) -> None:
    install_normal(bootloader, NEW)


def rollback(bootloader: SimulatedBootloader, progress: set[str]) -> None:
    """Back to OLD: A/B by booting the rollback slot; seed by re-installing."""
    for _ in range(STEPS):
        info = bootloader.booted()
        if not info.accepted:
            bootloader.accept()
        if info.slot.is_normal and info.image == OLD.slot_image():
            return
        slot = bootloader.rollback_slot()
        if slot is not None and bootloader.slot_record(slot).image == OLD.slot_image():
            bootloader.set_boot_target(slot)
            bootloader.reboot()
        else:
            install_normal(bootloader, OLD)
    raise AssertionError("rollback did not converge")


def updater_update(bootloader: SimulatedBootloader, progress: set[str]) -> None:
    """REPROGRAM_NEW written from Normal mode (the safety net), tried once,
    then back to the Normal image."""
    normal = bootloader.booted().image
    for _ in range(STEPS):
        info = bootloader.booted()
        if not info.accepted:
            bootloader.accept()
        if info.slot is Slot.REPROGRAM:
            if info.image == REPROGRAM_NEW.slot_image():
                progress.add("reprogram tried")
            target = bootloader.record().last_normal
            assert target is not None
            bootloader.set_boot_target(target)
            bootloader.reboot()
            continue
        if "reprogram tried" in progress:
            return
        if bootloader.slot_record(Slot.REPROGRAM).image != REPROGRAM_NEW.slot_image():
            write_slot(bootloader, Slot.REPROGRAM, REPROGRAM_NEW)
        bootloader.set_boot_target(Slot.REPROGRAM)
        bootloader.reboot()
    raise AssertionError(f"updater update did not converge (normal {normal.version})")


@dataclass(frozen=True)
class Scenario:
    name: str
    layout: Layout
    script: Script
    prepare: Script | None = None  # run uncut on the template first
    done: Callable[[SimulatedBootloader], bool] = lambda _: True


def _running(image: FirmwareImage) -> Callable[[SimulatedBootloader], bool]:
    def done(bootloader: SimulatedBootloader) -> bool:
        info = bootloader.booted()
        return info.slot.is_normal and info.accepted and info.image == image.slot_image()

    return done


def _updater_done(bootloader: SimulatedBootloader) -> bool:
    info = bootloader.booted()
    reprogram = bootloader.slot_record(Slot.REPROGRAM)
    return (
        info.slot.is_normal
        and info.accepted
        and reprogram.state is SlotState.VALID
        and reprogram.image == REPROGRAM_NEW.slot_image()
    )


SCENARIOS = [
    scenario
    for layout in (Layout.SEED, Layout.AB)
    for scenario in (
        Scenario(f"update-{layout.name}", layout, normal_update, done=_running(NEW)),
        Scenario(
            f"rollback-{layout.name}", layout, rollback, prepare=normal_update, done=_running(OLD)
        ),
        Scenario(f"updater-{layout.name}", layout, updater_update, done=_updater_done),
    )
]


def provision(directory: Path, scenario: Scenario) -> None:
    bootloader = SimulatedBootloader.provision(
        directory,
        scenario.layout,
        normal=OLD,
        reprogram=REPROGRAM_OLD,
        normal_capacity=8 * CHUNK,
        reprogram_capacity=3 * CHUNK,
        max_boot_attempts=MAX_BOOT_ATTEMPTS,
    )
    if scenario.prepare is not None:
        scenario.prepare(bootloader, set())


def _slot_bytes_hash(directory: Path, slot: Slot, size: int) -> bytes:
    return hashlib.sha256((directory / SLOT_FILES[slot]).read_bytes()[:size]).digest()


def check_boots_accepted_image(directory: Path) -> SimulatedBootloader:
    """Power on: what boots is whole (its bytes hash to its image's digest) and
    an old or new image; the accepted slot is whole too; a device whose trial
    image never accepts falls back to an accepted image within
    max_boot_attempts reboots (tried on a copy of the directory)."""
    bootloader = SimulatedBootloader(directory, fs=PowerCutFs(directory))
    _check_booted(directory, bootloader)
    trial = directory.with_name(directory.name + "-trial")
    shutil.rmtree(trial, ignore_errors=True)
    shutil.copytree(directory, trial)
    failing = SimulatedBootloader(trial, fs=PowerCutFs(trial))
    for _ in range(MAX_BOOT_ATTEMPTS + 1):
        _check_booted(trial, failing)
        if failing.booted().accepted:
            break
        failing.reboot()  # the trial image never accepts (a failed health check)
    else:
        raise AssertionError("a trial image that never accepts was booted forever")
    _check_booted(trial, failing)
    shutil.rmtree(trial)
    return bootloader


def _check_booted(directory: Path, bootloader: SimulatedBootloader) -> None:
    info = bootloader.booted()
    allowed = NORMAL_IMAGES if info.slot.is_normal else REPROGRAM_IMAGES
    assert info.image in allowed, f"booted neither old nor new: {info}"
    assert _slot_bytes_hash(directory, info.slot, info.image.size) == info.image.digest
    record = bootloader.record()
    accepted = record.slot(record.accepted).image
    assert accepted is not None
    assert accepted in NORMAL_IMAGES | REPROGRAM_IMAGES
    assert _slot_bytes_hash(directory, record.accepted, accepted.size) == accepted.digest


def run_to_end(directory: Path, scenario: Scenario, progress: set[str]) -> None:
    """Carry the scenario on, uncut, from the device's state; check its end."""
    fs = PowerCutFs(directory)
    bootloader = SimulatedBootloader(directory, fs=fs)
    scenario.script(bootloader, progress)
    assert scenario.done(bootloader), f"{scenario.name} did not end as it should"
    fs.power_cut()  # and the end state was durable
    again = SimulatedBootloader(directory, fs=PowerCutFs(directory))
    assert scenario.done(again)


def cut_once(template: Path, work: Path, scenario: Scenario, point: CutPoint) -> None:
    """From the template, run the scenario with the power cut at ``point``;
    check what boots; carry it on to its end."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work)
    fs = PowerCutFs(work, cut_at=point.at, torn_bytes=point.torn_bytes)
    progress: set[str] = set()
    with contextlib.suppress(PowerCut):
        scenario.script(SimulatedBootloader(work, fs=fs), progress)
    assert fs.cut, f"{scenario.name}: no operation {point.at} to cut"
    check_boots_accepted_image(work)
    run_to_end(work, scenario, progress)


def operations_of(template: Path, work: Path, scenario: Scenario) -> list[Operation]:
    """The operations of the scenario run uncut from ``template``."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work)
    fs = PowerCutFs(work)
    scenario.script(SimulatedBootloader(work, fs=fs), set())
    return fs.operations


def all_cut_points(template: Path, work: Path, scenario: Scenario) -> list[CutPoint]:
    return cut_points(operations_of(template, work, scenario))


def random_run(template: Path, work: Path, scenario: Scenario, operations: int, seed: int) -> int:
    """One to three power cuts, each at a random one of the ``operations`` of
    an uncut run (a cut beyond the end of a resumed run does not fall) and
    with a random part of a write torn, a check after each, then the
    scenario carried to its end. Returns how many cuts fell."""
    rng = random.Random(seed)
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work)
    progress: set[str] = set()
    cuts = 0
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(operations)
        fs = PowerCutFs(work, cut_at=at, torn_bytes=rng.randrange(CHUNK + 1))
        try:
            scenario.script(SimulatedBootloader(work, fs=fs), progress)
        except PowerCut:
            cuts += 1
            check_boots_accepted_image(work)
        else:
            break
    run_to_end(work, scenario, progress)
    return cuts
