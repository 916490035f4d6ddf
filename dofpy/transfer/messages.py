"""The transfer messages: OAP commands on the transfer interface (dofpy extension).

Every message is an ordinary OAP command (so tshark's DOF dissector checks its
framing) addressed by full binding to ``Binding(TRANSFER_IID, object_oid(object_id))``,
where the object OID (class ``OBJECT_OID_CLASS``) carries the object's SHA-256.
Values are the CBOR value list of ``dofpy.wire.values``.

=================  =====================================================================
requestor → provider
Fetch              Invoke item 1: ``[fetch seq, block size, rate, window,
                   hash ranges, leaf ranges(, address token(, root ranges))]``; ranges
                   are flat lists ``[start0, end0, start1, end1, ...]``, sorted,
                   disjoint, not touching. With root ranges (compact hashes; the
                   token then may be empty) the hash ranges number bare chunks.
                   Sent without expecting an OAP response: the transfer recovers by itself.
                   Empty ranges and window 0: the requestor is done (the provider forgets it).
                   The token (1..64 bytes) only once a provider sent one in a Retry.
provider → requestor (Signal, DPP command with no response; 16-bit OAP sequence)
Block              Signal item 2: ``[first leaf, data, fetch seq, hold µs]``
Hash chunk         Signal item 3: ``[chunk, hashes, fetch seq, hold µs, proof]`` (hashes and
                   proof are concatenated 32-byte SHA-256 values)
Root chunk         Signal item 6: ``[chunk, roots, fetch seq, hold µs, proof]`` (compact
                   hashes: subtree roots of bare chunks, proved against the root)
Bare chunk         Signal item 3 with an empty proof (answers a compact Fetch)
Refused            Signal item 4: ``[code, max block size]``
Retry              Signal item 5: ``[address token]``: a plaintext Fetch without a valid
                   token was not served; repeat it with this token (proof that the
                   requestor receives what is sent to its address, as QUIC's Retry)
=================  =====================================================================

The message classes and limits are in :mod:`dofpy.transfer.message_types`
(re-exported here); this module is their codec and the Block fast path.

``fetch seq`` identifies the Fetch that asked for a block (echoed so the
requestor can measure RTT without ambiguity); ``hold µs`` is how long the
block waited in the provider's pacing queue (subtracted from the RTT sample).
"""

from __future__ import annotations

from typing import NamedTuple

from dofpy.errors import BadPacket
from dofpy.transfer.manifest import HASH_SIZE
from dofpy.transfer.message_types import (
    _MAX_INDEX,
    DEFAULT_BLOCK_SIZE,
    LAN_BLOCK_SIZE,
    MAX_BLOCK_SIZE,
    MAX_FETCH_RANGES,
    MAX_SEQ,
    MAX_TOKEN_SIZE,
    OBJECT_OID_CLASS,
    TRANSFER_IID,
    BlockMessage,
    FetchRequest,
    HashChunkMessage,
    Ranges,
    RefuseCode,
    RefusedMessage,
    RetryMessage,
    RootChunkMessage,
    TransferItem,
    TransferMessage,
    object_oid,
)
from dofpy.wire.oap import (
    Binding,
    CommandHead,
    InvokeCommand,
    OapOpcode,
    OapPdu,
    SignalCommand,
    decode_oap_untrusted,
    encode_oap,
)
from dofpy.wire.values import encode_values

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "LAN_BLOCK_SIZE",
    "MAX_BLOCK_SIZE",
    "MAX_FETCH_RANGES",
    "MAX_SEQ",
    "MAX_TOKEN_SIZE",
    "OBJECT_OID_CLASS",
    "TRANSFER_IID",
    "BlockEncoder",
    "BlockMessage",
    "FetchRequest",
    "HashChunkMessage",
    "RefuseCode",
    "RefusedMessage",
    "RetryMessage",
    "RootChunkMessage",
    "TransferItem",
    "TransferMessage",
    "block_object_id",
    "decode_transfer_command_untrusted",
    "decode_transfer_untrusted",
    "encode_transfer",
    "object_oid",
    "read_block_untrusted",
]


def _flat(ranges: Ranges) -> list[int]:
    return [bound for pair in ranges for bound in pair]


def to_oap(message: TransferMessage) -> OapPdu:
    """The OAP command carrying ``message``."""
    target = Binding(TRANSFER_IID, object_oid(message.object_id))
    if isinstance(message, FetchRequest):
        values: tuple[object, ...] = (
            message.fetch_seq,
            message.block_size,
            message.rate,
            message.window,
            _flat(message.hash_chunks),
            _flat(message.leaves),
        )
        if message.root_chunks is not None:
            values += (message.token, _flat(message.root_chunks))
        elif message.token:
            values += (message.token,)
        return InvokeCommand(TransferItem.FETCH.value, target, values)
    if isinstance(message, BlockMessage):
        values = (message.leaf, message.data, message.fetch_seq, message.hold_us)
        return SignalCommand(TransferItem.BLOCK.value, target, message.sequence, values)
    if isinstance(message, HashChunkMessage):
        values = (
            message.chunk,
            message.hashes,
            message.fetch_seq,
            message.hold_us,
            b"".join(message.proof),
        )
        return SignalCommand(TransferItem.HASH_CHUNK.value, target, message.sequence, values)
    if isinstance(message, RootChunkMessage):
        values = (
            message.chunk,
            message.roots,
            message.fetch_seq,
            message.hold_us,
            b"".join(message.proof),
        )
        return SignalCommand(TransferItem.ROOT_CHUNK.value, target, message.sequence, values)
    if isinstance(message, RefusedMessage):
        values = (message.code.value, message.max_block_size)
        return SignalCommand(TransferItem.REFUSED.value, target, message.sequence, values)
    if isinstance(message, RetryMessage):
        values = (message.token,)
        return SignalCommand(TransferItem.RETRY.value, target, message.sequence, values)
    raise ValueError(f"not a transfer message: {type(message).__name__}")


def encode_transfer(message: TransferMessage) -> bytes:
    """The OAP payload (bytes after the DPP application id) carrying ``message``."""
    return encode_oap(to_oap(message))


def _cbor_head(major: int, value: int) -> bytes:
    """The shortest CBOR head of ``major`` type carrying ``value`` (RFC 8949 4.2.1)."""
    if value < 24:
        return bytes((major | value,))
    if value < 0x100:
        return bytes((major | 24, value))
    if value < 0x10000:
        return bytes((major | 25,)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((major | 26,)) + value.to_bytes(4, "big")
    return bytes((major | 27,)) + value.to_bytes(8, "big")


class BlockEncoder:
    """Encodes Block messages of one object without building OAP PDUs.

    A provider sends thousands of Blocks per second of the same object; the
    OAP header (opcode, item, binding to the object) is the same in all of
    them, so it is encoded once here and only the sequence and the value list
    ``[leaf, data, fetch seq, hold]`` (canonical CBOR, written by hand) are
    added per block. The bytes are exactly those of :func:`encode_transfer`
    (tested), and the same value checks apply.
    """

    __slots__ = ("_prefix",)

    def __init__(self, object_id: bytes) -> None:
        template = BlockMessage(object_id, 0, 0, b"\x00", 0, 0)
        full = encode_transfer(template)
        values = encode_values((0, b"\x00", 0, 0))
        self._prefix = full[: len(full) - len(values) - 2]

    def encode(self, sequence: int, leaf: int, data: bytes, fetch_seq: int, hold_us: int) -> bytes:
        """The OAP payload of ``BlockMessage(object, sequence, leaf, data, fetch_seq, hold_us)``."""
        if not (
            0 <= sequence <= 0xFFFF
            and 0 <= leaf <= _MAX_INDEX
            and 0 <= fetch_seq <= MAX_SEQ
            and 0 <= hold_us <= MAX_SEQ
            and 0 < len(data) <= MAX_BLOCK_SIZE
        ):
            raise ValueError("Block field out of range")
        return b"".join(
            (
                self._prefix,
                sequence.to_bytes(2, "big"),
                b"\x84",  # an array of four items
                _cbor_head(0x00, leaf),
                _cbor_head(0x40, len(data)),
                data,
                _cbor_head(0x00, fetch_seq),
                _cbor_head(0x00, hold_us),
            )
        )

    def encode_message(self, message: BlockMessage) -> bytes:
        """:meth:`encode` of a :class:`BlockMessage` of this encoder's object."""
        return self.encode(
            message.sequence, message.leaf, message.data, message.fetch_seq, message.hold_us
        )


def _ints(values: tuple[object, ...], count: int, what: str) -> None:
    if len(values) != count:
        raise BadPacket(f"{what}: expected {count} values, got {len(values)}")


def _read_ranges(value: object, name: str) -> Ranges:
    if not isinstance(value, list) or len(value) % 2 or len(value) > 2 * MAX_FETCH_RANGES:
        raise BadPacket(f"{name}: expected a flat list of range bounds")
    if not all(type(v) is int for v in value):
        raise BadPacket(f"{name}: range bounds must be integers")
    return tuple((value[i], value[i + 1]) for i in range(0, len(value), 2))


def decode_transfer_untrusted(pdu: OapPdu) -> TransferMessage:
    """The transfer message an OAP command carries; raises only ``BadPacket``."""
    if not isinstance(pdu, InvokeCommand | SignalCommand):
        raise BadPacket(f"transfer: unexpected OAP {type(pdu).__name__}")
    target = pdu.target
    if not isinstance(target, Binding) or target.interface != TRANSFER_IID:
        raise BadPacket("transfer: not addressed to the transfer interface")
    oid = target.object_id
    if oid.class_id != OBJECT_OID_CLASS or oid.attributes or len(oid.data) != HASH_SIZE:
        raise BadPacket("transfer: the target is not a content-addressed object OID")
    object_id = oid.data
    values = pdu.values
    try:
        if isinstance(pdu, InvokeCommand):
            if pdu.item_id != TransferItem.FETCH or pdu.command_control is not None:
                raise BadPacket(f"transfer: Invoke of item {pdu.item_id}")
            roots: Ranges | None = None
            if len(values) == 8:
                # Compact hashes: root ranges after the token (then possibly empty).
                token = values[6]
                if type(token) is not bytes:
                    raise BadPacket("Fetch: the address token must be bytes")
                roots = _read_ranges(values[7], "root ranges")
                values = values[:6]
            elif len(values) == 7:
                # The address token: only present when not empty (one encoding).
                token = values[6]
                if type(token) is not bytes or not token:
                    raise BadPacket("Fetch: the address token must be non-empty bytes")
                values = values[:6]
            else:
                token = b""
            _ints(values, 6, "Fetch")
            seq, block_size, rate, window, hashes, leaves = values
            return FetchRequest(
                object_id,
                seq,  # type: ignore[arg-type]
                block_size,  # type: ignore[arg-type]
                rate,  # type: ignore[arg-type]
                window,  # type: ignore[arg-type]
                _read_ranges(hashes, "hash ranges"),
                _read_ranges(leaves, "leaf ranges"),
                token,
                roots,
            )
        if pdu.item_id == TransferItem.BLOCK:
            _ints(values, 4, "Block")
            leaf, data, seq, hold = values
            return BlockMessage(object_id, pdu.sequence, leaf, data, seq, hold)  # type: ignore[arg-type]
        if pdu.item_id in (TransferItem.HASH_CHUNK, TransferItem.ROOT_CHUNK):
            hash_chunk = pdu.item_id == TransferItem.HASH_CHUNK
            what = "Hash chunk" if hash_chunk else "Root chunk"
            _ints(values, 5, what)
            chunk, hashes_data, seq, hold, proof = values
            if type(proof) is not bytes or len(proof) % HASH_SIZE:
                raise BadPacket(f"{what}: proof must be concatenated 32-byte hashes")
            proofs = tuple(proof[i : i + HASH_SIZE] for i in range(0, len(proof), HASH_SIZE))
            cls = HashChunkMessage if hash_chunk else RootChunkMessage
            return cls(
                object_id,
                pdu.sequence,
                chunk,  # type: ignore[arg-type]
                hashes_data,  # type: ignore[arg-type]
                proofs,
                seq,  # type: ignore[arg-type]
                hold,  # type: ignore[arg-type]
            )
        if pdu.item_id == TransferItem.REFUSED:
            _ints(values, 2, "Refused")
            code, max_block = values
            if type(code) is not int or code not in RefuseCode._value2member_map_:
                raise BadPacket(f"Refused: unknown code {code!r}")
            return RefusedMessage(object_id, pdu.sequence, RefuseCode(code), max_block)  # type: ignore[arg-type]
        if pdu.item_id == TransferItem.RETRY:
            _ints(values, 1, "Retry")
            return RetryMessage(object_id, pdu.sequence, values[0])  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise BadPacket(f"transfer: {exc}") from None
    raise BadPacket(f"transfer: Signal of unknown item {pdu.item_id}")


_UINT_WIDTHS = (1, 2, 4, 8)
_UINT_MINIMUM = (24, 0x100, 0x1_0000, 0x1_0000_0000)


class BlockFields(NamedTuple):
    """The fields of a Block read by :func:`read_block_untrusted` (those of a
    :class:`BlockMessage` after its object id)."""

    sequence: int
    leaf: int
    data: bytes
    fetch_seq: int
    hold_us: int


def read_block_untrusted(payload: bytes, pos: int) -> BlockFields | None:
    """The :class:`BlockFields` (sequence, leaf, data, fetch seq, hold µs) of a Block whose OAP head
    ends at ``pos``, read straight from its canonical bytes (``u16 sequence,
    0x84, uint leaf, bytes data, uint fetch seq, uint hold``) with every field
    in the range :class:`BlockMessage` accepts; None for anything else (which
    the general decoder then judges).

    The four CBOR heads are read inline (no call per head): this runs for every
    block a requestor receives.
    """
    size = len(payload)
    if size < pos + 4 or payload[pos + 2] != 0x84:
        return None
    sequence = (payload[pos] << 8) | payload[pos + 1]
    pos += 3
    # leaf: major type 0 (initial byte 0x00..0x1B), shortest form.
    info = payload[pos]
    if info < 24:
        leaf = info
        pos += 1
    elif info < 28:
        width = _UINT_WIDTHS[info - 24]
        leaf = int.from_bytes(payload[pos + 1 : pos + 1 + width], "big")
        if pos + 1 + width > size or leaf < _UINT_MINIMUM[info - 24] or leaf > _MAX_INDEX:
            return None
        pos += 1 + width
    else:
        return None
    # data: major type 2 (initial byte 0x40..0x5B), 1..MAX_BLOCK_SIZE bytes.
    if pos >= size:
        return None
    info = payload[pos] - 0x40
    if 0 <= info < 24:
        length = info
        pos += 1
    elif 24 <= info < 28:
        width = _UINT_WIDTHS[info - 24]
        length = int.from_bytes(payload[pos + 1 : pos + 1 + width], "big")
        if pos + 1 + width > size or length < _UINT_MINIMUM[info - 24]:
            return None
        pos += 1 + width
    else:
        return None
    if not 0 < length <= MAX_BLOCK_SIZE or pos + length > size:
        return None
    data = payload[pos : pos + length]
    pos += length
    # fetch seq and hold: major type 0, at most MAX_SEQ (so at most 4 bytes).
    if pos >= size:
        return None
    info = payload[pos]
    if info < 24:
        fetch_seq = info
        pos += 1
    elif info < 27:
        width = _UINT_WIDTHS[info - 24]
        fetch_seq = int.from_bytes(payload[pos + 1 : pos + 1 + width], "big")
        if pos + 1 + width > size or fetch_seq < _UINT_MINIMUM[info - 24]:
            return None
        pos += 1 + width
    else:
        return None
    if pos >= size:
        return None
    info = payload[pos]
    if info < 24:
        hold_us = info
        pos += 1
    elif info < 27:
        width = _UINT_WIDTHS[info - 24]
        hold_us = int.from_bytes(payload[pos + 1 : pos + 1 + width], "big")
        if pos + 1 + width > size or hold_us < _UINT_MINIMUM[info - 24]:
            return None
        pos += 1 + width
    else:
        return None
    if pos != size:
        return None
    # tuple.__new__ makes the same named tuple as BlockFields(...) without the
    # Python-level __new__ that namedtuple generates (a call per block).
    return tuple.__new__(BlockFields, (sequence, leaf, data, fetch_seq, hold_us))


def block_object_id(head: CommandHead) -> bytes | None:
    """The object a Block command with this head is for (None if the head is
    not that of a Block Signal to a content-addressed object)."""
    target = head.target
    if (
        head.opcode is OapOpcode.SIGNAL
        and head.item_id == TransferItem.BLOCK
        and isinstance(target, Binding)
        and target.interface == TRANSFER_IID
    ):
        oid = target.object_id
        if oid.class_id == OBJECT_OID_CLASS and not oid.attributes and len(oid.data) == HASH_SIZE:
            return oid.data
    return None


class BlockHeadCache:
    """The transfer layer's one head cache: :func:`block_object_id` of the
    last head judged. The OAP core hands the same head object while the head
    bytes repeat (every Block of one object), so each is judged once."""

    __slots__ = ("_head", "_object_id")

    def __init__(self) -> None:
        self._head: CommandHead | None = None
        self._object_id: bytes | None = None

    def object_id(self, head: CommandHead) -> bytes | None:
        if head is self._head:
            return self._object_id
        object_id = block_object_id(head)
        if object_id is not None:
            self._head, self._object_id = head, object_id
        return object_id


def decode_transfer_command_untrusted(head: CommandHead, payload: bytes) -> TransferMessage:
    """The transfer message of an OAP command ``payload`` whose head (opcode,
    item, target) is already read: what :func:`decode_transfer_untrusted` of
    the fully decoded payload gives, or ``BadPacket`` where that raises one.

    A Block (the message sent thousands of times a second) is read straight
    from its canonical bytes (:func:`read_block_untrusted`), every byte
    checked, without the generic OAP and CBOR decoders; anything else goes
    through them.
    """
    object_id = block_object_id(head)
    if object_id is not None:
        fields = read_block_untrusted(payload, head.end)
        if fields is not None:
            return BlockMessage(object_id, *fields)
    return decode_transfer_untrusted(decode_oap_untrusted(payload, False))
