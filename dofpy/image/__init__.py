"""Signed image manifests, trust roots and device-side verification (the
*trusted source* of OpenDOF's reprogramming process).

- :class:`ImageManifest`: what a device must know about an image (SUIT-shaped:
  vendor and class ids, version and sequence number, created/expires, the
  block transfer's verification data, kind, precursor, constraints,
  encryption parameters), the payload of a COSE message
  (:mod:`dofpy.image.cose`: ``COSE_Sign1`` / ``COSE_Sign``, Ed25519 or ES256);
- :class:`TrustRoot`: a vendor's signing parties (:class:`Party`), their
  keys and thresholds; :func:`accept_trust_root`, :func:`rotate_trust_root`;
- signing offline: :class:`SigningKey`, :func:`sign_manifest`,
  :func:`sign_trust_root` (a ``COSE_Sign`` collects one signature per call);
- on the device: :func:`verify_manifest` with a :class:`DeviceState`, then
  :class:`ImageCheck` over the image bytes; every refusal a
  :class:`ManifestRefused` subclass.

Everything here is pure (bytes and ``now`` in, values or exceptions out);
key files and the command line are in :mod:`dofpy_services.image`.
"""

from dofpy.image.cose import (
    Algorithm,
    CoseSignature,
    CoseSigned,
    PublicKey,
    SigningKey,
    decode_cose_key_untrusted,
    decode_cose_untrusted,
)
from dofpy.image.errors import (
    BelowThreshold,
    Expired,
    ImageMismatch,
    Malformed,
    ManifestRefused,
    PrecursorMismatch,
    RemovedKey,
    Rollback,
    Tampered,
    TooMuchData,
    UnknownKey,
    UnmetDependency,
    UnmetMinimumVersion,
    WrongClass,
    WrongVendor,
)
from dofpy.image.manifest import (
    MANIFEST_CONTENT_TYPE,
    Dependency,
    ImageKind,
    ImageManifest,
    decode_image_manifest_untrusted,
)
from dofpy.image.trust import (
    HEADER_PARTY,
    TRUST_ROOT_CONTENT_TYPE,
    Party,
    PartyTally,
    SignatureCheck,
    SignatureOutcome,
    SignatureReport,
    TrustedKey,
    TrustRoot,
    accept_trust_root,
    check_signatures,
    decode_trust_root_untrusted,
    rotate_trust_root,
    sign_trust_root,
)
from dofpy.image.verify import (
    DeviceState,
    ImageCheck,
    VerifiedManifest,
    open_manifest_untrusted,
    sign_manifest,
    verify_manifest,
)

__all__ = [
    "HEADER_PARTY",
    "MANIFEST_CONTENT_TYPE",
    "TRUST_ROOT_CONTENT_TYPE",
    "Algorithm",
    "BelowThreshold",
    "CoseSignature",
    "CoseSigned",
    "Dependency",
    "DeviceState",
    "Expired",
    "ImageCheck",
    "ImageKind",
    "ImageManifest",
    "ImageMismatch",
    "Malformed",
    "ManifestRefused",
    "Party",
    "PartyTally",
    "PrecursorMismatch",
    "PublicKey",
    "RemovedKey",
    "Rollback",
    "SignatureCheck",
    "SignatureOutcome",
    "SignatureReport",
    "SigningKey",
    "Tampered",
    "TooMuchData",
    "TrustRoot",
    "TrustedKey",
    "UnknownKey",
    "UnmetDependency",
    "UnmetMinimumVersion",
    "VerifiedManifest",
    "WrongClass",
    "WrongVendor",
    "accept_trust_root",
    "check_signatures",
    "decode_cose_key_untrusted",
    "decode_cose_untrusted",
    "decode_image_manifest_untrusted",
    "decode_trust_root_untrusted",
    "open_manifest_untrusted",
    "rotate_trust_root",
    "sign_manifest",
    "sign_trust_root",
    "verify_manifest",
]
