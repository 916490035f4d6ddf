"""Fuzz target: ``decode_transfer_untrusted`` on OAP commands (the transfer messages).

The input is an OAP command payload; it is decoded by ``decode_oap_untrusted``
then by the transfer decoder. An accepted message must re-encode to the input.
"""

from __future__ import annotations

from dofpy.transfer.messages import (
    BlockMessage,
    FetchRequest,
    HashChunkMessage,
    RefuseCode,
    RefusedMessage,
    RootChunkMessage,
    decode_transfer_untrusted,
    encode_transfer,
)
from dofpy.wire.oap import decode_oap_untrusted

_OBJECT = bytes(range(32))

SEEDS: tuple[bytes, ...] = tuple(
    encode_transfer(message)
    for message in (
        FetchRequest(_OBJECT, 1, 1024, 50_000, 32, ((0, 4),), ((0, 10), (12, 40))),
        FetchRequest(_OBJECT, 2, 1024, 0, 0),
        BlockMessage(_OBJECT, 9, 17, b"block data" * 10, 1, 250),
        HashChunkMessage(_OBJECT, 10, 2, bytes(64), (bytes(32), b"\x01" * 32), 1, 0),
        RefusedMessage(_OBJECT, 11, RefuseCode.BLOCK_SIZE, 2048),
        FetchRequest(_OBJECT, 3, 1024, 0, 16, ((0, 2),), (), b"", ((0, 4),)),
        HashChunkMessage(_OBJECT, 12, 3, bytes(96), (), 3, 0),
        RootChunkMessage(_OBJECT, 13, 1, bytes(64), (b"\x03" * 32,), 3, 0),
    )
)


def target(data: bytes) -> None:
    """Decode; an accepted message must re-encode to exactly the input."""
    message = decode_transfer_untrusted(decode_oap_untrusted(data, is_response=False))
    if encode_transfer(message) != data:
        raise AssertionError("accepted a transfer message that is not in minimal form")
