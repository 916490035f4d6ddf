"""The file operations of the simulated bootloader, and a layer that cuts the power.

:class:`OsFs` does the operations on the files of one directory. :class:`PowerCutFs`
does the same and models what a power cut keeps, like a disk under a page cache:

- a write reaches the files at once (reads see it) but is *durable* only once
  its file is ``fsync``-ed;
- a new name (a file created, a rename) is durable only once the directory is
  ``fsync``-ed; until then a power cut loses it (a renamed file reverts to its
  old name, a new file disappears);
- every write, fsync, rename and directory fsync is one numbered *operation*
  (:attr:`PowerCutFs.operations`); with ``cut_at=N`` the power fails at
  operation N: it is not done, except that a write may be *torn*
  (``torn_bytes=k``: the first k bytes of that write reach the disk). The
  directory is then put back to exactly what was durable and
  :class:`PowerCut` raised; every later operation raises it too (the device
  is off until it is opened again).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["CutPoint", "DeviceFs", "Operation", "OsFs", "PowerCut", "PowerCutFs", "cut_points"]


class PowerCut(Exception):
    """The simulated power failed; the files hold only what was durable."""


class DeviceFs(Protocol):
    """Named files of one directory, read and written at offsets."""

    def exists(self, name: str) -> bool: ...

    def size(self, name: str) -> int: ...

    def read(self, name: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end of the file)."""
        ...

    def write(self, name: str, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``, creating the file if needed."""
        ...

    def fsync(self, name: str) -> None: ...

    def replace(self, source: str, target: str) -> None: ...

    def fsync_directory(self) -> None: ...


class OsFs:
    """:class:`DeviceFs` on the files of ``directory`` (created if missing).

    ``sync=False`` makes ``fsync`` and ``fsync_directory`` no-ops: for a
    simulated fleet, whose devices' durability is modelled (by
    :class:`PowerCutFs`), not the host's; a thousand devices fsync-ing their
    state files on one disk would stall the process that runs them all."""

    def __init__(self, directory: str | os.PathLike[str], *, sync: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sync = sync

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a file name: {name!r}")
        return self.directory / name

    def names(self) -> list[str]:
        return sorted(path.name for path in self.directory.iterdir() if path.is_file())

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size

    def read(self, name: str, offset: int, length: int) -> bytes:
        fd = os.open(self._path(name), os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def write(self, name: str, offset: int, data: bytes) -> None:
        fd = os.open(self._path(name), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        finally:
            os.close(fd)

    def fsync(self, name: str) -> None:
        if not self.sync:
            self._path(name)  # the name is checked all the same
            return
        fd = os.open(self._path(name), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, source: str, target: str) -> None:
        if not self.sync:
            # Renaming over an existing file makes ext4 (auto_da_alloc) flush
            # the new file's data first: an fsync in all but name. Without
            # sync the host's durability is not the point; the rename stays
            # the device's one atomic step.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(target))
        os.replace(self._path(source), self._path(target))

    def fsync_directory(self) -> None:
        if not self.sync:
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def truncate(self, name: str) -> None:
        """Make ``name`` an empty file (the restore after a power cut)."""
        self._path(name).write_bytes(b"")

    def remove(self, name: str) -> None:
        self._path(name).unlink()


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation a power cut can interrupt: ``kind`` is ``write``,
    ``fsync``, ``replace`` or ``fsync_directory``; ``size`` the bytes of a write."""

    kind: str
    name: str
    size: int = 0


class PowerCutFs:
    """:class:`DeviceFs` on ``directory`` that remembers what is durable and
    cuts the power at operation ``cut_at`` (see the module docstring).

    Whatever the directory holds when this is made counts as durable (the
    device was switched on with it)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        cut_at: int | None = None,
        torn_bytes: int = 0,
        sync: bool = True,
    ) -> None:
        if torn_bytes < 0:
            raise ValueError("torn_bytes must be >= 0")
        self._disk = OsFs(directory, sync=sync)
        self.cut_at = cut_at
        self.torn_bytes = torn_bytes
        self.operations: list[Operation] = []
        self.cut = False
        """Whether the power was cut (every operation since raised PowerCut)."""
        self._next_inode = 0
        self._names: dict[str, int] = {}  # name -> inode, as the files are now
        self._durable_names: dict[str, int] = {}  # as a power cut leaves them
        self._durable: dict[int, bytes] = {}  # inode -> durable content
        for name in self._disk.names():
            inode = self._new_inode()
            self._names[name] = self._durable_names[name] = inode
            self._durable[inode] = self._disk.read(name, 0, self._disk.size(name))

    @property
    def directory(self) -> Path:
        return self._disk.directory

    def _new_inode(self) -> int:
        self._next_inode += 1
        return self._next_inode

    def _operation(self, operation: Operation) -> bool:
        """Count ``operation``; True when the power fails at it."""
        if self.cut:
            raise PowerCut("the power is off")
        self.operations.append(operation)
        return len(self.operations) - 1 == self.cut_at

    def power_cut(self, torn: tuple[str, int, bytes] | None = None) -> None:
        """Put the directory back to what is durable (with ``torn``'s bytes, a
        write's prefix, written over its file if that file is durable) and
        switch off: every later operation raises :class:`PowerCut`."""
        if torn is not None:
            name, offset, prefix = torn
            inode = self._names.get(name)
            if inode is not None and self._durable_names.get(name) == inode:
                old = self._durable.get(inode, b"")
                padded = old.ljust(offset, b"\0")
                self._durable[inode] = padded[:offset] + prefix + padded[offset + len(prefix) :]
        for name in self._disk.names():
            self._disk.remove(name)
        for name, inode in self._durable_names.items():
            self._disk.truncate(name)
            content = self._durable.get(inode, b"")
            if content:
                self._disk.write(name, 0, content)
        self.cut = True

    def _cut(self, torn: tuple[str, int, bytes] | None = None) -> None:
        self.power_cut(torn)
        raise PowerCut(f"power cut at operation {len(self.operations) - 1}")

    def exists(self, name: str) -> bool:
        return self._disk.exists(name)

    def size(self, name: str) -> int:
        return self._disk.size(name)

    def read(self, name: str, offset: int, length: int) -> bytes:
        if self.cut:
            raise PowerCut("the power is off")
        return self._disk.read(name, offset, length)

    def write(self, name: str, offset: int, data: bytes) -> None:
        if self._operation(Operation("write", name, len(data))):
            self._cut((name, offset, bytes(data[: self.torn_bytes])) if self.torn_bytes else None)
        if name not in self._names:
            self._names[name] = self._new_inode()
        self._disk.write(name, offset, data)

    def fsync(self, name: str) -> None:
        if self._operation(Operation("fsync", name)):
            self._cut()
        inode = self._names[name]
        self._durable[inode] = self._disk.read(name, 0, self._disk.size(name))

    def replace(self, source: str, target: str) -> None:
        if self._operation(Operation("replace", target)):
            self._cut()
        self._names[target] = self._names.pop(source)
        self._disk.replace(source, target)

    def fsync_directory(self) -> None:
        if self._operation(Operation("fsync_directory", "")):
            self._cut()
        self._durable_names = dict(self._names)


@dataclass(frozen=True, slots=True)
class CutPoint:
    """Where a power cut falls: at operation ``at``, with ``torn_bytes`` of it
    reaching the disk when it is a write (0: none of it)."""

    at: int
    torn_bytes: int = 0


def cut_points(operations: list[Operation]) -> list[CutPoint]:
    """Every cut point of a run that did ``operations``: each operation with
    nothing of it done, and each write also torn after its first byte, a
    quarter, half and three quarters of it, all but its last byte, and all of
    it (written, not yet synced)."""
    points: list[CutPoint] = []
    for index, operation in enumerate(operations):
        points.append(CutPoint(index))
        if operation.kind == "write":
            size = operation.size
            torn = sorted({1, size // 4, size // 2, 3 * size // 4, size - 1, size} - {0})
            points.extend(CutPoint(index, k) for k in torn if 0 < k <= size)
    return points
