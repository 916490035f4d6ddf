"""Fuzz target for ``parse_iid_text_untrusted``."""

from __future__ import annotations

from dofpy.wire.oid import parse_iid_text_untrusted

SEEDS: tuple[bytes, ...] = (
    b"[{01}:{00010000}]",
    b"[3:{AB}]",
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    parse_iid_text_untrusted(data.decode("latin-1"))
