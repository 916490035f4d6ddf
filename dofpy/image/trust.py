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

import hashlib
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import Any

import cbor2

from dofpy.errors import BadPacket
from dofpy.image.cose import (
    CoseSigned,
    PublicKey,
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
from dofpy.wire.values import _decode_canonical

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

HEADER_PARTY = -65537
"""COSE header label (private use, RFC 9052 section 16.2) of the signing party."""

TRUST_ROOT_FORMAT = 1
TRUST_ROOT_CONTENT_TYPE = "application/vnd.dofpy.trust-root+cbor"

MAX_KEYS = 64
MAX_NAME = 64
MAX_CLASS_POLICIES = 256


def format_time(seconds: float) -> str:
    """POSIX seconds as an ISO 8601 UTC time, for messages."""
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:.0f} s after the epoch"


class Party(IntEnum):
    """A signing party of OpenDOF's trusted source."""

    MANUFACTURER = 1
    SERVICE_PROVIDER = 2
    OPERATOR = 3
    """The operator or user of the devices."""
    DEVICE = 4

    @property
    def label(self) -> str:
        """``manufacturer``, ``service-provider``, ``operator``, ``device``."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> Party:
        """From :attr:`label` (or the enum name, any case); ``ValueError``."""
        wanted = text.strip().lower().replace("_", "-")
        for party in cls:
            if party.label == wanted:
                return party
        labels = ", ".join(p.label for p in cls)
        raise ValueError(f"unknown party {text!r} (one of {labels})")


Policy = Mapping[Party, int]
"""Thresholds: a party -> how many of its keys must sign (parties absent: none)."""


def _freeze_policy(policy: Mapping[Party, int], what: str) -> Mapping[Party, int]:
    frozen: dict[Party, int] = {}
    for party, threshold in policy.items():
        if type(threshold) is not int or threshold < 1:
            raise ValueError(f"{what}: the threshold of {Party(party).label} must be >= 1")
        frozen[Party(party)] = threshold
    if not frozen:
        raise ValueError(f"{what}: needs at least one party's threshold")
    return MappingProxyType(dict(sorted(frozen.items())))


def describe_policy(policy: Policy) -> str:
    """``2 manufacturer AND 1 service-provider``."""
    return " AND ".join(f"{n} {p.label}" for p, n in policy.items())


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key of a party; ``name`` says whose it is, for people."""

    party: Party
    key: PublicKey
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "party", Party(self.party))
        if not isinstance(self.name, str) or len(self.name) > MAX_NAME:
            raise ValueError(f"a key's name is a text of at most {MAX_NAME} characters")

    @property
    def kid(self) -> bytes:
        return self.key.kid

    def describe(self) -> str:
        """``manufacturer key 1a2b3c4d5e6f7081 (alice)``."""
        name = f" ({self.name})" if self.name else ""
        return f"{self.party.label} key {self.key.fingerprint}{name}"


@dataclass(frozen=True, slots=True)
class TrustRoot:
    """One vendor's signing parties, keys and thresholds (validated on
    construction: ``ValueError``). Immutable: the editing methods return a
    new trust root (same version; :meth:`next_version` raises it)."""

    vendor_id: uuid.UUID
    version: int
    expires: int
    keys: tuple[TrustedKey, ...]
    policy: Policy
    """Default thresholds a manifest needs."""
    root_policy: Policy
    """Thresholds a trust root (this one, and the one that replaces it) needs."""
    class_policies: Mapping[uuid.UUID, Policy] = field(default_factory=dict)
    """Thresholds for manifests of particular device classes."""
    removed: tuple[bytes, ...] = ()
    """Key ids taken out by a rotation: signatures by them are refused by name."""

    def __post_init__(self) -> None:
        if not isinstance(self.vendor_id, uuid.UUID):
            raise ValueError("vendor_id is a UUID")
        if type(self.version) is not int or not 1 <= self.version < 1 << 64:
            raise ValueError("a trust root's version is an integer >= 1")
        if type(self.expires) is not int or not 0 <= self.expires < 1 << 64:
            raise ValueError("a trust root's expiry is POSIX seconds")
        keys = tuple(self.keys)
        if not 1 <= len(keys) <= MAX_KEYS or not all(isinstance(k, TrustedKey) for k in keys):
            raise ValueError(f"a trust root lists 1..{MAX_KEYS} TrustedKey values")
        kids = [k.kid for k in keys]
        if len(set(kids)) != len(kids):
            raise ValueError("a key is listed twice (a key belongs to one party only)")
        removed = tuple(self.removed)
        if not all(isinstance(r, bytes) and len(r) == 32 for r in removed):
            raise ValueError("removed keys are named by their 32-byte key ids")
        if set(removed) & set(kids):
            raise ValueError("a key is both listed and removed")
        if len(set(removed)) != len(removed):
            raise ValueError("a removed key is named twice")
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "removed", removed)
        object.__setattr__(self, "policy", _freeze_policy(self.policy, "policy"))
        object.__setattr__(self, "root_policy", _freeze_policy(self.root_policy, "root policy"))
        if len(self.class_policies) > MAX_CLASS_POLICIES:
            raise ValueError(f"at most {MAX_CLASS_POLICIES} class policies")
        classes: dict[uuid.UUID, Policy] = {}
        for device_class, policy in self.class_policies.items():
            if not isinstance(device_class, uuid.UUID):
                raise ValueError("class policies are keyed by device class UUIDs")
            classes[device_class] = _freeze_policy(policy, f"policy of class {device_class}")
        object.__setattr__(self, "class_policies", MappingProxyType(dict(sorted(classes.items()))))
        for what, policy in (
            ("policy", self.policy),
            ("root policy", self.root_policy),
            *((f"policy of class {c}", p) for c, p in classes.items()),
        ):
            for party, threshold in policy.items():
                listed = len(self.keys_of(party))
                if listed < threshold:
                    raise ValueError(
                        f"{what} needs {threshold} {party.label} signatures but the trust "
                        f"root lists {listed} {party.label} keys"
                    )

    def keys_of(self, party: Party) -> tuple[TrustedKey, ...]:
        return tuple(k for k in self.keys if k.party is party)

    def key_by_kid(self, kid: bytes) -> TrustedKey | None:
        for key in self.keys:
            if key.kid == kid:
                return key
        return None

    def policy_for(self, device_class: uuid.UUID) -> Policy:
        """The thresholds a manifest for ``device_class`` needs."""
        return self.class_policies.get(device_class, self.policy)

    # -- editing (each returns a new, unsigned trust root) --------------------

    def next_version(self, *, expires: int | None = None) -> TrustRoot:
        """The same root with ``version + 1`` (and a new expiry, if given):
        the start of a rotation."""
        return replace(
            self, version=self.version + 1, expires=self.expires if expires is None else expires
        )

    def with_key(self, party: Party, key: PublicKey, name: str = "") -> TrustRoot:
        """This root with ``key`` added for ``party`` (it may not be listed or
        removed already: a removed key never comes back)."""
        if key.kid in self.removed:
            raise ValueError(f"key {key.fingerprint} was removed; a removed key is not re-added")
        if self.key_by_kid(key.kid) is not None:
            raise ValueError(f"key {key.fingerprint} is already listed")
        return replace(self, keys=(*self.keys, TrustedKey(party, key, name)))

    def without_key(self, kid: bytes) -> TrustRoot:
        """This root with the key ``kid`` removed (recorded in ``removed``);
        ``ValueError`` when a threshold could no longer be met."""
        listed = self.key_by_kid(kid)
        if listed is None:
            raise ValueError(f"key {kid[:8].hex()} is not listed")
        return replace(
            self,
            keys=tuple(k for k in self.keys if k.kid != kid),
            removed=(*self.removed, kid),
        )

    def with_policy(
        self,
        *,
        policy: Policy | None = None,
        root_policy: Policy | None = None,
        device_class: uuid.UUID | None = None,
    ) -> TrustRoot:
        """This root with new thresholds: the default ``policy`` (or the one of
        ``device_class``) and/or the ``root_policy``."""
        changed = self
        if policy is not None:
            if device_class is None:
                changed = replace(changed, policy=policy)
            else:
                classes = dict(changed.class_policies)
                classes[device_class] = policy
                changed = replace(changed, class_policies=classes)
        if root_policy is not None:
            changed = replace(changed, root_policy=root_policy)
        return changed

    # -- encoding ----------------------------------------------------------------

    def to_cbor_map(self) -> dict[int, Any]:
        value: dict[int, Any] = {
            1: TRUST_ROOT_FORMAT,
            2: self.vendor_id.bytes,
            3: self.version,
            4: self.expires,
            5: [[int(k.party), k.key.to_cose_key(), k.name] for k in self.keys],
            7: {int(p): n for p, n in self.policy.items()},
            9: {int(p): n for p, n in self.root_policy.items()},
        }
        if self.removed:
            value[6] = list(self.removed)
        if self.class_policies:
            value[8] = {
                c.bytes: {int(p): n for p, n in policy.items()}
                for c, policy in self.class_policies.items()
            }
        return value

    def encode(self) -> bytes:
        """The payload bytes (canonical CBOR) that the parties sign."""
        encoded: bytes = cbor2.dumps(self.to_cbor_map(), canonical=True)
        return encoded

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def from_cbor_map(cls, value: object) -> TrustRoot:
        """Inverse of :meth:`to_cbor_map`; raises ``BadPacket``."""
        if not isinstance(value, dict):
            raise BadPacket("trust root: expected a map")
        keys = set(value)
        if not {1, 2, 3, 4, 5, 7, 9} <= keys or not keys <= set(range(1, 10)):
            raise BadPacket("trust root: needs keys 1-5, 7, 9 and allows only 1-9")
        if value[1] != TRUST_ROOT_FORMAT or type(value[1]) is not int:
            raise BadPacket(f"trust root: format {value[1]!r} is not {TRUST_ROOT_FORMAT}")
        vendor = value[2]
        if not isinstance(vendor, bytes) or len(vendor) != 16:
            raise BadPacket("trust root: the vendor id must be 16 bytes (a UUID)")
        if type(value[3]) is not int or type(value[4]) is not int:
            raise BadPacket("trust root: version and expiry must be integers")
        entries = value[5]
        if not isinstance(entries, list):
            raise BadPacket("trust root: keys must be an array")
        listed = []
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 3:
                raise BadPacket("trust root: a key is [party, COSE_Key, name]")
            listed.append(
                TrustedKey(_party(entry[0]), PublicKey.from_cose_key(entry[1]), _name(entry[2]))
            )
        removed = value.get(6, [])
        if not isinstance(removed, list) or (6 in value and not removed):
            raise BadPacket("trust root: removed keys must be a non-empty array")
        classes_raw = value.get(8, {})
        if not isinstance(classes_raw, dict) or (8 in value and not classes_raw):
            raise BadPacket("trust root: class policies must be a non-empty map")
        classes = {}
        for device_class, policy in classes_raw.items():
            if not isinstance(device_class, bytes) or len(device_class) != 16:
                raise BadPacket("trust root: a class policy is keyed by a 16-byte class id")
            classes[uuid.UUID(bytes=device_class)] = _policy(policy)
        try:
            return cls(
                vendor_id=uuid.UUID(bytes=vendor),
                version=value[3],
                expires=value[4],
                keys=tuple(listed),
                policy=_policy(value[7]),
                root_policy=_policy(value[9]),
                class_policies=classes,
                removed=tuple(removed),
            )
        except ValueError as exc:
            raise BadPacket(f"trust root: {exc}") from None


def _party(value: object) -> Party:
    if type(value) is not int or value not in {int(p) for p in Party}:
        raise BadPacket(f"trust root: unknown party {value!r}")
    return Party(value)


def _name(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise BadPacket(f"trust root: a key's name is a text of at most {MAX_NAME} characters")
    return value


def _policy(value: object) -> dict[Party, int]:
    if not isinstance(value, dict):
        raise BadPacket("trust root: a policy is a map party -> threshold")
    policy = {}
    for party, threshold in value.items():
        if type(threshold) is not int:
            raise BadPacket("trust root: a threshold is an integer")
        policy[_party(party)] = threshold
    return policy


def decode_trust_root_untrusted(payload: bytes) -> TrustRoot:
    """A trust root from its payload bytes (canonical CBOR); raises only
    ``BadPacket``. Signatures are not checked: see :func:`accept_trust_root`
    and :func:`rotate_trust_root`."""
    return TrustRoot.from_cbor_map(_decode_canonical(bytes(payload), "trust root"))


# -- signature policy -------------------------------------------------------------


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
