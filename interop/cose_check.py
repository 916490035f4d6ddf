"""Interop check of our COSE manifests against pycose, a COSE implementation
we did not write (PyPI ``pycose``).

1. pycose verifies what dofpy signs: ``COSE_Sign1`` manifests (Ed25519 and
   ES256), a ``COSE_Sign`` manifest with three signatures of both
   algorithms, and a ``COSE_Sign`` trust root; each public key goes to
   pycose as the COSE_Key map dofpy writes in trust roots.
2. pycose refuses them once tampered: a payload byte changed, a signature
   byte changed, a signature's protected header changed (its party).
3. dofpy verifies what pycose signs: a ``COSE_Sign1`` and a ``COSE_Sign``
   manifest built by pycose (the ``COSE_Sign1``'s protected header in pycose's
   label order, not the canonical one), through
   :func:`dofpy.image.verify_manifest`.

pycose 1.1 decodes with cbor2, whose 6.x releases return tuples and
frozendicts inside tags where pycose expects lists and dicts; the check
therefore decodes the CBOR itself, converts those containers, and hands the
COSE structure to pycose's ``from_cose_obj``: the signature structure and
the verification remain pycose's.

``python -m interop.cose_check``; exit status 0 only when every check gives
the expected answer.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pycose.algorithms import EdDSA, Es256
from pycose.headers import KID
from pycose.headers import Algorithm as AlgorithmHeader
from pycose.keys import CoseKey, EC2Key, OKPKey
from pycose.messages import Sign1Message, SignMessage
from pycose.messages.signer import CoseSignature

from dofpy.image import (
    HEADER_PARTY,
    MANIFEST_CONTENT_TYPE,
    Algorithm,
    DeviceState,
    ImageManifest,
    ManifestRefused,
    Party,
    PublicKey,
    SigningKey,
    TrustedKey,
    TrustRoot,
    decode_cose_untrusted,
    sign_manifest,
    sign_trust_root,
    verify_manifest,
)
from dofpy.image.cose import CoseSigned
from dofpy.transfer.manifest import ObjectHashes

NOW = 1_800_000_000
VENDOR_TEXT = "6f1c0a4e-3b7d-4c2a-9e51-0d8f6a2b7c10"
CLASS_TEXT = "a3e1c9d0-5f4b-4e6a-8d2c-1b7f0e9a6c53"


def _plain(value: Any) -> Any:
    """cbor2 6's tuples and frozendicts as the lists and dicts pycose expects."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _pycose_key(public: PublicKey) -> Any:
    return CoseKey.from_dict(public.to_cose_key())


def pycose_verifies(encoded: bytes, public_keys: Sequence[PublicKey]) -> list[bool]:
    """pycose's verdict on each signature of ``encoded`` (our COSE bytes),
    with ``public_keys`` in signature order."""
    tagged = cbor2.loads(encoded)
    body = _plain(tagged.value)
    if tagged.tag == Sign1Message.cbor_tag:
        message = Sign1Message.from_cose_obj(body, True)
        (only,) = public_keys
        message.key = _pycose_key(only)
        return [_verdict(message.verify_signature)]
    signed = SignMessage.from_cose_obj(body, True)
    verdicts = []
    for signer, public in zip(signed.signers, public_keys, strict=True):
        signer.key = _pycose_key(public)
        verdicts.append(_verdict(signer.verify_signature))
    return verdicts


def _verdict(verify: Callable[[], bool]) -> bool:
    # pycose raises for some malformed signatures instead of returning False.
    try:
        return bool(verify())
    except Exception:
        return False


def _pycose_private(key: SigningKey) -> Any:
    private = serialization.load_pem_private_key(key.to_pem(), None)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return OKPKey(crv="ED25519", d=raw, x=key.public_key.raw)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    d = private.private_numbers().private_value.to_bytes(32, "big")
    point = key.public_key.raw
    return EC2Key(crv="P_256", d=d, x=point[1:33], y=point[33:])


def _pycose_algorithm(key: SigningKey) -> Any:
    return EdDSA if key.algorithm is Algorithm.EDDSA else Es256


def pycose_sign1(payload: bytes, key: SigningKey, party: Party) -> bytes:
    """A ``COSE_Sign1`` manifest signed by pycose."""
    # pycose's own label order (not canonical): dofpy keeps protected
    # headers as the bytes that were signed, so any order verifies.
    headers = {
        AlgorithmHeader: _pycose_algorithm(key),
        KID: key.kid,
        3: MANIFEST_CONTENT_TYPE,
        HEADER_PARTY: int(party),
    }
    message = Sign1Message(phdr=headers, payload=payload)
    message.key = _pycose_private(key)
    encoded: bytes = message.encode()
    return encoded


def pycose_sign(payload: bytes, signers: Sequence[tuple[SigningKey, Party]]) -> bytes:
    """A ``COSE_Sign`` manifest signed by pycose."""
    signatures = [
        CoseSignature(
            phdr={AlgorithmHeader: _pycose_algorithm(k), KID: k.kid, HEADER_PARTY: int(p)},
            key=_pycose_private(k),
        )
        for k, p in signers
    ]
    message = SignMessage(phdr={3: MANIFEST_CONTENT_TYPE}, payload=payload, signers=signatures)
    encoded: bytes = message.encode()
    return encoded


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    expected: object
    got: object

    @property
    def ok(self) -> bool:
        return self.expected == self.got


def _keys() -> dict[str, SigningKey]:
    return {
        "m1": SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)),
        "m2": SigningKey(ec.derive_private_key(20_002, ec.SECP256R1())),
        "sp": SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([3]) * 32)),
    }


def _tamper_payload(message: CoseSigned) -> bytes:
    payload = bytearray(message.payload)
    payload[-1] ^= 0x01
    return dataclasses.replace(message, payload=bytes(payload)).encode()


def _tamper_signature(message: CoseSigned) -> bytes:
    first = message.signatures[0]
    changed = bytes([first.signature[0] ^ 0x01]) + first.signature[1:]
    signature = dataclasses.replace(first, signature=changed)
    return dataclasses.replace(message, signatures=(signature, *message.signatures[1:])).encode()


def _tamper_party(message: CoseSigned) -> bytes:
    first = message.signatures[0]
    headers = {**first.headers, HEADER_PARTY: int(Party.OPERATOR)}
    protected = cbor2.dumps(headers, canonical=True)
    signature = dataclasses.replace(first, protected=protected, headers=headers)
    return dataclasses.replace(message, signatures=(signature, *message.signatures[1:])).encode()


def run_checks() -> list[Check]:
    """Every check of this module's docstring, with expected and actual answers."""
    keys = _keys()
    vendor, device_class = uuid.UUID(VENDOR_TEXT), uuid.UUID(CLASS_TEXT)
    image = ObjectHashes.build(bytes(range(256)) * 64, 1024).manifest
    manifest = ImageManifest(vendor, device_class, "2.4.1", 24, NOW - 86_400, NOW + 86_400, image)
    root = TrustRoot(
        vendor_id=vendor,
        version=1,
        expires=NOW + 365 * 86_400,
        keys=(
            TrustedKey(Party.MANUFACTURER, keys["m1"].public_key, "m1"),
            TrustedKey(Party.MANUFACTURER, keys["m2"].public_key, "m2"),
            TrustedKey(Party.SERVICE_PROVIDER, keys["sp"].public_key, "sp"),
        ),
        policy={Party.MANUFACTURER: 1},
        root_policy={Party.MANUFACTURER: 2},
    )
    checks: list[Check] = []

    for name in ("m1", "m2"):
        signed = sign_manifest(manifest, keys[name], Party.MANUFACTURER, single=True)
        label = f"COSE_Sign1 manifest, {keys[name].algorithm.label}"
        public = [keys[name].public_key]
        checks.append(
            Check(f"pycose verifies {label}", [True], pycose_verifies(signed.encode(), public))
        )
        for how, tamper in (("payload", _tamper_payload), ("signature", _tamper_signature)):
            checks.append(
                Check(
                    f"pycose refuses {label} with a changed {how}",
                    [False],
                    pycose_verifies(tamper(signed), public),
                )
            )

    signers = [(keys["m1"], Party.MANUFACTURER), (keys["m2"], Party.MANUFACTURER),
               (keys["sp"], Party.SERVICE_PROVIDER)]  # fmt: skip
    multi: ImageManifest | CoseSigned = manifest
    for key, party in signers:
        multi = sign_manifest(multi, key, party)
    assert isinstance(multi, CoseSigned)
    publics = [k.public_key for k, _ in signers]
    checks.append(
        Check(
            "pycose verifies a COSE_Sign manifest (Ed25519, ES256, Ed25519)",
            [True, True, True],
            pycose_verifies(multi.encode(), publics),
        )
    )
    checks.append(
        Check(
            "pycose refuses that COSE_Sign manifest with a changed payload",
            [False, False, False],
            pycose_verifies(_tamper_payload(multi), publics),
        )
    )
    checks.append(
        Check(
            "pycose refuses the first signature once its protected party header changed",
            [False, True, True],
            pycose_verifies(_tamper_party(multi), publics),
        )
    )

    signed_root = sign_trust_root(
        sign_trust_root(root, keys["m1"], Party.MANUFACTURER), keys["m2"], Party.MANUFACTURER
    )
    checks.append(
        Check(
            "pycose verifies a COSE_Sign trust root",
            [True, True],
            pycose_verifies(signed_root.encode(), publics[:2]),
        )
    )

    state = DeviceState(vendor, device_class, sequence=23)

    def ours(encoded: bytes) -> str:
        try:
            verified = verify_manifest(encoded, root, state, NOW)
        except ManifestRefused as exc:
            return f"refused: {type(exc).__name__}"
        return f"accepted, {verified.signed_by(Party.MANUFACTURER)} manufacturer signature(s)"

    by_pycose = pycose_sign1(manifest.encode(), keys["m2"], Party.MANUFACTURER)
    checks.append(
        Check(
            "dofpy verifies a COSE_Sign1 manifest signed by pycose (ES256)",
            "accepted, 1 manufacturer signature(s)",
            ours(by_pycose),
        )
    )
    decoded = decode_cose_untrusted(by_pycose)
    checks.append(
        Check(
            "dofpy refuses it with a changed payload",
            "refused: Tampered",
            ours(_tamper_payload(decoded)),
        )
    )
    by_pycose = pycose_sign(manifest.encode(), signers[:2])
    checks.append(
        Check(
            "dofpy verifies a COSE_Sign manifest signed by pycose (Ed25519, ES256)",
            "accepted, 2 manufacturer signature(s)",
            ours(by_pycose),
        )
    )
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.parse_args(argv)
    checks = run_checks()
    for check in checks:
        state = "ok  " if check.ok else "FAIL"
        detail = "" if check.ok else f" (expected {check.expected}, got {check.got})"
        print(f"{state} {check.name}{detail}")
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)} of {len(checks)} COSE interop checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
