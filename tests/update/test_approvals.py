"""Campaign approvals: refused without its approvals, with approvals from the
wrong party, below threshold, for other terms; met with the right ones."""

from __future__ import annotations

import dataclasses

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.image import MANIFEST_CONTENT_TYPE, Party, SigningKey, TrustedKey
from dofpy.image.cose import decode_cose_untrusted, sign_payload
from dofpy.image.trust import HEADER_PARTY
from dofpy_services.update.approvals import (
    APPROVAL_CONTENT_TYPE,
    ApprovalPolicy,
    CampaignRefused,
    CampaignTerms,
    Decision,
    check_approvals,
    decode_approval_untrusted,
    require_approvals,
    sign_approval,
)
from tests.image.signing_fixtures import DAY, NOW, Keys, ed25519_key, make_root

KEYS = Keys.make()
ROOT = make_root(KEYS)


def terms(**changes: object) -> CampaignTerms:
    base = CampaignTerms(
        name="spring",
        manifest_digest=bytes(range(32)),
        population={"class": "a3e1c9d0-5f4b-4e6a-8d2c-1b7f0e9a6c53", "not-version": "2.0"},
        policy=ApprovalPolicy(
            {Party.MANUFACTURER: 2, Party.SERVICE_PROVIDER: 1, Party.OPERATOR: 1}
        ),
        start=NOW,
        deadline=NOW + 7 * DAY,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def approve(campaign: CampaignTerms, key: SigningKey, party: Party, **kw: object) -> bytes:
    return sign_approval(campaign, key, party, now=NOW, **kw)  # type: ignore[arg-type]


def full_set(campaign: CampaignTerms) -> list[bytes]:
    return [
        approve(campaign, KEYS.m1, Party.MANUFACTURER),
        approve(campaign, KEYS.m2, Party.MANUFACTURER),
        approve(campaign, KEYS.sp, Party.SERVICE_PROVIDER),
        approve(campaign, KEYS.op, Party.OPERATOR),
    ]


def test_met_with_every_required_approval() -> None:
    campaign = terms()
    report = require_approvals(campaign, full_set(campaign), ROOT)
    assert report.met
    assert [len(t.valid) for t in report.tallies] == [2, 1, 1]


def test_refused_without_approvals() -> None:
    with pytest.raises(CampaignRefused) as refused:
        require_approvals(terms(), [], ROOT)
    assert not refused.value.report.met
    assert "manufacturer: 0 of 2 needed, NOT met" in str(refused.value)


def test_refused_below_threshold() -> None:
    campaign = terms()
    approvals = full_set(campaign)
    del approvals[1]  # one manufacturer key of the two needed
    with pytest.raises(CampaignRefused) as refused:
        require_approvals(campaign, approvals, ROOT)
    (unmet,) = [t for t in refused.value.report.tallies if not t.met]
    assert (unmet.party, len(unmet.valid), unmet.needed) == (Party.MANUFACTURER, 1, 2)


def test_refused_with_approvals_from_the_wrong_party() -> None:
    campaign = terms()
    approvals = full_set(campaign)
    # The operator's approval replaced by a service provider key claiming to be the operator,
    # and by the operator's key claiming to be a manufacturer.
    approvals[3] = approve(campaign, KEYS.sp, Party.OPERATOR)
    approvals.append(approve(campaign, KEYS.op, Party.MANUFACTURER))
    with pytest.raises(CampaignRefused) as refused:
        require_approvals(campaign, approvals, ROOT)
    report = refused.value.report
    reasons = [c.reason for c in report.checks if not c.counted]
    assert any("key belongs to another party" in r and "operator" in r for r in reasons)
    assert any("key belongs to another party" in r and "manufacturer" in r for r in reasons)
    tally = {t.party: len(t.valid) for t in report.tallies}
    assert tally == {Party.MANUFACTURER: 2, Party.SERVICE_PROVIDER: 1, Party.OPERATOR: 0}


def test_the_same_key_counts_once() -> None:
    campaign = terms()
    approvals = full_set(campaign)
    approvals[1] = approve(campaign, KEYS.m1, Party.MANUFACTURER)  # m1 again, later
    with pytest.raises(CampaignRefused):
        require_approvals(campaign, approvals, ROOT)


def test_unknown_key_counts_for_nothing() -> None:
    campaign = terms()
    approvals = full_set(campaign)
    approvals[1] = approve(campaign, KEYS.outsider, Party.MANUFACTURER)
    with pytest.raises(CampaignRefused) as refused:
        require_approvals(campaign, approvals, ROOT)
    assert any("key not in the trust root" in c.reason for c in refused.value.report.checks)


@pytest.mark.parametrize(
    "change",
    [
        {"manifest_digest": bytes(32)},
        {"population": {"class": "a3e1c9d0-5f4b-4e6a-8d2c-1b7f0e9a6c53"}},
        {"deadline": NOW + 30 * DAY},
        {"policy": ApprovalPolicy({Party.MANUFACTURER: 1})},
    ],
    ids=["image", "population", "time frame", "policy"],
)
def test_approvals_of_other_terms_do_not_count(change: dict[str, object]) -> None:
    approved = terms()
    changed = terms(**change)
    assert changed.digest != approved.digest
    with pytest.raises(CampaignRefused) as refused:
        require_approvals(changed, full_set(approved), ROOT)
    assert all("names another campaign" in c.reason for c in refused.value.report.checks)


def test_a_rejection_by_a_party_refuses() -> None:
    campaign = terms()
    approvals = [
        *full_set(campaign),
        approve(campaign, KEYS.m3, Party.MANUFACTURER, decision=Decision.REJECT),
    ]
    with pytest.raises(CampaignRefused) as refused:
        require_approvals(campaign, approvals, ROOT)
    assert refused.value.report.rejected_by


def test_a_changed_approval_does_not_verify() -> None:
    campaign = terms()
    approvals = full_set(campaign)
    message = decode_cose_untrusted(approvals[2])
    forged = sign_payload(
        message.payload,
        KEYS.outsider,
        content_type=APPROVAL_CONTENT_TYPE,
        headers={HEADER_PARTY: int(Party.SERVICE_PROVIDER)},
        single=True,
    )
    # The outsider's signature, relabelled with the real key's id: does not verify.
    real = message.signatures[0]
    tampered = bytearray(approvals[2])
    offset = tampered.rfind(real.signature)
    tampered[offset : offset + 64] = forged.signatures[0].signature
    approvals[2] = bytes(tampered)
    report = check_approvals(campaign, approvals, ROOT)
    assert not report.met
    assert any("does not verify" in c.reason for c in report.checks)


def test_a_manifest_signature_is_not_an_approval() -> None:
    campaign = terms()
    payload = cbor2.dumps(
        {0: 1, 1: campaign.digest, 2: 1, 3: "approve", 4: NOW, 5: ""}, canonical=True
    )
    other = sign_payload(
        payload,
        KEYS.m1,
        content_type=MANIFEST_CONTENT_TYPE,
        headers={HEADER_PARTY: 1},
        single=True,
    )
    with pytest.raises(BadPacket, match="content type"):
        decode_approval_untrusted(other.encode())


def test_per_device_policy_needs_each_device() -> None:
    alice, bob = ed25519_key(40), ed25519_key(41)
    root = dataclasses.replace(
        ROOT,
        keys=(
            *ROOT.keys,
            TrustedKey(Party.DEVICE, alice.public_key, "dev-a"),
            TrustedKey(Party.DEVICE, bob.public_key, "dev-b"),
        ),
    )
    campaign = terms(
        policy=ApprovalPolicy({Party.OPERATOR: 1}, per_device=True), devices=("dev-a", "dev-b")
    )
    some = [approve(campaign, KEYS.op, Party.OPERATOR), approve(campaign, alice, Party.DEVICE)]
    with pytest.raises(CampaignRefused) as refused:
        require_approvals(campaign, some, root)
    assert refused.value.report.missing_devices == ("dev-b",)
    assert require_approvals(campaign, [*some, approve(campaign, bob, Party.DEVICE)], root).met


@given(
    party=st.sampled_from(list(Party)),
    decision=st.sampled_from(list(Decision)),
    when=st.integers(0, 2**40),
    signer=st.text(max_size=40),
)
def test_approval_round_trip(party: Party, decision: Decision, when: int, signer: str) -> None:
    campaign = terms()
    signed = sign_approval(campaign, KEYS.m1, party, now=when, decision=decision, signer=signer)
    approval = decode_approval_untrusted(signed)
    assert (
        approval.campaign,
        approval.party,
        approval.decision,
        approval.time,
        approval.signer,
    ) == (
        campaign.digest,
        party,
        decision,
        when,
        signer,
    )


def test_terms_json_round_trip() -> None:
    campaign = terms(devices=("x", "y"))
    assert CampaignTerms.from_json(campaign.to_json()).digest == campaign.digest
