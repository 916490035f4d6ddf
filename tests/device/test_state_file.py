"""The agent's state files: written atomically on a DeviceFs, so a power cut
at every operation and every torn-write point of a replacement leaves the
old content or the new, never anything else; a file that is not a whole
frame reads as missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from dofpy_services.device.fs import OsFs, PowerCut, PowerCutFs, cut_points
from dofpy_services.device.state_file import read_framed, write_atomically

OLD = b'{"state": "transfer"}' * 3
NEW = b'{"state": "enter_normal", "switched": true}'


def test_a_write_reads_back_and_a_shorter_one_ignores_the_stale_tail(tmp_path: Path) -> None:
    fs = OsFs(tmp_path)
    assert read_framed(fs, "agent.json") is None
    write_atomically(fs, "agent.json", OLD)
    write_atomically(fs, "agent.json", NEW)  # shorter than OLD
    assert read_framed(fs, "agent.json") == NEW
    # A NAME.new longer from an earlier cut: the frame's length skips its tail.
    fs.write("agent.json.new", 0, b"x" * 500)
    write_atomically(fs, "agent.json", b"{}")
    assert read_framed(fs, "agent.json") == b"{}"


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:10],  # cut inside the header
        lambda data: data[:-1],  # content short of its length
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # a flipped bit
        lambda data: b"XXXX" + data[4:],  # another magic
    ],
)
def test_a_file_that_is_not_a_whole_frame_reads_as_missing(tmp_path: Path, damage: object) -> None:
    fs = OsFs(tmp_path)
    write_atomically(fs, "agent.json", NEW)
    data = (tmp_path / "agent.json").read_bytes()
    (tmp_path / "agent.json").write_bytes(damage(data))  # type: ignore[operator]
    assert read_framed(fs, "agent.json") is None


def test_a_power_cut_at_every_point_of_a_replacement_keeps_old_or_new(tmp_path: Path) -> None:
    template = tmp_path / "template"
    write_atomically(OsFs(template), "agent.json", OLD)
    counting = PowerCutFs(template)
    write_atomically(counting, "agent.json", NEW)
    write_atomically(OsFs(template), "agent.json", OLD)  # back to the starting content
    operations = counting.operations
    assert [op.kind for op in operations] == ["write", "fsync", "replace", "fsync_directory"]
    for point in cut_points(operations):
        work = tmp_path / f"cut-{point.at}-{point.torn_bytes}"
        work.mkdir()
        (work / "agent.json").write_bytes((template / "agent.json").read_bytes())
        fs = PowerCutFs(work, cut_at=point.at, torn_bytes=point.torn_bytes)
        with pytest.raises(PowerCut):
            write_atomically(fs, "agent.json", NEW)
        after = read_framed(OsFs(work), "agent.json")  # switched on again
        assert after == OLD, point  # not durable until the directory fsync returned
        # ...and the next replacement, after the cut, succeeds.
        write_atomically(OsFs(work), "agent.json", NEW)
        assert read_framed(OsFs(work), "agent.json") == NEW
    uncut = tmp_path / "uncut"
    uncut.mkdir()
    (uncut / "agent.json").write_bytes((template / "agent.json").read_bytes())
    write_atomically(PowerCutFs(uncut), "agent.json", NEW)
    assert read_framed(OsFs(uncut), "agent.json") == NEW
