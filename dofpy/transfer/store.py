"""Content-addressed block stores: where verified leaves are written.

A store holds objects by ``object_id`` (their SHA-256). It is told an object's
:class:`~dofpy.transfer.manifest.Manifest` first (:meth:`BlockStore.open`),
then leaves are written *at their offset* and marked verified; a requestor
only ever writes a leaf it has verified, and the store remembers which leaves
are verified so that a restarted requestor resumes from them.

:class:`MemoryStore` keeps objects in preallocated ``bytearray``;
:class:`FileStore` keeps ``<hex>.data`` (the object, written in place) and
``<hex>.verified`` (the *marks*: which leaves are verified), crash-consistent:

- marks are written only after the data they cover is durable (``fsync`` of
  the data first), and atomically (a new file, ``fsync``-ed, renamed over the
  old one, the directory ``fsync``-ed), every ``sync_bytes`` of leaves, when
  the object is complete and at :meth:`FileStore.close`; a crash loses at most
  the marks of the leaves since, never trusts a leaf whose data may be lost;
- marks are bound to their manifest (object id, Merkle root, size, leaf size)
  and carry their own SHA-256: marks of another manifest (the same object cut
  at another leaf size, or a forged manifest), torn or foreign ones are
  discarded at :meth:`FileStore.open` (counted in ``marks_discarded``) and
  replaced by empty marks at once, so the leaves are fetched again, verified
  against the manifest's tree, rather than trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from pathlib import Path
from typing import Any, Protocol

from dofpy.transfer.manifest import Manifest
from dofpy.transfer.rangeset import RangeSet

__all__ = ["BlockStore", "FileStore", "MemoryStore", "decode_marks", "encode_marks"]


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


_MARKS_MAGIC = b"dofpy marks\x01"
_MARKS_HEADER = struct.Struct(">12s32s32sQII")  # magic, object id, root, size, leaf size, ranges
_MARKS_RANGE = struct.Struct(">II")


def encode_marks(manifest: Manifest, verified: RangeSet) -> bytes:
    """The marks file of ``verified`` leaves of ``manifest``: a header binding
    it to the manifest, the verified ranges, and the SHA-256 of both."""
    ranges = list(verified)
    body = _MARKS_HEADER.pack(
        _MARKS_MAGIC,
        manifest.object_id,
        manifest.merkle_root,
        manifest.size,
        manifest.leaf_size,
        len(ranges),
    ) + b"".join(_MARKS_RANGE.pack(start, end) for start, end in ranges)
    return body + hashlib.sha256(body).digest()


def decode_marks(manifest: Manifest, data: bytes) -> RangeSet | None:
    """The verified leaves recorded in ``data`` for ``manifest``; ``None`` when
    ``data`` is torn, corrupt, of another format or of another manifest."""
    if len(data) < _MARKS_HEADER.size + 32:
        return None
    body, digest = data[:-32], data[-32:]
    if not hmac.compare_digest(hashlib.sha256(body).digest(), digest):
        return None
    magic, object_id, root, size, leaf_size, count = _MARKS_HEADER.unpack_from(body)
    if (magic, object_id, root, size, leaf_size) != (
        _MARKS_MAGIC,
        manifest.object_id,
        manifest.merkle_root,
        manifest.size,
        manifest.leaf_size,
    ) or len(body) != _MARKS_HEADER.size + count * _MARKS_RANGE.size:
        return None
    verified = RangeSet()
    previous_end = -1
    for index in range(count):
        start, end = _MARKS_RANGE.unpack_from(body, _MARKS_HEADER.size + index * _MARKS_RANGE.size)
        if not previous_end < start < end <= manifest.leaf_count:
            return None
        verified.add(start, end)
        previous_end = end
    return verified


class _OpenObject:
    __slots__ = ("data_fd", "durable", "manifest", "pending_bytes", "verified")

    def __init__(self, manifest: Manifest, data_fd: int, verified: RangeSet) -> None:
        self.manifest = manifest
        self.data_fd = data_fd
        self.verified = verified
        self.durable = verified.copy()  # what the marks on disk say
        self.pending_bytes = 0


class FileStore:
    """A :class:`BlockStore` in a directory: ``<hex>.data`` and ``<hex>.verified``
    (see the module docstring for what survives a crash).

    ``sync_bytes``: leaves written between two durable marks (a crash loses at
    most these, which are fetched again). ``fs``: the operating-system calls
    used (``os`` itself; tests give one that fails at a chosen step).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        sync_bytes: int = 4 << 20,
        fs: Any = os,
    ) -> None:
        if sync_bytes < 1:
            raise ValueError("sync_bytes must be >= 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sync_bytes = sync_bytes
        self._fs = fs
        self._objects: dict[bytes, _OpenObject] = {}
        self.marks_discarded = 0
        """Marks files found torn, corrupt or of another manifest (and replaced)."""

    def _paths(self, object_id: bytes) -> tuple[Path, Path]:
        name = object_id.hex()
        return self.directory / f"{name}.data", self.directory / f"{name}.verified"

    def open(self, manifest: Manifest) -> RangeSet:
        object_id = manifest.object_id
        known = self._objects.get(object_id)
        if known is not None:
            if known.manifest != manifest:
                raise ValueError("object already open with another manifest")
            return known.verified.copy()
        fs = self._fs
        data_path, marks_path = self._paths(object_id)
        data_fd = fs.open(data_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fs.fstat(data_fd).st_size != manifest.size:
                fs.ftruncate(data_fd, manifest.size)
            marks = self._read(marks_path)
            verified = None if marks is None else decode_marks(manifest, marks)
            opened = _OpenObject(manifest, data_fd, verified or RangeSet())
            if verified is None:
                # Replace what cannot be trusted now, so that no later crash
                # leaves it beside data written under this manifest.
                self.marks_discarded += marks is not None
                self._write_marks(marks_path, encode_marks(manifest, RangeSet()))
        except BaseException:
            fs.close(data_fd)
            raise
        self._objects[object_id] = opened
        return opened.verified.copy()

    def _read(self, path: Path) -> bytes | None:
        fs = self._fs
        try:
            fd = fs.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            size = fs.fstat(fd).st_size
            chunks: list[bytes] = []
            offset = 0
            while offset < size:
                chunk = fs.pread(fd, size - offset, offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
            return b"".join(chunks)
        finally:
            fs.close(fd)

    def _pwrite_all(self, fd: int, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = self._fs.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written

    def _write_marks(self, path: Path, marks: bytes) -> None:
        """Replace the marks file atomically and durably."""
        fs = self._fs
        temporary = path.with_name(path.name + ".tmp")
        fd = fs.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            self._pwrite_all(fd, marks, 0)
            fs.fsync(fd)
        finally:
            fs.close(fd)
        fs.replace(temporary, path)
        directory = fs.open(self.directory, os.O_RDONLY)
        try:
            fs.fsync(directory)
        finally:
            fs.close(directory)

    def verified(self, object_id: bytes) -> RangeSet:
        found = self._objects.get(object_id)
        return RangeSet() if found is None else found.verified.copy()

    def read(self, object_id: bytes, offset: int, length: int) -> bytes:
        fd = self._objects[object_id].data_fd
        chunks: list[bytes] = []
        while length > 0:
            chunk = self._fs.pread(fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)

    def write_verified(self, object_id: bytes, leaf: int, data: bytes) -> None:
        opened = self._objects[object_id]
        manifest = opened.manifest
        self._pwrite_all(opened.data_fd, data, leaf * manifest.leaf_size)
        count = -(-len(data) // manifest.leaf_size)
        opened.verified.add(leaf, leaf + count)
        opened.pending_bytes += len(data)
        if opened.pending_bytes >= self.sync_bytes or opened.verified.covers(
            0, manifest.leaf_count
        ):
            self.sync(object_id)

    def sync(self, object_id: bytes) -> None:
        """Make the leaves written so far durable, then their marks."""
        opened = self._objects[object_id]
        if opened.verified == opened.durable:
            return
        self._fs.fsync(opened.data_fd)  # the data first: marks never outrun it
        self._write_marks(self._paths(object_id)[1], encode_marks(opened.manifest, opened.verified))
        opened.durable = opened.verified.copy()
        opened.pending_bytes = 0

    def close(self) -> None:
        """Make every open object's marks durable and close its file (the
        store may be opened again later)."""
        try:
            for object_id in list(self._objects):
                self.sync(object_id)
        finally:
            for opened in self._objects.values():
                self._fs.close(opened.data_fd)
            self._objects.clear()
