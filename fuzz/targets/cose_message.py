"""Fuzz target: ``decode_cose_untrusted`` (a COSE_Sign1 or COSE_Sign message)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from dofpy.image.cose import SigningKey, add_signature, decode_cose_untrusted, sign_payload

_ED25519 = SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
_ES256 = SigningKey(ec.derive_private_key(12345, ec.SECP256R1()))

SEEDS: tuple[bytes, ...] = (
    sign_payload(b"payload", _ED25519, content_type="t", single=True).encode(),
    add_signature(
        sign_payload(b"\xa1\x01\x02", _ED25519, content_type="t", headers={-65537: 1}), _ES256
    ).encode(),
)


def target(data: bytes) -> None:
    """Decode; an accepted message must re-encode to exactly the input."""
    message = decode_cose_untrusted(data)
    if message.encode() != data:
        raise AssertionError("accepted a COSE message that is not in canonical form")
