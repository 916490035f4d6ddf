"""Fuzz target: ``decode_image_manifest_untrusted`` (a manifest's payload) and
``open_manifest_untrusted`` (the same inside a COSE message)."""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.asymmetric import ed25519

from dofpy.errors import BadPacket
from dofpy.image.cose import SigningKey
from dofpy.image.manifest import (
    Dependency,
    ImageKind,
    ImageManifest,
    decode_image_manifest_untrusted,
)
from dofpy.image.trust import Party
from dofpy.image.verify import open_manifest_untrusted, sign_manifest
from dofpy.transfer.manifest import ObjectHashes

_MANIFEST = ImageManifest(
    vendor_id=uuid.UUID(int=1),
    device_class=uuid.UUID(int=2),
    version="1.0",
    sequence=3,
    created=10,
    expires=20,
    image=ObjectHashes.build(b"image" * 100, 64).manifest,
    kind=ImageKind.REPROGRAM,
    precursor=bytes(32),
    min_sequence=1,
    dependencies=(Dependency(uuid.UUID(int=3), 4),),
    encryption={1: b"k", -2: "x"},
)
_KEY = SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([5]) * 32))

SEEDS: tuple[bytes, ...] = (
    _MANIFEST.encode(),
    sign_manifest(_MANIFEST, _KEY, Party.MANUFACTURER).encode(),
)


def target(data: bytes) -> None:
    """Decode as a payload and as a signed message; what is accepted must
    re-encode to exactly the input."""
    try:
        manifest = decode_image_manifest_untrusted(data)
    except BadPacket:
        pass
    else:
        if manifest.encode() != data:
            raise AssertionError("accepted a manifest that is not in canonical form")
    message, manifest = open_manifest_untrusted(data)
    if message.encode() != data or manifest.encode() != message.payload:
        raise AssertionError("accepted a signed manifest that is not in canonical form")
