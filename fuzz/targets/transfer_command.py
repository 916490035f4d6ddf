"""Fuzz target: ``decode_transfer_command_untrusted`` (a transfer message read
from its raw OAP payload, Blocks without the generic decoders).

Differential: it must give exactly what ``decode_transfer_untrusted`` of the
fully decoded payload gives, or ``BadPacket`` where that raises one.
"""

from __future__ import annotations

from dofpy.errors import BadPacket
from dofpy.transfer.messages import (
    BlockEncoder,
    BlockMessage,
    FetchRequest,
    HashChunkMessage,
    RefuseCode,
    RefusedMessage,
    TransferMessage,
    decode_transfer_command_untrusted,
    decode_transfer_untrusted,
    encode_transfer,
)
from dofpy.wire.oap import decode_oap_untrusted, probe_command_head_untrusted

_OBJECT = bytes(range(32))

SEEDS: tuple[bytes, ...] = (
    *(
        encode_transfer(message)
        for message in (
            FetchRequest(_OBJECT, 1, 1024, 50_000, 32, ((0, 4),), ((0, 10), (12, 40))),
            HashChunkMessage(_OBJECT, 10, 2, bytes(64), (bytes(32),), 1, 0),
            RefusedMessage(_OBJECT, 11, RefuseCode.PERMISSION_DENIED, 2048),
        )
    ),
    BlockEncoder(_OBJECT).encode(9, 17, b"block data" * 10, 1, 250),
    BlockEncoder(_OBJECT).encode(0xFFFF, 1 << 32, b"\xff" * 300, 0xFFFFFFFF, 70_000),
    encode_transfer(BlockMessage(_OBJECT, 1, 0, b"x", 0, 0)),
)


def _general(data: bytes) -> TransferMessage | None:
    try:
        return decode_transfer_untrusted(decode_oap_untrusted(data, is_response=False))
    except BadPacket:
        return None


def target(data: bytes) -> None:
    """Decode the raw way; the general decoder must agree."""
    expected = _general(data)
    head = probe_command_head_untrusted(data)
    if head is None:
        return
    try:
        found: TransferMessage | None = decode_transfer_command_untrusted(head, data)
    except BadPacket:
        found = None
    if found != expected:
        raise AssertionError(f"raw decode {found!r} differs from the general {expected!r}")
    if found is None:
        raise BadPacket("refused by both decoders")
