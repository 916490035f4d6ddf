"""Fuzz target: the CBOR value-list decoder ``decode_values_untrusted``."""

from __future__ import annotations

from dofpy.wire.values import decode_values_untrusted, encode_values

SEEDS: tuple[bytes, ...] = (
    encode_values([]),
    encode_values([0, -1, 1 << 40, -(1 << 64), (1 << 64) - 1]),
    encode_values([b"block", "text", True, False, None, 1.5, 0.1, float("inf")]),
    encode_values([[1, [2, [3]]], {"k": b"v", 7: [], b"b": {"n": None}}]),
)


def target(data: bytes) -> None:
    """Decode; an accepted list must re-encode to exactly the same bytes."""
    values = decode_values_untrusted(data)
    if encode_values(values) != data:
        raise AssertionError("accepted a value list that is not in canonical form")
