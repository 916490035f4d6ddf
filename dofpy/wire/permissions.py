"""Permissions and permission sets (DOF 2008.16 Security.1 and Security.2).

Wire layout, as Wireshark's DOF dissector reads it::

    permission set   count (c2) · permission * count                  (Security.2)
    permission       type (c2) · [length (c2) · data]                 (Security.1)
                     an odd type carries length and data; an even type is
                     the type alone

Permission types the dissector names: 1 Binding, 3 IAM, 5 ACTAS, 128
Requestor, 130 Provider, 131 Define, 133 Tunnel Domain. The dissector shows the
data of an odd type as opaque bytes; the layouts of that data below are **dofpy
extensions** (nothing public defines them), chosen so that every field is an
OpenDOF primitive (OID, IID) and the encoding stays minimal:

=============  ====  ===========================================================
Permission     type  data
=============  ====  ===========================================================
Binding        1     flags (1 byte) · object pattern (OID) · [interface (IID)]
                     flags: 0x01 read (get), 0x02 write (set), 0x04 execute
                     (invoke), 0x08 subscribe, 0x10 provide; 0x40 an interface
                     follows (absent: any interface); 0x80 the object pattern
                     matches a whole class (its data must be empty); 0x20
                     reserved, zero. The broadcast OID as object pattern
                     matches any object.
IAM            3     the identity (OID) the holder may claim to be
ACTAS          5     the identity (OID) the holder may act as
Requestor      128   (none): may act as a requestor at all
Provider       130   (none): may act as a provider at all
Define         131   opaque bytes (kept as they are)
Tunnel Domain  133   the domain (OID) the holder may tunnel into
=============  ====  ===========================================================

Any other type decodes to :class:`RawPermission` (data for odd types, none for
even ones), so a permission set from another implementation round-trips.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from dofpy.errors import BadPacket
from dofpy.wire._codec import C2_MAX, Reader, encode_c2
from dofpy.wire.oid import IID, OID, read_iid, read_oid

__all__ = [
    "ActAsPermission",
    "Action",
    "BindingPermission",
    "DefinePermission",
    "IamPermission",
    "Permission",
    "PermissionSet",
    "PermissionType",
    "ProviderPermission",
    "RawPermission",
    "RequestorPermission",
    "TunnelDomainPermission",
    "decode_permission_set_untrusted",
    "encode_permission",
    "encode_permission_set",
    "read_permission",
    "read_permission_set",
]


class PermissionType(enum.IntEnum):
    """Permission type codes (c2); odd types carry data."""

    BINDING = 1
    IAM = 3
    ACTAS = 5
    REQUESTOR = 128
    PROVIDER = 130
    DEFINE = 131
    TUNNEL_DOMAIN = 133


class Action(enum.IntFlag):
    """What a binding permission allows on the objects and interfaces it matches."""

    READ = 0x01  # OAP Get of a property
    WRITE = 0x02  # OAP Set of a property
    EXECUTE = 0x04  # OAP Invoke of a method
    SUBSCRIBE = 0x08  # OAP Subscribe / Register for changes and events
    PROVIDE = 0x10  # OAP Provide: serve the object's interface

    @classmethod
    def parse(cls, letters: str) -> Action:
        """``"rwxsp"`` letters (any subset, any order) to actions; ``ValueError``
        on anything else."""
        value = cls(0)
        for letter in letters:
            if letter not in _LETTERS:
                raise ValueError(f"unknown action letter {letter!r} (use r, w, x, s, p)")
            value |= _LETTERS[letter]
        return value

    def letters(self) -> str:
        """The actions as letters in ``rwxsp`` order (``-`` for none)."""
        text = "".join(letter for letter, flag in _LETTERS.items() if flag in self)
        return text or "-"


_LETTERS: dict[str, Action] = {
    "r": Action.READ,
    "w": Action.WRITE,
    "x": Action.EXECUTE,
    "s": Action.SUBSCRIBE,
    "p": Action.PROVIDE,
}
_ALL_ACTIONS = 0x1F
_BINDING_INTERFACE = 0x40
_BINDING_CLASS_MATCH = 0x80
_BINDING_RESERVED = 0x20


@dataclass(frozen=True, slots=True)
class BindingPermission:
    """Actions on the bindings (object, interface) its patterns match.

    ``object_pattern``: the broadcast OID matches any object; with
    ``class_match`` any object of ``object_pattern.class_id`` (the pattern has
    no data then); otherwise one object (a pattern without attributes ignores
    the target's attributes). ``interface`` ``None`` matches any interface.
    """

    actions: Action
    object_pattern: OID = field(default_factory=lambda: OID(0))
    interface: IID | None = None
    class_match: bool = False
    TYPE: ClassVar[int] = PermissionType.BINDING

    def __post_init__(self) -> None:
        if not isinstance(self.actions, int) or not 0 <= int(self.actions) <= _ALL_ACTIONS:
            raise ValueError(f"binding actions {self.actions!r} outside rwxsp")
        object.__setattr__(self, "actions", Action(int(self.actions)))
        if self.class_match and (self.object_pattern.data or self.object_pattern.attributes):
            raise ValueError("a class-match object pattern has no data and no attributes")
        if self.class_match and self.object_pattern.is_broadcast:
            raise ValueError("class match on the broadcast class: use the broadcast OID alone")

    def data(self) -> bytes:
        flags = int(self.actions)
        if self.interface is not None:
            flags |= _BINDING_INTERFACE
        if self.class_match:
            flags |= _BINDING_CLASS_MATCH
        out = bytes((flags,)) + self.object_pattern.encode()
        if self.interface is not None:
            out += self.interface.encode()
        return out


@dataclass(frozen=True, slots=True)
class IamPermission:
    """The holder may claim to be ``identity``."""

    identity: OID
    TYPE: ClassVar[int] = PermissionType.IAM

    def data(self) -> bytes:
        return self.identity.encode()


@dataclass(frozen=True, slots=True)
class ActAsPermission:
    """The holder may act as ``identity``."""

    identity: OID
    TYPE: ClassVar[int] = PermissionType.ACTAS

    def data(self) -> bytes:
        return self.identity.encode()


@dataclass(frozen=True, slots=True)
class RequestorPermission:
    """The holder may act as a requestor."""

    TYPE: ClassVar[int] = PermissionType.REQUESTOR

    def data(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ProviderPermission:
    """The holder may act as a provider."""

    TYPE: ClassVar[int] = PermissionType.PROVIDER

    def data(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class DefinePermission:
    """A Define permission; its data is kept opaque."""

    payload: bytes = b""
    TYPE: ClassVar[int] = PermissionType.DEFINE

    def __post_init__(self) -> None:
        if len(self.payload) > C2_MAX:
            raise ValueError(f"permission data of {len(self.payload)} bytes exceeds {C2_MAX}")

    def data(self) -> bytes:
        return self.payload


@dataclass(frozen=True, slots=True)
class TunnelDomainPermission:
    """The holder may tunnel into ``domain``."""

    domain: OID
    TYPE: ClassVar[int] = PermissionType.TUNNEL_DOMAIN

    def data(self) -> bytes:
        return self.domain.encode()


@dataclass(frozen=True, slots=True)
class RawPermission:
    """A permission of a type dofpy gives no meaning to.

    ``payload`` is required (bytes) for odd types and must be ``None`` for even
    ones; known types must use their own class.
    """

    type_id: int
    payload: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.type_id, bool) or not 0 <= self.type_id <= C2_MAX:
            raise ValueError(f"permission type {self.type_id} outside 0..{C2_MAX:#x}")
        if self.type_id in _KNOWN_TYPES:
            raise ValueError(f"permission type {self.type_id} has its own class")
        if self.type_id % 2 and self.payload is None:
            raise ValueError(f"odd permission type {self.type_id} carries data")
        if not self.type_id % 2 and self.payload is not None:
            raise ValueError(f"even permission type {self.type_id} carries no data")
        if self.payload is not None and len(self.payload) > C2_MAX:
            raise ValueError(f"permission data of {len(self.payload)} bytes exceeds {C2_MAX}")

    @property
    def TYPE(self) -> int:
        return self.type_id

    def data(self) -> bytes | None:
        return self.payload


Permission = (
    BindingPermission
    | IamPermission
    | ActAsPermission
    | RequestorPermission
    | ProviderPermission
    | DefinePermission
    | TunnelDomainPermission
    | RawPermission
)

_KNOWN_TYPES = frozenset(int(t) for t in PermissionType)


@dataclass(frozen=True, slots=True)
class PermissionSet:
    """An ordered list of permissions (Security.2), at most 0x7FFF of them."""

    permissions: tuple[Permission, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.permissions, tuple):
            raise ValueError("permissions must be a tuple")
        if len(self.permissions) > C2_MAX:
            raise ValueError(f"{len(self.permissions)} permissions exceed {C2_MAX}")

    def __iter__(self) -> Iterator[Permission]:
        return iter(self.permissions)

    def __len__(self) -> int:
        return len(self.permissions)

    def encode(self) -> bytes:
        """The Security.2 encoding."""
        return encode_permission_set(self)


def encode_permission(permission: Permission) -> bytes:
    """The Security.1 encoding of one permission."""
    data = permission.data()
    out = encode_c2(permission.TYPE)
    if data is None:
        return out
    if len(data) > C2_MAX:
        raise ValueError(f"permission data of {len(data)} bytes exceeds {C2_MAX}")
    return out + encode_c2(len(data)) + data


def encode_permission_set(permissions: PermissionSet) -> bytes:
    """The Security.2 encoding: count (c2) and each permission."""
    out = bytearray(encode_c2(len(permissions.permissions)))
    for permission in permissions.permissions:
        out += encode_permission(permission)
    return bytes(out)


def _single_oid(data: bytes, what: str) -> OID:
    reader = Reader(data)
    oid = read_oid(reader)
    reader.expect_end(what)
    return oid


def _decode_binding(data: bytes) -> BindingPermission:
    reader = Reader(data)
    flags = reader.u8()
    if flags & _BINDING_RESERVED:
        raise BadPacket("binding permission: reserved flag 0x20 set")
    pattern = read_oid(reader)
    interface = read_iid(reader) if flags & _BINDING_INTERFACE else None
    reader.expect_end("binding permission")
    try:
        return BindingPermission(
            Action(flags & _ALL_ACTIONS),
            pattern,
            interface,
            class_match=bool(flags & _BINDING_CLASS_MATCH),
        )
    except ValueError as exc:
        raise BadPacket(f"binding permission: {exc}") from None


def read_permission(reader: Reader) -> Permission:
    """Read one Security.1 permission (untrusted input; raises ``BadPacket``)."""
    type_id = reader.c2()
    if not type_id % 2:
        if type_id == PermissionType.REQUESTOR:
            return RequestorPermission()
        if type_id == PermissionType.PROVIDER:
            return ProviderPermission()
        return RawPermission(type_id)
    data = reader.take(reader.c2())
    if type_id == PermissionType.BINDING:
        return _decode_binding(data)
    if type_id == PermissionType.IAM:
        return IamPermission(_single_oid(data, "IAM permission"))
    if type_id == PermissionType.ACTAS:
        return ActAsPermission(_single_oid(data, "ACTAS permission"))
    if type_id == PermissionType.TUNNEL_DOMAIN:
        return TunnelDomainPermission(_single_oid(data, "tunnel domain permission"))
    if type_id == PermissionType.DEFINE:
        return DefinePermission(data)
    return RawPermission(type_id, data)


def read_permission_set(reader: Reader) -> PermissionSet:
    """Read one Security.2 permission set (untrusted input; raises ``BadPacket``)."""
    count = reader.c2()
    # Each permission takes at least one byte: refuse impossible counts early.
    if count > reader.remaining():
        raise BadPacket(f"permission set claims {count} permissions in {reader.remaining()} bytes")
    return PermissionSet(tuple(read_permission(reader) for _ in range(count)))


def decode_permission_set_untrusted(data: bytes) -> PermissionSet:
    """Decode bytes holding exactly one permission set."""
    reader = Reader(data)
    permissions = read_permission_set(reader)
    reader.expect_end("permission set")
    return permissions
