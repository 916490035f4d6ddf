"""Fuzz target for ``decode_dnp_any_untrusted``."""

from __future__ import annotations

from dofpy.wire.dnp import (
    DnpPacket,
    DnpVersionQuery,
    DnpVersionResponse,
    decode_dnp_any_untrusted,
    encode_dnp,
)

SEEDS: tuple[bytes, ...] = (
    encode_dnp(DnpVersionQuery()),
    encode_dnp(DnpVersionResponse((1,))),
    encode_dnp(DnpPacket(b"\x02", source=3, length_size=1)),
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    decode_dnp_any_untrusted(data)
