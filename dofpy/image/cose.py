"""The small COSE subset (RFC 9052, RFC 9053) that signed manifests and trust
roots use: ``COSE_Sign1`` (CBOR tag 18) for one signer, ``COSE_Sign`` (tag 98)
for several, with two algorithms:

- ``EdDSA`` (alg -8) with Ed25519: 64-byte signatures;
- ``ES256`` (alg -7): ECDSA on P-256 with SHA-256, the signature the 64-byte
  fixed-width ``r || s`` of RFC 9053 section 2.1 (not DER), for devices
  without Ed25519.

Each signature's *protected* header carries its algorithm (label 1) and key id
(label 4), so neither can be swapped after signing, plus whatever the caller
adds (the signing party, :mod:`dofpy.image.trust`); the body's protected header
carries the content type (label 3), so a signature over one kind of document
(a manifest) never verifies as another (a trust root). External AAD is empty.

The key id (``kid``) is the SHA-256 of the public key's DER
SubjectPublicKeyInfo (RFC 5280): stable, the same for a key whatever file or
form it travels in, and computable by anyone holding the public key.

Encoding is canonical CBOR (``cbor2.dumps(canonical=True)``), and decoding
(:func:`decode_cose_untrusted`) accepts only that, through the same strict
scanner as OAP value lists (:mod:`dofpy.wire.values`), after the one tag.
Any other COSE implementation can verify what we sign (``make interop``
checks with pycose); we decode only our canonical form.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from dofpy.errors import BadPacket
from dofpy.wire.values import _decode_canonical, _decode_strict

__all__ = [
    "COSE_SIGN1_TAG",
    "COSE_SIGN_TAG",
    "HEADER_ALG",
    "HEADER_CONTENT_TYPE",
    "HEADER_CRIT",
    "HEADER_KID",
    "KID_SIZE",
    "Algorithm",
    "CoseSignature",
    "CoseSigned",
    "PublicKey",
    "SigningKey",
    "add_signature",
    "decode_cose_key_untrusted",
    "decode_cose_untrusted",
    "sign_payload",
]

COSE_SIGN1_TAG = 18
COSE_SIGN_TAG = 98

HEADER_ALG = 1
HEADER_CRIT = 2
HEADER_CONTENT_TYPE = 3
HEADER_KID = 4

KID_SIZE = 32

# COSE_Key (RFC 9052 section 7, RFC 9053 section 7): labels and values.
_KEY_KTY, _KEY_CRV, _KEY_X, _KEY_Y = 1, -1, -2, -3
_KTY_OKP, _KTY_EC2 = 1, 2
_CRV_P256, _CRV_ED25519 = 1, 6

_P256_COORDINATE = 32
_SIGNATURE_SIZE = 64

_TAG_PREFIX = {COSE_SIGN1_TAG: b"\xd2", COSE_SIGN_TAG: b"\xd8\x62"}


class Algorithm(IntEnum):
    """COSE signature algorithms (IANA COSE Algorithms registry)."""

    ES256 = -7
    """ECDSA with SHA-256 on P-256 (RFC 9053 section 2.1)."""
    EDDSA = -8
    """EdDSA; here always Ed25519 (RFC 9053 section 2.2)."""

    @property
    def label(self) -> str:
        return "Ed25519" if self is Algorithm.EDDSA else "ES256 (P-256)"


_ALGORITHMS = frozenset(int(a) for a in Algorithm)


def _canonical(value: object) -> bytes:
    encoded: bytes = cbor2.dumps(value, canonical=True)
    return encoded


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verification key: Ed25519 (``raw`` the 32-byte public key) or P-256
    (``raw`` the 65-byte uncompressed SEC1 point). Invalid keys (a point not
    on the curve) raise ``ValueError``."""

    algorithm: Algorithm
    raw: bytes
    _key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
        if self.algorithm is Algorithm.EDDSA:
            if len(self.raw) != 32:
                raise ValueError("an Ed25519 public key has 32 bytes")
            key = ed25519.Ed25519PublicKey.from_public_bytes(self.raw)
        elif self.algorithm is Algorithm.ES256:
            if len(self.raw) != 65 or self.raw[0] != 4:
                raise ValueError("a P-256 public key is a 65-byte uncompressed point")
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.raw)
        else:
            raise ValueError(f"unsupported algorithm {self.algorithm!r}")
        object.__setattr__(self, "_key", key)

    @classmethod
    def from_cryptography(
        cls, key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
    ) -> PublicKey:
        """From a ``cryptography`` public key (Ed25519 or P-256)."""
        if isinstance(key, ed25519.Ed25519PublicKey):
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return cls(Algorithm.EDDSA, raw)
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            raw = key.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            return cls(Algorithm.ES256, raw)
        raise ValueError("only Ed25519 and P-256 keys are supported")

    @classmethod
    def from_pem(cls, data: bytes) -> PublicKey:
        """From a PEM SubjectPublicKeyInfo (what ``dofpy image keygen`` writes
        to ``NAME.pub``); ``ValueError`` for anything else."""
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
            raise ValueError("only Ed25519 and P-256 keys are supported")
        return cls.from_cryptography(key)

    def to_pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def kid(self) -> bytes:
        """SHA-256 of the DER SubjectPublicKeyInfo: the COSE key id."""
        der = self._key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).digest()

    @property
    def fingerprint(self) -> str:
        """The first 8 bytes of :attr:`kid` in hex: how messages name a key."""
        return self.kid[:8].hex()

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` (COSE form: raw, 64 bytes) signs ``data``."""
        if len(signature) != _SIGNATURE_SIZE:
            return False
        try:
            if isinstance(self._key, ed25519.Ed25519PublicKey):
                self._key.verify(signature, data)
            else:
                r = int.from_bytes(signature[:32], "big")
                s = int.from_bytes(signature[32:], "big")
                der = encode_dss_signature(r, s)
                self._key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    def to_cose_key(self) -> dict[int, Any]:
        """The COSE_Key map (RFC 9052 section 7): OKP/Ed25519 or EC2/P-256."""
        if self.algorithm is Algorithm.EDDSA:
            return {_KEY_KTY: _KTY_OKP, _KEY_CRV: _CRV_ED25519, _KEY_X: self.raw}
        return {
            _KEY_KTY: _KTY_EC2,
            _KEY_CRV: _CRV_P256,
            _KEY_X: self.raw[1:33],
            _KEY_Y: self.raw[33:],
        }

    @classmethod
    def from_cose_key(cls, value: object) -> PublicKey:
        """Inverse of :meth:`to_cose_key`; raises ``BadPacket``."""
        if not isinstance(value, dict):
            raise BadPacket("COSE_Key: expected a map")
        kty, crv = value.get(_KEY_KTY), value.get(_KEY_CRV)
        if type(kty) is not int or type(crv) is not int:  # CBOR true == 1 in Python
            raise BadPacket("COSE_Key: kty and crv must be integers")
        try:
            if kty == _KTY_OKP and crv == _CRV_ED25519 and set(value) == {1, -1, -2}:
                x = value[_KEY_X]
                if isinstance(x, bytes):
                    return cls(Algorithm.EDDSA, x)
            elif kty == _KTY_EC2 and crv == _CRV_P256 and set(value) == {1, -1, -2, -3}:
                x, y = value[_KEY_X], value[_KEY_Y]
                if (
                    isinstance(x, bytes)
                    and isinstance(y, bytes)
                    and len(x) == len(y) == _P256_COORDINATE
                ):
                    return cls(Algorithm.ES256, b"\x04" + x + y)
        except ValueError as exc:
            raise BadPacket(f"COSE_Key: {exc}") from None
        raise BadPacket("COSE_Key: only OKP Ed25519 and EC2 P-256 public keys are supported")


def decode_cose_key_untrusted(data: bytes) -> PublicKey:
    """A public key from its COSE_Key bytes (canonical CBOR); raises only ``BadPacket``."""
    return PublicKey.from_cose_key(_decode_canonical(bytes(data), "COSE_Key"))


class SigningKey:
    """A private key that signs COSE messages: Ed25519 or P-256.

    Key generation and ECDSA signing draw on the operating system's random
    source (through OpenSSL): signing is an offline, operator-side act, not
    part of the deterministic protocol core.
    """

    __slots__ = ("_key", "public_key")

    def __init__(self, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> None:
        if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("only P-256 ECDSA keys are supported")
        if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError("only Ed25519 and P-256 keys are supported")
        self._key = key
        self.public_key = PublicKey.from_cryptography(key.public_key())

    @classmethod
    def generate(cls, algorithm: Algorithm = Algorithm.EDDSA) -> SigningKey:
        if algorithm is Algorithm.EDDSA:
            return cls(ed25519.Ed25519PrivateKey.generate())
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def algorithm(self) -> Algorithm:
        return self.public_key.algorithm

    @property
    def kid(self) -> bytes:
        return self.public_key.kid

    def sign(self, data: bytes) -> bytes:
        """The COSE signature of ``data``: 64 bytes (ES256: ``r || s``)."""
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        """PEM PKCS#8, encrypted with ``passphrase`` when one is given
        (``BestAvailableEncryption``)."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None = None) -> SigningKey:
        """From PEM PKCS#8; ``ValueError`` for a wrong passphrase or another key type."""
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except TypeError as exc:  # encrypted without a passphrase, or the reverse
            raise ValueError(str(exc)) from None
        if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError("only Ed25519 and P-256 private keys are supported")
        return cls(key)


@dataclass(frozen=True, slots=True)
class CoseSignature:
    """One signature: its protected header as signed (the serialized bytes),
    that header decoded, its unprotected header, and the signature bytes.
    In a ``COSE_Sign1`` message the protected header is the body's."""

    protected: bytes
    headers: Mapping[int, Any]
    unprotected: Mapping[int, Any]
    signature: bytes

    @property
    def algorithm(self) -> Algorithm:
        return Algorithm(self.headers[HEADER_ALG])

    @property
    def kid(self) -> bytes:
        kid: bytes = self.headers[HEADER_KID]
        return kid


@dataclass(frozen=True, slots=True)
class CoseSigned:
    """A ``COSE_Sign1`` (``single``) or ``COSE_Sign`` message.

    ``protected`` is the body's serialized protected header (for
    ``COSE_Sign1`` it also holds the signer's algorithm and key id);
    ``payload`` the signed bytes; ``signatures`` one (``COSE_Sign1``) or more.
    """

    protected: bytes
    headers: Mapping[int, Any]
    unprotected: Mapping[int, Any]
    payload: bytes
    signatures: tuple[CoseSignature, ...]
    single: bool

    @property
    def content_type(self) -> str | int | None:
        value: str | int | None = self.headers.get(HEADER_CONTENT_TYPE)
        return value

    def to_be_signed(self, signature: CoseSignature) -> bytes:
        """The ``Sig_structure`` (RFC 9052 section 4.4) ``signature`` covers."""
        if self.single:
            return _canonical(["Signature1", self.protected, b"", self.payload])
        return _canonical(["Signature", self.protected, signature.protected, b"", self.payload])

    def verify(self, signature: CoseSignature, key: PublicKey) -> bool:
        """Whether ``signature`` is ``key``'s over this message (its algorithm
        must be ``key``'s too)."""
        if signature.headers.get(HEADER_ALG) != key.algorithm:
            return False
        return key.verify(signature.signature, self.to_be_signed(signature))

    def encode(self) -> bytes:
        """The tagged message, canonical CBOR."""
        if self.single:
            (only,) = self.signatures
            body: list[Any] = [self.protected, dict(self.unprotected), self.payload, only.signature]
            return _canonical(cbor2.CBORTag(COSE_SIGN1_TAG, body))
        entries = [[s.protected, dict(s.unprotected), s.signature] for s in self.signatures]
        body = [self.protected, dict(self.unprotected), self.payload, entries]
        return _canonical(cbor2.CBORTag(COSE_SIGN_TAG, body))


def _protected(headers: Mapping[int, Any]) -> bytes:
    # RFC 9052 section 3: an empty protected header is the empty byte string.
    return _canonical(dict(headers)) if headers else b""


def sign_payload(
    payload: bytes,
    key: SigningKey,
    *,
    content_type: str,
    headers: Mapping[int, Any] | None = None,
    single: bool = False,
) -> CoseSigned:
    """Sign ``payload`` with ``key``: a ``COSE_Sign1`` when ``single`` (no
    further signature can be added), else a ``COSE_Sign`` with one signature.
    ``headers`` go into the signature's protected header, beside the
    algorithm and key id."""
    signer = {**(headers or {}), HEADER_ALG: int(key.algorithm), HEADER_KID: key.kid}
    if single:
        body_headers = {HEADER_CONTENT_TYPE: content_type, **signer}
        protected = _protected(body_headers)
        draft = CoseSignature(protected, body_headers, {}, b"")
        message = CoseSigned(protected, body_headers, {}, bytes(payload), (draft,), True)
        signature = CoseSignature(
            protected, body_headers, {}, key.sign(message.to_be_signed(draft))
        )
        return CoseSigned(protected, body_headers, {}, bytes(payload), (signature,), True)
    body_headers = {HEADER_CONTENT_TYPE: content_type}
    message = CoseSigned(_protected(body_headers), body_headers, {}, bytes(payload), (), False)
    return add_signature(message, key, headers=headers)


def add_signature(
    message: CoseSigned, key: SigningKey, *, headers: Mapping[int, Any] | None = None
) -> CoseSigned:
    """``message`` (a ``COSE_Sign``) with one more signature, by ``key``; the
    payload and the other signatures are unchanged. ``ValueError`` for a
    ``COSE_Sign1`` (its one signature covers a structure that has no room for
    another) or a key that already signed."""
    if message.single:
        raise ValueError(
            "a COSE_Sign1 message has exactly one signer; sign the unsigned payload "
            "as a COSE_Sign to collect several signatures"
        )
    if any(s.headers.get(HEADER_KID) == key.kid for s in message.signatures):
        raise ValueError(f"key {key.public_key.fingerprint} already signed this message")
    signer = {**(headers or {}), HEADER_ALG: int(key.algorithm), HEADER_KID: key.kid}
    protected = _protected(signer)
    draft = CoseSignature(protected, signer, {}, b"")
    signature = CoseSignature(protected, signer, {}, key.sign(message.to_be_signed(draft)))
    return CoseSigned(
        message.protected,
        message.headers,
        message.unprotected,
        message.payload,
        (*message.signatures, signature),
        False,
    )


def _header_map(value: object, what: str) -> dict[int, Any]:
    if not isinstance(value, dict) or not all(type(k) is int for k in value):
        raise BadPacket(f"COSE {what} header: expected a map with integer labels")
    return value


def _protected_header(value: object, what: str) -> dict[int, Any]:
    if not isinstance(value, bytes):
        raise BadPacket(f"COSE {what} protected header: expected a byte string")
    if not value:
        return {}
    # Signed as these very bytes: another tool's label order is accepted
    # (they are never re-encoded), a repeated label is not.
    headers = _header_map(_decode_strict(value, f"COSE {what} protected header"), what)
    if not headers:
        raise BadPacket(f"COSE {what} protected header: an empty map must be sent as h''")
    return headers


def _signer_headers(headers: Mapping[int, Any], unprotected: Mapping[int, Any]) -> None:
    # We understand no critical extension; algorithm and key id must be
    # protected, so that neither can change after signing.
    if HEADER_CRIT in headers or HEADER_CRIT in unprotected:
        raise BadPacket("COSE: critical header parameters are not supported")
    if HEADER_ALG in unprotected or HEADER_KID in unprotected:
        raise BadPacket("COSE: algorithm and key id must be in the protected header")
    alg, kid = headers.get(HEADER_ALG), headers.get(HEADER_KID)
    if type(alg) is not int or alg not in _ALGORITHMS:
        raise BadPacket(f"COSE: unsupported or missing algorithm {alg!r} (need -7 or -8)")
    if not isinstance(kid, bytes) or len(kid) != KID_SIZE:
        raise BadPacket("COSE: a signature's key id must be 32 bytes (SHA-256 of the key)")


def _signature_bytes(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != _SIGNATURE_SIZE:
        raise BadPacket("COSE: a signature must be 64 bytes")
    return value


MAX_SIGNATURES = 64
"""Signatures a message may carry (a trust root lists far fewer keys)."""


def decode_cose_untrusted(data: bytes) -> CoseSigned:
    """A ``COSE_Sign1`` or ``COSE_Sign`` message (tagged, canonical CBOR) from
    untrusted bytes; raises only ``BadPacket``. Signatures are *not* checked
    here (that needs the trust root: :mod:`dofpy.image.trust`)."""
    raw = bytes(data)
    tagged = [(tag, prefix) for tag, prefix in _TAG_PREFIX.items() if raw.startswith(prefix)]
    if not tagged:
        raise BadPacket("not a COSE_Sign1 (tag 18) or COSE_Sign (tag 98) message")
    ((tag, prefix),) = tagged
    body = _decode_canonical(raw[len(prefix) :], "COSE message")
    if not isinstance(body, list) or len(body) != 4:
        raise BadPacket("COSE message: expected an array of 4 items")
    protected_raw, unprotected_raw, payload, last = body
    headers = _protected_header(protected_raw, "body")
    unprotected = _header_map(unprotected_raw, "body unprotected")
    if not isinstance(payload, bytes):
        raise BadPacket("COSE message: a detached or non-byte-string payload is not supported")
    if tag == COSE_SIGN1_TAG:
        _signer_headers(headers, unprotected)
        signature = CoseSignature(protected_raw, headers, unprotected, _signature_bytes(last))
        return CoseSigned(protected_raw, headers, unprotected, payload, (signature,), True)
    if HEADER_CRIT in headers or HEADER_CRIT in unprotected:
        raise BadPacket("COSE: critical header parameters are not supported")
    if not isinstance(last, list) or not 1 <= len(last) <= MAX_SIGNATURES:
        raise BadPacket(f"COSE_Sign: expected 1..{MAX_SIGNATURES} signatures")
    signatures = []
    for entry in last:
        if not isinstance(entry, list) or len(entry) != 3:
            raise BadPacket("COSE_Signature: expected an array of 3 items")
        sig_protected = _protected_header(entry[0], "signature")
        sig_unprotected = _header_map(entry[1], "signature unprotected")
        _signer_headers(sig_protected, sig_unprotected)
        signatures.append(
            CoseSignature(entry[0], sig_protected, sig_unprotected, _signature_bytes(entry[2]))
        )
    return CoseSigned(protected_raw, headers, unprotected, payload, tuple(signatures), False)
