"""Deterministic keys, trust roots and manifests for the image tests: every
key is derived from a fixed seed, every time is an explicit ``NOW``."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from dofpy.image import (
    Algorithm,
    CoseSigned,
    DeviceState,
    ImageManifest,
    Party,
    SigningKey,
    TrustedKey,
    TrustRoot,
    sign_manifest,
    sign_trust_root,
)
from dofpy.transfer.manifest import ObjectHashes

VENDOR = uuid.UUID("6f1c0a4e-3b7d-4c2a-9e51-0d8f6a2b7c10")
OTHER_VENDOR = uuid.UUID("0b9d6c4a-1e2f-4a3b-8c7d-5e6f7a8b9c0d")
DEVICE_CLASS = uuid.UUID("a3e1c9d0-5f4b-4e6a-8d2c-1b7f0e9a6c53")
OTHER_CLASS = uuid.UUID("c0ffee00-1234-4567-89ab-cdef01234567")
BOOTLOADER_CLASS = uuid.UUID("b007b007-0000-4000-8000-000000000001")

NOW = 1_800_000_000
"""2027-01-15 08:00 UTC: the time every verification is done at."""
DAY = 86_400

IMAGE = bytes(range(256)) * 40 + b"tail"
IMAGE_HASHES = ObjectHashes.build(IMAGE, 1024)


def ed25519_key(seed: int) -> SigningKey:
    return SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


def es256_key(seed: int) -> SigningKey:
    return SigningKey(ec.derive_private_key(10_000 + seed, ec.SECP256R1()))


def key(seed: int, algorithm: Algorithm = Algorithm.EDDSA) -> SigningKey:
    return ed25519_key(seed) if algorithm is Algorithm.EDDSA else es256_key(seed)


@dataclasses.dataclass(frozen=True)
class Keys:
    """Three manufacturer keys, a service provider's, an operator's, and one
    nobody lists."""

    m1: SigningKey
    m2: SigningKey
    m3: SigningKey
    sp: SigningKey
    op: SigningKey
    outsider: SigningKey

    @classmethod
    def make(cls, algorithm: Algorithm = Algorithm.EDDSA) -> Keys:
        return cls(*(key(seed, algorithm) for seed in range(1, 7)))


def make_root(keys: Keys, **changes: Any) -> TrustRoot:
    """Vendor ``VENDOR``'s trust root, version 1: manifests need 2 of the 3
    manufacturer keys AND 1 service-provider key; trust roots need 2
    manufacturer keys."""
    root = TrustRoot(
        vendor_id=VENDOR,
        version=1,
        expires=NOW + 365 * DAY,
        keys=(
            TrustedKey(Party.MANUFACTURER, keys.m1.public_key, "m1"),
            TrustedKey(Party.MANUFACTURER, keys.m2.public_key, "m2"),
            TrustedKey(Party.MANUFACTURER, keys.m3.public_key, "m3"),
            TrustedKey(Party.SERVICE_PROVIDER, keys.sp.public_key, "sp"),
            TrustedKey(Party.OPERATOR, keys.op.public_key, "op"),
        ),
        policy={Party.MANUFACTURER: 2, Party.SERVICE_PROVIDER: 1},
        root_policy={Party.MANUFACTURER: 2},
    )
    return dataclasses.replace(root, **changes)


def sign_root(root: TrustRoot, *signers: tuple[SigningKey, Party]) -> bytes:
    document: TrustRoot | CoseSigned = root
    for signing_key, party in signers:
        document = sign_trust_root(document, signing_key, party)
    assert isinstance(document, CoseSigned)
    return document.encode()


def make_manifest(**changes: Any) -> ImageManifest:
    manifest = ImageManifest(
        vendor_id=VENDOR,
        device_class=DEVICE_CLASS,
        version="2.4.1",
        sequence=24,
        created=NOW - DAY,
        expires=NOW + 30 * DAY,
        image=IMAGE_HASHES.manifest,
    )
    return dataclasses.replace(manifest, **changes)


def sign(manifest: ImageManifest, *signers: tuple[SigningKey, Party]) -> bytes:
    document: ImageManifest | CoseSigned = manifest
    for signing_key, party in signers:
        document = sign_manifest(document, signing_key, party)
    assert isinstance(document, CoseSigned)
    return document.encode()


def fully_signed(keys: Keys, manifest: ImageManifest | None = None) -> bytes:
    """Signed by m1, m2 (manufacturer) and sp (service provider): meets ``make_root``."""
    return sign(
        manifest or make_manifest(),
        (keys.m1, Party.MANUFACTURER),
        (keys.m2, Party.MANUFACTURER),
        (keys.sp, Party.SERVICE_PROVIDER),
    )


def device(**changes: Any) -> DeviceState:
    state = DeviceState(vendor_id=VENDOR, device_class=DEVICE_CLASS, sequence=23)
    return dataclasses.replace(state, **changes)
