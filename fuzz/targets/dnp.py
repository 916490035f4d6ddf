"""Fuzz target for ``decode_dnp_untrusted``."""

from __future__ import annotations

from dofpy.wire.dnp import DnpPacket, decode_dnp_untrusted, encode_dnp

SEEDS: tuple[bytes, ...] = (
    encode_dnp(DnpPacket(b"\x02\x00\xff\xff\x03")),
    encode_dnp(DnpPacket(b"\x02", source=3, destination=0x4001, length_size=2)),
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    decode_dnp_untrusted(data)
