"""The transfer messages as values: the transfer interface and its items, the
limits, and one frozen class per message, each checking its fields on
construction (``ValueError`` for what the wire cannot carry).

Their wire form is :mod:`dofpy.transfer.messages` (the layouts, the codec and
the Block fast path), which re-exports every public name here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from dofpy.transfer.manifest import HASH_SIZE
from dofpy.wire.oid import IID, OID

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "LAN_BLOCK_SIZE",
    "MAX_BLOCK_SIZE",
    "MAX_FETCH_RANGES",
    "MAX_SEQ",
    "MAX_TOKEN_SIZE",
    "OBJECT_OID_CLASS",
    "TRANSFER_IID",
    "BlockMessage",
    "FetchRequest",
    "HashChunkMessage",
    "Ranges",
    "RefuseCode",
    "RefusedMessage",
    "RetryMessage",
    "TransferItem",
    "TransferMessage",
    "object_oid",
]

TRANSFER_IID = IID(1, b"\xd0\xf1")
"""The interface of the block transfer (dofpy extension)."""

OBJECT_OID_CLASS = 0x7F
"""OID class naming a content-addressed object by its SHA-256 (dofpy extension)."""

DEFAULT_BLOCK_SIZE = 1024
"""Bytes of data per block datagram by default: a Block datagram then stays within
1232 bytes (the IPv6 minimum MTU 1280 less 40 bytes IPv6 and 8 bytes UDP header)."""

LAN_BLOCK_SIZE = 8192
MAX_BLOCK_SIZE = 1 << 16
MAX_FETCH_RANGES = 64
"""Ranges of each kind one Fetch may carry (keeps a Fetch within one datagram)."""
MAX_SEQ = 0xFFFFFFFF
MAX_TOKEN_SIZE = 64
"""Largest address token a Fetch or Retry carries."""
_MAX_INDEX = 1 << 32


class TransferItem(enum.IntEnum):
    """Item ids on the transfer interface."""

    FETCH = 1
    BLOCK = 2
    HASH_CHUNK = 3
    REFUSED = 4
    RETRY = 5
    ROOT_CHUNK = 6


class RefuseCode(enum.IntEnum):
    """Why a provider refused a Fetch."""

    UNKNOWN_OBJECT = 1
    BLOCK_SIZE = 2
    BUSY = 3
    PERMISSION_DENIED = 4
    """The requestor's session has no permission to fetch from this provider."""


Ranges: TypeAlias = tuple[tuple[int, int], ...]


def object_oid(object_id: bytes) -> OID:
    """The OID naming the object whose SHA-256 is ``object_id``."""
    return OID(OBJECT_OID_CLASS, object_id)


def _check_int(value: object, name: str, maximum: int) -> None:
    if type(value) is not int or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be an int in 0..{maximum}, got {value!r}")


def _check_ranges(ranges: Ranges, name: str) -> None:
    if len(ranges) > MAX_FETCH_RANGES:
        raise ValueError(f"{name}: at most {MAX_FETCH_RANGES} ranges")
    previous_end = -1
    for pair in ranges:
        if len(pair) != 2:
            raise ValueError(f"{name}: ranges are (start, end) pairs")
        start, end = pair
        _check_int(start, name, _MAX_INDEX)
        _check_int(end, name, _MAX_INDEX)
        if not start < end or start <= previous_end:
            raise ValueError(f"{name}: ranges must be non-empty, sorted and not touching")
        previous_end = end


def _check_object_id(object_id: bytes) -> None:
    if type(object_id) is not bytes or len(object_id) != HASH_SIZE:
        raise ValueError("object_id must be a 32-byte SHA-256")


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """Requestor → provider: send these hash chunks and leaves.

    ``rate`` is the pacing rate the provider should use, bytes/s (0: no limit);
    ``window`` the requestor's window in blocks; ``block_size`` the bytes of data
    per Block datagram (a multiple of the leaf size); ``token`` the address
    token of the provider's last :class:`RetryMessage` (empty: none yet).

    ``root_chunks`` not None: the requestor asks for *compact hashes*
    (:mod:`dofpy.transfer.manifest`): ``hash_chunks`` then number bare chunks
    (:data:`~dofpy.transfer.manifest.BARE_CHUNK_LEAVES` hashes, no proof)
    and ``root_chunks`` the root chunks proving their subtree roots.
    """

    object_id: bytes
    fetch_seq: int
    block_size: int
    rate: int
    window: int
    hash_chunks: Ranges = ()
    leaves: Ranges = ()
    token: bytes = b""
    root_chunks: Ranges | None = None

    def __post_init__(self) -> None:
        _check_object_id(self.object_id)
        _check_int(self.fetch_seq, "fetch_seq", MAX_SEQ)
        if self.root_chunks is not None:
            roots = tuple(tuple(pair) for pair in self.root_chunks)
            object.__setattr__(self, "root_chunks", roots)
            _check_ranges(self.root_chunks, "root_chunks")
        _check_int(self.block_size, "block_size", MAX_BLOCK_SIZE)
        if self.block_size == 0:
            raise ValueError("block_size must be > 0")
        _check_int(self.rate, "rate", (1 << 63) - 1)
        _check_int(self.window, "window", 0xFFFF)
        for name in ("hash_chunks", "leaves"):
            value = tuple(tuple(pair) for pair in getattr(self, name))
            object.__setattr__(self, name, value)
            _check_ranges(value, name)
        if type(self.token) is not bytes or len(self.token) > MAX_TOKEN_SIZE:
            raise ValueError(f"token must be at most {MAX_TOKEN_SIZE} bytes")

    @property
    def is_done(self) -> bool:
        """The requestor needs nothing more: the provider may forget it."""
        return (
            not self.hash_chunks and not self.leaves and not self.root_chunks and self.window == 0
        )

    @property
    def compact(self) -> bool:
        """Whether the hash ranges number bare chunks (see :attr:`root_chunks`)."""
        return self.root_chunks is not None


@dataclass(frozen=True, slots=True)
class BlockMessage:
    """Provider → requestor: the data of leaves starting at ``leaf``."""

    object_id: bytes
    sequence: int
    leaf: int
    data: bytes
    fetch_seq: int
    hold_us: int

    def __post_init__(self) -> None:
        _check_object_id(self.object_id)
        _check_int(self.sequence, "sequence", 0xFFFF)
        _check_int(self.leaf, "leaf", _MAX_INDEX)
        if type(self.data) is not bytes or not 0 < len(self.data) <= MAX_BLOCK_SIZE:
            raise ValueError(f"data must be 1..{MAX_BLOCK_SIZE} bytes")
        _check_int(self.fetch_seq, "fetch_seq", MAX_SEQ)
        _check_int(self.hold_us, "hold_us", MAX_SEQ)


@dataclass(frozen=True, slots=True)
class HashChunkMessage:
    """Provider → requestor: leaf hashes of chunk ``chunk`` with the chunk's audit path."""

    object_id: bytes
    sequence: int
    chunk: int
    hashes: bytes
    proof: tuple[bytes, ...]
    fetch_seq: int
    hold_us: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "proof", _check_hash_chunk(self, self.hashes, "hashes"))


@dataclass(frozen=True, slots=True)
class RootChunkMessage:
    """Provider → requestor: the roots of the subtrees of bare chunks
    ``[chunk * R, (chunk + 1) * R)`` (``R`` the manifest's
    :attr:`~dofpy.transfer.manifest.Manifest.root_chunk_roots`) with the
    root chunk's audit path."""

    object_id: bytes
    sequence: int
    chunk: int
    roots: bytes
    proof: tuple[bytes, ...]
    fetch_seq: int
    hold_us: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "proof", _check_hash_chunk(self, self.roots, "roots"))


def _check_hash_chunk(
    message: HashChunkMessage | RootChunkMessage, hashes: bytes, name: str
) -> tuple[bytes, ...]:
    """The checks a Hash chunk and a Root chunk share (``hashes``: their
    hashes, called ``name``); their proof as a tuple."""
    _check_object_id(message.object_id)
    _check_int(message.sequence, "sequence", 0xFFFF)
    _check_int(message.chunk, "chunk", _MAX_INDEX)
    if type(hashes) is not bytes or not hashes or len(hashes) % HASH_SIZE:
        raise ValueError(f"{name} must be a non-empty concatenation of 32-byte hashes")
    proof = tuple(message.proof)
    if len(proof) > 64 or any(type(p) is not bytes or len(p) != HASH_SIZE for p in proof):
        raise ValueError("proof must be at most 64 hashes of 32 bytes")
    _check_int(message.fetch_seq, "fetch_seq", MAX_SEQ)
    _check_int(message.hold_us, "hold_us", MAX_SEQ)
    return proof


@dataclass(frozen=True, slots=True)
class RefusedMessage:
    """Provider → requestor: the Fetch was refused (``max_block_size``: the
    largest block size the provider serves)."""

    object_id: bytes
    sequence: int
    code: RefuseCode
    max_block_size: int

    def __post_init__(self) -> None:
        _check_object_id(self.object_id)
        _check_int(self.sequence, "sequence", 0xFFFF)
        if not isinstance(self.code, RefuseCode):
            raise ValueError("code must be a RefuseCode")
        _check_int(self.max_block_size, "max_block_size", MAX_BLOCK_SIZE)


@dataclass(frozen=True, slots=True)
class RetryMessage:
    """Provider -> requestor: a plaintext Fetch was not served for want of a
    valid address token; repeat it with ``token`` (docs/protocol.md, section 6)."""

    object_id: bytes
    sequence: int
    token: bytes

    def __post_init__(self) -> None:
        _check_object_id(self.object_id)
        _check_int(self.sequence, "sequence", 0xFFFF)
        if type(self.token) is not bytes or not 0 < len(self.token) <= MAX_TOKEN_SIZE:
            raise ValueError(f"token must be 1..{MAX_TOKEN_SIZE} bytes")


TransferMessage: TypeAlias = (
    FetchRequest
    | BlockMessage
    | HashChunkMessage
    | RootChunkMessage
    | RefusedMessage
    | RetryMessage
)
