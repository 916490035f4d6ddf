"""Fuzz target: ``verify_manifest``, the device's whole decision on a signed
manifest, fed arbitrary COSE.

The trust root asks 2 of 3 manufacturer keys and 1 service-provider key (one
manufacturer key removed by a rotation); the seeds are manifests signed in
every shape the verifier must judge (enough signers, too few, a removed or an
unknown key standing in for a needed one, a rollback, another class,
``COSE_Sign1``), so mutations reach the signature tally and the
checks after it. A refusal is a ``ManifestRefused`` (``Malformed`` being the
``BadPacket`` among them); anything else is a crash. An accepted manifest is
checked against the rules independently: thresholds met, right vendor and
class, newer, not expired.
"""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from dofpy.image.cose import SigningKey
from dofpy.image.errors import Malformed, ManifestRefused
from dofpy.image.manifest import ImageKind, ImageManifest
from dofpy.image.trust import Party, TrustedKey, TrustRoot
from dofpy.image.verify import DeviceState, sign_manifest, verify_manifest
from dofpy.transfer.manifest import ObjectHashes

_VENDOR = uuid.UUID(int=0xD0F)
_CLASS = uuid.UUID(int=0xC1A55)
_NOW = 1_000_000.0


def _ed25519(seed: int) -> SigningKey:
    return SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


_MAKERS = (_ed25519(1), _ed25519(2), _ed25519(3))
_PROVIDER = SigningKey(ec.derive_private_key(11, ec.SECP256R1()))
_REMOVED = _ed25519(4)
_STRANGER = _ed25519(5)

_ROOT = TrustRoot(
    _VENDOR,
    2,
    int(_NOW) + 10_000,
    (
        *(TrustedKey(Party.MANUFACTURER, key.public_key) for key in _MAKERS),
        TrustedKey(Party.SERVICE_PROVIDER, _PROVIDER.public_key),
    ),
    {Party.MANUFACTURER: 2, Party.SERVICE_PROVIDER: 1},
    {Party.MANUFACTURER: 2},
    {},
    (_REMOVED.kid,),
)
_DEVICE = DeviceState(_VENDOR, _CLASS, sequence=5, image_digest=bytes(32))


def _manifest(sequence: int, *, device_class: uuid.UUID = _CLASS) -> ImageManifest:
    return ImageManifest(
        vendor_id=_VENDOR,
        device_class=device_class,
        version=f"1.{sequence}",
        sequence=sequence,
        created=int(_NOW) - 100,
        expires=int(_NOW) + 1_000,
        image=ObjectHashes.build(b"firmware" * 64, 64).manifest,
        kind=ImageKind.NORMAL,
    )


def _signed(manifest: ImageManifest, *signers: tuple[SigningKey, Party]) -> bytes:
    (key, party), *rest = signers
    message = sign_manifest(manifest, key, party)
    for key, party in rest:
        message = sign_manifest(message, key, party)
    return message.encode()


_GOOD = (
    (_MAKERS[0], Party.MANUFACTURER),
    (_MAKERS[2], Party.MANUFACTURER),
    (_PROVIDER, Party.SERVICE_PROVIDER),
)
SEEDS: tuple[bytes, ...] = (
    _signed(_manifest(6), *_GOOD),
    _signed(_manifest(6), _GOOD[0], _GOOD[2]),
    _signed(_manifest(7), *_GOOD, (_REMOVED, Party.MANUFACTURER)),  # extra: counts nothing
    _signed(_manifest(7), _GOOD[0], (_REMOVED, Party.MANUFACTURER), _GOOD[2]),
    _signed(_manifest(8), _GOOD[0], (_STRANGER, Party.MANUFACTURER), _GOOD[2]),
    _signed(_manifest(5), *_GOOD),
    _signed(_manifest(9, device_class=uuid.UUID(int=1)), *_GOOD),
    sign_manifest(_manifest(6), _MAKERS[1], Party.MANUFACTURER, single=True).encode(),
)


def target(data: bytes) -> None:
    """Verify ``data`` as the device would; check what it accepts."""
    try:
        verified = verify_manifest(data, _ROOT, _DEVICE, _NOW)
    except Malformed:
        raise  # a BadPacket: the runner keeps only inputs that reached further
    except ManifestRefused:
        return
    manifest = verified.manifest
    if not verified.report.met:
        raise AssertionError("accepted a manifest below its signing thresholds")
    if verified.signed_by(Party.MANUFACTURER) < 2 or verified.signed_by(Party.SERVICE_PROVIDER) < 1:
        raise AssertionError("accepted a manifest without 2 manufacturer and 1 provider keys")
    if (manifest.vendor_id, manifest.device_class) != (_VENDOR, _CLASS):
        raise AssertionError("accepted a manifest of another vendor or class")
    if manifest.sequence <= _DEVICE.sequence or manifest.expires <= _NOW:
        raise AssertionError("accepted a rollback or an expired manifest")
