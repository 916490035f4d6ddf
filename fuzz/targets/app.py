"""Fuzz target for ``split_app_untrusted``."""

from __future__ import annotations

from dofpy.wire.dpp import AppId, encode_app, split_app_untrusted

SEEDS: tuple[bytes, ...] = (
    encode_app(AppId.COMMON, b"\x03"),
    encode_app(AppId.OAP, b""),
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    split_app_untrusted(data)
