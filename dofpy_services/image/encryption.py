"""Confidential images: AES-256-CTR content encryption, the content key
wrapped to device-class recipient keys with ECDH-ES + A256KW (X25519).

The construction (justified in docs/protocol.md, "Confidential images"):

- A fresh random 256-bit *content key* and 128-bit initial counter block per
  image; the image is encrypted with **AES-256-CTR** (COSE ``A256CTR``,
  RFC 9459). CTR is length-preserving and seekable, so the ciphertext has the
  image's size and leaf boundaries, and the transfer's Merkle tree is built
  over the **ciphertext**: providers, caches and relays verify every block
  without the key. CTR gives no integrity of its own — RFC 9459 allows it only
  where integrity comes from elsewhere, and here it does: the signed manifest
  covers the ciphertext (its SHA-256 and Merkle root) *and* the plaintext's
  size and SHA-256 (its ``encryption`` map, :class:`EncryptionInfo`).
- The content key reaches a device wrapped for its device class's recipient
  key: **ECDH-ES + A256KW** (COSE alg -31, RFC 9053 §6.3): an ephemeral X25519
  key per recipient, the shared secret through HKDF-SHA-256 with the COSE KDF
  context (algorithm A256KW, 256 bits, the recipient's protected header) into
  a key-encryption key, the content key wrapped with AES key wrap (RFC 3394).
  The wrapped keys form a ``COSE_Encrypt``-shaped *key record* (tag 96, the
  ciphertext detached), stored beside the image; the manifest names the
  records it was published with.
- A device decrypts only after every block verified and the whole ciphertext
  matched the manifest, and accepts the plaintext only if its SHA-256 is the
  signed one: a wrong or substituted key record yields :class:`DecryptionError`,
  never an installed image.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dofpy.errors import BadPacket

__all__ = [
    "A256CTR",
    "A256KW",
    "ECDH_ES_A256KW",
    "ContentKey",
    "DecryptionError",
    "EncryptionInfo",
    "PlaintextCheck",
    "decode_key_record_untrusted",
    "recipient_kid",
    "unwrap_content_key_untrusted",
    "wrap_content_key",
]

A256CTR = -65532
"""COSE algorithm: AES-CTR with a 256-bit key (RFC 9459)."""
ECDH_ES_A256KW = -31
"""COSE algorithm: ECDH-ES with HKDF-SHA-256, key wrap with A256KW (RFC 9053)."""
A256KW = -5
"""COSE algorithm: AES key wrap with a 256-bit key (RFC 9053)."""

_COSE_ENCRYPT_TAG = 96
_ALG, _KID, _IV, _EPHEMERAL = 1, 4, 5, -1
_OKP, _X25519 = 1, 4
_KTY, _CRV, _X = 1, -1, -2
_MAX_RECIPIENTS = 64

_INFO_ALG, _INFO_IV, _INFO_SIZE, _INFO_SHA256, _INFO_RECORDS = 1, 2, 3, 4, 5


class DecryptionError(BadPacket):
    """A confidential image could not be decrypted to the signed plaintext:
    no recipient for this key, a key that does not unwrap, or a plaintext
    whose SHA-256 is not the manifest's."""


def recipient_kid(public: X25519PublicKey) -> bytes:
    """A recipient key's id: the first 16 bytes of the SHA-256 of its raw bytes."""
    return hashlib.sha256(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).digest()[:16]


@dataclass(frozen=True, slots=True)
class ContentKey:
    """An image's content key and initial counter block (secret: never logged)."""

    key: bytes = field(repr=False)
    iv: bytes

    def __post_init__(self) -> None:
        if len(self.key) != 32 or len(self.iv) != 16:
            raise ValueError("a content key is 32 bytes and its counter block 16")

    @classmethod
    def generate(cls, token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> ContentKey:
        """A fresh random key and counter block (the operating system's CSPRNG)."""
        return cls(token_bytes(32), token_bytes(16))

    def apply(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """``chunks`` encrypted (or decrypted: CTR is its own inverse), piece by piece."""
        cipher = Cipher(algorithms.AES(self.key), modes.CTR(self.iv)).encryptor()
        for chunk in chunks:
            yield cipher.update(chunk)
        tail = cipher.finalize()
        if tail:
            yield tail


@dataclass(frozen=True, slots=True)
class EncryptionInfo:
    """The manifest's ``encryption`` map (key 13 of the signed payload):
    1 algorithm (A256CTR), 2 initial counter block, 3 plaintext size,
    4 plaintext SHA-256, 5 the digests of the key records published with it."""

    iv: bytes
    plaintext_size: int
    plaintext_sha256: bytes
    records: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if len(self.iv) != 16 or len(self.plaintext_sha256) != 32:
            raise ValueError("the counter block is 16 bytes and the plaintext digest 32")
        if type(self.plaintext_size) is not int or self.plaintext_size < 1:
            raise ValueError("the plaintext size is a positive integer")
        if len(self.records) > _MAX_RECIPIENTS or any(len(r) != 32 for r in self.records):
            raise ValueError(f"at most {_MAX_RECIPIENTS} key records, each named by a SHA-256")

    def to_cbor_map(self) -> dict[int, Any]:
        return {
            _INFO_ALG: A256CTR,
            _INFO_IV: self.iv,
            _INFO_SIZE: self.plaintext_size,
            _INFO_SHA256: self.plaintext_sha256,
            _INFO_RECORDS: list(self.records),
        }

    @classmethod
    def from_cbor_map_untrusted(cls, value: object) -> EncryptionInfo:
        """From a manifest's ``encryption`` map; raises ``BadPacket``."""
        if not isinstance(value, Mapping) or set(value) != {1, 2, 3, 4, 5}:
            raise BadPacket("encryption: need exactly keys 1..5")
        if value[_INFO_ALG] != A256CTR:
            raise BadPacket(f"encryption: algorithm {value[_INFO_ALG]!r} is not A256CTR")
        iv, size, sha, records = (value[k] for k in (2, 3, 4, 5))
        if not isinstance(iv, bytes) or not isinstance(sha, bytes) or type(size) is not int:
            raise BadPacket("encryption: counter block, size and digest of the wrong type")
        if not isinstance(records, list) or not all(isinstance(r, bytes) for r in records):
            raise BadPacket("encryption: records are a list of digests")
        try:
            return cls(iv, size, sha, tuple(records))
        except ValueError as exc:
            raise BadPacket(f"encryption: {exc}") from None


class PlaintextCheck:
    """Counts and hashes a decrypted image as it streams; :meth:`verify`
    raises :class:`DecryptionError` unless it is the signed plaintext."""

    def __init__(self, info: EncryptionInfo) -> None:
        self._info = info
        self._sha256 = hashlib.sha256()
        self._size = 0

    def update(self, chunk: bytes) -> None:
        self._sha256.update(chunk)
        self._size += len(chunk)

    def verify(self) -> None:
        if self._size != self._info.plaintext_size or not hmac.compare_digest(
            self._sha256.digest(), self._info.plaintext_sha256
        ):
            raise DecryptionError(
                "the decrypted image is not the one the manifest signed"
                " (wrong content key or key record)"
            )


def _kdf_context(protected: bytes) -> bytes:
    # COSE_KDF_Context (RFC 9053 §5.2): [AlgorithmID, PartyUInfo, PartyVInfo,
    # SuppPubInfo [keyDataLength, protected]]; the parties are not named.
    return cbor2.dumps(
        [A256KW, [None, None, None], [None, None, None], [256, protected]], canonical=True
    )


def _kek(shared: bytes, protected: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=_kdf_context(protected)).derive(shared)


_RECIPIENT_PROTECTED = cbor2.dumps({_ALG: ECDH_ES_A256KW}, canonical=True)
_CONTENT_PROTECTED = cbor2.dumps({_ALG: A256CTR}, canonical=True)


def wrap_content_key(
    content: ContentKey,
    recipients: Sequence[X25519PublicKey],
    *,
    ephemeral: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
) -> bytes:
    """The key record: ``content`` wrapped to each of ``recipients`` (a
    ``COSE_Encrypt`` with detached ciphertext, one ECDH-ES + A256KW recipient
    each, a fresh ephemeral key for each)."""
    if not 1 <= len(recipients) <= _MAX_RECIPIENTS:
        raise ValueError(f"a key record has 1..{_MAX_RECIPIENTS} recipients")
    entries = []
    for public in recipients:
        private = ephemeral()
        kek = _kek(private.exchange(public), _RECIPIENT_PROTECTED)
        epk = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        unprotected = {
            _EPHEMERAL: {_KTY: _OKP, _CRV: _X25519, _X: epk},
            _KID: recipient_kid(public),
        }
        entries.append([_RECIPIENT_PROTECTED, unprotected, aes_key_wrap(kek, content.key)])
    record = [_CONTENT_PROTECTED, {_IV: content.iv}, None, entries]
    encoded: bytes = cbor2.dumps(cbor2.CBORTag(_COSE_ENCRYPT_TAG, record), canonical=True)
    return encoded


@dataclass(frozen=True, slots=True)
class _Recipient:
    kid: bytes
    ephemeral: bytes
    wrapped: bytes


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A decoded key record: the counter block and who can unwrap the key."""

    iv: bytes
    recipients: tuple[_Recipient, ...]

    @property
    def kids(self) -> tuple[bytes, ...]:
        return tuple(r.kid for r in self.recipients)


def _map(value: object, what: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise BadPacket(f"key record: {what} is not a map")
    return value


def _protected_alg(value: object, what: str) -> object:
    if not isinstance(value, bytes):
        raise BadPacket(f"key record: {what} protected header is not a byte string")
    try:
        return _map(cbor2.loads(value), what).get(_ALG)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError):
        raise BadPacket(f"key record: {what} protected header is not CBOR") from None


def decode_key_record_untrusted(data: bytes) -> KeyRecord:
    """A key record from its bytes; raises only ``BadPacket``."""
    if len(data) > 64 * 1024:
        raise BadPacket("key record: too large")
    try:
        value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError):
        raise BadPacket("key record: not CBOR") from None
    if not isinstance(value, cbor2.CBORTag) or value.tag != _COSE_ENCRYPT_TAG:
        raise BadPacket("key record: not a COSE_Encrypt (tag 96)")
    body = value.value
    if not isinstance(body, (list, tuple)) or len(body) != 4 or body[2] is not None:
        raise BadPacket("key record: a COSE_Encrypt of four items, the ciphertext detached")
    if _protected_alg(body[0], "content") != A256CTR:
        raise BadPacket("key record: the content algorithm is not A256CTR")
    iv = _map(body[1], "content unprotected header").get(_IV)
    if not isinstance(iv, bytes) or len(iv) != 16:
        raise BadPacket("key record: no 16-byte counter block")
    entries = body[3]
    if not isinstance(entries, (list, tuple)) or not 1 <= len(entries) <= _MAX_RECIPIENTS:
        raise BadPacket(f"key record: 1..{_MAX_RECIPIENTS} recipients")
    recipients = []
    for entry in entries:
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise BadPacket("key record: a recipient is [protected, unprotected, wrapped key]")
        if _protected_alg(entry[0], "recipient") != ECDH_ES_A256KW:
            raise BadPacket("key record: a recipient's algorithm is not ECDH-ES + A256KW")
        header = _map(entry[1], "recipient unprotected header")
        key = _map(header.get(_EPHEMERAL), "ephemeral key")
        epk, kid, wrapped = key.get(_X), header.get(_KID), entry[2]
        if (key.get(_KTY), key.get(_CRV)) != (_OKP, _X25519):
            raise BadPacket("key record: the ephemeral key is not an X25519 OKP key")
        if not isinstance(epk, bytes) or len(epk) != 32:
            raise BadPacket("key record: the ephemeral key is not 32 bytes")
        if not isinstance(kid, bytes) or not isinstance(wrapped, bytes) or len(wrapped) != 40:
            raise BadPacket("key record: a recipient needs a kid and a 40-byte wrapped key")
        recipients.append(_Recipient(kid, epk, wrapped))
    return KeyRecord(iv, tuple(recipients))


def unwrap_content_key_untrusted(data: bytes, private: X25519PrivateKey) -> ContentKey:
    """The content key in key record ``data`` for ``private``'s recipient;
    raises :class:`DecryptionError` when none is for it or it does not unwrap
    (``BadPacket`` when the record is malformed)."""
    record = decode_key_record_untrusted(data)
    kid = recipient_kid(private.public_key())
    for recipient in record.recipients:
        if not hmac.compare_digest(recipient.kid, kid):
            continue
        try:
            shared = private.exchange(X25519PublicKey.from_public_bytes(recipient.ephemeral))
            key = aes_key_unwrap(_kek(shared, _RECIPIENT_PROTECTED), recipient.wrapped)
        except (InvalidUnwrap, ValueError):
            raise DecryptionError("the content key does not unwrap with this key") from None
        return ContentKey(key, record.iv)
    raise DecryptionError(f"the key record has no recipient with key id {kid.hex()}")
