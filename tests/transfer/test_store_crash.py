"""FileStore crash consistency: a cut at every operating-system call, as a
process crash (what was written stays) and as a power cut (only what was
fsync-ed stays, and only the names a directory fsync made durable); marks of
another manifest, torn or corrupt marks. After each, a resumed store never
holds a leaf marked verified that does not verify, and fetching the rest
completes the object."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dofpy.transfer.manifest import ObjectHashes, leaf_hash
from dofpy.transfer.rangeset import RangeSet
from dofpy.transfer.store import FileStore, encode_marks

LEAF = 64
DATA = random.Random(8).randbytes(12 * LEAF - 5)
HASHES = ObjectHashes.build(DATA, LEAF)
MANIFEST = HASHES.manifest
# The writes of a transfer, in arrival order (blocks of two leaves, the last short).
FIRST_RUN = [4, 0, 10]
SECOND_RUN = [2, 8, 6]


class Crash(Exception):
    """The cut: the process (or the machine) stops here."""


@dataclass
class _Inode:
    durable: bytes | None = None  # content at its last fsync (None: never)


@dataclass
class CuttableOs:
    """The ``os`` calls FileStore makes, really made, counted, and cut at
    step ``crash_at``; it models what a power cut keeps: each file's content
    as of its last fsync, under the names of the last directory fsync."""

    directory: Path
    crash_at: int | None = None
    steps: int = 0
    _names: dict[str, _Inode] = field(default_factory=dict)
    _durable_names: dict[str, _Inode] = field(default_factory=dict)
    _fds: dict[int, _Inode | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for path in self.directory.iterdir():
            inode = _Inode(path.read_bytes())
            self._names[path.name] = inode
        self._durable_names = dict(self._names)

    def _step(self) -> None:
        if self.crash_at is not None and self.steps == self.crash_at:
            raise Crash(self.steps)
        self.steps += 1

    def open(self, path: Path, flags: int, mode: int = 0o777) -> int:
        self._step()
        fd = os.open(path, flags, mode)
        if Path(path) == self.directory:
            self._fds[fd] = None
            return fd
        name = Path(path).name
        self._fds[fd] = self._names.setdefault(name, _Inode())
        return fd

    def close(self, fd: int) -> None:
        self._step()
        os.close(fd)
        del self._fds[fd]

    def fstat(self, fd: int) -> os.stat_result:
        self._step()
        return os.fstat(fd)

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        self._step()
        return os.pread(fd, length, offset)

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        self._step()
        return os.pwrite(fd, data, offset)

    def ftruncate(self, fd: int, size: int) -> None:
        self._step()
        os.ftruncate(fd, size)

    def fsync(self, fd: int) -> None:
        self._step()
        os.fsync(fd)
        inode = self._fds[fd]
        if inode is None:  # the directory: its names as they are now
            self._durable_names = dict(self._names)
        else:
            name = next(name for name, known in self._names.items() if known is inode)
            inode.durable = (self.directory / name).read_bytes()

    def replace(self, source: Path, target: Path) -> None:
        self._step()
        os.replace(source, target)
        self._names[Path(target).name] = self._names.pop(Path(source).name)

    def abandon(self) -> None:
        """What a dead process leaves: its descriptors closed by the kernel."""
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()

    def power_cut(self) -> None:
        """Leave on disk only what was durable."""
        for path in self.directory.iterdir():
            path.unlink()
        for name, inode in self._durable_names.items():
            (self.directory / name).write_bytes(inode.durable or b"")


def transfer(store: FileStore, leaves: list[int]) -> None:
    store.open(MANIFEST)
    for leaf in leaves:
        store.write_verified(MANIFEST.object_id, leaf, DATA[leaf * LEAF : (leaf + 2) * LEAF])


def scenario(fs: CuttableOs, directory: Path) -> None:
    """Two runs of a requestor, the second resuming the first."""
    first = FileStore(directory, sync_bytes=2 * LEAF, fs=fs)
    transfer(first, FIRST_RUN)
    first.close()
    second = FileStore(directory, sync_bytes=3 * LEAF, fs=fs)
    transfer(second, SECOND_RUN)
    second.close()


def leaf_verifies(store: FileStore, leaf: int) -> bool:
    size = min(LEAF, MANIFEST.size - leaf * LEAF)
    data = store.read(MANIFEST.object_id, leaf * LEAF, size)
    return len(data) == size and leaf_hash(data) == HASHES.leaf_hashes[leaf * 32 : leaf * 32 + 32]


def check_resume(directory: Path) -> RangeSet:
    """Reopen after the cut: every leaf marked verified verifies, and writing
    the others (as a fetch would) completes the object, durably."""
    store = FileStore(directory)
    verified = store.open(MANIFEST)
    for start, end in verified:
        for leaf in range(start, end):
            assert leaf_verifies(store, leaf), (leaf, verified)
    for leaf in range(MANIFEST.leaf_count):
        if leaf not in verified:
            store.write_verified(MANIFEST.object_id, leaf, DATA[leaf * LEAF : (leaf + 1) * LEAF])
    store.close()
    again = FileStore(directory)
    assert again.open(MANIFEST) == RangeSet([(0, MANIFEST.leaf_count)])
    assert again.read(MANIFEST.object_id, 0, MANIFEST.size) == DATA
    again.close()
    return verified


def test_the_scenario_without_a_cut_keeps_everything(tmp_path: Path) -> None:
    fs = CuttableOs(tmp_path)
    scenario(fs, tmp_path)
    assert fs.steps > 40  # every call counted: the cuts below are that many
    fs.power_cut()  # all of it was durable
    assert check_resume(tmp_path) == RangeSet([(0, MANIFEST.leaf_count)])


@pytest.mark.parametrize("power_cut", [False, True], ids=["process-crash", "power-cut"])
def test_a_cut_at_every_step_never_keeps_a_leaf_that_does_not_verify(
    tmp_path: Path, power_cut: bool
) -> None:
    steps = _count_steps(tmp_path / "count")
    kept: list[int] = []
    for cut in range(steps):
        directory = tmp_path / f"cut{cut}"
        directory.mkdir()
        fs = CuttableOs(directory, crash_at=cut)
        with pytest.raises(Crash):
            scenario(fs, directory)
        fs.abandon()
        if power_cut:
            fs.power_cut()
        kept.append(check_resume(directory).count())
    # The cuts do land between durable marks: resume keeps some, then more.
    assert kept[0] == 0 and max(kept) >= MANIFEST.leaf_count - 2
    assert kept == sorted(kept)


def _count_steps(directory: Path) -> int:
    directory.mkdir(exist_ok=True)
    fs = CuttableOs(directory)
    scenario(fs, directory)
    return fs.steps


def test_marks_of_another_manifest_lead_to_a_clean_refetch(tmp_path: Path) -> None:
    # The same object cut at another leaf size: the same object id, so the
    # same files; its marks count leaves of 128 bytes.
    other = ObjectHashes.build(DATA, 2 * LEAF).manifest
    assert other.object_id == MANIFEST.object_id and other != MANIFEST
    first = FileStore(tmp_path)
    first.open(other)
    first.write_verified(other.object_id, 0, DATA[: 3 * 2 * LEAF])
    first.close()
    # And garbage in the data file where this manifest's leaves would be.
    with (tmp_path / f"{MANIFEST.object_id.hex()}.data").open("r+b") as data:
        data.seek(8 * LEAF)
        data.write(b"\xff" * LEAF)
    store = FileStore(tmp_path)
    assert store.open(MANIFEST) == RangeSet()  # nothing trusted
    assert store.marks_discarded == 1
    store.close()
    assert check_resume(tmp_path) == RangeSet()
    # The other manifest's marks are gone for good, not trusted either.
    assert FileStore(tmp_path).open(other) == RangeSet()


@pytest.mark.parametrize("what", ["torn", "flipped"])
def test_torn_or_corrupt_marks_are_discarded(tmp_path: Path, what: str) -> None:
    store = FileStore(tmp_path)
    transfer(store, [0, 2, 4])
    store.close()
    marks_path = tmp_path / f"{MANIFEST.object_id.hex()}.verified"
    marks = marks_path.read_bytes()
    assert marks == encode_marks(MANIFEST, RangeSet([(0, 6)]))
    variants = (
        [marks[:cut] for cut in range(len(marks))]
        if what == "torn"
        else [marks[:i] + bytes([marks[i] ^ 1]) + marks[i + 1 :] for i in range(len(marks))]
    )
    for variant in variants:
        marks_path.write_bytes(variant)
        reopened = FileStore(tmp_path)
        assert reopened.open(MANIFEST) == RangeSet()
        assert reopened.marks_discarded == 1
        reopened.close()


def test_old_one_byte_per_leaf_marks_are_not_trusted(tmp_path: Path) -> None:
    (tmp_path / f"{MANIFEST.object_id.hex()}.data").write_bytes(bytes(MANIFEST.size))
    (tmp_path / f"{MANIFEST.object_id.hex()}.verified").write_bytes(b"\x01" * 12)
    assert check_resume(tmp_path) == RangeSet()


def test_marks_are_only_written_once_the_data_is_durable(tmp_path: Path) -> None:
    calls: list[str] = []

    class Recording(CuttableOs):
        def fsync(self, fd: int) -> None:
            calls.append("fsync-dir" if self._fds[fd] is None else "fsync")
            super().fsync(fd)

        def replace(self, source: Path, target: Path) -> None:
            calls.append("replace")
            super().replace(source, target)

    store = FileStore(tmp_path, sync_bytes=1 << 20, fs=Recording(tmp_path))
    transfer(store, [0])
    calls.clear()
    store.sync(MANIFEST.object_id)
    # Data fsync, marks file fsync, rename, directory fsync: in that order.
    assert calls == ["fsync", "fsync", "replace", "fsync-dir"]
    calls.clear()
    store.sync(MANIFEST.object_id)
    assert calls == []  # nothing new: nothing written
    store.close()
