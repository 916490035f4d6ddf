"""The leaves a device already holds, for the adaptive transfer: the running
image's bytes in its slot, indexed by leaf hash at the new image's leaf size.

:class:`SlotLeaves` is a :class:`~dofpy.transfer.receiver.LocalLeaves`: the
receiver asks it for a leaf by the hash it has just proved against the new
manifest's Merkle root. It hands out only bytes that still hash to what was
asked for: a stale or overwritten region (the seed's layout writes the new
image over the very slot it indexes) answers None and costs a fetch, never a
wrong byte (the receiver checks what comes back against the hash again, as it
checks any local source). So every leaf it hands out is one the receiver
copies, and :attr:`SlotLeaves.bytes_copied` is what the device did not fetch.
"""

from __future__ import annotations

from collections.abc import Callable

from dofpy.transfer.manifest import leaf_hash

__all__ = ["SlotLeaves"]


class SlotLeaves:
    """The ``size`` bytes that ``read(offset, length)`` gives, indexed in
    leaves of ``leaf_size`` at aligned offsets (the first offset of a hash)."""

    def __init__(self, read: Callable[[int, int], bytes], size: int, leaf_size: int) -> None:
        if size < 0 or leaf_size < 1:
            raise ValueError("need size >= 0 and leaf_size >= 1")
        self._read = read
        self._at: dict[bytes, int] = {}
        for offset in range(0, size, leaf_size):
            data = read(offset, min(leaf_size, size - offset))
            self._at.setdefault(leaf_hash(data), offset)
        self.bytes_copied = 0
        """Bytes of the leaves handed out (each matched the hash asked for)."""

    def __len__(self) -> int:
        return len(self._at)

    def leaf(self, digest: bytes, length: int) -> bytes | None:
        offset = self._at.get(digest)
        if offset is None:
            return None
        data = self._read(offset, length)
        if len(data) != length or leaf_hash(data) != digest:
            return None  # overwritten since it was indexed
        self.bytes_copied += length
        return data
