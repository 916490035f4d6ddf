"""The simulated bootloader keeps the contract: trial boots and the fallback
after max_boot_attempts, the refusals that protect the accepted image,
resumable slot writes, instant rollback on A/B, and ``dofpy device status``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dofpy_services.cli import main
from dofpy_services.device import (
    Bricked,
    Layout,
    Slot,
    SlotBusy,
    SlotNotBootable,
    SlotState,
    WrongImage,
)
from dofpy_services.device.fs import PowerCutFs
from dofpy_services.device.simulated import (
    RECORDS_FILE,
    SLOT_FILES,
    FirmwareImage,
    SimulatedBootloader,
)
from dofpy_services.version.interface import BootState, ImageKind

OLD = FirmwareImage(b"old image " * 300, "1.0", 10)
NEW = FirmwareImage(b"new image!" * 350, "2.0", 20)
REPROGRAM = FirmwareImage(b"reprogram " * 100, "r1", 1)


def _device(directory: Path, layout: Layout = Layout.SEED) -> SimulatedBootloader:
    return SimulatedBootloader.provision(
        directory,
        layout,
        normal=OLD,
        reprogram=REPROGRAM,
        normal_capacity=4096,
        reprogram_capacity=1024,
        max_boot_attempts=3,
    )


def _write(device: SimulatedBootloader, slot: Slot, image: FirmwareImage) -> None:
    writer = device.open_slot(slot)
    writer.write(0, image.data)
    writer.finish(image.slot_image())


def test_a_new_device_boots_its_normal_image_accepted(tmp_path: Path) -> None:
    device = _device(tmp_path)
    info = device.booted()
    assert (info.slot, info.image, info.accepted, info.boot_attempts) == (
        Slot.NORMAL,
        OLD.slot_image(),
        True,
        0,
    )
    assert info.boot_state() == BootState(0, ImageKind.NORMAL, True, 0)
    assert device.slots() == (Slot.NORMAL, Slot.REPROGRAM)
    assert device.rollback_slot() is None
    with pytest.raises(FileExistsError):
        _device(tmp_path)


def test_a_trial_that_never_accepts_falls_back_after_max_boot_attempts(tmp_path: Path) -> None:
    device = _device(tmp_path)
    device.set_boot_target(Slot.REPROGRAM)
    assert device.booted().slot is Slot.NORMAL  # nothing changes before the reboot
    for attempt in (1, 2, 3):
        info = device.reboot()
        assert (info.slot, info.accepted, info.boot_attempts) == (Slot.REPROGRAM, False, attempt)
        assert info.boot_state() == BootState(1, ImageKind.REPROGRAM, False, attempt)
    info = device.reboot()
    assert (info.slot, info.accepted) == (Slot.NORMAL, True)
    assert device.record().target is Slot.NORMAL
    assert device.reboot().slot is Slot.NORMAL  # and it stays there


def test_a_target_whose_bytes_do_not_verify_is_not_booted(tmp_path: Path) -> None:
    device = _device(tmp_path)
    device.set_boot_target(Slot.REPROGRAM)
    path = tmp_path / SLOT_FILES[Slot.REPROGRAM]
    data = bytearray(path.read_bytes())
    data[5] ^= 1  # the flash went bad after the image was recorded
    path.write_bytes(bytes(data))
    info = device.reboot()
    assert (info.slot, info.accepted) == (Slot.NORMAL, True)


def test_the_booted_accepted_and_target_slots_cannot_be_written(tmp_path: Path) -> None:
    device = _device(tmp_path)
    with pytest.raises(SlotBusy):
        device.open_slot(Slot.NORMAL)  # booted and accepted
    device.set_boot_target(Slot.REPROGRAM)
    with pytest.raises(SlotBusy):
        device.open_slot(Slot.REPROGRAM)  # the target
    device.reboot()
    with pytest.raises(SlotBusy):
        device.erase_slot(Slot.NORMAL)  # accepted: Reprogram is only a trial yet
    device.accept()
    assert device.booted().accepted
    device.erase_slot(Slot.NORMAL)
    assert device.slot_record(Slot.NORMAL).state is SlotState.EMPTY
    with pytest.raises(SlotNotBootable):
        device.set_boot_target(Slot.NORMAL)


def test_finish_checks_the_bytes_and_a_write_stays_in_its_slot(tmp_path: Path) -> None:
    device = _device(tmp_path)
    device.set_boot_target(Slot.REPROGRAM)
    device.reboot()
    device.accept()
    writer = device.open_slot(Slot.NORMAL)
    with pytest.raises(ValueError, match="outside the slot"):
        writer.write(4000, b"x" * 97)
    writer.write(0, NEW.data[:-1] + b"?")
    with pytest.raises(WrongImage):
        writer.finish(NEW.slot_image())
    assert device.slot_record(Slot.NORMAL).state is SlotState.WRITING
    with pytest.raises(SlotNotBootable):
        device.set_boot_target(Slot.NORMAL)
    writer.write(0, NEW.data)
    writer.finish(NEW.slot_image())
    assert device.slot_record(Slot.NORMAL).image == NEW.slot_image()
    device.set_boot_target(Slot.NORMAL)
    info = device.reboot()
    assert (info.slot, info.image, info.accepted) == (Slot.NORMAL, NEW.slot_image(), False)
    device.accept()
    assert device.reboot() == device.booted()
    assert device.booted().accepted


def test_a_slot_write_resumes_from_what_was_synced(tmp_path: Path) -> None:
    _device(tmp_path)
    device = SimulatedBootloader(tmp_path, fs=PowerCutFs(tmp_path))
    device.set_boot_target(Slot.REPROGRAM)
    device.reboot()
    device.accept()
    writer = device.open_slot(Slot.NORMAL)
    writer.write(0, NEW.data[:1000])
    writer.sync()
    writer.write(1000, NEW.data[1000:2000])  # never synced
    info = device.power_cut()
    assert (info.slot, info.accepted) == (Slot.REPROGRAM, True)
    assert device.slot_record(Slot.NORMAL).state is SlotState.WRITING
    writer = device.open_slot(Slot.NORMAL)  # resume: the synced bytes are still there
    assert writer.read(0, 1000) == NEW.data[:1000]
    assert writer.read(1000, 1000) != NEW.data[1000:2000]


def test_ab_rolls_back_instantly_to_the_previous_image(tmp_path: Path) -> None:
    device = _device(tmp_path, Layout.AB)
    free = device.free_normal_slot()
    assert free is Slot.NORMAL_B
    _write(device, free, NEW)
    device.set_boot_target(free)
    device.reboot()
    device.accept()
    assert device.rollback_slot() is Slot.NORMAL
    device.set_boot_target(Slot.NORMAL)
    info = device.reboot()
    assert (info.slot, info.image, info.accepted) == (Slot.NORMAL, OLD.slot_image(), False)
    device.accept()
    assert device.rollback_slot() is Slot.NORMAL_B
    device.open_slot(Slot.NORMAL_B)  # its image is gone: no rollback any more
    assert device.rollback_slot() is None


def test_neither_record_copy_valid_or_a_bad_accepted_slot_is_bricked(tmp_path: Path) -> None:
    _device(tmp_path / "a")
    (tmp_path / "a" / RECORDS_FILE).write_bytes(bytes(1024))
    with pytest.raises(Bricked, match="neither record copy"):
        SimulatedBootloader(tmp_path / "a")
    _device(tmp_path / "b")
    (tmp_path / "b" / SLOT_FILES[Slot.NORMAL]).write_bytes(bytes(4096))
    with pytest.raises(Bricked, match="does not verify"):
        SimulatedBootloader(tmp_path / "b")


def test_device_status_shows_slots_records_and_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = _device(tmp_path, Layout.AB)
    _write(device, Slot.NORMAL_B, NEW)
    device.set_boot_target(Slot.NORMAL_B)
    device.reboot()
    assert main(["device", "status", "--sim", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "booted: normal_b\n" in out and "accepted: normal\n" in out
    assert "boot_attempts: 1" in out
    assert "(current)" in out
    assert main(["device", "status", "--sim", str(tmp_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["layout"] == "ab" and status["target"] == "normal_b"
    assert [s["version"] for s in status["slots"]] == ["1.0", "2.0", "r1"]
    assert all(s["verifies"] for s in status["slots"])
    assert [c["valid"] for c in status["records"]] == [True, True]

    records = tmp_path / RECORDS_FILE
    data = bytearray(records.read_bytes())
    data[status["current"] * 512 + 20] ^= 0xFF  # a torn current copy: the other is shown
    records.write_bytes(bytes(data))
    assert main(["device", "status", "--sim", str(tmp_path), "--json"]) == 0
    torn = json.loads(capsys.readouterr().out)
    assert torn["current"] == 1 - status["current"]
    assert "checksum" in torn["records"][status["current"]]["reason"]

    assert main(["device", "status", "--sim", str(tmp_path / "none")]) == 1
    assert "no simulated device" in capsys.readouterr().err
