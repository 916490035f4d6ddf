"""Signing policy and trust roots: a multi-party flow reaches its threshold
only with the right parties; rotations are accepted only with thresholds of
the old keys and of the new."""

from __future__ import annotations

import dataclasses

import cbor2
import pytest

from dofpy.image import (
    HEADER_PARTY,
    BelowThreshold,
    CoseSigned,
    Expired,
    Malformed,
    Party,
    RemovedKey,
    Rollback,
    SignatureOutcome,
    Tampered,
    TrustRoot,
    UnknownKey,
    WrongVendor,
    accept_trust_root,
    check_signatures,
    decode_cose_untrusted,
    rotate_trust_root,
    sign_manifest,
    sign_trust_root,
    verify_manifest,
)
from dofpy.image.cose import CoseSignature, sign_payload
from dofpy.image.manifest import MANIFEST_CONTENT_TYPE
from tests.image.signing_fixtures import (
    DAY,
    NOW,
    OTHER_VENDOR,
    Keys,
    device,
    fully_signed,
    key,
    make_manifest,
    make_root,
    sign,
    sign_root,
)


@pytest.fixture
def keys() -> Keys:
    return Keys.make()


def _outcomes(message: CoseSigned, root: TrustRoot) -> list[SignatureOutcome]:
    report = check_signatures(message, root, root.policy)
    return [c.outcome for c in report.checks]


def test_a_multi_party_flow_reaches_its_threshold_only_with_the_right_parties(keys: Keys) -> None:
    root = make_root(keys)
    steps = [
        (keys.m1, Party.MANUFACTURER),
        (keys.op, Party.OPERATOR),  # valid, but the policy asks nothing of the operator
        (keys.m3, Party.SERVICE_PROVIDER),  # a manufacturer key claiming the service provider
        (keys.m2, Party.MANUFACTURER),
    ]
    document: object = make_manifest()
    for signer, party in steps:
        document = sign_manifest(document, signer, party)  # type: ignore[arg-type]
        assert isinstance(document, CoseSigned)
        with pytest.raises(BelowThreshold) as refused:
            verify_manifest(document.encode(), root, device(), NOW)
    # Manufacturer met (m1, m2), the service provider still missing: m3's
    # claim to be the service provider counted for nothing.
    assert refused.value.party is Party.SERVICE_PROVIDER
    assert str(refused.value).endswith(
        "below threshold: service-provider has 0 valid signatures of the 1 needed; "
        f"not counted: manufacturer key {keys.m3.public_key.fingerprint} (m3) signing as "
        "service-provider: key belongs to another party"
    )
    assert isinstance(document, CoseSigned)
    final = sign_manifest(document, keys.sp, Party.SERVICE_PROVIDER)
    verified = verify_manifest(final.encode(), root, device(), NOW)
    assert verified.signed_by(Party.MANUFACTURER) == 2
    assert verified.signed_by(Party.SERVICE_PROVIDER) == 1
    assert verified.signed_by(Party.OPERATOR) == 1
    assert [c.outcome for c in verified.report.checks] == [
        SignatureOutcome.VALID,
        SignatureOutcome.VALID,
        SignatureOutcome.WRONG_PARTY,
        SignatureOutcome.VALID,
        SignatureOutcome.VALID,
    ]


def test_many_signatures_of_the_wrong_party_do_not_make_up_for_a_missing_one(keys: Keys) -> None:
    signed = sign(
        make_manifest(),
        (keys.sp, Party.SERVICE_PROVIDER),
        (keys.op, Party.OPERATOR),
        (keys.m1, Party.MANUFACTURER),
    )
    with pytest.raises(BelowThreshold) as refused:
        verify_manifest(signed, make_root(keys), device(), NOW)
    assert (refused.value.party, refused.value.valid, refused.value.needed) == (
        Party.MANUFACTURER,
        1,
        2,
    )


def test_the_same_key_signing_twice_counts_once(keys: Keys) -> None:
    message = decode_cose_untrusted(
        sign(make_manifest(), (keys.m1, Party.MANUFACTURER), (keys.sp, Party.SERVICE_PROVIDER))
    )
    doubled = dataclasses.replace(message, signatures=(*message.signatures, message.signatures[0]))
    assert _outcomes(doubled, make_root(keys))[-1] is SignatureOutcome.DUPLICATE
    with pytest.raises(BelowThreshold, match="manufacturer has 1 valid signature of the 2"):
        verify_manifest(doubled.encode(), make_root(keys), device(), NOW)
    with pytest.raises(ValueError, match="already signed"):
        sign_manifest(message, keys.m1, Party.MANUFACTURER)


def test_a_signature_naming_no_party_does_not_count(keys: Keys) -> None:
    payload = make_manifest().encode()
    message = sign_payload(payload, keys.m1, content_type=MANIFEST_CONTENT_TYPE)
    assert _outcomes(message, make_root(keys)) == [SignatureOutcome.NO_PARTY]


def test_a_cose_sign1_cannot_collect_more_signatures(keys: Keys) -> None:
    single = sign_manifest(make_manifest(), keys.m1, Party.MANUFACTURER, single=True)
    with pytest.raises(ValueError, match="exactly one signer"):
        sign_manifest(single, keys.m2, Party.MANUFACTURER)


# -- trust roots -----------------------------------------------------------------------


def test_a_first_trust_root_is_accepted_on_its_own_threshold(keys: Keys) -> None:
    root = make_root(keys)
    signed = sign_root(root, (keys.m1, Party.MANUFACTURER), (keys.m3, Party.MANUFACTURER))
    assert accept_trust_root(signed, NOW, vendor_id=root.vendor_id) == root
    with pytest.raises(WrongVendor):
        accept_trust_root(signed, NOW, vendor_id=OTHER_VENDOR)
    too_few = sign_root(root, (keys.m1, Party.MANUFACTURER), (keys.sp, Party.SERVICE_PROVIDER))
    with pytest.raises(BelowThreshold, match="trust root version 1: below threshold"):
        accept_trust_root(too_few, NOW)


def _rotation(keys: Keys) -> tuple[TrustRoot, TrustRoot, Keys]:
    """Version 2 replaces m3 (compromised) with a new manufacturer key m4."""
    m4 = key(40)
    current = make_root(keys)
    new = (
        current.next_version(expires=NOW + 400 * DAY)
        .without_key(keys.m3.kid)
        .with_key(Party.MANUFACTURER, m4.public_key, "m4")
    )
    return current, new, dataclasses.replace(keys, m3=m4)


def test_a_rotation_signed_by_old_and_new_thresholds_is_accepted(keys: Keys) -> None:
    current, new, new_keys = _rotation(keys)
    signed = sign_root(
        new,
        (keys.m1, Party.MANUFACTURER),  # in both roots
        (keys.m3, Party.MANUFACTURER),  # old only (being removed)
        (new_keys.m3, Party.MANUFACTURER),  # new only (m4)
    )
    accepted = rotate_trust_root(current, signed, NOW)
    assert accepted == new and accepted.version == 2
    assert keys.m3.kid in accepted.removed
    # After the rotation, the removed key is refused by name.
    manifest = sign(
        make_manifest(),
        (keys.m1, Party.MANUFACTURER),
        (keys.m3, Party.MANUFACTURER),
        (keys.sp, Party.SERVICE_PROVIDER),
    )
    with pytest.raises(RemovedKey, match="signed by removed key"):
        verify_manifest(manifest, accepted, device(), NOW)
    verify_manifest(fully_signed(new_keys), accepted, device(), NOW)


def test_a_rotation_signed_by_too_few_old_keys_is_refused(keys: Keys) -> None:
    current, new, new_keys = _rotation(keys)
    # Old root's threshold is 2 manufacturer keys; only m1 of the old ones signs.
    signed = sign_root(new, (keys.m1, Party.MANUFACTURER), (new_keys.m3, Party.MANUFACTURER))
    with pytest.raises(BelowThreshold) as refused:
        rotate_trust_root(current, signed, NOW)
    assert type(refused.value) is BelowThreshold  # the new key is expected, not "unknown"
    assert str(refused.value) == (
        "trust root version 2, checked with the keys of the installed version 1: below "
        "threshold: manufacturer has 1 valid signature of the 2 needed"
    )


def test_a_compromised_key_alone_cannot_rotate_itself_in_charge(keys: Keys) -> None:
    current = make_root(keys)
    attacker = key(66)
    takeover = (
        current.next_version()
        .with_policy(root_policy={Party.MANUFACTURER: 1}, policy={Party.MANUFACTURER: 1})
        .without_key(keys.m1.kid)
        .without_key(keys.m2.kid)
        .with_key(Party.MANUFACTURER, attacker.public_key)
    )
    signed = sign_root(takeover, (keys.m3, Party.MANUFACTURER), (attacker, Party.MANUFACTURER))
    with pytest.raises(BelowThreshold, match="installed version 1: below threshold"):
        rotate_trust_root(current, signed, NOW)


def test_a_rotation_not_signed_by_its_own_keys_is_refused(keys: Keys) -> None:
    current = make_root(keys)
    n1, n2 = key(50), key(51)
    new = (
        current.next_version()
        .with_key(Party.MANUFACTURER, n1.public_key, "n1")
        .with_key(Party.MANUFACTURER, n2.public_key, "n2")
        .with_policy(root_policy={Party.MANUFACTURER: 3})
    )
    signed = sign_root(new, (keys.m1, Party.MANUFACTURER), (keys.m2, Party.MANUFACTURER))
    with pytest.raises(BelowThreshold) as refused:
        rotate_trust_root(current, signed, NOW)
    assert str(refused.value) == (
        "trust root version 2, checked with its own keys: below threshold: manufacturer has "
        "2 valid signatures of the 3 needed"
    )
    more = sign_trust_root(decode_cose_untrusted(signed), n1, Party.MANUFACTURER)
    assert rotate_trust_root(current, more.encode(), NOW) == new


def test_a_rotation_to_an_older_or_equal_version_is_a_rollback(keys: Keys) -> None:
    current = make_root(keys, version=5)
    same = sign_root(current, (keys.m1, Party.MANUFACTURER), (keys.m2, Party.MANUFACTURER))
    with pytest.raises(Rollback) as refused:
        rotate_trust_root(current, same, NOW)
    assert str(refused.value) == ("trust root version 5 is not newer than the installed version 5")
    older = sign_root(
        make_root(keys, version=4), (keys.m1, Party.MANUFACTURER), (keys.m2, Party.MANUFACTURER)
    )
    with pytest.raises(Rollback):
        rotate_trust_root(current, older, NOW)


def test_a_rotation_to_an_expired_or_foreign_root_is_refused(keys: Keys) -> None:
    current = make_root(keys)
    stale = current.next_version(expires=NOW - DAY)
    signed = sign_root(stale, (keys.m1, Party.MANUFACTURER), (keys.m2, Party.MANUFACTURER))
    with pytest.raises(Expired, match=r"trust root version 2 of vendor .* expired at 2027-01-14"):
        rotate_trust_root(current, signed, NOW)
    foreign = dataclasses.replace(current.next_version(), vendor_id=OTHER_VENDOR)
    signed = sign_root(foreign, (keys.m1, Party.MANUFACTURER), (keys.m2, Party.MANUFACTURER))
    with pytest.raises(WrongVendor, match=f"is for vendor {OTHER_VENDOR}"):
        rotate_trust_root(current, signed, NOW)


def test_an_expired_current_root_can_still_be_rotated(keys: Keys) -> None:
    current = make_root(keys, expires=NOW - DAY)
    new = current.next_version(expires=NOW + DAY)
    signed = sign_root(new, (keys.m1, Party.MANUFACTURER), (keys.m2, Party.MANUFACTURER))
    assert rotate_trust_root(current, signed, NOW) == new


def test_a_changed_rotation_is_tampered_and_a_manifest_is_not_a_root(keys: Keys) -> None:
    current = make_root(keys)
    signed = sign_root(
        current.next_version(), (keys.m1, Party.MANUFACTURER), (keys.m2, Party.MANUFACTURER)
    )
    message = decode_cose_untrusted(signed)
    widened = current.next_version().with_policy(policy={Party.MANUFACTURER: 1})
    forged = dataclasses.replace(message, payload=widened.encode()).encode()
    with pytest.raises(Tampered):
        rotate_trust_root(current, forged, NOW)
    with pytest.raises(Malformed, match="is not a trust root"):
        rotate_trust_root(current, fully_signed(keys), NOW)


def test_unknown_keys_alone_are_named(keys: Keys) -> None:
    current = make_root(keys)
    outsider = key(77)
    signed = sign_root(current.next_version(), (outsider, Party.MANUFACTURER))
    with pytest.raises(UnknownKey, match=outsider.public_key.fingerprint):
        rotate_trust_root(current, signed, NOW)


def test_three_rotations_in_a_row(keys: Keys) -> None:
    root = make_root(keys)
    for _ in range(3):
        new = root.next_version()
        signed = sign_root(new, (keys.m2, Party.MANUFACTURER), (keys.m3, Party.MANUFACTURER))
        root = rotate_trust_root(root, signed, NOW)
    assert root.version == 4


# -- the document itself -----------------------------------------------------------------


def test_a_threshold_no_listed_keys_can_meet_is_refused(keys: Keys) -> None:
    with pytest.raises(ValueError, match="needs 4 manufacturer signatures but the trust root "):
        make_root(keys, policy={Party.MANUFACTURER: 4})
    with pytest.raises(ValueError, match="needs 2 manufacturer"):
        make_root(keys).without_key(keys.m1.kid).without_key(keys.m2.kid)
    with pytest.raises(ValueError, match="threshold of device must be >= 1"):
        make_root(keys, policy={Party.DEVICE: 0})


def test_a_key_belongs_to_one_party_and_a_removed_key_never_returns(keys: Keys) -> None:
    root = make_root(keys)
    with pytest.raises(ValueError, match="already listed"):
        root.with_key(Party.OPERATOR, keys.m1.public_key)
    removed = root.without_key(keys.m3.kid)
    with pytest.raises(ValueError, match="was removed"):
        removed.with_key(Party.MANUFACTURER, keys.m3.public_key)


def test_party_names_parse() -> None:
    assert Party.parse("service-provider") is Party.SERVICE_PROVIDER
    assert Party.parse("SERVICE_PROVIDER") is Party.SERVICE_PROVIDER
    with pytest.raises(ValueError, match="one of manufacturer, service-provider"):
        Party.parse("vendor")


def test_the_party_claim_is_a_protected_header(keys: Keys) -> None:
    message = decode_cose_untrusted(sign(make_manifest(), (keys.m1, Party.MANUFACTURER)))
    (signature,) = message.signatures
    assert cbor2.loads(signature.protected)[HEADER_PARTY] == int(Party.MANUFACTURER)
    assert isinstance(signature, CoseSignature) and signature.unprotected == {}
