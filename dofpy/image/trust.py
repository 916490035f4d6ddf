"""Trust roots and the signing policy (as TUF's root role and SUIT's trust
anchors): who may sign for a vendor, and how many of them must.

A :class:`TrustRoot` is one vendor's document: its parties' keys
(:class:`Party`: manufacturer, service provider, operator, device), the
threshold per party a manifest needs (a default, and per device class), the
thresholds the trust root itself needs (``root_policy``), a version and an
expiry. It travels signed, as a ``COSE_Sign`` of :meth:`TrustRoot.encode`
with content type :data:`TRUST_ROOT_CONTENT_TYPE`.

Each signature names its signing party in its protected header
(:data:`HEADER_PARTY`, a private-use COSE label). A signature counts toward a
party's threshold only when the key is listed in the trust root *for that
party*, is not removed, verifies, and has not already been counted: a
signature by an unknown key, a removed key, or a key of another party than
the one it claims counts for nothing (:func:`check_signatures`).

Rotation (:func:`rotate_trust_root`): a new trust root is accepted only when
its version is higher, it is not expired, and its signatures meet the
``root_policy`` of the *current* root with the current keys AND its own
``root_policy`` with its own keys. A compromised key is removed this way:
the other keys sign a root without it (it moves to ``removed``).

The document itself (parties, keys, thresholds, its CBOR map and decoder)
is :mod:`dofpy.image.trust_root`, re-exported here; this module checks
signatures against it, accepts and rotates it, and signs it.

The trust root's CBOR map (integer keys):

===  ================  ======================================================
1    format            uint, 1
2    vendor id         bstr, 16 bytes
3    version           uint >= 1
4    expires           uint, POSIX seconds
5    keys              array of ``[party, COSE_Key, name]`` (name: tstr)
6    removed           array of key ids (bstr 32), optional
7    policy            map party -> threshold (the default for manifests)
8    class policies    map class id (bstr 16) -> (map party -> threshold), optional
9    root policy       map party -> threshold (for signing the trust root)
===  ================  ======================================================
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum

from dofpy.errors import BadPacket
from dofpy.image.cose import (
    CoseSigned,
    SigningKey,
    add_signature,
    decode_cose_untrusted,
    sign_payload,
)
from dofpy.image.errors import (
    BelowThreshold,
    Expired,
    Malformed,
    RemovedKey,
    Rollback,
    Tampered,
    UnknownKey,
    WrongVendor,
)
from dofpy.image.trust_root import (
    HEADER_PARTY,
    TRUST_ROOT_CONTENT_TYPE,
    TRUST_ROOT_FORMAT,
    Party,
    Policy,
    TrustedKey,
    TrustRoot,
    decode_trust_root_untrusted,
    describe_policy,
    format_time,
)

__all__ = [
    "HEADER_PARTY",
    "TRUST_ROOT_CONTENT_TYPE",
    "TRUST_ROOT_FORMAT",
    "Party",
    "PartyTally",
    "SignatureCheck",
    "SignatureOutcome",
    "SignatureReport",
    "TrustRoot",
    "TrustedKey",
    "accept_trust_root",
    "check_signatures",
    "decode_trust_root_untrusted",
    "describe_policy",
    "format_time",
    "require_threshold",
    "rotate_trust_root",
    "sign_trust_root",
]


class SignatureOutcome(Enum):
    """What became of one signature when a trust root checked it."""

    VALID = "valid"
    """Counted toward its party's threshold."""
    BAD_SIGNATURE = "does not verify"
    UNKNOWN_KEY = "key not in the trust root"
    REMOVED_KEY = "key removed from the trust root"
    WRONG_PARTY = "key belongs to another party"
    NO_PARTY = "names no signing party"
    DUPLICATE = "the same key signed twice"
    OTHER_ROOT = "key of the other trust root in a rotation"


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """One signature's outcome: by key ``kid`` claiming ``claimed``; ``key`` is
    the trust root's entry for the key, when it lists it."""

    kid: bytes
    claimed: Party | None
    outcome: SignatureOutcome
    key: TrustedKey | None

    def describe(self) -> str:
        who = self.key.describe() if self.key is not None else f"key {self.kid[:8].hex()}"
        claim = f" signing as {self.claimed.label}" if self.claimed is not None else ""
        return f"{who}{claim}: {self.outcome.value}"


@dataclass(frozen=True, slots=True)
class PartyTally:
    """``party`` needs ``needed`` valid signatures and has ``valid`` (their key
    entries)."""

    party: Party
    needed: int
    valid: tuple[TrustedKey, ...]

    @property
    def met(self) -> bool:
        return len(self.valid) >= self.needed

    def describe(self) -> str:
        state = "met" if self.met else "NOT met"
        names = ", ".join(
            k.key.fingerprint + (f" ({k.name})" if k.name else "") for k in self.valid
        )
        signed = f": {names}" if names else ""
        return f"{self.party.label}: {len(self.valid)} of {self.needed} needed, {state}{signed}"


@dataclass(frozen=True, slots=True)
class SignatureReport:
    """Every signature's outcome and every required party's tally."""

    checks: tuple[SignatureCheck, ...]
    tallies: tuple[PartyTally, ...]

    @property
    def met(self) -> bool:
        """Whether every party's threshold is met."""
        return all(t.met for t in self.tallies)

    @property
    def unmet(self) -> tuple[PartyTally, ...]:
        return tuple(t for t in self.tallies if not t.met)

    def signed_by(self, party: Party) -> tuple[TrustedKey, ...]:
        """The keys of ``party`` whose signatures are valid (required by the
        policy or not)."""
        return tuple(
            c.key
            for c in self.checks
            if c.outcome is SignatureOutcome.VALID and c.key is not None and c.key.party is party
        )

    def lines(self) -> list[str]:
        """One line per party tally, then one per signature that did not count."""
        lines = [t.describe() for t in self.tallies]
        lines += [
            f"not counted: {c.describe()}"
            for c in self.checks
            if c.outcome is not SignatureOutcome.VALID
        ]
        return lines


def check_signatures(
    message: CoseSigned,
    root: TrustRoot,
    policy: Policy,
    *,
    other_root: Collection[bytes] = (),
) -> SignatureReport:
    """Check every signature of ``message`` against ``root``'s keys and tally
    them against ``policy``. Never raises: :func:`require_threshold` turns an
    unmet report into its refusal. ``other_root``: key ids expected to be
    unknown here (a rotation's other root), not reported as unknown keys."""
    checks: list[SignatureCheck] = []
    counted: dict[Party, list[TrustedKey]] = {party: [] for party in Party}
    seen: set[bytes] = set()
    for signature in message.signatures:
        kid = signature.kid
        claim = signature.headers.get(HEADER_PARTY)
        claimed = Party(claim) if type(claim) is int and claim in _PARTIES else None
        listed = root.key_by_kid(kid)
        if kid in seen:
            outcome = SignatureOutcome.DUPLICATE
        elif listed is None:
            if kid in other_root:
                outcome = SignatureOutcome.OTHER_ROOT
            elif kid in root.removed:
                outcome = SignatureOutcome.REMOVED_KEY
            else:
                outcome = SignatureOutcome.UNKNOWN_KEY
        elif not message.verify(signature, listed.key):
            outcome = SignatureOutcome.BAD_SIGNATURE
        elif claimed is None:
            outcome = SignatureOutcome.NO_PARTY
        elif claimed is not listed.party:
            outcome = SignatureOutcome.WRONG_PARTY
        else:
            outcome = SignatureOutcome.VALID
            counted[listed.party].append(listed)
        seen.add(kid)
        checks.append(SignatureCheck(kid, claimed, outcome, listed))
    tallies = tuple(PartyTally(p, n, tuple(counted[p])) for p, n in policy.items())
    return SignatureReport(tuple(checks), tallies)


_PARTIES = frozenset(int(p) for p in Party)


def require_threshold(report: SignatureReport, what: str) -> None:
    """Raise the refusal an unmet ``report`` means (``what`` names the document
    and the trust root, for the message): :class:`Tampered` when a listed
    key's signature does not verify, else :class:`RemovedKey` or
    :class:`UnknownKey` when such keys signed, else :class:`BelowThreshold`."""
    unmet = report.unmet
    if not unmet:
        return
    first = unmet[0]
    counts = "; ".join(
        f"{t.party.label} has {len(t.valid)} valid signature{'s' * (len(t.valid) != 1)} "
        f"of the {t.needed} needed"
        for t in unmet
    )

    def having(outcome: SignatureOutcome) -> list[SignatureCheck]:
        return [c for c in report.checks if c.outcome is outcome]

    if bad := having(SignatureOutcome.BAD_SIGNATURE):
        keys = ", ".join(c.key.describe() for c in bad if c.key is not None)
        raise Tampered(
            f"{what}: signatures by {keys} do not verify: the document changed after it "
            f"was signed ({counts})"
        )
    args = (first.party, len(first.valid), first.needed, report)
    if removed := having(SignatureOutcome.REMOVED_KEY):
        keys = ", ".join(c.kid[:8].hex() for c in removed)
        raise RemovedKey(
            f"{what}: signed by removed key{'s' * (len(removed) != 1)} {keys}, which count for "
            f"nothing ({counts})",
            *args,
        )
    if unknown := having(SignatureOutcome.UNKNOWN_KEY):
        keys = ", ".join(c.kid[:8].hex() for c in unknown)
        raise UnknownKey(
            f"{what}: signed by key{'s' * (len(unknown) != 1)} {keys} that the trust root does "
            f"not list, which count for nothing ({counts})",
            *args,
        )
    ignored = [
        c
        for c in report.checks
        if c.outcome in (SignatureOutcome.WRONG_PARTY, SignatureOutcome.NO_PARTY)
    ]
    note = ""
    if ignored:
        note = "; not counted: " + ", ".join(c.describe() for c in ignored)
    raise BelowThreshold(f"{what}: below threshold: {counts}{note}", *args)


# -- accepting trust roots -----------------------------------------------------------


def _open_signed_root(signed: bytes) -> tuple[CoseSigned, TrustRoot]:
    try:
        message = decode_cose_untrusted(signed)
        if message.content_type != TRUST_ROOT_CONTENT_TYPE:
            raise BadPacket(f"content type {message.content_type!r} is not a trust root")
        return message, decode_trust_root_untrusted(message.payload)
    except BadPacket as exc:
        raise Malformed(f"not a signed trust root: {exc}") from None


def _check_expiry(root: TrustRoot, now: float) -> None:
    if now >= root.expires:
        raise Expired(
            f"trust root version {root.version} of vendor {root.vendor_id} expired at "
            f"{format_time(root.expires)} (now {format_time(now)}): the vendor must publish "
            "a new one",
            root.expires,
            now,
        )


def accept_trust_root(
    signed: bytes, now: float, *, vendor_id: uuid.UUID | None = None
) -> TrustRoot:
    """The first trust root a device is given (at manufacture, or by its
    operator): accepted when it decodes, is for ``vendor_id`` (if given), is
    not expired at ``now`` and meets its own ``root_policy``. Every later
    one comes through :func:`rotate_trust_root`."""
    message, root = _open_signed_root(signed)
    if vendor_id is not None and root.vendor_id != vendor_id:
        raise WrongVendor(f"trust root is for vendor {root.vendor_id}, not {vendor_id}")
    _check_expiry(root, now)
    report = check_signatures(message, root, root.root_policy)
    require_threshold(report, f"trust root version {root.version}")
    return root


def rotate_trust_root(current: TrustRoot, signed: bytes, now: float) -> TrustRoot:
    """The new trust root in ``signed``, accepted to replace ``current``: same
    vendor, a higher version, not expired at ``now``, signed by the
    ``root_policy`` thresholds of ``current``'s keys AND of its own keys.
    (``current`` itself may have expired: rotation is how a device recovers.)"""
    message, new = _open_signed_root(signed)
    if new.vendor_id != current.vendor_id:
        raise WrongVendor(
            f"trust root is for vendor {new.vendor_id}, but the device trusts vendor "
            f"{current.vendor_id}"
        )
    if new.version <= current.version:
        raise Rollback(
            f"trust root version {new.version} is not newer than the installed version "
            f"{current.version}",
            new.version,
            current.version,
        )
    _check_expiry(new, now)
    old_kids = {k.kid for k in current.keys}
    new_kids = {k.kid for k in new.keys}
    by_old = check_signatures(message, current, current.root_policy, other_root=new_kids)
    require_threshold(
        by_old,
        f"trust root version {new.version}, checked with the keys of the installed "
        f"version {current.version}",
    )
    by_new = check_signatures(message, new, new.root_policy, other_root=old_kids)
    require_threshold(by_new, f"trust root version {new.version}, checked with its own keys")
    return new


def sign_trust_root(document: TrustRoot | CoseSigned, key: SigningKey, party: Party) -> CoseSigned:
    """``document`` signed by ``key`` for ``party``: a new ``COSE_Sign`` from
    an unsigned trust root, or one more signature on a signed one."""
    headers = {HEADER_PARTY: int(party)}
    if isinstance(document, TrustRoot):
        return sign_payload(
            document.encode(), key, content_type=TRUST_ROOT_CONTENT_TYPE, headers=headers
        )
    if document.content_type != TRUST_ROOT_CONTENT_TYPE:
        raise ValueError("the signed document is not a trust root")
    return add_signature(document, key, headers=headers)
