"""Fuzz target for ``decode_dsp_untrusted``.

The first byte's low bit is the DPP response flag; the rest is the payload.
"""

from __future__ import annotations

from dofpy.wire.dsp import (
    DspConfigRequest,
    DspOpen,
    DspOpenResponse,
    DspOption,
    decode_dsp_untrusted,
    encode_dsp,
)

SEEDS: tuple[bytes, ...] = (
    b"\x00" + encode_dsp(DspOpen()),
    b"\x01" + encode_dsp(DspOpenResponse((1, 0x7FFF))),
    b"\x00"
    + encode_dsp(DspConfigRequest((DspOption(1, 1), DspOption(2, 0x6001, b"\x01\x00\x17")))),
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    if data:
        decode_dsp_untrusted(data[1:], is_response=bool(data[0] & 1))
