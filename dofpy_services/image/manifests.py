"""The image store's view of signed manifests (``dofpy.image``): what it keys
and lists them by, read without trusting them, and a device's verification
turned into what a fetch needs.

The store names a manifest by the SHA-256 of its COSE bytes (content
addressing); the manifest's own digest (``ImageManifest.digest``) is that of
its payload, the same however many signatures it collects. A manifest signed
by more parties is a new object with the same payload: the store prefers it
(:attr:`ManifestSummary.signature_count`) and gc drops the one it replaced.
"""

from __future__ import annotations

import hashlib
import hmac

from dofpy.errors import BadPacket
from dofpy.image.cose import decode_cose_untrusted
from dofpy.image.trust import HEADER_PARTY, Party
from dofpy.image.verify import VerifiedManifest, open_manifest_untrusted
from dofpy_services.image.encryption import EncryptionInfo
from dofpy_services.image.store import ManifestSummary

__all__ = ["describe_manifest", "encryption_of", "manifest_named", "summary_of_verified"]


def manifest_named(data: bytes, digest: bytes) -> bool:
    """Whether ``data`` is a manifest named ``digest``: the SHA-256 of its
    COSE bytes (one signed copy, as the store keeps it) or of its payload
    (the release, whoever signed it: what campaign terms and the devices'
    assignments name)."""
    if hmac.compare_digest(hashlib.sha256(data).digest(), digest):
        return True
    try:
        payload = decode_cose_untrusted(data).payload
    except BadPacket:
        return False
    return hmac.compare_digest(hashlib.sha256(payload).digest(), digest)


def _party_label(value: object) -> str:
    try:
        return Party(value).label  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "unknown party"


def describe_manifest(data: bytes) -> ManifestSummary:
    """A signed manifest's summary, its signatures *not* checked (the store
    and relays need only what to keep and serve; devices verify). Raises
    ``BadPacket``."""
    message, manifest = open_manifest_untrusted(data)
    signers = []
    for signature in message.signatures:
        party = signature.headers.get(HEADER_PARTY, signature.unprotected.get(HEADER_PARTY))
        signers.append(f"{_party_label(party)}:{signature.kid.hex()[:16]}")
    info = encryption_of_manifest_map(manifest.encryption)
    return ManifestSummary(
        vendor_id=str(manifest.vendor_id),
        class_id=str(manifest.device_class),
        version=manifest.version,
        sequence=manifest.sequence,
        image=manifest.image,
        expires=float(manifest.expires),
        signers=tuple(signers),
        encrypted=info is not None,
        references=() if info is None else info.records,
        payload_digest=manifest.digest,
        signature_count=len(message.signatures),
    )


def encryption_of_manifest_map(value: object) -> EncryptionInfo | None:
    return None if value is None else EncryptionInfo.from_cbor_map_untrusted(value)


def encryption_of(data: bytes) -> EncryptionInfo | None:
    """A signed manifest's encryption parameters (``None``: served in the clear).
    Raises ``BadPacket``."""
    return encryption_of_manifest_map(open_manifest_untrusted(data)[1].encryption)


def summary_of_verified(data: bytes, verified: VerifiedManifest) -> ManifestSummary:
    """What a fetch needs of a manifest the device verified."""
    summary = describe_manifest(data)
    if summary.payload_digest != verified.digest:
        raise BadPacket("the verified manifest is not the one described")
    return summary
