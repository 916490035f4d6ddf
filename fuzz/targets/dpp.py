"""Fuzz target for ``decode_dpp_untrusted``."""

from __future__ import annotations

from dofpy.wire.dpp import (
    AppId,
    DppPacket,
    DppSecurityHeader,
    OpIdType,
    decode_dpp_untrusted,
    encode_dpp,
)
from dofpy.wire.oid import OID

SEEDS: tuple[bytes, ...] = (
    encode_dpp(DppPacket(AppId.COMMON, b"\x03")),
    encode_dpp(
        DppPacket(
            0, b"\x06", op_id_type=OpIdType.EXPLICIT, sid=OID(6, b"n"), op_count=1, seq=1, retry=0
        )
    ),
    encode_dpp(
        DppPacket(
            None, b"\x01", is_response=True, security=DppSecurityHeader(ssid=5, partition=(1,))
        )
    ),
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    decode_dpp_untrusted(data)
