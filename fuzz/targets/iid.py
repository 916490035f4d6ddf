"""Fuzz target for ``decode_iid_untrusted``."""

from __future__ import annotations

from dofpy.wire.oid import IID, decode_iid_untrusted

SEEDS: tuple[bytes, ...] = (
    IID(1, b"\x00\x01\x00\x00").encode(),
    IID(63, bytes(16)).encode(),
    IID(0, b"\x01").encode(),
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    decode_iid_untrusted(data)
