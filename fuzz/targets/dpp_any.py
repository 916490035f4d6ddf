"""Fuzz target for ``decode_dpp_any_untrusted``."""

from __future__ import annotations

from dofpy.wire.dpp import (
    AppId,
    DppPacket,
    DppVersionQuery,
    DppVersionResponse,
    decode_dpp_any_untrusted,
    encode_dpp,
)

SEEDS: tuple[bytes, ...] = (
    encode_dpp(DppVersionQuery()),
    encode_dpp(DppVersionResponse((2,))),
    encode_dpp(DppPacket(AppId.COMMON, b"\x03", is_response=True)),
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    decode_dpp_any_untrusted(data)
