"""What a provider serves an object from: its manifest, the block cache over
the store, the leaves verified so far (all of them for a published object; a
relay's grow as its upstream transfer verifies them) and, once known, its
hashes (a :class:`~dofpy.transfer.sender.BlockSource`)."""

from __future__ import annotations

from dofpy.transfer.cache import BlockCache
from dofpy.transfer.manifest import Manifest, ObjectHashes
from dofpy.transfer.rangeset import RangeSet

__all__ = ["ServedObject"]


class ServedObject:
    """An object this core serves (a :class:`~dofpy.transfer.sender.BlockSource`)."""

    def __init__(
        self, manifest: Manifest, cache: BlockCache, verified: RangeSet, hashes: ObjectHashes | None
    ) -> None:
        self.manifest = manifest
        self.cache = cache
        self.verified = verified
        self.hashes = hashes

    def has_hashes(self) -> bool:
        return self.hashes is not None

    def chunk(self, chunk: int, chunk_leaves: int) -> tuple[bytes, list[bytes]]:
        assert self.hashes is not None
        return self.hashes.chunk(chunk, chunk_leaves)

    def bare_chunk(self, chunk: int) -> bytes:
        assert self.hashes is not None
        return self.hashes.bare_chunk(chunk)

    def root_chunk(self, chunk: int) -> tuple[bytes, list[bytes]]:
        assert self.hashes is not None
        return self.hashes.root_chunk(chunk)

    def has_leaves(self, start: int, end: int) -> bool:
        return self.verified.covers(start, end)

    def read(self, start: int, end: int) -> bytes:
        manifest = self.manifest
        return self.cache.read(
            manifest.object_id, start * manifest.leaf_size, manifest.span_length(start, end)
        )
