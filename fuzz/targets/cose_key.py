"""Fuzz target: ``decode_cose_key_untrusted`` (a COSE_Key: Ed25519 or P-256)."""

from __future__ import annotations

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from dofpy.image.cose import PublicKey, decode_cose_key_untrusted

SEEDS: tuple[bytes, ...] = tuple(
    cbor2.dumps(PublicKey.from_cryptography(key).to_cose_key(), canonical=True)
    for key in (
        ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key(),
        ec.derive_private_key(7, ec.SECP256R1()).public_key(),
    )
)


def target(data: bytes) -> None:
    """Decode; an accepted key must re-encode to exactly the input."""
    key = decode_cose_key_untrusted(data)
    if cbor2.dumps(key.to_cose_key(), canonical=True) != data:
        raise AssertionError("accepted a COSE_Key that is not in canonical form")
