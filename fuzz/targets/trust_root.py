"""Fuzz target: ``decode_trust_root_untrusted`` (a trust root's payload)."""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from dofpy.image.cose import PublicKey
from dofpy.image.trust import Party, TrustedKey, TrustRoot, decode_trust_root_untrusted

_KEYS = (
    TrustedKey(
        Party.MANUFACTURER,
        PublicKey.from_cryptography(
            ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()
        ),
        "m",
    ),
    TrustedKey(
        Party.SERVICE_PROVIDER,
        PublicKey.from_cryptography(ec.derive_private_key(9, ec.SECP256R1()).public_key()),
    ),
)

SEEDS: tuple[bytes, ...] = (
    TrustRoot(
        uuid.UUID(int=1),
        1,
        100,
        _KEYS,
        {Party.MANUFACTURER: 1, Party.SERVICE_PROVIDER: 1},
        {Party.MANUFACTURER: 1},
        {uuid.UUID(int=2): {Party.SERVICE_PROVIDER: 1}},
        (bytes(32),),
    ).encode(),
)


def target(data: bytes) -> None:
    """Decode; an accepted trust root must re-encode to exactly the input."""
    root = decode_trust_root_untrusted(data)
    if root.encode() != data:
        raise AssertionError("accepted a trust root that is not in canonical form")
