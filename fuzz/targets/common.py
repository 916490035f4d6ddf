"""Fuzz target for ``decode_common_untrusted``.

The first byte's low bit is the DPP response flag; the rest is the payload.
"""

from __future__ import annotations

from dofpy.wire.common import (
    Ping,
    PingResponse,
    QueryResponse,
    SourceLost,
    decode_common_untrusted,
    encode_common,
)
from dofpy.wire.oid import OID

SEEDS: tuple[bytes, ...] = (
    b"\x00" + encode_common(Ping()),
    b"\x01" + encode_common(PingResponse()),
    b"\x01" + encode_common(QueryResponse(OID(6, b"n"))),
    b"\x00" + encode_common(SourceLost(OID(6, b"n"), 300)),
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    if data:
        decode_common_untrusted(data[1:], is_response=bool(data[0] & 1))
