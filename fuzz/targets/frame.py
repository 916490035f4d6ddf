"""Fuzz target for ``decode_frame_untrusted``."""

from __future__ import annotations

from dofpy.wire.dpp import AppId, DppPacket, OpIdType, decode_frame_untrusted, encode_frame

SEEDS: tuple[bytes, ...] = (
    encode_frame(DppPacket(AppId.COMMON, b"\x03")),
    encode_frame(
        DppPacket(AppId.DSP, b"\x06", op_id_type=OpIdType.IMPLIED_SENDER, op_count=1),
        source=1,
        length_size=2,
    ),
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    decode_frame_untrusted(data)
