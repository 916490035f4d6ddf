"""Fuzz target: ``read_block_untrusted`` (a Block's fields read inline from the
bytes after its OAP head: the requestor's per-datagram path).

Differential: where it gives fields, the general OAP and transfer decoders must
give the same Block; where it gives None, they must refuse the payload too
(every encoding they accept is the canonical one it reads).
"""

from __future__ import annotations

from dofpy.errors import BadPacket
from dofpy.transfer.messages import (
    BlockEncoder,
    BlockMessage,
    TransferMessage,
    block_object_id,
    decode_transfer_untrusted,
    read_block_untrusted,
)
from dofpy.wire.oap import decode_oap_untrusted, probe_command_head_untrusted

_OBJECT = bytes(range(32))

SEEDS: tuple[bytes, ...] = (
    BlockEncoder(_OBJECT).encode(9, 17, b"block data" * 10, 1, 250),
    BlockEncoder(_OBJECT).encode(0xFFFF, 1 << 32, b"\xff" * 300, 0xFFFFFFFF, 70_000),
    BlockEncoder(_OBJECT).encode(1, 0, b"x", 0, 0),
    BlockEncoder(_OBJECT).encode(300, 70_000, bytes(1024), 65_536, 23),
)


def _general(data: bytes) -> TransferMessage | None:
    try:
        return decode_transfer_untrusted(decode_oap_untrusted(data, is_response=False))
    except BadPacket:
        return None


def target(data: bytes) -> None:
    """Read the Block inline; the general decoders must agree."""
    head = probe_command_head_untrusted(data)
    object_id = None if head is None else block_object_id(head)
    if head is None or object_id is None:
        raise BadPacket("not a Block head")
    fields = read_block_untrusted(data, head.end)
    expected = _general(data)
    found = None if fields is None else BlockMessage(object_id, *fields)
    if found != expected:
        raise AssertionError(f"inline read {found!r} differs from the general {expected!r}")
    if found is None:
        raise BadPacket("refused by both decoders")
