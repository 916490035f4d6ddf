"""Interop check of our confidential images' key records against pycose, a
COSE implementation we did not write (PyPI ``pycose``).

A key record is a ``COSE_Encrypt`` (tag 96, ciphertext detached) whose
recipients are ECDH-ES + A256KW (RFC 9053 §6.3) over X25519; the content is
AES-256-CTR (RFC 9459). pycose 1.1 parses the recipients, builds the COSE KDF
context, derives the key-encryption key with HKDF-SHA-256 and unwraps with
AES key wrap; what it lacks is X25519 in its ECDH (it handles EC2 curves
only), so this check supplies that one primitive from ``cryptography`` and
leaves every COSE-specific step to pycose:

1. pycose unwraps, from a record dofpy wrote for two recipients, the content
   key for each of them, and AES-256-CTR with that key and the record's counter
   block (``cryptography``) gives back the image whose SHA-256 the encryption
   info names.
2. pycose refuses the record for a key it was not wrapped to, and a record
   whose wrapped key changed.
3. dofpy unwraps a recipient pycose wrapped (pycose's KDF context, key wrap and
   header encoding, in a record assembled around it).

``python -m interop.cose_key_record_check``; exit 0 only when every check
gives the expected answer.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from pycose import algorithms as pycose_algorithms
from pycose import headers
from pycose.keys import OKPKey
from pycose.keys.curves import X25519
from pycose.messages.recipient import CoseRecipient, KeyAgreementWithKeyWrap

from dofpy_services.image.encryption import (
    ContentKey,
    DecryptionError,
    recipient_kid,
    unwrap_content_key_untrusted,
    wrap_content_key,
)
from interop.cose_check import Check, _plain

_EC2_ECDH = pycose_algorithms.EcdhEsA256KW._ecdh  # pycose's own, for EC2 curves


def _ecdh_with_x25519(curve: Any, private_key: Any, public_key: Any) -> bytes:
    # The one primitive pycose 1.1 lacks for OKP keys; everything around it
    # (KDF context, HKDF, key wrap) stays pycose's, and EC2 curves keep its own.
    if getattr(curve, "fullname", None) != "X25519":
        shared: bytes = _EC2_ECDH(curve, private_key, public_key)
        return shared
    private = X25519PrivateKey.from_private_bytes(private_key.d)
    return private.exchange(X25519PublicKey.from_public_bytes(public_key.x))


def _with_x25519() -> Any:
    """pycose's ECDH-ES + A256KW algorithm with X25519 supplied."""
    algorithm = pycose_algorithms.EcdhEsA256KW
    algorithm._ecdh = classmethod(lambda cls, c, d, p: _ecdh_with_x25519(c, d, p))  # type: ignore[method-assign,assignment]
    return algorithm


def _okp(private: X25519PrivateKey) -> OKPKey:
    return OKPKey(
        crv=X25519,
        d=private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
        x=private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
    )


def pycose_unwrap(record: bytes, private: X25519PrivateKey) -> bytes | None:
    """The content key pycose unwraps from ``record`` for ``private`` (the
    recipient with its kid), or None when pycose refuses."""
    _with_x25519()
    body = _plain(cbor2.loads(record).value)
    kid = recipient_kid(private.public_key())
    for entry in body[3]:
        if entry[1].get(4) != kid:
            continue
        recipient = CoseRecipient.create_recipient(entry, False, context="Enc_Recipient")
        assert isinstance(recipient, KeyAgreementWithKeyWrap)
        recipient.key = _okp(private)
        try:
            return bytes(recipient.decrypt(pycose_algorithms.A256KW))
        except Exception:
            return None
    return None


def pycose_wrapped_record(content: ContentKey, recipient: X25519PublicKey) -> bytes:
    """A key record whose one recipient pycose wrapped (its ephemeral key made here)."""
    algorithm = _with_x25519()
    ephemeral = X25519PrivateKey.generate()
    message = KeyAgreementWithKeyWrap(
        phdr={headers.Algorithm: algorithm},
        uhdr={
            headers.EphemeralKey: {
                1: 1,  # kty OKP
                -1: 4,  # crv X25519
                -2: ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            },
            headers.KID: recipient_kid(recipient),
        },
        payload=content.key,
    )
    message.key = _okp(ephemeral)
    message.local_attrs = {headers.StaticKey: OKPKey(crv=X25519, x=_raw(recipient))}
    entry = message.encode()
    protected = cbor2.dumps({1: -65532}, canonical=True)  # A256CTR
    # pycose's own encoder hook turns its header classes and keys into COSE labels.
    encoded: bytes = cbor2.dumps(
        cbor2.CBORTag(96, [protected, {5: content.iv}, None, [entry]]),
        default=message._custom_cbor_encoder,
    )
    return encoded


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _ctr(content: ContentKey, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(content.key), modes.CTR(content.iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _tamper_wrapped(record: bytes) -> bytes:
    body = _plain(cbor2.loads(record).value)
    wrapped = bytearray(body[3][0][2])
    wrapped[0] ^= 1
    body[3][0][2] = bytes(wrapped)
    encoded: bytes = cbor2.dumps(cbor2.CBORTag(96, body), canonical=True)
    return encoded


def _dofpy_unwraps(record: bytes, private: X25519PrivateKey) -> bytes | str:
    try:
        return unwrap_content_key_untrusted(record, private).key
    except DecryptionError as exc:
        return f"refused: {exc}"


def run_checks() -> list[Check]:
    """Every check of this module's docstring, with expected and actual answers."""
    image = bytes(range(256)) * 40 + b"tail"
    content = ContentKey.generate()
    devices = [X25519PrivateKey.generate(), X25519PrivateKey.generate()]
    record = wrap_content_key(content, [device.public_key() for device in devices])
    ciphertext = content.apply([image])
    encrypted = b"".join(ciphertext)
    checks: list[Check] = []
    for index, device in enumerate(devices):
        key = pycose_unwrap(record, device)
        checks.append(
            Check(f"pycose unwraps dofpy's content key for recipient {index + 1}", content.key, key)
        )
        if key is not None:
            iv = _plain(cbor2.loads(record).value)[1][5]
            plaintext = _ctr(ContentKey(key, iv), encrypted)
            checks.append(
                Check(
                    f"AES-256-CTR with the key pycose unwrapped decrypts the image ({index + 1})",
                    hashlib.sha256(image).hexdigest(),
                    hashlib.sha256(plaintext).hexdigest(),
                )
            )
    stranger = X25519PrivateKey.generate()
    stranger_record = wrap_content_key(content, [stranger.public_key()])
    mislabelled = _plain(cbor2.loads(stranger_record).value)
    mislabelled[3][0][1][4] = recipient_kid(devices[0].public_key())
    checks.append(
        Check(
            "pycose refuses a record wrapped to another key",
            None,
            pycose_unwrap(cbor2.dumps(cbor2.CBORTag(96, mislabelled)), devices[0]),
        )
    )
    checks.append(
        Check(
            "pycose refuses a record whose wrapped key changed",
            None,
            pycose_unwrap(_tamper_wrapped(record), devices[0]),
        )
    )
    by_pycose = pycose_wrapped_record(content, devices[1].public_key())
    checks.append(
        Check(
            "dofpy unwraps a recipient pycose wrapped",
            content.key,
            _dofpy_unwraps(by_pycose, devices[1]),
        )
    )
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.parse_args(argv)
    checks = run_checks()
    for check in checks:
        state = "ok  " if check.ok else "FAIL"
        # Keys are secret in real use; these are throwaway test keys.
        detail = "" if check.ok else f" (expected {check.expected!r}, got {check.got!r})"
        print(f"{state} {check.name}{detail}")
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)} of {len(checks)} key-record interop checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
