"""Content-addressed block stores: where verified leaves are written.

A store holds objects by ``object_id`` (their SHA-256). It is told an object's
:class:`~dofpy.transfer.manifest.Manifest` first (:meth:`BlockStore.open`),
then leaves are written *at their offset* and marked verified; a requestor
only ever writes a leaf it has verified, and the store remembers which leaves
are verified so that a restarted requestor resumes from them.

:class:`MemoryStore` keeps objects in preallocated ``bytearray``;
:class:`FileStore` keeps ``<hex>.data`` (the object, written in place) and
``<hex>.verified`` (one byte per leaf, written after the leaf's data, so a
crash between the two only loses that leaf's record, never trusts an
unwritten leaf).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Protocol

from dofpy.transfer.manifest import Manifest
from dofpy.transfer.rangeset import RangeSet

__all__ = ["BlockStore", "FileStore", "MemoryStore"]


class BlockStore(Protocol):
    """The store a provider reads from and a requestor writes to."""

    def open(self, manifest: Manifest) -> RangeSet:
        """Make room for the object (if new); return its verified leaves."""
        ...

    def verified(self, object_id: bytes) -> RangeSet:
        """The leaves of ``object_id`` known verified (empty if unknown)."""
        ...

    def read(self, object_id: bytes, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of a known object."""
        ...

    def write_verified(self, object_id: bytes, leaf: int, data: bytes) -> None:
        """Write verified leaves starting at leaf ``leaf`` and record them."""
        ...


class MemoryStore:
    """An in-memory :class:`BlockStore`."""

    def __init__(self) -> None:
        self._objects: dict[bytes, tuple[Manifest, bytearray, RangeSet]] = {}

    def open(self, manifest: Manifest) -> RangeSet:
        entry = self._objects.get(manifest.object_id)
        if entry is None:
            entry = (manifest, bytearray(manifest.size), RangeSet())
            self._objects[manifest.object_id] = entry
        elif entry[0] != manifest:
            raise ValueError("object already stored with another manifest")
        return entry[2].copy()

    def verified(self, object_id: bytes) -> RangeSet:
        entry = self._objects.get(object_id)
        return RangeSet() if entry is None else entry[2].copy()

    def read(self, object_id: bytes, offset: int, length: int) -> bytes:
        return bytes(self._objects[object_id][1][offset : offset + length])

    def write_verified(self, object_id: bytes, leaf: int, data: bytes) -> None:
        manifest, buffer, verified = self._objects[object_id]
        offset = leaf * manifest.leaf_size
        buffer[offset : offset + len(data)] = data
        verified.add(leaf, leaf + -(-len(data) // manifest.leaf_size))

    def put(self, data: bytes, manifest: Manifest) -> None:
        """Store a whole object already known good (a publisher's own copy)."""
        self.open(manifest)
        self.write_verified(manifest.object_id, 0, bytes(data))

    def data(self, object_id: bytes) -> bytes:
        """The object's bytes (tests and publishers)."""
        return bytes(self._objects[object_id][1])


class FileStore:
    """A :class:`BlockStore` in a directory: ``<hex>.data`` and ``<hex>.verified``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._manifests: dict[bytes, Manifest] = {}
        self._verified: dict[bytes, RangeSet] = {}
        self._files: dict[bytes, tuple[BinaryIO, BinaryIO]] = {}

    def _paths(self, object_id: bytes) -> tuple[Path, Path]:
        name = object_id.hex()
        return self.directory / f"{name}.data", self.directory / f"{name}.verified"

    def open(self, manifest: Manifest) -> RangeSet:
        object_id = manifest.object_id
        if object_id in self._manifests:
            if self._manifests[object_id] != manifest:
                raise ValueError("object already open with another manifest")
            return self._verified[object_id].copy()
        data_path, marks_path = self._paths(object_id)
        for path, size in ((data_path, manifest.size), (marks_path, manifest.leaf_count)):
            if not path.exists():
                path.touch()
            if path.stat().st_size != size:
                os.truncate(path, size)
        data_file = data_path.open("r+b")
        marks_file = marks_path.open("r+b")
        verified = RangeSet()
        marks = marks_file.read()
        leaf = 0
        while leaf < len(marks):
            if marks[leaf] == 1:
                end = leaf
                while end < len(marks) and marks[end] == 1:
                    end += 1
                verified.add(leaf, end)
                leaf = end
            else:
                leaf += 1
        self._manifests[object_id] = manifest
        self._verified[object_id] = verified
        self._files[object_id] = (data_file, marks_file)
        return verified.copy()

    def verified(self, object_id: bytes) -> RangeSet:
        found = self._verified.get(object_id)
        return RangeSet() if found is None else found.copy()

    def read(self, object_id: bytes, offset: int, length: int) -> bytes:
        data_file = self._files[object_id][0]
        data_file.seek(offset)
        return data_file.read(length)

    def write_verified(self, object_id: bytes, leaf: int, data: bytes) -> None:
        manifest = self._manifests[object_id]
        data_file, marks_file = self._files[object_id]
        data_file.seek(leaf * manifest.leaf_size)
        data_file.write(data)
        data_file.flush()
        count = -(-len(data) // manifest.leaf_size)
        marks_file.seek(leaf)
        marks_file.write(b"\x01" * count)
        marks_file.flush()
        self._verified[object_id].add(leaf, leaf + count)

    def close(self) -> None:
        """Close every open file (the store may be opened again later)."""
        for data_file, marks_file in self._files.values():
            data_file.close()
            marks_file.close()
        self._files.clear()
        self._manifests.clear()
        self._verified.clear()
