"""The trust root document (:mod:`dofpy.image.trust` checks its signatures
and rotates it): the signing parties, a party's keys, the per-party
thresholds, and the document's canonical CBOR map and its untrusted decoder.

The map's layout is in :mod:`dofpy.image.trust`, which re-exports every
public name here.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import IntEnum
from types import MappingProxyType
from typing import Any

import cbor2

from dofpy.errors import BadPacket
from dofpy.image.cose import PublicKey
from dofpy.wire.values import _decode_canonical

__all__ = [
    "HEADER_PARTY",
    "MAX_CLASS_POLICIES",
    "MAX_KEYS",
    "MAX_NAME",
    "TRUST_ROOT_CONTENT_TYPE",
    "TRUST_ROOT_FORMAT",
    "Party",
    "Policy",
    "TrustRoot",
    "TrustedKey",
    "decode_trust_root_untrusted",
    "describe_policy",
    "format_time",
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
