"""Why a device (or an operator's ``dofpy image verify``) refuses a manifest,
an image or a new trust root: one exception type per refusal, all
:class:`ManifestRefused`. Each message names what a release engineer needs
to act: versions and sequence numbers, dates (UTC), parties, key
fingerprints, counts of valid and needed signatures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dofpy.errors import BadPacket, DofError

if TYPE_CHECKING:
    from dofpy.image.trust import Party, SignatureReport

__all__ = [
    "BelowThreshold",
    "Expired",
    "ImageMismatch",
    "Malformed",
    "ManifestRefused",
    "PrecursorMismatch",
    "RemovedKey",
    "Rollback",
    "Tampered",
    "TooMuchData",
    "UnknownKey",
    "UnmetDependency",
    "UnmetMinimumVersion",
    "WrongClass",
    "WrongVendor",
]


class ManifestRefused(DofError):
    """A manifest, an image or a trust root is refused; nothing is installed.
    The subclass says why."""


class Malformed(ManifestRefused, BadPacket):
    """The bytes are not a signed document of the expected kind (they do not
    decode, or are a trust root where a manifest was expected, or the reverse)."""


class Rollback(ManifestRefused):
    """The manifest's sequence number (or the trust root's version) is not
    newer than what the device has (``offered`` <= ``installed``)."""

    def __init__(self, message: str, offered: int, installed: int) -> None:
        super().__init__(message)
        self.offered = offered
        self.installed = installed


class Expired(ManifestRefused):
    """The manifest (or the trust root checking it) expired at ``expires``
    (POSIX seconds): a freeze attack replays a stale one."""

    def __init__(self, message: str, expires: int, now: float) -> None:
        super().__init__(message)
        self.expires = expires
        self.now = now


class WrongVendor(ManifestRefused):
    """The manifest (or trust root) is for another vendor than the device's."""


class WrongClass(ManifestRefused):
    """The manifest is for another device class than the device's."""


class Tampered(ManifestRefused):
    """A signature by a listed key does not verify: the payload or a protected
    header changed after signing (or a signature was cut and pasted from
    another document), and the valid signatures do not reach the threshold."""


class BelowThreshold(ManifestRefused):
    """Too few valid signatures of ``party``: ``valid`` of ``needed``.
    ``report`` holds every signature's outcome and every party's tally."""

    def __init__(
        self, message: str, party: Party, valid: int, needed: int, report: SignatureReport
    ) -> None:
        super().__init__(message)
        self.party = party
        self.valid = valid
        self.needed = needed
        self.report = report


class UnknownKey(BelowThreshold):
    """Below threshold, and signatures by keys the trust root does not list
    were offered (they count for nothing)."""


class RemovedKey(BelowThreshold):
    """Below threshold, and signatures by keys the trust root has removed
    (a rotation took them out, say after a compromise) were offered."""


class PrecursorMismatch(ManifestRefused):
    """The image applies to a precursor (a delta's base) that is not what the
    device runs."""


class UnmetMinimumVersion(ManifestRefused):
    """The device runs an older sequence than the manifest's minimum."""


class UnmetDependency(ManifestRefused):
    """Another component of the device is missing or older than the
    manifest requires."""


class TooMuchData(ManifestRefused):
    """More image bytes arrived than the manifest declares (endless data)."""


class ImageMismatch(ManifestRefused):
    """The image bytes are not the ones the manifest signs (another SHA-256,
    or fewer bytes than declared)."""
