"""The verification data of an object, and the Merkle tree behind it.

An object of ``size`` bytes is cut into *leaves* of ``leaf_size`` bytes (the
last may be shorter). Each leaf hash is ``SHA-256(0x00 || leaf)``; the tree
over the leaf hashes is the one of RFC 6962 (Certificate Transparency): an
inner node is ``SHA-256(0x01 || left || right)`` and a list of ``n > 1``
hashes splits at the largest power of two below ``n``. The
:class:`Manifest` carries ``size``, ``leaf_size``, the SHA-256 of the whole
object (its content address, ``object_id``) and the Merkle root. It is all a
requestor needs, and all that a later signed wrapper (COSE) has to cover:
:meth:`Manifest.to_cbor_map` is that payload.

The leaf hashes themselves travel first, in *hash chunks* of ``chunk_leaves``
hashes (a power of two): an aligned chunk is a subtree of the RFC 6962 tree,
so its root plus an audit path (``proof``) proves it against the manifest's
root. Once a chunk is verified, each of its leaves is verified on arrival by
its hash alone. The chunk size follows the block size a transfer uses
(:meth:`Manifest.chunk_leaves_for`): a hash chunk fills about as much of a
datagram as a Block does. The root does not depend on it.

*Compact hashes* (an adaptive transfer, where the hashes are most of what
crosses the network): the roots of the aligned subtrees of
:data:`BARE_CHUNK_LEAVES` leaves are fetched first, in *root chunks* proved
against the Merkle root like hash chunks (:meth:`Manifest.verify_root_chunk`);
then each *bare chunk* of that many leaf hashes carries no proof at all: it is
checked against its subtree root, already proved
(:meth:`Manifest.verify_bare_chunk`). Every leaf hash is still verified
against the signed root; the proofs cross the network once per root chunk
instead of once per hash chunk.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dofpy.errors import BadPacket
from dofpy.wire.values import decode_values_untrusted

__all__ = [
    "BARE_CHUNK_LEAVES",
    "HASH_CHUNK_BUDGET",
    "HASH_SIZE",
    "Manifest",
    "ObjectHashes",
    "decode_manifest_untrusted",
    "leaf_hash",
    "merkle_levels",
    "merkle_proof",
    "merkle_root",
    "proof_from_levels",
    "root_from_proof",
]

HASH_SIZE = 32
HASH_CHUNK_BUDGET = 1024
"""Least bytes of hashes plus proof one hash chunk may carry (the default block
size, so that a hash chunk always fits the default, IPv6 minimum MTU, datagram);
transfers with larger blocks carry up to a block size of them."""

BARE_CHUNK_LEAVES = HASH_CHUNK_BUDGET // 32
"""Leaf hashes per bare chunk (no proof: they fill the hash chunk budget)."""

MAX_LEAVES = 1 << 24
"""Leaves an object may have (16 M leaves: 16 GiB at 1 KiB leaves)."""

MIN_LEAF_SIZE = 64
MAX_LEAF_SIZE = 1 << 16


_LEAF_PREFIX = hashlib.sha256(b"\x00")
_NODE_PREFIX = hashlib.sha256(b"\x01")


def leaf_hash(data: bytes | memoryview) -> bytes:
    """``SHA-256(0x00 || data)``."""
    # A copy of a hasher that already absorbed the prefix: no concatenation,
    # so the leaf (a memoryview into a datagram) is never copied.
    digest = _LEAF_PREFIX.copy()
    digest.update(data)
    return digest.digest()


def _node(left: bytes, right: bytes) -> bytes:
    digest = _NODE_PREFIX.copy()
    digest.update(left)
    digest.update(right)
    return digest.digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """The RFC 6962 root over ``hashes`` (at least one)."""
    if not hashes:
        raise ValueError("a Merkle tree needs at least one leaf")
    level = list(hashes)
    # Bottom-up pairing gives the RFC 6962 tree: an odd last node is carried up.
    while len(level) > 1:
        paired = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def merkle_levels(hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the RFC 6962 tree over ``hashes`` (at least one), leaves
    first, the root alone last (bottom-up pairing; an odd last node is carried up)."""
    if not hashes:
        raise ValueError("a Merkle tree needs at least one leaf")
    levels = [list(hashes)]
    while len(level := levels[-1]) > 1:
        paired = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        levels.append(paired)
    return levels


def proof_from_levels(levels: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` (top-down siblings, as :func:`merkle_proof`)
    read from :func:`merkle_levels`: O(log n) instead of rehashing subtrees."""
    if not 0 <= index < len(levels[0]):
        raise ValueError("index outside the tree")
    proof: list[bytes] = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):  # else the node is carried up unpaired
            proof.append(level[sibling])
        index //= 2
    proof.reverse()
    return proof


def merkle_proof(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of ``hashes[index]``: sibling hashes from the top down."""
    if not 0 <= index < len(hashes):
        raise ValueError("index outside the tree")
    proof: list[bytes] = []
    lo, hi = 0, len(hashes)
    while hi - lo > 1:
        k = lo + _split(hi - lo)
        if index < k:
            proof.append(merkle_root(hashes[k:hi]))
            hi = k
        else:
            proof.append(merkle_root(hashes[lo:k]))
            lo = k
    return proof


def root_from_proof(node: bytes, index: int, count: int, proof: Sequence[bytes]) -> bytes | None:
    """The root implied by ``node`` at ``index`` of ``count`` with ``proof``
    (top-down siblings); ``None`` when the proof has the wrong length."""
    if not 0 <= index < count:
        return None
    sides: list[bool] = []  # True: our node is the left child at that level
    lo, hi = 0, count
    while hi - lo > 1:
        k = lo + _split(hi - lo)
        if index < k:
            sides.append(True)
            hi = k
        else:
            sides.append(False)
            lo = k
    if len(sides) != len(proof):
        return None
    for is_left, sibling in zip(reversed(sides), reversed(proof), strict=True):
        node = _node(node, sibling) if is_left else _node(sibling, node)
    return node


def _chunk_leaves(leaf_count: int, budget: int = HASH_CHUNK_BUDGET) -> int:
    """Hashes per chunk: the largest power of two whose hashes and proof fit
    ``budget`` bytes (at least one)."""
    leaves = 1 << ((max(budget, HASH_SIZE) // HASH_SIZE).bit_length() - 1)
    while leaves > 1:
        chunks = -(-leaf_count // leaves)
        depth = (chunks - 1).bit_length()
        if (leaves + depth) * HASH_SIZE <= budget:
            break
        leaves //= 2
    return leaves


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a requestor must know, from a trusted source, to verify an object.

    ``object_id`` is the SHA-256 of the whole object (its content address);
    ``merkle_root`` the RFC 6962 root over the leaf hashes.
    """

    object_id: bytes
    size: int
    leaf_size: int
    merkle_root: bytes

    def __post_init__(self) -> None:
        if len(self.object_id) != HASH_SIZE or len(self.merkle_root) != HASH_SIZE:
            raise ValueError("object_id and merkle_root are SHA-256 digests (32 bytes)")
        if type(self.leaf_size) is not int or not MIN_LEAF_SIZE <= self.leaf_size <= MAX_LEAF_SIZE:
            raise ValueError(f"leaf_size must be in {MIN_LEAF_SIZE}..{MAX_LEAF_SIZE}")
        if type(self.size) is not int or not 0 < self.size <= MAX_LEAVES * self.leaf_size:
            raise ValueError(f"size must be 1..{MAX_LEAVES} leaves")

    @property
    def leaf_count(self) -> int:
        return -(-self.size // self.leaf_size)

    @property
    def chunk_leaves(self) -> int:
        """Leaf hashes per hash chunk at the default block size (a power of two)."""
        return _chunk_leaves(self.leaf_count)

    def chunk_leaves_for(self, block_size: int) -> int:
        """Leaf hashes per hash chunk of a transfer with ``block_size``-byte
        blocks: the largest power of two whose hashes and proof fit
        ``max(HASH_CHUNK_BUDGET, block_size)`` bytes."""
        return _chunk_leaves(self.leaf_count, max(HASH_CHUNK_BUDGET, block_size))

    @property
    def chunk_count(self) -> int:
        """Hash chunks at the default block size."""
        return -(-self.leaf_count // self.chunk_leaves)

    def chunk_count_for(self, chunk_leaves: int) -> int:
        """Hash chunks of ``chunk_leaves`` hashes each."""
        return -(-self.leaf_count // chunk_leaves)

    def leaf_length(self, leaf: int) -> int:
        """Bytes in leaf ``leaf``."""
        return min(self.leaf_size, self.size - leaf * self.leaf_size)

    def span_length(self, start: int, end: int) -> int:
        """Bytes in leaves ``[start, end)``."""
        return min(end * self.leaf_size, self.size) - start * self.leaf_size

    def chunk_range(self, chunk: int, chunk_leaves: int | None = None) -> tuple[int, int]:
        """The leaves ``[start, end)`` whose hashes chunk ``chunk`` holds
        (chunks of ``chunk_leaves`` hashes; default :attr:`chunk_leaves`)."""
        leaves = self.chunk_leaves if chunk_leaves is None else chunk_leaves
        start = chunk * leaves
        return start, min(start + leaves, self.leaf_count)

    def verify_chunk(
        self, chunk: int, hashes: bytes, proof: Sequence[bytes], chunk_leaves: int | None = None
    ) -> bool:
        """Whether ``hashes`` (concatenated) are chunk ``chunk`` of this object
        (chunks of ``chunk_leaves`` hashes, a power of two; default :attr:`chunk_leaves`)."""
        leaves = self.chunk_leaves if chunk_leaves is None else chunk_leaves
        if leaves < 1 or leaves & (leaves - 1):
            return False
        count = self.chunk_count_for(leaves)
        if not 0 <= chunk < count:
            return False
        start, end = self.chunk_range(chunk, leaves)
        if len(hashes) != (end - start) * HASH_SIZE:
            return False
        nodes = [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]
        root = root_from_proof(merkle_root(nodes), chunk, count, proof)
        return root is not None and _equal(root, self.merkle_root)

    @property
    def bare_chunk_count(self) -> int:
        """Bare chunks (of :data:`BARE_CHUNK_LEAVES` hashes): also the number
        of subtree roots the root chunks carry."""
        return -(-self.leaf_count // BARE_CHUNK_LEAVES)

    @property
    def root_chunk_roots(self) -> int:
        """Subtree roots per root chunk (a power of two: roots and proof fit
        the hash chunk budget)."""
        return _chunk_leaves(self.bare_chunk_count)

    @property
    def root_chunk_count(self) -> int:
        """Root chunks carrying the :attr:`bare_chunk_count` subtree roots."""
        return -(-self.bare_chunk_count // self.root_chunk_roots)

    def root_chunk_range(self, chunk: int) -> tuple[int, int]:
        """The subtree roots ``[start, end)`` (bare chunk numbers) root chunk ``chunk`` holds."""
        per = self.root_chunk_roots
        return chunk * per, min((chunk + 1) * per, self.bare_chunk_count)

    def verify_root_chunk(self, chunk: int, roots: bytes, proof: Sequence[bytes]) -> bool:
        """Whether ``roots`` (concatenated) are the subtree roots of root chunk
        ``chunk``, proved by ``proof`` against the Merkle root."""
        count = self.root_chunk_count
        if not 0 <= chunk < count:
            return False
        start, end = self.root_chunk_range(chunk)
        if len(roots) != (end - start) * HASH_SIZE:
            return False
        nodes = [roots[i : i + HASH_SIZE] for i in range(0, len(roots), HASH_SIZE)]
        root = root_from_proof(merkle_root(nodes), chunk, count, proof)
        return root is not None and _equal(root, self.merkle_root)

    def verify_bare_chunk(self, chunk: int, hashes: bytes, subtree_root: bytes) -> bool:
        """Whether ``hashes`` are the leaf hashes of bare chunk ``chunk``, whose
        subtree root ``subtree_root`` the caller has already proved."""
        if not 0 <= chunk < self.bare_chunk_count:
            return False
        start, end = self.chunk_range(chunk, BARE_CHUNK_LEAVES)
        if len(hashes) != (end - start) * HASH_SIZE:
            return False
        nodes = [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]
        return _equal(merkle_root(nodes), subtree_root)

    def to_cbor_map(self) -> dict[int, Any]:
        """The verification data as a CBOR-ready map, for a signed wrapper to carry:
        1 object id, 2 size, 3 leaf size, 4 Merkle root (all hashes SHA-256)."""
        return {1: self.object_id, 2: self.size, 3: self.leaf_size, 4: self.merkle_root}

    @classmethod
    def from_cbor_map(cls, value: object) -> Manifest:
        """Inverse of :meth:`to_cbor_map`; raises ``BadPacket``."""
        if not isinstance(value, dict) or set(value) != {1, 2, 3, 4}:
            raise BadPacket("manifest: need exactly keys 1, 2, 3, 4")
        object_id, size, leaf_size, root = value[1], value[2], value[3], value[4]
        if not isinstance(object_id, bytes) or not isinstance(root, bytes):
            raise BadPacket("manifest: hashes must be byte strings")
        if type(size) is not int or type(leaf_size) is not int:
            raise BadPacket("manifest: size and leaf size must be integers")
        try:
            return cls(object_id, size, leaf_size, root)
        except ValueError as exc:
            raise BadPacket(f"manifest: {exc}") from None


def decode_manifest_untrusted(data: bytes) -> Manifest:
    """A manifest from its CBOR bytes (a one-element value list holding the map)."""
    values = decode_values_untrusted(data)
    if len(values) != 1:
        raise BadPacket("manifest: expected one map")
    return Manifest.from_cbor_map(values[0])


def _equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


class ObjectHashes:
    """Every leaf hash of an object and its chunk roots: what a provider needs
    to send hash chunks (of any size) with their proofs."""

    __slots__ = ("_base_leaves", "_chunk_levels", "_levels_by_size", "leaf_hashes", "manifest")

    def __init__(self, manifest: Manifest, leaf_hashes: bytes) -> None:
        if len(leaf_hashes) != manifest.leaf_count * HASH_SIZE:
            raise ValueError("need one hash per leaf")
        self.manifest = manifest
        self.leaf_hashes = leaf_hashes
        levels = self._levels_over_chunks(manifest.chunk_leaves)
        if levels[-1][0] != manifest.merkle_root:
            raise ValueError("leaf hashes do not match the manifest's Merkle root")
        # The tree levels from the default chunks' roots up. Bottom-up pairing
        # makes level k of it the roots of the chunks 2**k times as large, so
        # larger chunks are served from it without hashing anything again.
        self._base_leaves = manifest.chunk_leaves
        self._chunk_levels = levels
        self._levels_by_size: dict[int, list[list[bytes]]] = {}

    def _levels_over_chunks(self, chunk_leaves: int) -> list[list[bytes]]:
        manifest = self.manifest
        roots = []
        for chunk in range(manifest.chunk_count_for(chunk_leaves)):
            start, end = manifest.chunk_range(chunk, chunk_leaves)
            roots.append(merkle_root(self._hashes(start, end)))
        return merkle_levels(roots)

    def _levels(self, chunk_leaves: int) -> Sequence[Sequence[bytes]]:
        base = self._base_leaves
        if chunk_leaves >= base:
            shift = (chunk_leaves // base).bit_length() - 1
            if base << shift == chunk_leaves and shift < len(self._chunk_levels):
                return self._chunk_levels[shift:]
        levels = self._levels_by_size.get(chunk_leaves)
        if levels is None:
            # Smaller chunks than the default (or one chunk for the whole
            # object): at most one tree per power of two, built once.
            levels = self._levels_over_chunks(chunk_leaves)
            self._levels_by_size[chunk_leaves] = levels
        return levels

    def _hashes(self, start: int, end: int) -> list[bytes]:
        data = self.leaf_hashes
        return [data[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(start, end)]

    def leaf(self, leaf: int) -> bytes:
        return self.leaf_hashes[leaf * HASH_SIZE : (leaf + 1) * HASH_SIZE]

    def chunk(self, chunk: int, chunk_leaves: int | None = None) -> tuple[bytes, list[bytes]]:
        """Chunk ``chunk`` of ``chunk_leaves`` hashes (a power of two; default
        the manifest's :attr:`~Manifest.chunk_leaves`): its concatenated hashes
        and its proof."""
        leaves = self.manifest.chunk_leaves if chunk_leaves is None else chunk_leaves
        if leaves < 1 or leaves & (leaves - 1):
            raise ValueError("chunk_leaves must be a power of two")
        start, end = self.manifest.chunk_range(chunk, leaves)
        hashes = self.leaf_hashes[start * HASH_SIZE : end * HASH_SIZE]
        return hashes, proof_from_levels(self._levels(leaves), chunk)

    def bare_chunk(self, chunk: int) -> bytes:
        """The concatenated leaf hashes of bare chunk ``chunk`` (sent without a proof)."""
        start, end = self.manifest.chunk_range(chunk, BARE_CHUNK_LEAVES)
        return self.leaf_hashes[start * HASH_SIZE : end * HASH_SIZE]

    def root_chunk(self, chunk: int) -> tuple[bytes, list[bytes]]:
        """Root chunk ``chunk``: its bare chunks' subtree roots (concatenated) and its proof."""
        manifest = self.manifest
        levels = self._levels(BARE_CHUNK_LEAVES)  # levels[0]: every bare chunk's root
        start, end = manifest.root_chunk_range(chunk)
        roots = b"".join(levels[0][start:end])
        if manifest.root_chunk_count == 1:
            return roots, []  # they are the whole tree's bottom
        shift = manifest.root_chunk_roots.bit_length() - 1
        return roots, proof_from_levels(levels[shift:], chunk)

    @classmethod
    def build(cls, data: bytes | memoryview, leaf_size: int) -> ObjectHashes:
        """Hash a whole object: its manifest and leaf hashes."""
        view = memoryview(data)
        if not view.nbytes:
            raise ValueError("an object has at least one byte")
        hashes = b"".join(
            leaf_hash(view[i : i + leaf_size]) for i in range(0, view.nbytes, leaf_size)
        )
        leaves = [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]
        count = len(leaves)
        chunk = _chunk_leaves(count)
        roots = [merkle_root(leaves[i : i + chunk]) for i in range(0, count, chunk)]
        manifest = Manifest(
            hashlib.sha256(view).digest(), view.nbytes, leaf_size, merkle_root(roots)
        )
        return cls(manifest, hashes)
