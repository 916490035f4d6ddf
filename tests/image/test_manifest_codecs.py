"""The COSE subset, the manifest and the trust root as bytes: Hypothesis
round trips through the ``*_untrusted`` decoders, and what they refuse."""

from __future__ import annotations

import hashlib
import uuid

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.image import (
    Algorithm,
    Dependency,
    ImageKind,
    ImageManifest,
    Party,
    PublicKey,
    SigningKey,
    TrustedKey,
    TrustRoot,
    decode_cose_key_untrusted,
    decode_cose_untrusted,
    decode_image_manifest_untrusted,
    decode_trust_root_untrusted,
    open_manifest_untrusted,
    sign_manifest,
)
from dofpy.image.cose import add_signature, sign_payload
from dofpy.transfer.manifest import ObjectHashes
from tests.image.signing_fixtures import key, make_manifest

KEYS = [key(seed, algorithm) for seed in range(1, 5) for algorithm in Algorithm]
IMAGES = [ObjectHashes.build(bytes([n]) * (n * 300 + 1), 64 << n).manifest for n in range(4)]
UINT64 = st.integers(0, (1 << 64) - 1)

uuids = st.builds(uuid.UUID, bytes=st.binary(min_size=16, max_size=16))
digests = st.binary(min_size=32, max_size=32)
cbor_values = st.one_of(
    st.integers(-(1 << 63), 1 << 63), st.binary(max_size=40), st.text(max_size=20)
)


@st.composite
def manifests(draw: st.DrawFn) -> ImageManifest:
    created = draw(st.integers(0, (1 << 64) - 2))
    classes = draw(st.lists(uuids, max_size=4, unique=True))
    return ImageManifest(
        vendor_id=draw(uuids),
        device_class=draw(uuids),
        version=draw(st.text(min_size=1, max_size=64)),
        sequence=draw(UINT64),
        created=created,
        expires=draw(st.integers(created + 1, (1 << 64) - 1)),
        image=draw(st.sampled_from(IMAGES)),
        kind=draw(st.sampled_from(ImageKind)),
        precursor=draw(st.none() | digests),
        min_sequence=draw(st.none() | UINT64),
        dependencies=tuple(Dependency(c, draw(UINT64)) for c in classes),
        encryption=draw(
            st.none() | st.dictionaries(st.integers(-50, 50), cbor_values, min_size=1, max_size=4)
        ),
    )


@settings(max_examples=200, deadline=None)
@given(manifests())
def test_a_manifest_round_trips(manifest: ImageManifest) -> None:
    payload = manifest.encode()
    assert decode_image_manifest_untrusted(payload) == manifest
    assert manifest.digest == hashlib.sha256(payload).digest()


@settings(max_examples=100, deadline=None)
@given(
    manifests(),
    st.lists(st.sampled_from(range(len(KEYS))), min_size=1, max_size=4, unique=True),
    st.sampled_from(Party),
    st.booleans(),
)
def test_a_signed_manifest_round_trips(
    manifest: ImageManifest, signers: list[int], party: Party, single: bool
) -> None:
    single = single and len(signers) == 1
    message = sign_manifest(manifest, KEYS[signers[0]], party, single=single)
    for index in signers[1:]:
        message = sign_manifest(message, KEYS[index], party)
    encoded = message.encode()
    decoded = decode_cose_untrusted(encoded)
    assert decoded == message and decoded.encode() == encoded
    assert open_manifest_untrusted(encoded) == (message, manifest)
    for signature, index in zip(decoded.signatures, signers, strict=True):
        assert decoded.verify(signature, KEYS[index].public_key)


@settings(max_examples=100, deadline=None)
@given(
    st.binary(max_size=300),
    st.sampled_from(range(len(KEYS))),
    st.dictionaries(st.integers(-100, -10), cbor_values, max_size=3),
    st.booleans(),
)
def test_any_payload_round_trips_through_cose(
    payload: bytes, index: int, headers: dict[int, object], single: bool
) -> None:
    message = sign_payload(
        payload, KEYS[index], content_type="application/test", headers=headers, single=single
    )
    assert decode_cose_untrusted(message.encode()) == message


@st.composite
def trust_roots(draw: st.DrawFn) -> TrustRoot:
    chosen = draw(st.lists(st.sampled_from(range(len(KEYS))), min_size=1, unique=True))
    keys = tuple(
        TrustedKey(draw(st.sampled_from(Party)), KEYS[i].public_key, draw(st.text(max_size=64)))
        for i in chosen
    )
    parties = sorted({k.party for k in keys})

    def policies() -> st.SearchStrategy[dict[Party, int]]:
        return st.lists(st.sampled_from(parties), min_size=1, unique=True).flatmap(
            lambda ps: st.fixed_dictionaries(
                {p: st.integers(1, sum(k.party is p for k in keys)) for p in ps}
            )
        )

    return TrustRoot(
        vendor_id=draw(uuids),
        version=draw(st.integers(1, (1 << 64) - 1)),
        expires=draw(UINT64),
        keys=keys,
        policy=draw(policies()),
        root_policy=draw(policies()),
        class_policies=draw(st.dictionaries(uuids, policies(), max_size=3)),
        removed=tuple(draw(st.lists(digests, max_size=3, unique=True))),
    )


@settings(max_examples=200, deadline=None)
@given(trust_roots())
def test_a_trust_root_round_trips(root: TrustRoot) -> None:
    assert decode_trust_root_untrusted(root.encode()) == root


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_a_cose_key_round_trips_and_the_kid_is_the_spki_hash(algorithm: Algorithm) -> None:
    signing = SigningKey.generate(algorithm)
    public = signing.public_key
    assert decode_cose_key_untrusted(cbor2.dumps(public.to_cose_key(), canonical=True)) == public
    spki = serialization.load_pem_public_key(public.to_pem()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )  # the documented derivation, recomputed
    assert public.kid == hashlib.sha256(spki).digest()
    assert PublicKey.from_pem(public.to_pem()) == public


def test_es256_signatures_are_raw_r_and_s() -> None:
    signer = key(9, Algorithm.ES256)
    signature = signer.sign(b"data")
    assert len(signature) == 64
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    verifier = serialization.load_pem_public_key(signer.public_key.to_pem())
    assert isinstance(verifier, ec.EllipticCurvePublicKey)
    verifier.verify(encode_dss_signature(r, s), b"data", ec.ECDSA(hashes.SHA256()))
    assert signer.public_key.verify(signature, b"data")
    assert not signer.public_key.verify(signature, b"Data")
    assert not signer.public_key.verify(signature[:63], b"data")


def test_a_private_key_survives_pem_with_and_without_a_passphrase() -> None:
    for algorithm in Algorithm:
        signer = SigningKey.generate(algorithm)
        assert SigningKey.from_pem(signer.to_pem()).kid == signer.kid
        locked = signer.to_pem(b"correct horse")
        assert b"ENCRYPTED" in locked
        assert SigningKey.from_pem(locked, b"correct horse").kid == signer.kid
        with pytest.raises(ValueError):
            SigningKey.from_pem(locked, b"wrong")
        with pytest.raises(ValueError):
            SigningKey.from_pem(locked)


# -- what the decoders refuse ------------------------------------------------------------


def _signed() -> bytes:
    return sign_manifest(make_manifest(), KEYS[0], Party.MANUFACTURER).encode()


def _body(encoded: bytes) -> list[object]:
    value = cbor2.loads(encoded)
    return [list(x) if isinstance(x, tuple) else x for x in value.value]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b"\xd3" + b[1:], "not a COSE_Sign1"),
        (lambda b: b + b"\x00", "trailing bytes"),
        (lambda b: b[:-1], "runs past the end"),
        (lambda b: b"\xd8\x62" + cbor2.dumps(_body(b)[:3]), "an array of 4 items"),
        (lambda b: b"\xd8\x62" + cbor2.dumps([*_body(b)[:3], []]), "1..64 signatures"),
        (lambda b: b"\xd8\x62" + cbor2.dumps([*_body(b)[:2], None, *_body(b)[3:]]), "detached"),
    ],
    ids=["tag", "trailing", "truncated", "short", "no-signatures", "detached"],
)
def test_the_cose_decoder_refuses(mutate: object, reason: str) -> None:
    with pytest.raises(BadPacket, match=reason):
        decode_cose_untrusted(mutate(_signed()))  # type: ignore[operator]


def _sign1_with(protected: dict[int, object], unprotected: dict[int, object]) -> bytes:
    body = [cbor2.dumps(protected, canonical=True), unprotected, b"payload", bytes(64)]
    return cbor2.dumps(cbor2.CBORTag(18, body), canonical=True)


def test_algorithm_and_key_id_must_be_protected_and_supported() -> None:
    kid = bytes(32)
    with pytest.raises(BadPacket, match="must be in the protected header"):
        decode_cose_untrusted(_sign1_with({4: kid}, {1: -8}))
    with pytest.raises(BadPacket, match="unsupported or missing algorithm -35"):
        decode_cose_untrusted(_sign1_with({1: -35, 4: kid}, {}))
    with pytest.raises(BadPacket, match="key id must be 32 bytes"):
        decode_cose_untrusted(_sign1_with({1: -8, 4: b"short"}, {}))
    with pytest.raises(BadPacket, match="critical header"):
        decode_cose_untrusted(_sign1_with({1: -8, 2: [-65537], 4: kid}, {}))
    assert decode_cose_untrusted(_sign1_with({1: -8, 4: kid}, {})).single


def test_a_non_canonical_encoding_is_refused() -> None:
    manifest_map = make_manifest().to_cbor_map()
    reordered = dict(sorted(manifest_map.items(), reverse=True))
    with pytest.raises(BadPacket, match="canonical"):
        decode_image_manifest_untrusted(cbor2.dumps(reordered))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({99: 1}, "unknown keys"),
        ({1: 2}, "format 2 is not 1"),
        ({2: b"short"}, "vendor id must be 16 bytes"),
        ({9: 7}, "unknown image kind 7"),
        ({7: 0}, "expires after it is created"),
        ({10: b"x"}, "precursor is a SHA-256"),
        ({12: []}, "dependencies must be a non-empty array"),
        ({12: [[bytes(16), 1], [bytes(16), 2]]}, "one entry per device class"),
        ({13: {"a": 1}}, "encryption is a map with integer keys"),
        ({5: -1}, "sequence must be an unsigned"),
        ({4: ""}, "version is a text"),
    ],
)
def test_the_manifest_decoder_refuses(change: dict[int, object], reason: str) -> None:
    value = {**make_manifest().to_cbor_map(), **change}
    with pytest.raises(BadPacket, match=reason):
        decode_image_manifest_untrusted(cbor2.dumps(value, canonical=True))


def test_the_manifest_decoder_needs_every_required_key() -> None:
    value = make_manifest().to_cbor_map()
    del value[8]
    with pytest.raises(BadPacket, match=r"missing keys \[8\]"):
        decode_image_manifest_untrusted(cbor2.dumps(value, canonical=True))


def test_the_trust_root_decoder_refuses_an_unmeetable_policy() -> None:
    root = TrustRoot(
        uuid.UUID(int=1),
        1,
        10,
        (TrustedKey(Party.MANUFACTURER, KEYS[0].public_key),),
        {Party.MANUFACTURER: 1},
        {Party.MANUFACTURER: 1},
    )
    value = root.to_cbor_map()
    value[7] = {1: 2}
    with pytest.raises(BadPacket, match="needs 2 manufacturer signatures"):
        decode_trust_root_untrusted(cbor2.dumps(value, canonical=True))
    value[7] = {9: 1}
    with pytest.raises(BadPacket, match="unknown party 9"):
        decode_trust_root_untrusted(cbor2.dumps(value, canonical=True))


def test_a_cose_key_that_is_not_on_the_curve_is_refused() -> None:
    bad = {1: 2, -1: 1, -2: bytes(32), -3: bytes(32)}
    with pytest.raises(BadPacket, match="COSE_Key"):
        decode_cose_key_untrusted(cbor2.dumps(bad, canonical=True))
    with pytest.raises(BadPacket, match="only OKP Ed25519 and EC2 P-256"):
        decode_cose_key_untrusted(cbor2.dumps({1: 1, -1: 4, -2: bytes(32)}, canonical=True))


def test_add_signature_keeps_the_payload_and_earlier_signatures() -> None:
    first = sign_payload(b"p", KEYS[0], content_type="t")
    second = add_signature(first, KEYS[1])
    assert second.payload == first.payload
    assert second.signatures[0] == first.signatures[0]
    assert second.verify(second.signatures[0], KEYS[0].public_key)
    assert second.verify(second.signatures[1], KEYS[1].public_key)
    assert not second.verify(second.signatures[1], KEYS[0].public_key)


def test_a_protected_header_in_another_label_order_is_kept_as_signed() -> None:
    kid = KEYS[0].kid
    # Labels 4 before 1: not canonical, but these bytes are what was signed.
    protected = b"\xa2\x04\x58\x20" + kid + b"\x01\x27"
    body = [protected, {}, b"payload", bytes(64)]
    encoded = cbor2.dumps(cbor2.CBORTag(18, body), canonical=True)
    message = decode_cose_untrusted(encoded)
    assert message.protected == protected and message.headers == {1: -8, 4: kid}
    assert message.encode() == encoded


def test_a_protected_header_repeating_a_label_is_refused() -> None:
    kid = KEYS[0].kid
    protected = b"\xa3\x01\x27\x04\x58\x20" + kid + b"\x01\x26"  # alg -8, then alg -7
    body = [protected, {}, b"payload", bytes(64)]
    with pytest.raises(BadPacket, match="Duplicate map key"):
        decode_cose_untrusted(cbor2.dumps(cbor2.CBORTag(18, body), canonical=True))
