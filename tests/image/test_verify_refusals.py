"""Device-side verification: each refusal of issue 10's Build 2 with its own
error type and a message naming versions, dates, parties and counts."""

from __future__ import annotations

import dataclasses
import hashlib

import cbor2
import pytest

from dofpy.errors import BadPacket, DofError
from dofpy.image import (
    HEADER_PARTY,
    Algorithm,
    BelowThreshold,
    CoseSigned,
    Dependency,
    Expired,
    ImageCheck,
    ImageKind,
    ImageMismatch,
    Malformed,
    ManifestRefused,
    Party,
    PrecursorMismatch,
    RemovedKey,
    Rollback,
    SignatureOutcome,
    Tampered,
    TooMuchData,
    UnknownKey,
    UnmetDependency,
    UnmetMinimumVersion,
    WrongClass,
    WrongVendor,
    decode_cose_untrusted,
    sign_manifest,
    verify_manifest,
)
from dofpy.image.cose import CoseSignature
from tests.image.signing_fixtures import (
    BOOTLOADER_CLASS,
    DAY,
    IMAGE,
    NOW,
    OTHER_CLASS,
    OTHER_VENDOR,
    Keys,
    device,
    fully_signed,
    make_manifest,
    make_root,
    sign,
    sign_root,
)

ALGORITHMS = [Algorithm.EDDSA, Algorithm.ES256]


@pytest.fixture(params=ALGORITHMS, ids=["ed25519", "es256"])
def keys(request: pytest.FixtureRequest) -> Keys:
    return Keys.make(request.param)


def test_a_fully_signed_manifest_is_accepted(keys: Keys) -> None:
    root = make_root(keys)
    verified = verify_manifest(fully_signed(keys), root, device(), NOW)
    assert verified.manifest == make_manifest()
    assert verified.digest == hashlib.sha256(make_manifest().encode()).digest()
    assert verified.signed_by(Party.MANUFACTURER) == 2
    assert verified.signed_by(Party.SERVICE_PROVIDER) == 1
    assert verified.report.met


def test_a_single_signer_cose_sign1_is_accepted_when_the_policy_needs_one(keys: Keys) -> None:
    root = make_root(keys, policy={Party.MANUFACTURER: 1})
    signed = sign_manifest(make_manifest(), keys.m3, Party.MANUFACTURER, single=True)
    assert signed.single and signed.encode()[0] == 0xD2  # tag 18
    assert verify_manifest(signed.encode(), root, device(), NOW).signed_by(Party.MANUFACTURER) == 1


def test_rollback_to_an_older_sequence_is_refused(keys: Keys) -> None:
    with pytest.raises(Rollback) as refused:
        verify_manifest(fully_signed(keys), make_root(keys), device(sequence=30), NOW)
    assert refused.value.offered == 24 and refused.value.installed == 30
    assert str(refused.value) == (
        "manifest 2.4.1 (sequence 24) is not newer than what the device runs (sequence 30): "
        "a rollback is refused"
    )


def test_reinstalling_the_same_sequence_is_a_rollback_too(keys: Keys) -> None:
    with pytest.raises(Rollback, match=r"sequence 24\) is not newer .*\(sequence 24\)"):
        verify_manifest(fully_signed(keys), make_root(keys), device(sequence=24), NOW)


def test_an_expired_manifest_is_refused(keys: Keys) -> None:
    manifest = make_manifest(created=NOW - 40 * DAY, expires=NOW - 10 * DAY)
    with pytest.raises(Expired) as refused:
        verify_manifest(fully_signed(keys, manifest), make_root(keys), device(), NOW)
    assert refused.value.expires == NOW - 10 * DAY
    assert str(refused.value) == (
        "manifest 2.4.1 (sequence 24) expired at 2027-01-05 08:00:00 UTC "
        "(now 2027-01-15 08:00:00 UTC): publish and sign a fresh manifest"
    )


def test_a_manifest_expiring_at_this_very_second_is_expired(keys: Keys) -> None:
    manifest = make_manifest(expires=NOW)
    with pytest.raises(Expired):
        verify_manifest(fully_signed(keys, manifest), make_root(keys), device(), NOW)
    verify_manifest(fully_signed(keys, manifest), make_root(keys), device(), NOW - 1)


def test_an_expired_trust_root_refuses_everything(keys: Keys) -> None:
    root = make_root(keys, expires=NOW - DAY)
    with pytest.raises(Expired, match=r"trust root \(version 1\) expired at 2027-01-14"):
        verify_manifest(fully_signed(keys), root, device(), NOW)


def test_a_manifest_for_another_vendor_is_refused(keys: Keys) -> None:
    manifest = make_manifest(vendor_id=OTHER_VENDOR)
    with pytest.raises(WrongVendor) as refused:
        verify_manifest(fully_signed(keys, manifest), make_root(keys), device(), NOW)
    assert str(refused.value) == (
        f"manifest 2.4.1 (sequence 24) is for vendor {OTHER_VENDOR}, but the device is vendor "
        f"{device().vendor_id}'s"
    )


def test_another_vendors_trust_root_is_refused(keys: Keys) -> None:
    root = make_root(keys, vendor_id=OTHER_VENDOR)
    with pytest.raises(WrongVendor, match=f"trust root is vendor {OTHER_VENDOR}'s"):
        verify_manifest(fully_signed(keys), root, device(), NOW)


def test_a_manifest_for_another_device_class_is_refused(keys: Keys) -> None:
    manifest = make_manifest(device_class=OTHER_CLASS)
    with pytest.raises(WrongClass) as refused:
        verify_manifest(fully_signed(keys, manifest), make_root(keys), device(), NOW)
    assert str(refused.value) == (
        f"manifest 2.4.1 (sequence 24) is for device class {OTHER_CLASS}, but the device is "
        f"of class {device().device_class}"
    )


def _with_payload(signed: bytes, payload: bytes) -> bytes:
    message = decode_cose_untrusted(signed)
    return dataclasses.replace(message, payload=payload).encode()


def test_a_payload_changed_after_signing_is_tampered(keys: Keys) -> None:
    # Mix-and-match: the signatures of release 24 on the fields of a release 99.
    forged = _with_payload(fully_signed(keys), make_manifest(sequence=99).encode())
    with pytest.raises(Tampered) as refused:
        verify_manifest(forged, make_root(keys), device(), NOW)
    message = str(refused.value)
    assert message.startswith("manifest checked with trust root version 1: signatures by ")
    assert "manufacturer key " + keys.m1.public_key.fingerprint + " (m1)" in message
    assert "service-provider key " + keys.sp.public_key.fingerprint + " (sp)" in message
    assert message.endswith(
        "do not verify: the document changed after it was signed (manufacturer has 0 valid "
        "signatures of the 2 needed; service-provider has 0 valid signatures of the 1 needed)"
    )


def test_a_signature_moved_to_another_manifest_is_tampered(keys: Keys) -> None:
    release = decode_cose_untrusted(fully_signed(keys))
    other = decode_cose_untrusted(fully_signed(keys, make_manifest(version="9.9", sequence=99)))
    # release's payload, but the signatures made over the other manifest.
    pasted = dataclasses.replace(release, signatures=other.signatures).encode()
    with pytest.raises(Tampered):
        verify_manifest(pasted, make_root(keys), device(), NOW)


def test_a_protected_header_changed_after_signing_is_tampered(keys: Keys) -> None:
    message = decode_cose_untrusted(fully_signed(keys))
    first = message.signatures[0]
    # The manufacturer's signature re-labelled as the service provider's.
    headers = {**first.headers, HEADER_PARTY: int(Party.SERVICE_PROVIDER)}
    relabelled = CoseSignature(cbor2.dumps(headers, canonical=True), headers, {}, first.signature)
    changed = dataclasses.replace(message, signatures=(relabelled, *message.signatures[1:]))
    with pytest.raises(Tampered, match="m1"):
        verify_manifest(changed.encode(), make_root(keys), device(), NOW)


def test_no_single_byte_change_of_a_signed_manifest_is_accepted(keys: Keys) -> None:
    signed = fully_signed(keys)
    root = make_root(keys)
    seen: set[type[ManifestRefused]] = set()
    for position in range(len(signed)):
        changed = bytearray(signed)
        changed[position] ^= 0x01
        with pytest.raises(ManifestRefused) as refused:
            verify_manifest(bytes(changed), root, device(), NOW)
        seen.add(type(refused.value))
    # Structure bytes make it malformed, payload and signature bytes tampered,
    # key-id bytes an unknown key.
    assert seen <= {Malformed, Tampered, UnknownKey, BelowThreshold}
    assert {Malformed, Tampered, UnknownKey} <= seen


def test_too_few_manufacturer_signatures_are_below_threshold(keys: Keys) -> None:
    signed = sign(make_manifest(), (keys.m1, Party.MANUFACTURER), (keys.sp, Party.SERVICE_PROVIDER))
    with pytest.raises(BelowThreshold) as refused:
        verify_manifest(signed, make_root(keys), device(), NOW)
    assert type(refused.value) is BelowThreshold
    assert refused.value.party is Party.MANUFACTURER
    assert (refused.value.valid, refused.value.needed) == (1, 2)
    assert str(refused.value) == (
        "manifest checked with trust root version 1: below threshold: manufacturer has "
        "1 valid signature of the 2 needed"
    )


def test_a_missing_party_is_below_threshold_even_with_every_manufacturer_key(keys: Keys) -> None:
    signed = sign(
        make_manifest(),
        (keys.m1, Party.MANUFACTURER),
        (keys.m2, Party.MANUFACTURER),
        (keys.m3, Party.MANUFACTURER),
    )
    with pytest.raises(BelowThreshold) as refused:
        verify_manifest(signed, make_root(keys), device(), NOW)
    assert refused.value.party is Party.SERVICE_PROVIDER
    assert "service-provider has 0 valid signatures of the 1 needed" in str(refused.value)


def test_a_key_nobody_listed_counts_for_nothing(keys: Keys) -> None:
    signed = sign(
        make_manifest(),
        (keys.m1, Party.MANUFACTURER),
        (keys.outsider, Party.MANUFACTURER),
        (keys.sp, Party.SERVICE_PROVIDER),
    )
    with pytest.raises(UnknownKey) as refused:
        verify_manifest(signed, make_root(keys), device(), NOW)
    assert str(refused.value) == (
        "manifest checked with trust root version 1: signed by key "
        f"{keys.outsider.public_key.fingerprint} that the trust root does not list, which "
        "count for nothing (manufacturer has 1 valid signature of the 2 needed)"
    )


def test_a_removed_key_counts_for_nothing(keys: Keys) -> None:
    root = make_root(keys).next_version().without_key(keys.m2.kid)
    signed = fully_signed(keys)  # m1, m2 (removed), sp
    with pytest.raises(RemovedKey) as refused:
        verify_manifest(signed, root, device(), NOW)
    assert str(refused.value) == (
        "manifest checked with trust root version 2: signed by removed key "
        f"{keys.m2.public_key.fingerprint}, which count for nothing (manufacturer has 1 valid "
        "signature of the 2 needed)"
    )
    assert (refused.value.valid, refused.value.needed) == (1, 2)


def test_a_delta_for_another_precursor_is_refused(keys: Keys) -> None:
    base = hashlib.sha256(b"image 2.3").digest()
    manifest = make_manifest(precursor=base)
    signed = fully_signed(keys, manifest)
    running = hashlib.sha256(b"image 2.2").digest()
    with pytest.raises(PrecursorMismatch) as refused:
        verify_manifest(signed, make_root(keys), device(image_digest=running), NOW)
    assert str(refused.value) == (
        f"manifest 2.4.1 (sequence 24) is a delta over image {base.hex()[:16]}, but the device "
        f"runs image {running.hex()[:16]}"
    )
    with pytest.raises(PrecursorMismatch, match="runs image unknown"):
        verify_manifest(signed, make_root(keys), device(), NOW)
    verified = verify_manifest(signed, make_root(keys), device(image_digest=base), NOW)
    assert verified.manifest.precursor == base


def test_a_minimum_installed_version_is_enforced(keys: Keys) -> None:
    signed = fully_signed(keys, make_manifest(min_sequence=20))
    with pytest.raises(UnmetMinimumVersion) as refused:
        verify_manifest(signed, make_root(keys), device(sequence=12), NOW)
    assert str(refused.value) == (
        "manifest 2.4.1 (sequence 24) installs only over sequence 20 or later; the device runs "
        "sequence 12: install the intermediate release first"
    )
    verify_manifest(signed, make_root(keys), device(sequence=20), NOW)


def test_a_dependency_on_another_component_is_enforced(keys: Keys) -> None:
    manifest = make_manifest(dependencies=(Dependency(BOOTLOADER_CLASS, 3),))
    signed = fully_signed(keys, manifest)
    with pytest.raises(UnmetDependency, match="the device has none"):
        verify_manifest(signed, make_root(keys), device(), NOW)
    with pytest.raises(UnmetDependency) as refused:
        verify_manifest(signed, make_root(keys), device(components={BOOTLOADER_CLASS: 2}), NOW)
    assert str(refused.value) == (
        f"manifest 2.4.1 (sequence 24) needs component class {BOOTLOADER_CLASS} at sequence 3 "
        "or later; the device has sequence 2"
    )
    verify_manifest(signed, make_root(keys), device(components={BOOTLOADER_CLASS: 3}), NOW)


def test_more_image_bytes_than_declared_are_refused(keys: Keys) -> None:
    verified = verify_manifest(fully_signed(keys), make_root(keys), device(), NOW)
    check = ImageCheck(verified.manifest)
    check.update(IMAGE)
    with pytest.raises(TooMuchData) as refused:
        check.update(b"!")
    assert str(refused.value) == (
        f"image 2.4.1 (sequence 24) declares {len(IMAGE)} bytes, but more arrived "
        f"({len(IMAGE) + 1} so far): the rest is refused"
    )
    assert check.received == len(IMAGE)  # the extra byte was not taken
    check.finish()


def test_an_endless_stream_is_cut_at_the_declared_size() -> None:
    check = ImageCheck(make_manifest())
    piece = b"\x00" * 1000
    with pytest.raises(TooMuchData):
        for _ in range(len(IMAGE) // len(piece) + 2):  # bounded: more than the image holds
            check.update(piece)
    assert check.received <= len(IMAGE)


def test_an_image_that_is_not_the_signed_one_is_refused() -> None:
    short = ImageCheck(make_manifest())
    short.update(IMAGE[:-1])
    with pytest.raises(ImageMismatch, match=f"{len(IMAGE) - 1} bytes arrived of the {len(IMAGE)}"):
        short.finish()
    other = ImageCheck(make_manifest())
    other.update(IMAGE[:-1] + b"X")
    with pytest.raises(ImageMismatch, match="is not the signed"):
        other.finish()


def test_bytes_that_are_not_a_manifest_are_malformed(keys: Keys) -> None:
    root = make_root(keys)
    with pytest.raises(Malformed, match="not a signed manifest"):
        verify_manifest(b"\xa0", root, device(), NOW)
    # A trust root signed by the same keys is not a manifest.
    signed_root = sign_root(root, (keys.m1, Party.MANUFACTURER), (keys.m2, Party.MANUFACTURER))
    with pytest.raises(Malformed, match=r"its content type is 'application/vnd\.dofpy\.trust-root"):
        verify_manifest(signed_root, root, device(), NOW)


def test_malformed_is_a_bad_packet_and_every_refusal_a_manifest_refused() -> None:
    assert issubclass(Malformed, BadPacket)
    for refusal in (
        Rollback,
        Expired,
        WrongVendor,
        WrongClass,
        Tampered,
        BelowThreshold,
        UnknownKey,
        RemovedKey,
        PrecursorMismatch,
        TooMuchData,
        ImageMismatch,
        UnmetDependency,
        UnmetMinimumVersion,
        Malformed,
    ):
        assert issubclass(refusal, ManifestRefused) and issubclass(refusal, DofError)


def test_the_thresholds_of_the_devices_class_apply(keys: Keys) -> None:
    # Class OTHER_CLASS needs the operator's signature as well.
    root = make_root(
        keys,
        class_policies={OTHER_CLASS: {Party.MANUFACTURER: 1, Party.OPERATOR: 1}},
    )
    manifest = make_manifest(device_class=OTHER_CLASS)
    signed = fully_signed(keys, manifest)
    with pytest.raises(BelowThreshold, match="operator has 0 valid signatures of the 1 needed"):
        verify_manifest(signed, root, device(device_class=OTHER_CLASS), NOW)
    with_operator = sign_manifest(decode_cose_untrusted(signed), keys.op, Party.OPERATOR)
    verified = verify_manifest(with_operator.encode(), root, device(device_class=OTHER_CLASS), NOW)
    assert verified.signed_by(Party.OPERATOR) == 1


def test_a_reprogram_image_is_verified_like_any_other(keys: Keys) -> None:
    manifest = make_manifest(kind=ImageKind.REPROGRAM)
    verified = verify_manifest(fully_signed(keys, manifest), make_root(keys), device(), NOW)
    assert verified.manifest.kind is ImageKind.REPROGRAM


def test_checks_run_signatures_first(keys: Keys) -> None:
    # An unsigned-enough manifest that is also a rollback, expired and for
    # another class: the signature refusal comes first, nothing else is believed.
    manifest = make_manifest(sequence=1, device_class=OTHER_CLASS, expires=NOW - 1, created=NOW - 2)
    signed = sign(manifest, (keys.m1, Party.MANUFACTURER))
    with pytest.raises(BelowThreshold):
        verify_manifest(signed, make_root(keys), device(), NOW)


def test_verified_report_says_what_did_not_count(keys: Keys) -> None:
    message: CoseSigned = decode_cose_untrusted(fully_signed(keys))
    message = sign_manifest(message, keys.outsider, Party.MANUFACTURER)
    verified = verify_manifest(message.encode(), make_root(keys), device(), NOW)
    outcomes = [c.outcome for c in verified.report.checks]
    assert outcomes == [SignatureOutcome.VALID] * 3 + [SignatureOutcome.UNKNOWN_KEY]
    assert verified.report.lines()[-1] == (
        f"not counted: key {keys.outsider.public_key.fingerprint} signing as manufacturer: "
        "key not in the trust root"
    )
