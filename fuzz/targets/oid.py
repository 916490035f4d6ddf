"""Fuzz target for ``decode_oid_untrusted``."""

from __future__ import annotations

from dofpy.wire.oid import OID, OIDAttribute, decode_oid_untrusted

SEEDS: tuple[bytes, ...] = (
    OID(6, b"example.org").encode(),
    OID(0).encode(),
    OID(6, b"ab", (OIDAttribute(1, b"xy"), OIDAttribute.with_oid(0, OID(3, b"z")))).encode(),
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    decode_oid_untrusted(data)
