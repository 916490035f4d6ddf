"""Fuzz target for ``parse_oid_text_untrusted``."""

from __future__ import annotations

from dofpy.wire.oid import parse_oid_text_untrusted

SEEDS: tuple[bytes, ...] = (
    b"[{06}:example.org]",
    b"[6:ab({01}:xy|{00}:[{03}:z])]",
    b"[{0100}:{FF00}]",
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    parse_oid_text_untrusted(data.decode("latin-1"))
