"""The leaf hashes of an object being fetched, as they are proved against its
manifest's Merkle root (the requestor's hash phase, :mod:`dofpy.transfer.receiver`).

Two ways to ask for them (docs/protocol.md, section 6):

* hash chunks sized by the block size, each with its audit path;
* *compact hashes* (an adaptive transfer): root chunks first (the roots of
  the 32-leaf subtrees, each chunk with its audit path), then bare chunks of
  32 hashes without a proof, each asked for only once its subtree root is
  proved and checked against it.

This class keeps what is proved and what is still needed, in chunk numbers of
the grid in use; the receiver asks for it, counts and times it.
"""

from __future__ import annotations

import enum

from dofpy.transfer.manifest import BARE_CHUNK_LEAVES, HASH_SIZE, Manifest
from dofpy.transfer.messages import HashChunkMessage, RootChunkMessage
from dofpy.transfer.rangeset import RangeSet

__all__ = ["ChunkRefused", "ProvedHashes"]


class ChunkRefused(enum.Enum):
    """Why a hash or root chunk was not taken."""

    DUPLICATE = "duplicate"
    """Everything it carries is proved already."""
    UNREQUESTED = "unrequested"
    """It cannot be checked yet (a bare chunk whose subtree root is not proved)."""
    BAD = "bad"
    """It fails verification."""


class ProvedHashes:
    """The leaf hashes (and, for compact hashes, subtree roots) proved so far."""

    def __init__(self, manifest: Manifest, block_size: int, *, compact: bool) -> None:
        self.manifest = manifest
        self.compact = compact
        self.hashes = bytearray(manifest.leaf_count * HASH_SIZE)
        # Leaves whose hashes are verified (in leaves, not chunks: the chunk
        # size follows the block size, which may change mid-transfer).
        self.verified = RangeSet()
        self._roots = bytearray(manifest.bare_chunk_count * HASH_SIZE if compact else 0)
        self._roots_verified = RangeSet()
        if compact:
            self.chunk_leaves = BARE_CHUNK_LEAVES
            self.need_roots = RangeSet([(0, manifest.root_chunk_count)])
            self.need_chunks = RangeSet()  # each added once its root is proved
        else:
            self.chunk_leaves = manifest.chunk_leaves_for(block_size)
            self.need_roots = RangeSet()
            self.need_chunks = RangeSet([(0, manifest.chunk_count_for(self.chunk_leaves))])

    def known(self) -> bool:
        """Whether every leaf hash is proved."""
        return self.verified.covers(0, self.manifest.leaf_count)

    def take_chunk(self, message: HashChunkMessage) -> tuple[int, int] | ChunkRefused:
        """Check a hash chunk (a bare chunk, for compact hashes) and keep its
        hashes: the leaves ``(start, end)`` whose hashes it proved."""
        chunk, manifest = message.chunk, self.manifest
        start, end = manifest.chunk_range(chunk, self.chunk_leaves)
        if start < end and self.verified.covers(start, end):
            return ChunkRefused.DUPLICATE
        if self.compact:
            if 0 <= chunk < manifest.bare_chunk_count and not self._roots_verified.covers(
                chunk, chunk + 1
            ):
                return ChunkRefused.UNREQUESTED  # its root is not proved yet: drop
            good = not message.proof and manifest.verify_bare_chunk(
                chunk,
                message.hashes,
                bytes(self._roots[chunk * HASH_SIZE : (chunk + 1) * HASH_SIZE]),
            )
        else:
            good = manifest.verify_chunk(chunk, message.hashes, message.proof, self.chunk_leaves)
        if not good:
            return ChunkRefused.BAD
        self.hashes[start * HASH_SIZE : end * HASH_SIZE] = message.hashes
        self.verified.add(start, end)
        self.need_chunks.discard(chunk, chunk + 1)
        return start, end

    def take_root_chunk(self, message: RootChunkMessage) -> bool | ChunkRefused:
        """Check a root chunk and keep its subtree roots; their bare chunks are
        needed from now on. True when taken."""
        if not self.compact:
            return ChunkRefused.UNREQUESTED
        chunk, manifest = message.chunk, self.manifest
        start, end = manifest.root_chunk_range(chunk)
        if start < end and self._roots_verified.covers(start, end):
            return ChunkRefused.DUPLICATE
        if not manifest.verify_root_chunk(chunk, message.roots, message.proof):
            return ChunkRefused.BAD
        self._roots[start * HASH_SIZE : end * HASH_SIZE] = message.roots
        self._roots_verified.add(start, end)
        self.need_roots.discard(chunk, chunk + 1)
        self.need_chunks.add(start, end)
        return True

    def regrid(self, block_size: int) -> None:
        """Hash chunks sized for ``block_size`` (nothing outstanding; compact
        hashes have one size whatever the block size)."""
        manifest = self.manifest
        if self.compact:
            return
        chunk_leaves = manifest.chunk_leaves_for(block_size)
        if chunk_leaves == self.chunk_leaves:
            return
        self.chunk_leaves = chunk_leaves
        need = RangeSet()
        for chunk in range(manifest.chunk_count_for(chunk_leaves)):
            start, end = manifest.chunk_range(chunk, chunk_leaves)
            if not self.verified.covers(start, end):
                need.add(chunk, chunk + 1)
        self.need_chunks = need
