"""Fuzz target: ``decode_approval_untrusted`` (a party's signed campaign
approval) and ``check_approvals`` over it, which never raises."""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.asymmetric import ed25519

from dofpy.image.cose import SigningKey
from dofpy.image.trust import Party, TrustedKey, TrustRoot
from dofpy_services.update.approvals import (
    ApprovalPolicy,
    CampaignTerms,
    Decision,
    check_approvals,
    decode_approval_untrusted,
    sign_approval,
)

_KEY = SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32)))
_ROOT = TrustRoot(
    uuid.UUID(int=1),
    1,
    2**40,
    (TrustedKey(Party.OPERATOR, _KEY.public_key, "op"),),
    {Party.OPERATOR: 1},
    {Party.OPERATOR: 1},
)
_TERMS = CampaignTerms(
    "fuzz", bytes(32), {"class": "x"}, ApprovalPolicy({Party.OPERATOR: 1}), 0, 100
)

SEEDS: tuple[bytes, ...] = (
    sign_approval(_TERMS, _KEY, Party.OPERATOR, now=1),
    sign_approval(_TERMS, _KEY, Party.MANUFACTURER, now=2, decision=Decision.REJECT, signer="m"),
)


def target(data: bytes) -> None:
    """Decode ``data`` as an approval (``BadPacket`` the only failure), then
    tally it, which must not raise at all."""
    check_approvals(_TERMS, [data], _ROOT)
    decode_approval_untrusted(data)
