"""A block store whose object is a bootloader slot: the block transfer's
receiver writes each leaf straight into the slot, and only once it has
verified it (step C).

:class:`SlotBlockStore` is a :class:`~dofpy.transfer.store.BlockStore` for
one object, the image being installed, backed by a
:class:`~dofpy_services.device.bootloader.SlotWriter`. Which leaves are
verified (the *marks*) is kept in a file of the agent's state
(:func:`~dofpy_services.device.state_file.write_atomically` on a
:class:`~dofpy_services.device.fs.DeviceFs`: a new file, fsync-ed, renamed,
the directory fsync-ed) and only after ``writer.sync()`` made the leaves it
covers durable: after a power
cut or a reboot the agent reopens the slot and the store, and the transfer
resumes from the marked leaves, from any provider or relay. Marks bound to
another manifest, torn or foreign, are discarded (the transfer's own
:func:`~dofpy.transfer.store.decode_marks` checks them), so the leaves are
fetched and verified again rather than trusted.

A confidential image (AES-256-CTR, :mod:`dofpy_services.image.encryption`)
is served and verified as ciphertext; with ``content_key`` the store writes
each verified leaf into the slot *decrypted* (CTR is addressable: the leaf at
offset ``o`` uses counter block ``iv + o/16``), and reads give the
ciphertext back (encrypting the slot's plaintext again) so the receiver's
whole-object check still sees the bytes the manifest's Merkle root covers.
The slot's image is then the plaintext, checked whole against the signed
plaintext digest when the slot is finished.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dofpy.transfer.manifest import Manifest
from dofpy.transfer.rangeset import RangeSet
from dofpy.transfer.store import decode_marks, encode_marks
from dofpy_services.device.bootloader import SlotWriter
from dofpy_services.device.fs import DeviceFs, OsFs
from dofpy_services.device.state_file import read_framed, write_atomically
from dofpy_services.image.encryption import ContentKey

__all__ = ["SlotBlockStore", "forget_marks"]


class SlotBlockStore:
    """The transfer's store for ``manifest``'s object, written into ``writer``'s
    slot; marks in the file ``marks`` of ``fs`` (a path: that file on the
    operating system's), saved every ``sync_bytes`` of leaves and when the
    object is complete."""

    def __init__(
        self,
        writer: SlotWriter,
        manifest: Manifest,
        marks: str | os.PathLike[str],
        *,
        fs: DeviceFs | None = None,
        sync_bytes: int = 64 << 10,
        content_key: ContentKey | None = None,
    ) -> None:
        if manifest.size > writer.capacity:
            raise ValueError(f"an image of {manifest.size} bytes does not fit the slot")
        if content_key is not None and manifest.leaf_size % 16:
            raise ValueError("a confidential image's leaves are whole AES blocks (16 bytes)")
        self.content_key = content_key
        self.writer = writer
        self.manifest = manifest
        if fs is None:
            path = Path(marks)
            fs, marks = OsFs(path.parent), path.name
        self.fs = fs
        self.marks_name = str(marks)
        self.sync_bytes = sync_bytes
        self._verified = self._load()
        self._unsynced = 0
        self.leaves_written = 0
        """Leaves written into the slot by this store (each verified first)."""

    def _load(self) -> RangeSet:
        data = read_framed(self.fs, self.marks_name)
        if data is None:
            return RangeSet()
        marks = decode_marks(self.manifest, data)
        return marks if marks is not None else RangeSet()

    def _save(self) -> None:
        self.writer.sync()  # the leaves first: marks never cover bytes a cut may lose
        write_atomically(self.fs, self.marks_name, encode_marks(self.manifest, self._verified))
        self._unsynced = 0

    def _check(self, object_id: bytes) -> None:
        if object_id != self.manifest.object_id:
            raise KeyError("this slot store holds one object")

    # -- BlockStore ---------------------------------------------------------------------------

    def open(self, manifest: Manifest) -> RangeSet:
        if manifest != self.manifest:
            raise ValueError("this slot store holds another manifest's object")
        return self._verified.copy()

    def verified(self, object_id: bytes) -> RangeSet:
        if object_id != self.manifest.object_id:
            return RangeSet()
        return self._verified.copy()

    def _ctr(self, offset: int, data: bytes) -> bytes:
        """``data`` at ``offset`` of the image through AES-CTR (either way)."""
        key = self.content_key
        if key is None:
            return data
        if offset % 16:
            raise ValueError("CTR offsets are whole AES blocks")
        counter = (int.from_bytes(key.iv, "big") + offset // 16) % (1 << 128)
        cipher = Cipher(algorithms.AES(key.key), modes.CTR(counter.to_bytes(16, "big")))
        transform = cipher.encryptor()
        return transform.update(data) + transform.finalize()

    def read(self, object_id: bytes, offset: int, length: int) -> bytes:
        self._check(object_id)
        data = self.writer.read(offset, min(length, self.manifest.size - offset))
        if self.content_key is None or offset % 16 == 0:
            return self._ctr(offset, data)
        start = offset - offset % 16  # an unaligned read: from the block it starts in
        whole = self._ctr(start, self.writer.read(start, offset - start) + data)
        return whole[offset - start :]

    def write_verified(self, object_id: bytes, leaf: int, data: bytes) -> None:
        """Called by the receiver with leaves it has verified against the
        manifest's Merkle tree, never with any other bytes."""
        self._check(object_id)
        leaf_size = self.manifest.leaf_size
        self.writer.write(leaf * leaf_size, self._ctr(leaf * leaf_size, bytes(data)))
        leaves = -(-len(data) // leaf_size)
        self._verified.add(leaf, leaf + leaves)
        self.leaves_written += leaves
        self._unsynced += len(data)
        if self._unsynced >= self.sync_bytes or self.complete:
            self._save()

    # -- the agent's side ---------------------------------------------------------------------

    @property
    def verified_bytes(self) -> int:
        """Bytes of the image's leaves verified so far (those resumed from the
        marks included)."""
        return sum(self.manifest.span_length(start, end) for start, end in self._verified)

    @property
    def complete(self) -> bool:
        return self._verified.covers(0, self.manifest.leaf_count)

    def close(self) -> None:
        """Save the marks (what a clean stop keeps)."""
        self._save()


def forget_marks(fs: DeviceFs, name: str) -> None:
    """Forget the marks in ``name`` (the image is installed, or failed its
    whole-image check and is fetched again): an empty file, written
    atomically (``DeviceFs`` removes no file), reads as no leaf verified."""
    write_atomically(fs, name, b"")
