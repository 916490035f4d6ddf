"""PowerCutFs keeps across a power cut exactly what a disk under a page
cache keeps: fsynced bytes, names made durable by a directory fsync, and a
torn write's prefix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dofpy_services.device.fs import CutPoint, Operation, OsFs, PowerCut, PowerCutFs, cut_points


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_unsynced_writes_are_lost_and_synced_ones_kept(tmp_path: Path) -> None:
    OsFs(tmp_path).write("slot", 0, b"old-old-")
    fs = PowerCutFs(tmp_path)
    fs.write("slot", 0, b"new")
    assert fs.read("slot", 0, 8) == b"new-old-"  # reads see the page cache
    fs.power_cut()
    assert _files(tmp_path) == {"slot": b"old-old-"}
    fs = PowerCutFs(tmp_path)
    fs.write("slot", 0, b"new")
    fs.fsync("slot")
    fs.write("slot", 4, b"lost")
    fs.power_cut()
    assert _files(tmp_path) == {"slot": b"new-old-"}


def test_a_torn_write_keeps_only_its_prefix(tmp_path: Path) -> None:
    OsFs(tmp_path).write("records", 0, b"0123456789")
    fs = PowerCutFs(tmp_path, cut_at=1, torn_bytes=3)
    fs.write("records", 8, b"unsynced")  # operation 0: lost
    with pytest.raises(PowerCut):
        fs.write("records", 2, b"abcdef")  # operation 1: the first 3 bytes reach the disk
    assert _files(tmp_path) == {"records": b"01abc56789"}
    assert fs.operations == [Operation("write", "records", 8), Operation("write", "records", 6)]
    with pytest.raises(PowerCut):  # the device is off
        fs.fsync("records")
    with pytest.raises(PowerCut):
        fs.read("records", 0, 1)


def test_names_are_durable_only_after_the_directory_fsync(tmp_path: Path) -> None:
    OsFs(tmp_path).write("a", 0, b"first")
    fs = PowerCutFs(tmp_path)
    fs.write("a.tmp", 0, b"second")
    fs.fsync("a.tmp")
    fs.replace("a.tmp", "a")
    fs.power_cut()  # the rename and the new file are lost
    assert _files(tmp_path) == {"a": b"first"}

    fs = PowerCutFs(tmp_path)
    fs.write("a.tmp", 0, b"second")
    fs.fsync("a.tmp")
    fs.replace("a.tmp", "a")
    fs.fsync_directory()
    fs.power_cut()
    assert _files(tmp_path) == {"a": b"second"}

    fs = PowerCutFs(tmp_path)
    fs.write("new", 0, b"data")
    fs.fsync_directory()  # named, but its bytes were never fsynced
    fs.power_cut()
    assert _files(tmp_path) == {"a": b"second", "new": b""}


def test_a_cut_at_an_fsync_or_rename_does_not_do_it(tmp_path: Path) -> None:
    OsFs(tmp_path).write("f", 0, b"old")
    fs = PowerCutFs(tmp_path, cut_at=1)
    fs.write("f", 0, b"new")
    with pytest.raises(PowerCut, match="operation 1"):
        fs.fsync("f")
    assert _files(tmp_path) == {"f": b"old"}


def test_cut_points_cover_every_operation_and_tear_writes() -> None:
    operations = [Operation("write", "r", 8), Operation("fsync", "r"), Operation("write", "s", 1)]
    assert cut_points(operations) == [
        CutPoint(0),
        *(CutPoint(0, k) for k in (1, 2, 4, 6, 7, 8)),
        CutPoint(1),
        CutPoint(2),
        CutPoint(2, 1),
    ]


def test_a_simulated_fleets_fs_writes_without_fsync_to_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sync=False`` (the fleet simulator's): the same files, the same
    modelled durability under a power cut, and no fsync of the host's disk."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    fs = OsFs(tmp_path / "plain", sync=False)
    fs.write("a", 0, b"hello")
    fs.fsync("a")
    fs.fsync_directory()
    assert fs.read("a", 0, 5) == b"hello" and synced == []
    with pytest.raises(ValueError):
        fs.fsync("../escape")  # names are still checked
    cut = PowerCutFs(tmp_path / "cut", sync=False)
    cut.write("b", 0, b"kept")
    cut.fsync("b")
    cut.fsync_directory()
    cut.write("c", 0, b"lost")  # never fsync-ed
    cut.power_cut()
    assert synced == []
    assert (tmp_path / "cut" / "b").read_bytes() == b"kept"
    assert not (tmp_path / "cut" / "c").exists()
    OsFs(tmp_path / "synced").write("d", 0, b"x")
    OsFs(tmp_path / "synced").fsync("d")
    assert len(synced) == 1  # the default still syncs
