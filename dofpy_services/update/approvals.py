"""Campaign approvals: what a campaign is (:class:`CampaignTerms`, named by
its digest), the approvals its policy requires (:class:`ApprovalPolicy`),
a party's signed decision (:func:`sign_approval`), and the check a campaign
must pass before it starts (:func:`require_approvals`).

There is no second signature scheme: an approval is a ``COSE_Sign1`` of
:mod:`dofpy.image.cose`, its signer's party in the protected header
(:data:`~dofpy.image.trust.HEADER_PARTY`) exactly as on a manifest, and the
parties, keys and per-party thresholds are a :class:`~dofpy.image.TrustRoot`'s
(:func:`~dofpy.image.trust.check_signatures` does the counting). The content
type (:data:`APPROVAL_CONTENT_TYPE`) is in the signed header, so a signature
over a manifest or a trust root never counts as an approval, nor one over an
approval as anything else.

An approval names the campaign by digest: SHA-256 over the canonical CBOR of
the image manifest's digest, the population, the approval policy and the
time frame. Changing any of them after approval (a bigger population, a
later deadline, a lower threshold) makes a different campaign that the
approvals do not name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

import cbor2

from dofpy.errors import BadPacket
from dofpy.image.cose import CoseSigned, SigningKey, decode_cose_untrusted, sign_payload
from dofpy.image.trust import (
    HEADER_PARTY,
    Party,
    PartyTally,
    SignatureOutcome,
    TrustedKey,
    TrustRoot,
    check_signatures,
)
from dofpy.wire.values import _decode_canonical

__all__ = [
    "APPROVAL_CONTENT_TYPE",
    "APPROVAL_FORMAT",
    "Approval",
    "ApprovalCheck",
    "ApprovalPolicy",
    "ApprovalReport",
    "CampaignRefused",
    "CampaignTerms",
    "Decision",
    "check_approvals",
    "decode_approval_untrusted",
    "require_approvals",
    "sign_approval",
]

APPROVAL_FORMAT = 1
APPROVAL_CONTENT_TYPE = "application/vnd.dofpy.campaign-approval+cbor"
MAX_TEXT = 256
MAX_POPULATION_KEYS = 32


def _canonical(value: object) -> bytes:
    encoded: bytes = cbor2.dumps(value, canonical=True)
    return encoded


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """How many keys of each party must approve a campaign.

    ``thresholds``: party -> keys of that party that must approve (manufacturer,
    service provider, operator). ``per_device``: every device (or its user)
    in ``devices`` must approve too, each with its own key listed in the trust
    root under :attr:`~dofpy.image.trust.Party.DEVICE` and named by the device's
    identity (the key's name in the trust root)."""

    thresholds: Mapping[Party, int]
    per_device: bool = False

    def __post_init__(self) -> None:
        frozen: dict[Party, int] = {}
        for party, needed in self.thresholds.items():
            if type(needed) is not int or needed < 1:
                raise ValueError(f"the threshold of {Party(party).label} must be an integer >= 1")
            frozen[Party(party)] = needed
        if not frozen and not self.per_device:
            raise ValueError("an approval policy needs at least one party's threshold")
        object.__setattr__(self, "thresholds", MappingProxyType(dict(sorted(frozen.items()))))

    def to_cbor_map(self) -> dict[int, Any]:
        return {1: {int(p): n for p, n in self.thresholds.items()}, 2: self.per_device}

    def describe(self) -> str:
        parts = [f"{n} {p.label}" for p, n in self.thresholds.items()]
        if self.per_device:
            parts.append("each device")
        return " AND ".join(parts)


@dataclass(frozen=True, slots=True)
class CampaignTerms:
    """What is approved: the image (its manifest's digest), the population,
    the approval policy and the time frame (POSIX seconds).

    ``population`` is the Version query resolved at start, as text fields
    (``class``, ``not-version``, ...), and ``devices`` an explicit list of
    identities (the devices that must approve under a per-device policy)."""

    name: str
    manifest_digest: bytes
    population: Mapping[str, str]
    policy: ApprovalPolicy
    start: int
    deadline: int
    devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.manifest_digest) != 32:
            raise ValueError("a manifest digest is 32 bytes (SHA-256)")
        if self.deadline <= self.start:
            raise ValueError("a campaign's deadline must come after its start")
        if self.policy.per_device and not self.devices:
            raise ValueError("a per-device approval policy needs the list of devices")
        if len(self.population) > MAX_POPULATION_KEYS:
            raise ValueError(f"a population has at most {MAX_POPULATION_KEYS} fields")
        object.__setattr__(
            self, "population", MappingProxyType(dict(sorted(self.population.items())))
        )

    def to_cbor_map(self) -> dict[int, Any]:
        return {
            1: self.name,
            2: self.manifest_digest,
            3: dict(self.population),
            4: self.policy.to_cbor_map(),
            5: self.start,
            6: self.deadline,
            7: list(self.devices),
        }

    @property
    def digest(self) -> bytes:
        """SHA-256 of the terms' canonical CBOR: what approvals name."""
        return hashlib.sha256(_canonical(self.to_cbor_map())).digest()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "manifest_digest": self.manifest_digest.hex(),
            "population": dict(self.population),
            "policy": {p.label: n for p, n in self.policy.thresholds.items()},
            "per_device": self.policy.per_device,
            "start": self.start,
            "deadline": self.deadline,
            "devices": list(self.devices),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> CampaignTerms:
        """From :meth:`to_json`'s form (a campaign file); ``ValueError``."""
        try:
            thresholds = {Party.parse(k): int(v) for k, v in dict(value["policy"]).items()}
            return cls(
                name=str(value["name"]),
                manifest_digest=bytes.fromhex(str(value["manifest_digest"])),
                population={str(k): str(v) for k, v in dict(value.get("population", {})).items()},
                policy=ApprovalPolicy(thresholds, bool(value.get("per_device", False))),
                start=int(value["start"]),
                deadline=int(value["deadline"]),
                devices=tuple(str(d) for d in value.get("devices", ())),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"campaign terms: missing or malformed field {exc}") from None


class Decision(Enum):
    APPROVE = "approve"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Approval:
    """One party's decision on one campaign, as signed."""

    campaign: bytes
    """The campaign terms' digest."""
    party: Party
    decision: Decision
    time: int
    signer: str = ""
    """Who signed, for people (a device's identity under a per-device policy)."""
    message: CoseSigned | None = field(default=None, compare=False)

    def to_cbor_map(self) -> dict[int, Any]:
        return {
            0: APPROVAL_FORMAT,
            1: self.campaign,
            2: int(self.party),
            3: self.decision.value,
            4: self.time,
            5: self.signer,
        }


def sign_approval(
    terms: CampaignTerms,
    key: SigningKey,
    party: Party,
    *,
    now: float,
    decision: Decision = Decision.APPROVE,
    signer: str = "",
) -> bytes:
    """``party``'s decision on ``terms``, signed by ``key``: a ``COSE_Sign1``."""
    approval = Approval(terms.digest, party, decision, int(now), signer)
    message = sign_payload(
        _canonical(approval.to_cbor_map()),
        key,
        content_type=APPROVAL_CONTENT_TYPE,
        headers={HEADER_PARTY: int(party)},
        single=True,
    )
    return message.encode()


def decode_approval_untrusted(data: bytes) -> Approval:
    """An approval from its signed bytes; raises only ``BadPacket``. The
    signature is not checked here (see :func:`check_approvals`)."""
    message = decode_cose_untrusted(data)
    if not message.single:
        raise BadPacket("approval: a COSE_Sign1 message is expected")
    if message.content_type != APPROVAL_CONTENT_TYPE:
        raise BadPacket("approval: wrong content type (not a campaign approval)")
    value = _decode_canonical(message.payload, "approval")
    if not isinstance(value, dict) or set(value) != {0, 1, 2, 3, 4, 5}:
        raise BadPacket("approval: a map with keys 0 to 5 is expected")
    if value[0] != APPROVAL_FORMAT:
        raise BadPacket(f"approval: format {value[0]!r} is not {APPROVAL_FORMAT}")
    campaign, party, decision, when, signer = (value[k] for k in (1, 2, 3, 4, 5))
    if not isinstance(campaign, bytes) or len(campaign) != 32:
        raise BadPacket("approval: the campaign digest is 32 bytes")
    if type(party) is not int or party not in {int(p) for p in Party}:
        raise BadPacket("approval: unknown party")
    if decision not in {d.value for d in Decision}:
        raise BadPacket("approval: the decision is approve or reject")
    if type(when) is not int or when < 0:
        raise BadPacket("approval: the time is a non-negative integer")
    if not isinstance(signer, str) or len(signer) > MAX_TEXT:
        raise BadPacket(f"approval: the signer is a text of at most {MAX_TEXT} characters")
    if message.signatures[0].headers.get(HEADER_PARTY) != party:
        raise BadPacket("approval: the signed party header and the payload's party differ")
    return Approval(campaign, Party(party), Decision(decision), when, signer, message)


@dataclass(frozen=True, slots=True)
class ApprovalCheck:
    """What became of one submitted approval: counted, or why not."""

    approval: Approval | None
    counted: bool
    reason: str
    key: TrustedKey | None = None


@dataclass(frozen=True, slots=True)
class ApprovalReport:
    """Every approval's outcome, each party's tally, and (per-device policy)
    the devices that have not approved."""

    checks: tuple[ApprovalCheck, ...]
    tallies: tuple[PartyTally, ...]
    missing_devices: tuple[str, ...]
    rejected_by: tuple[str, ...]

    @property
    def met(self) -> bool:
        return (
            all(t.met for t in self.tallies) and not self.missing_devices and not self.rejected_by
        )

    def lines(self) -> list[str]:
        lines = [t.describe() for t in self.tallies]
        if self.missing_devices:
            lines.append("devices not approved: " + ", ".join(self.missing_devices))
        lines += [f"rejected by {who}" for who in self.rejected_by]
        lines += [f"not counted: {c.reason}" for c in self.checks if not c.counted]
        return lines


class CampaignRefused(ValueError):
    """A campaign may not start: its approvals do not meet its policy."""

    def __init__(self, message: str, report: ApprovalReport) -> None:
        super().__init__(message)
        self.report = report


def check_approvals(
    terms: CampaignTerms, approvals: Sequence[bytes], root: TrustRoot
) -> ApprovalReport:
    """Check each signed approval against ``root`` and tally them against
    ``terms.policy``. Never raises: :func:`require_approvals` refuses.

    An approval counts when it decodes, names these terms' digest, is signed
    by a key the trust root lists for the party it claims (the same check as
    a manifest's signatures), and approves. Each key counts once. A valid
    rejection by a required party is reported and refuses the campaign."""
    policy = terms.policy
    digest = terms.digest
    checks: list[ApprovalCheck] = []
    counted: dict[Party, list[TrustedKey]] = {party: [] for party in Party}
    seen: set[bytes] = set()
    rejected: list[str] = []
    approved_devices: set[str] = set()
    for data in approvals:
        try:
            approval = decode_approval_untrusted(data)
        except BadPacket as exc:
            checks.append(ApprovalCheck(None, False, f"malformed approval: {exc}"))
            continue
        assert approval.message is not None
        if approval.campaign != digest:
            checks.append(
                ApprovalCheck(
                    approval, False, f"names another campaign ({approval.campaign[:8].hex()})"
                )
            )
            continue
        report = check_signatures(approval.message, root, {approval.party: 1})
        (signature,) = report.checks
        if signature.outcome is not SignatureOutcome.VALID or signature.key is None:
            checks.append(ApprovalCheck(approval, False, signature.describe()))
            continue
        key = signature.key
        if key.kid in seen:
            checks.append(ApprovalCheck(approval, False, f"{key.describe()}: counted already"))
            continue
        seen.add(key.kid)
        if approval.decision is Decision.REJECT:
            rejected.append(key.describe())
            checks.append(ApprovalCheck(approval, False, f"{key.describe()}: rejects", key))
            continue
        if key.party is Party.DEVICE:
            # A device's key approves for the device its trust-root entry names.
            approved_devices.add(key.name)
        counted[key.party].append(key)
        checks.append(ApprovalCheck(approval, True, "counted", key))
    tallies = tuple(PartyTally(p, n, tuple(counted[p])) for p, n in policy.thresholds.items())
    missing = (
        tuple(d for d in terms.devices if d not in approved_devices) if policy.per_device else ()
    )
    return ApprovalReport(tuple(checks), tallies, missing, tuple(rejected))


def require_approvals(
    terms: CampaignTerms, approvals: Sequence[bytes], root: TrustRoot
) -> ApprovalReport:
    """The report when ``approvals`` meet ``terms.policy``; else
    :class:`CampaignRefused` naming what is missing."""
    report = check_approvals(terms, approvals, root)
    if not report.met:
        raise CampaignRefused(
            f"campaign {terms.name!r} may not start: " + "; ".join(report.lines()), report
        )
    return report
