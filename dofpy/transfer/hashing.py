"""Hashing an object as it streams past: its :class:`~dofpy.transfer.manifest.Manifest`
and leaf hashes in one pass, in bounded memory.

:meth:`ObjectHashes.build <dofpy.transfer.manifest.ObjectHashes.build>` needs
the whole object in memory; an image of several GiB must not be. An
:class:`ObjectHasher` takes the object in pieces of any size (``update``),
keeps only the part of a leaf not yet complete, the SHA-256 of everything so
far, the leaf hashes (32 bytes per leaf: what a provider serves hash chunks
from anyway) and the RFC 6962 tree's *frontier* — the roots of the perfect
subtrees seen so far, one per set bit of the leaf count, so ``O(log n)``
hashes — from which :meth:`ObjectHasher.finish` folds the root. The result
equals :meth:`ObjectHashes.build` on the same bytes.
"""

from __future__ import annotations

import hashlib

from dofpy.transfer.manifest import MAX_LEAF_SIZE, MIN_LEAF_SIZE, Manifest, ObjectHashes, leaf_hash

__all__ = ["ObjectHasher"]

_NODE_PREFIX = hashlib.sha256(b"\x01")


def _node(left: bytes, right: bytes) -> bytes:
    digest = _NODE_PREFIX.copy()
    digest.update(left)
    digest.update(right)
    return digest.digest()


class ObjectHasher:
    """The manifest and leaf hashes of an object fed to :meth:`update` in pieces."""

    __slots__ = ("_frontier", "_leaf_hashes", "_partial", "_sha256", "_size", "leaf_size")

    def __init__(self, leaf_size: int) -> None:
        if type(leaf_size) is not int or not MIN_LEAF_SIZE <= leaf_size <= MAX_LEAF_SIZE:
            raise ValueError(f"leaf_size must be in {MIN_LEAF_SIZE}..{MAX_LEAF_SIZE}")
        self.leaf_size = leaf_size
        self._sha256 = hashlib.sha256()
        self._partial = bytearray()  # the leaf being filled (always < leaf_size bytes)
        self._leaf_hashes = bytearray()
        # (height, root) of perfect subtrees, heights strictly decreasing.
        self._frontier: list[tuple[int, bytes]] = []
        self._size = 0

    @property
    def size(self) -> int:
        """Bytes hashed so far."""
        return self._size

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Hash the next ``data`` of the object."""
        view = memoryview(data).cast("B")
        self._sha256.update(view)
        self._size += view.nbytes
        size = self.leaf_size
        if self._partial:
            take = min(size - len(self._partial), view.nbytes)
            self._partial += view[:take]
            view = view[take:]
            if len(self._partial) < size:
                return
            self._add_leaf(leaf_hash(memoryview(self._partial)))
            self._partial.clear()
        whole = view.nbytes - view.nbytes % size
        for offset in range(0, whole, size):
            self._add_leaf(leaf_hash(view[offset : offset + size]))
        self._partial += view[whole:]

    def _add_leaf(self, digest: bytes) -> None:
        self._leaf_hashes += digest
        height, node = 0, digest
        frontier = self._frontier
        # Two perfect subtrees of the same height make one a level higher.
        while frontier and frontier[-1][0] == height:
            _, left = frontier.pop()
            node = _node(left, node)
            height += 1
        frontier.append((height, node))

    def finish(self) -> ObjectHashes:
        """The object's manifest and leaf hashes (at least one byte must have
        been hashed); the hasher is spent."""
        if self._partial:
            self._add_leaf(leaf_hash(memoryview(self._partial)))
            self._partial.clear()
        if not self._frontier:
            raise ValueError("an object has at least one byte")
        # RFC 6962 splits at the largest power of two: the frontier's first
        # subtree is the left half, the rest (folded right to left) the right.
        root = self._frontier[-1][1]
        for _, left in reversed(self._frontier[:-1]):
            root = _node(left, root)
        manifest = Manifest(self._sha256.digest(), self._size, self.leaf_size, root)
        return ObjectHashes(manifest, bytes(self._leaf_hashes))
