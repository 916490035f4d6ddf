"""The provider's block cache: bounded in bytes, least recently used first out.

It sits between the transfer provider and a :class:`~dofpy.transfer.store.BlockStore`:
a miss reads the block from the store and keeps it; when the cached bytes
exceed ``max_bytes`` the least recently used blocks are evicted. Hits, misses
and evictions are counted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from dofpy.transfer.store import BlockStore

__all__ = ["BlockCache", "CacheStatistics"]


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    hits: int
    misses: int
    evictions: int
    bytes: int
    entries: int


class BlockCache:
    """An LRU cache of ``(object_id, offset, length)`` blocks read from ``store``."""

    def __init__(self, store: BlockStore, max_bytes: int = 16 << 20) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.store = store
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[bytes, int, int], bytes] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def read(self, object_id: bytes, offset: int, length: int) -> bytes:
        """The block, from the cache or (counted as a miss) from the store."""
        key = (object_id, offset, length)
        found = self._entries.get(key)
        if found is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return found
        self.misses += 1
        data = self.store.read(object_id, offset, length)
        if len(data) <= self.max_bytes:
            self._entries[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted)
                self.evictions += 1
        return data

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(
            self.hits, self.misses, self.evictions, self._bytes, len(self._entries)
        )
