"""Fuzz target: ``decode_manifest_untrusted`` (a manifest's verification data as CBOR)."""

from __future__ import annotations

from dofpy.transfer.manifest import ObjectHashes, decode_manifest_untrusted
from dofpy.wire.values import encode_values

SEEDS: tuple[bytes, ...] = (
    encode_values([ObjectHashes.build(bytes(range(256)) * 5, 64).manifest.to_cbor_map()]),
    encode_values([ObjectHashes.build(b"x", 1024).manifest.to_cbor_map()]),
)


def target(data: bytes) -> None:
    """Decode; an accepted manifest must re-encode to exactly the input."""
    manifest = decode_manifest_untrusted(data)
    if encode_values([manifest.to_cbor_map()]) != data:
        raise AssertionError("accepted a manifest that is not in canonical form")
