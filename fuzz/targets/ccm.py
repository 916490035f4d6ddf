"""Fuzz target for ``decode_ccm_header_untrusted`` and
``decode_ccm_options_untrusted`` (the first byte's low bit chooses)."""

from __future__ import annotations

from dofpy.wire.ccm import (
    CcmHeader,
    CcmOptions,
    decode_ccm_header_untrusted,
    decode_ccm_options_untrusted,
)

SEEDS: tuple[bytes, ...] = (
    b"\x00" + CcmHeader(packet_number=1).encode(),
    b"\x00" + CcmHeader(0x12345, 7, 0x3FFFFFFF, key_period=3).encode(),
    b"\x01" + CcmOptions().encode(),
    b"\x01" + CcmOptions((1, 3), min_tag=8, max_tag=12).encode(),
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    if data:
        if data[0] & 1:
            decode_ccm_options_untrusted(data[1:])
        else:
            decode_ccm_header_untrusted(data[1:])
