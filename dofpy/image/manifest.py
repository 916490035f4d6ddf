"""The image manifest: what a device must know, from its trusted sources,
before it accepts an image. Shaped on the SUIT information model (RFC 9124);
carried as the payload of a ``COSE_Sign1`` or ``COSE_Sign`` message
(:mod:`dofpy.image.cose`, content type :data:`MANIFEST_CONTENT_TYPE`).

The payload is one canonical CBOR map with integer keys:

====  ===================  ==================================================
key   field                CBOR
====  ===================  ==================================================
1     format               uint, :data:`MANIFEST_FORMAT` (1)
2     vendor id            bstr, 16 bytes (a UUID)
3     device class id      bstr, 16 bytes (a UUID)
4     version              tstr, for people ("2.4.1"); never compared
5     sequence number      uint: monotonically increasing; what rollback checks
6     created              uint, POSIX seconds
7     expires              uint, POSIX seconds (after ``created``)
8     image                map: the transfer's verification data,
                           :meth:`dofpy.transfer.manifest.Manifest.to_cbor_map`
                           (1 SHA-256 of the image, 2 size, 3 leaf size,
                           4 Merkle root)
9     kind                 uint: 0 Normal image, 1 Reprogram image
10    precursor            bstr, 32 bytes, optional: SHA-256 of the image this
                           one applies to (a delta)
11    minimum sequence     uint, optional: the device must run at least this
                           sequence number to install this image
12    dependencies         array, optional: ``[class id, min sequence]`` pairs
                           (other components of the device)
13    encryption           map with integer keys, optional: how the served
                           bytes are encrypted (content-encryption
                           parameters; defined by the image store, see
                           docs/protocol.md); when present the image fields
                           (8) describe the ciphertext
====  ===================  ==================================================

Optional fields are absent, never null. Unknown keys are refused: a device
that does not understand a field must not install what depends on it.
The manifest's digest (:attr:`ImageManifest.digest`) is the SHA-256 of the
payload bytes: the same however many signatures the message collects.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import Any

import cbor2

from dofpy.errors import BadPacket
from dofpy.transfer.manifest import HASH_SIZE, Manifest
from dofpy.wire.values import _decode_canonical

__all__ = [
    "MANIFEST_CONTENT_TYPE",
    "MANIFEST_FORMAT",
    "Dependency",
    "ImageKind",
    "ImageManifest",
    "decode_image_manifest_untrusted",
]

MANIFEST_FORMAT = 1
MANIFEST_CONTENT_TYPE = "application/vnd.dofpy.image-manifest+cbor"
"""The COSE content type (header 3) of a signed image manifest."""

_FORMAT, _VENDOR, _CLASS, _VERSION, _SEQUENCE, _CREATED, _EXPIRES, _IMAGE, _KIND = range(1, 10)
_PRECURSOR, _MIN_SEQUENCE, _DEPENDENCIES, _ENCRYPTION = range(10, 14)
_REQUIRED = frozenset(range(1, 10))
_KNOWN = frozenset(range(1, 14))

MAX_VERSION_TEXT = 64
MAX_DEPENDENCIES = 32
MAX_SEQUENCE = (1 << 64) - 1


class ImageKind(IntEnum):
    """What the image is: the device's Normal image, or the smaller Reprogram
    image that updates the updater."""

    NORMAL = 0
    REPROGRAM = 1


@dataclass(frozen=True, slots=True)
class Dependency:
    """Another component this image needs: of ``device_class``, at least at
    ``min_sequence``."""

    device_class: uuid.UUID
    min_sequence: int

    def __post_init__(self) -> None:
        if type(self.min_sequence) is not int or not 0 <= self.min_sequence <= MAX_SEQUENCE:
            raise ValueError("a dependency's minimum sequence is an unsigned 64-bit integer")


def _check_uint(value: object, what: str) -> None:
    if type(value) is not int or not 0 <= value <= MAX_SEQUENCE:
        raise ValueError(f"{what} must be an unsigned 64-bit integer")


@dataclass(frozen=True, slots=True)
class ImageManifest:
    """A manifest's content (the signed payload), validated on construction
    (``ValueError``).

    ``image`` is the block transfer's verification data: the image's SHA-256
    (``image.object_id``), its size, leaf size and Merkle root, so a device
    fetches the image by block and verifies every block on arrival. When
    ``encryption`` is set it describes the ciphertext that is served.
    """

    vendor_id: uuid.UUID
    device_class: uuid.UUID
    version: str
    sequence: int
    created: int
    expires: int
    image: Manifest
    kind: ImageKind = ImageKind.NORMAL
    precursor: bytes | None = None
    min_sequence: int | None = None
    dependencies: tuple[Dependency, ...] = ()
    encryption: Mapping[int, Any] | None = None
    """Content-encryption parameters (key 13): an integer-keyed map the image
    store defines; ``None`` for an image served in the clear."""

    def __post_init__(self) -> None:
        if not isinstance(self.vendor_id, uuid.UUID) or not isinstance(
            self.device_class, uuid.UUID
        ):
            raise ValueError("vendor_id and device_class are UUIDs")
        if not isinstance(self.version, str) or not 0 < len(self.version) <= MAX_VERSION_TEXT:
            raise ValueError(f"version is a text of 1..{MAX_VERSION_TEXT} characters")
        _check_uint(self.sequence, "sequence")
        _check_uint(self.created, "created")
        _check_uint(self.expires, "expires")
        if self.expires <= self.created:
            raise ValueError("a manifest expires after it is created")
        if not isinstance(self.image, Manifest):
            raise ValueError("image is a dofpy.transfer.manifest.Manifest")
        object.__setattr__(self, "kind", ImageKind(self.kind))
        if self.precursor is not None and (
            not isinstance(self.precursor, bytes) or len(self.precursor) != HASH_SIZE
        ):
            raise ValueError("precursor is a SHA-256 digest (32 bytes)")
        if self.min_sequence is not None:
            _check_uint(self.min_sequence, "min_sequence")
        object.__setattr__(self, "dependencies", tuple(self.dependencies))
        if len(self.dependencies) > MAX_DEPENDENCIES or not all(
            isinstance(d, Dependency) for d in self.dependencies
        ):
            raise ValueError(f"dependencies: at most {MAX_DEPENDENCIES} Dependency values")
        if len({d.device_class for d in self.dependencies}) != len(self.dependencies):
            raise ValueError("dependencies: one entry per device class")
        if self.encryption is not None:
            if not isinstance(self.encryption, Mapping) or not all(
                type(k) is int for k in self.encryption
            ):
                raise ValueError("encryption is a map with integer keys")
            object.__setattr__(self, "encryption", MappingProxyType(dict(self.encryption)))

    @property
    def image_size(self) -> int:
        return self.image.size

    @property
    def image_sha256(self) -> bytes:
        return self.image.object_id

    def to_cbor_map(self) -> dict[int, Any]:
        """The payload as a CBOR-ready map (the table in this module's docstring)."""
        value: dict[int, Any] = {
            _FORMAT: MANIFEST_FORMAT,
            _VENDOR: self.vendor_id.bytes,
            _CLASS: self.device_class.bytes,
            _VERSION: self.version,
            _SEQUENCE: self.sequence,
            _CREATED: self.created,
            _EXPIRES: self.expires,
            _IMAGE: self.image.to_cbor_map(),
            _KIND: int(self.kind),
        }
        if self.precursor is not None:
            value[_PRECURSOR] = self.precursor
        if self.min_sequence is not None:
            value[_MIN_SEQUENCE] = self.min_sequence
        if self.dependencies:
            value[_DEPENDENCIES] = [
                [d.device_class.bytes, d.min_sequence] for d in self.dependencies
            ]
        if self.encryption is not None:
            value[_ENCRYPTION] = dict(self.encryption)
        return value

    def encode(self) -> bytes:
        """The payload bytes (canonical CBOR) that parties sign."""
        encoded: bytes = cbor2.dumps(self.to_cbor_map(), canonical=True)
        return encoded

    @property
    def digest(self) -> bytes:
        """SHA-256 of :meth:`encode`: the manifest's name, whoever signed it."""
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def from_cbor_map(cls, value: object) -> ImageManifest:
        """Inverse of :meth:`to_cbor_map`; raises ``BadPacket``."""
        if not isinstance(value, dict):
            raise BadPacket("image manifest: expected a map")
        keys = set(value)
        if not keys >= _REQUIRED:
            raise BadPacket(f"image manifest: missing keys {sorted(_REQUIRED - keys)}")
        if not keys <= _KNOWN:
            raise BadPacket(f"image manifest: unknown keys {sorted(keys - _KNOWN, key=str)}")
        if value[_FORMAT] != MANIFEST_FORMAT or type(value[_FORMAT]) is not int:
            raise BadPacket(f"image manifest: format {value[_FORMAT]!r} is not {MANIFEST_FORMAT}")
        try:
            dependencies: tuple[Dependency, ...] = ()
            if _DEPENDENCIES in value:
                entries = value[_DEPENDENCIES]
                if not isinstance(entries, list) or not entries:
                    raise BadPacket("image manifest: dependencies must be a non-empty array")
                dependencies = tuple(_dependency(entry) for entry in entries)
            kind = value[_KIND]
            if type(kind) is not int or kind not in (0, 1):
                raise BadPacket(f"image manifest: unknown image kind {kind!r}")
            encryption = value.get(_ENCRYPTION)
            if encryption is not None and not isinstance(encryption, dict):
                raise BadPacket("image manifest: encryption must be a map")
            if _MIN_SEQUENCE in value and type(value[_MIN_SEQUENCE]) is not int:
                raise BadPacket("image manifest: minimum sequence must be an integer")
            for key in (_SEQUENCE, _CREATED, _EXPIRES):
                if type(value[key]) is not int:
                    raise BadPacket(f"image manifest: key {key} must be an integer")
            return cls(
                vendor_id=_uuid(value[_VENDOR], "vendor id"),
                device_class=_uuid(value[_CLASS], "device class id"),
                version=value[_VERSION],
                sequence=value[_SEQUENCE],
                created=value[_CREATED],
                expires=value[_EXPIRES],
                image=Manifest.from_cbor_map(value[_IMAGE]),
                kind=ImageKind(kind),
                precursor=value.get(_PRECURSOR),
                min_sequence=value.get(_MIN_SEQUENCE),
                dependencies=dependencies,
                encryption=encryption,
            )
        except ValueError as exc:
            raise BadPacket(f"image manifest: {exc}") from None


def _uuid(value: object, what: str) -> uuid.UUID:
    if not isinstance(value, bytes) or len(value) != 16:
        raise BadPacket(f"image manifest: {what} must be 16 bytes (a UUID)")
    return uuid.UUID(bytes=value)


def _dependency(entry: object) -> Dependency:
    if not isinstance(entry, list) or len(entry) != 2 or type(entry[1]) is not int:
        raise BadPacket("image manifest: a dependency is [class id, minimum sequence]")
    return Dependency(_uuid(entry[0], "dependency class id"), entry[1])


def decode_image_manifest_untrusted(payload: bytes) -> ImageManifest:
    """An image manifest from its payload bytes (canonical CBOR); raises only
    ``BadPacket``. This does not check signatures: a device calls
    :func:`dofpy.image.verify.verify_manifest` instead."""
    return ImageManifest.from_cbor_map(_decode_canonical(bytes(payload), "image manifest"))
