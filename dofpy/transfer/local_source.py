"""Adaptive transfer: leaves the requestor already holds (the device's
running image, say), found by the leaf hash just proved against the manifest's
Merkle root and copied instead of fetched (:mod:`dofpy.transfer.receiver`).

The local source is untrusted: bytes it returns are checked against the proved
hash exactly as a fetched leaf is, and a copy that does not match is never
written (the leaf is fetched instead).
"""

from __future__ import annotations

from typing import Protocol

from dofpy.transfer.manifest import HASH_SIZE, Manifest, leaf_hash
from dofpy.transfer.rangeset import RangeSet
from dofpy.transfer.store import BlockStore

__all__ = ["LocalLeaves", "copy_local"]


class LocalLeaves(Protocol):
    """Leaves the requestor already holds, found by their leaf hash."""

    def leaf(self, digest: bytes, length: int) -> bytes | None:
        """``length`` bytes held here whose leaf hash is ``digest``, or None.
        Untrusted: the receiver checks them against ``digest`` itself."""
        ...


def copy_local(
    local: LocalLeaves,
    manifest: Manifest,
    hashes: bytes | bytearray,
    store: BlockStore,
    verified: RangeSet,
    wanted: RangeSet,
) -> tuple[int, int]:
    """Write to ``store`` the leaves of ``wanted`` (their ``hashes`` proved)
    that ``local`` holds and that verify, add them to ``verified``, take them
    out of ``wanted``; the leaves and bytes copied."""
    copied = RangeSet()
    count = size = 0
    for start, end in list(wanted):
        for leaf in range(start, end):
            expected = bytes(hashes[leaf * HASH_SIZE : (leaf + 1) * HASH_SIZE])
            length = manifest.span_length(leaf, leaf + 1)
            data = local.leaf(expected, length)
            if data is None or len(data) != length or leaf_hash(data) != expected:
                continue  # not held, or not what it claims: fetched instead
            store.write_verified(manifest.object_id, leaf, data)
            verified.add(leaf, leaf + 1)
            copied.add(leaf, leaf + 1)
            count += 1
            size += length
    wanted.difference_update(copied)
    return count, size
