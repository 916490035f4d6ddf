"""Device-side verification: the pure functions a device agent calls before
it installs anything.

:func:`verify_manifest` takes the signed manifest bytes, the vendor's
:class:`~dofpy.image.trust.TrustRoot`, what the device runs
(:class:`DeviceState`) and the time; it returns a :class:`VerifiedManifest`
or raises the :class:`~dofpy.image.errors.ManifestRefused` subclass that says
why. The order of the checks matters: signatures are checked over the raw
payload bytes, with the thresholds of the *device's own* class, before a
single field of the payload is believed.

:class:`ImageCheck` then guards the image bytes as they stream in: it refuses
the first byte beyond the declared size (:class:`~dofpy.image.errors.TooMuchData`,
endless data) and, at the end, anything but exactly the signed SHA-256.
(Block by block, the transfer's Merkle root in the manifest already verifies
each block on arrival; this is the whole-image check.)
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from dofpy.errors import BadPacket
from dofpy.image.cose import CoseSigned, SigningKey, add_signature, decode_cose_untrusted
from dofpy.image.cose import sign_payload as _sign_payload
from dofpy.image.errors import (
    Expired,
    ImageMismatch,
    Malformed,
    PrecursorMismatch,
    Rollback,
    TooMuchData,
    UnmetDependency,
    UnmetMinimumVersion,
    WrongClass,
    WrongVendor,
)
from dofpy.image.manifest import (
    MANIFEST_CONTENT_TYPE,
    ImageManifest,
    decode_image_manifest_untrusted,
)
from dofpy.image.trust import (
    HEADER_PARTY,
    Party,
    SignatureReport,
    TrustRoot,
    check_signatures,
    format_time,
    require_threshold,
)

__all__ = [
    "DeviceState",
    "ImageCheck",
    "VerifiedManifest",
    "open_manifest_untrusted",
    "sign_manifest",
    "verify_manifest",
]


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What a device runs, as its verifier needs it.

    ``sequence`` is the installed image's sequence number (0 before the first
    install); ``image_digest`` the SHA-256 of the running image (checked
    against a delta's precursor); ``components`` the installed sequence of
    the device's other components by class (checked against dependencies).
    """

    vendor_id: uuid.UUID
    device_class: uuid.UUID
    sequence: int = 0
    image_digest: bytes | None = None
    components: Mapping[uuid.UUID, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VerifiedManifest:
    """A manifest the device may act on: its content, its digest (SHA-256 of
    the payload) and who signed it."""

    manifest: ImageManifest
    digest: bytes
    report: SignatureReport

    def signed_by(self, party: Party) -> int:
        """How many of ``party``'s keys validly signed."""
        return len(self.report.signed_by(party))


def open_manifest_untrusted(signed: bytes) -> tuple[CoseSigned, ImageManifest]:
    """The COSE message and the manifest it carries, *without* checking any
    signature (for listing and reporting; a device uses :func:`verify_manifest`).
    Raises only ``BadPacket``."""
    message = decode_cose_untrusted(signed)
    if message.content_type != MANIFEST_CONTENT_TYPE:
        raise BadPacket(f"content type {message.content_type!r} is not an image manifest")
    return message, decode_image_manifest_untrusted(message.payload)


def _opened(signed: bytes) -> CoseSigned:
    try:
        message = decode_cose_untrusted(signed)
    except BadPacket as exc:
        raise Malformed(f"not a signed manifest: {exc}") from None
    if message.content_type != MANIFEST_CONTENT_TYPE:
        raise Malformed(
            f"not an image manifest: its content type is {message.content_type!r} "
            f"(expected {MANIFEST_CONTENT_TYPE})"
        )
    return message


def verify_manifest(
    signed: bytes, trust_root: TrustRoot, device: DeviceState, now: float
) -> VerifiedManifest:
    """Verify ``signed`` (a ``COSE_Sign1`` or ``COSE_Sign`` manifest) for
    ``device`` at ``now`` (POSIX seconds) against ``trust_root``.

    In order, refused as: :class:`~dofpy.image.errors.WrongVendor` (the trust
    root is another vendor's), :class:`~dofpy.image.errors.Expired` (the
    trust root expired), :class:`~dofpy.image.errors.Malformed`, the
    signature refusals of :func:`~dofpy.image.trust.require_threshold`
    (``Tampered``, ``RemovedKey``, ``UnknownKey``, ``BelowThreshold``) with
    the thresholds of the device's class, then ``WrongVendor``,
    ``WrongClass``, ``Expired`` (the manifest), ``Rollback``,
    ``UnmetMinimumVersion``, ``UnmetDependency``, ``PrecursorMismatch``.
    """
    if trust_root.vendor_id != device.vendor_id:
        raise WrongVendor(
            f"the trust root is vendor {trust_root.vendor_id}'s, but the device is vendor "
            f"{device.vendor_id}'s"
        )
    if now >= trust_root.expires:
        raise Expired(
            f"the device's trust root (version {trust_root.version}) expired at "
            f"{format_time(trust_root.expires)} (now {format_time(now)}): rotate to a new "
            "trust root before installing anything",
            trust_root.expires,
            now,
        )
    message = _opened(signed)
    report = check_signatures(message, trust_root, trust_root.policy_for(device.device_class))
    require_threshold(report, f"manifest checked with trust root version {trust_root.version}")
    try:
        manifest = decode_image_manifest_untrusted(message.payload)
    except BadPacket as exc:
        raise Malformed(f"the signed manifest does not decode: {exc}") from None
    name = f"manifest {manifest.version} (sequence {manifest.sequence})"
    if manifest.vendor_id != device.vendor_id:
        raise WrongVendor(
            f"{name} is for vendor {manifest.vendor_id}, but the device is vendor "
            f"{device.vendor_id}'s"
        )
    if manifest.device_class != device.device_class:
        raise WrongClass(
            f"{name} is for device class {manifest.device_class}, but the device is of class "
            f"{device.device_class}"
        )
    if now >= manifest.expires:
        raise Expired(
            f"{name} expired at {format_time(manifest.expires)} (now {format_time(now)}): "
            "publish and sign a fresh manifest",
            manifest.expires,
            now,
        )
    if manifest.sequence <= device.sequence:
        raise Rollback(
            f"{name} is not newer than what the device runs (sequence {device.sequence}): "
            "a rollback is refused",
            manifest.sequence,
            device.sequence,
        )
    if manifest.min_sequence is not None and device.sequence < manifest.min_sequence:
        raise UnmetMinimumVersion(
            f"{name} installs only over sequence {manifest.min_sequence} or later; the device "
            f"runs sequence {device.sequence}: install the intermediate release first"
        )
    for dependency in manifest.dependencies:
        installed = device.components.get(dependency.device_class)
        if installed is None or installed < dependency.min_sequence:
            have = "none" if installed is None else f"sequence {installed}"
            raise UnmetDependency(
                f"{name} needs component class {dependency.device_class} at sequence "
                f"{dependency.min_sequence} or later; the device has {have}"
            )
    if manifest.precursor is not None and (
        device.image_digest is None
        or not hmac.compare_digest(manifest.precursor, device.image_digest)
    ):
        running = "unknown" if device.image_digest is None else device.image_digest.hex()[:16]
        raise PrecursorMismatch(
            f"{name} is a delta over image {manifest.precursor.hex()[:16]}, but the device "
            f"runs image {running}"
        )
    return VerifiedManifest(manifest, _sha256(message.payload), report)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sign_manifest(
    document: ImageManifest | CoseSigned, key: SigningKey, party: Party, *, single: bool = False
) -> CoseSigned:
    """``document`` signed by ``key`` for ``party``.

    From an unsigned :class:`ImageManifest`: a ``COSE_Sign`` with one
    signature (more can be added, by other parties, offline), or with
    ``single`` a ``COSE_Sign1`` (one signer, final). From a signed
    ``COSE_Sign``: the same payload with one more signature.
    """
    headers = {HEADER_PARTY: int(party)}
    if isinstance(document, ImageManifest):
        return _sign_payload(
            document.encode(),
            key,
            content_type=MANIFEST_CONTENT_TYPE,
            headers=headers,
            single=single,
        )
    if document.content_type != MANIFEST_CONTENT_TYPE:
        raise ValueError("the signed document is not an image manifest")
    return add_signature(document, key, headers=headers)


class ImageCheck:
    """Streams an image through its manifest's length and SHA-256 check.

    :meth:`update` with each piece as it arrives raises
    :class:`~dofpy.image.errors.TooMuchData` at the first byte beyond the
    declared size, before hashing it; :meth:`finish` raises
    :class:`~dofpy.image.errors.ImageMismatch` for too few bytes or another
    digest. Memory: one hash state, whatever the image size.
    """

    __slots__ = ("_hash", "manifest", "received")

    def __init__(self, manifest: ImageManifest) -> None:
        self.manifest = manifest
        self.received = 0
        self._hash = hashlib.sha256()

    def update(self, data: bytes | memoryview) -> None:
        size = self.manifest.image.size
        length = memoryview(data).nbytes
        if self.received + length > size:
            raise TooMuchData(
                f"image {self.manifest.version} (sequence {self.manifest.sequence}) declares "
                f"{size} bytes, but more arrived ({self.received + length} so far): "
                "the rest is refused"
            )
        self.received += length
        self._hash.update(data)

    def finish(self) -> None:
        size = self.manifest.image.size
        name = f"image {self.manifest.version} (sequence {self.manifest.sequence})"
        if self.received != size:
            raise ImageMismatch(f"{name}: {self.received} bytes arrived of the {size} declared")
        if not hmac.compare_digest(self._hash.digest(), self.manifest.image.object_id):
            raise ImageMismatch(
                f"{name}: the image's SHA-256 {self._hash.hexdigest()[:16]} is not the signed "
                f"{self.manifest.image.object_id.hex()[:16]}"
            )
