"""The shared security blocks of DOF 2008.16 ("Security.N"), used by TEP
(application 128, :mod:`dofpy.wire.tep`) and TRP (application 129,
:mod:`dofpy.wire.trp`).

Layouts, as Wireshark's DOF dissector reads them (``dissect_2008_16_security_*``;
c2/c4 are the minimal compressed integers of :mod:`dofpy.wire._codec`)::

    permission set     Security.2, see dofpy.wire.permissions
    identity           Security.3.1  credential type (c2) · stage (1 byte, 0; the
                                     dissector flags any other) · node (OID)
    identity resol.    Security.3.2  credential type (c2) · stage (1) · length (c2)
                                     · public data
    key request        Security.4    flags (0x80 L, 0x40 F, 0x30 reserved zero,
                                     0x0F nonce length - 1) · identity · nonce
                                     (1..16 bytes) · permission set
    ticket             Security.5    MAC (32) · KEY (32)
    initiator block    Security.6.1  desired duration (1) · security mode · key
                                     request
    responder block    Security.6.2  a key request
    authenticator blk  Security.6.3  granted duration (1) · security scope ·
                                     initiator validation · responder validation
    security scope     Security.10   count (c2) · permission group id (c4) each
    validation         Security.11   count (c2) · permission scope each
    permission scope   Security.12   byte: mode << 6 | count (0..63) · count group
                                     ids (c4), none for mode 0 (reference)
    security mode      Security.13   a DSP option: family (1, 2 for security
                                     modes) · protocol id (2, 0x6000..0x6FFF; CCM
                                     0x6001) · length (1) · value

Every ``read_*`` function reads one block from a :class:`Reader` holding
untrusted input and raises only ``BadPacket``; every ``encode()`` gives the
minimal encoding, so decoding and re-encoding give back the bytes read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from dofpy.errors import BadPacket
from dofpy.wire._codec import C2_MAX, C4_MAX, Reader, encode_c2, encode_c4
from dofpy.wire.ccm import CCM_PROTOCOL_ID, CcmOptions, decode_ccm_options_untrusted
from dofpy.wire.dsp import DspOption
from dofpy.wire.oid import OID, read_oid
from dofpy.wire.permissions import PermissionSet, encode_permission_set, read_permission_set

__all__ = [
    "GROUP_ALL_SCOPES",
    "GROUP_NO_MASK",
    "GROUP_SESSION_SCOPE",
    "KEY_CREDENTIAL",
    "SECURITY_MODE_FAMILY",
    "TICKET_PART_SIZE",
    "TICKET_SIZE",
    "AuthenticatorBlock",
    "IdentityResolution",
    "InitiatorBlock",
    "KeyRequest",
    "PermissionScope",
    "ScopeMode",
    "SecurityIdentity",
    "SecurityMode",
    "Ticket",
    "check_c2",
    "check_group_ids",
    "check_u8",
    "check_validation",
    "encode_security_scope",
    "encode_validation",
    "read_authenticator_block",
    "read_identity",
    "read_identity_resolution",
    "read_initiator_block",
    "read_key_request",
    "read_security_mode",
    "read_security_scope",
    "read_ticket",
    "read_validation",
]

# dofpy's credential type for a 256-bit key credential (identity secret). No
# public registry gives the number; it only has to agree between our nodes.
KEY_CREDENTIAL = 1
TICKET_PART_SIZE = 32  # the MAC and the KEY of a ticket, each
TICKET_SIZE = 2 * TICKET_PART_SIZE
SECURITY_MODE_FAMILY = 2  # the DSP option family of security modes
# Permission group ids with a meaning of their own (the dissector names them).
GROUP_ALL_SCOPES = 0x3FFFFFFF
GROUP_NO_MASK = 0x3FFFFFFE
GROUP_SESSION_SCOPE = 0x3FFFFFFD

_NONCE_MAX = 16
_KEY_REQUEST_L = 0x80
_KEY_REQUEST_F = 0x40
_KEY_REQUEST_RESERVED = 0x30
_SCOPE_MAX_IDS = 0x3F
_SECURITY_MODE_IDS = range(0x6000, 0x7000)


class ScopeMode(enum.IntEnum):
    """Mode of a permission scope (Security.12)."""

    REFERENCE = 0
    RELATIVE = 1
    ABSOLUTE = 2
    CONTINUED = 3


# -- value checks shared by the TEP and TRP constructors ---------------------------


def check_u8(value: int, name: str) -> None:
    """Refuse (``ValueError``) anything but an int in 0..255."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValueError(f"{name} {value!r} outside 0..255")


def check_c2(value: int, name: str) -> None:
    """Refuse (``ValueError``) anything but an int a c2 can carry."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= C2_MAX:
        raise ValueError(f"{name} {value!r} outside 0..{C2_MAX:#x}")


def check_group_ids(ids: tuple[int, ...], name: str, maximum: int = C2_MAX) -> None:
    """Refuse (``ValueError``) anything but a tuple of at most ``maximum``
    permission group ids (each a c4)."""
    if not isinstance(ids, tuple):
        raise ValueError(f"{name} must be a tuple of group ids")
    if len(ids) > maximum:
        raise ValueError(f"{name} has {len(ids)} ids, more than {maximum}")
    for group in ids:
        if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group <= C4_MAX:
            raise ValueError(f"{name}: permission group id {group!r} outside 0..{C4_MAX:#x}")


def check_validation(scopes: tuple[PermissionScope, ...], name: str) -> None:
    """Refuse (``ValueError``) anything but a tuple of at most 0x7FFF
    :class:`PermissionScope` (a Security.11 validation)."""
    if not isinstance(scopes, tuple) or len(scopes) > C2_MAX:
        raise ValueError(f"{name} must be a tuple of at most {C2_MAX} permission scopes")
    if not all(isinstance(scope, PermissionScope) for scope in scopes):
        raise ValueError(f"{name} must hold PermissionScope values")


# -- Security.3: identities ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecurityIdentity:
    """Security.3.1: who a key request is for: credential type, stage and node.

    The node OID's encoding is the "identity" that tshark's identity-secret
    table matches. ``stage`` is always 0: the dissector flags any other value
    as invalid, so dofpy neither sends nor accepts one.
    """

    node: OID
    credential_type: int = KEY_CREDENTIAL
    stage: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.node, OID):
            raise ValueError("an identity's node must be an OID")
        check_c2(self.credential_type, "credential type")
        if isinstance(self.stage, bool) or self.stage != 0:
            raise ValueError(f"identity stage {self.stage!r} is not 0")

    def encode(self) -> bytes:
        """The Security.3.1 encoding."""
        return encode_c2(self.credential_type) + bytes((self.stage,)) + self.node.encode()


def read_identity(reader: Reader) -> SecurityIdentity:
    """Read a Security.3.1 identity (untrusted input)."""
    credential_type = reader.c2()
    stage = reader.u8()
    if stage != 0:
        raise BadPacket(f"identity: stage {stage} is not 0")
    return SecurityIdentity(read_oid(reader), credential_type)


@dataclass(frozen=True, slots=True)
class IdentityResolution:
    """Security.3.2: a credential's public data."""

    credential_type: int
    stage: int = 0
    public_data: bytes = b""

    def __post_init__(self) -> None:
        check_c2(self.credential_type, "credential type")
        check_u8(self.stage, "identity resolution stage")
        if not isinstance(self.public_data, bytes) or len(self.public_data) > C2_MAX:
            raise ValueError(f"public data must be bytes, at most {C2_MAX}")

    def encode(self) -> bytes:
        """The Security.3.2 encoding."""
        return (
            encode_c2(self.credential_type)
            + bytes((self.stage,))
            + encode_c2(len(self.public_data))
            + self.public_data
        )


def read_identity_resolution(reader: Reader) -> IdentityResolution:
    """Read a Security.3.2 identity resolution (untrusted input)."""
    credential_type = reader.c2()
    stage = reader.u8()
    return IdentityResolution(credential_type, stage, reader.take(reader.c2()))


# -- Security.4: key request ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """Security.4: a node's key request: identity, nonce (1..16 bytes) and the
    permissions it asks for. ``l_flag`` / ``f_flag`` are the specification's L
    and F bits (0x80, 0x40), carried as they are; dofpy sends them clear."""

    identity: SecurityIdentity
    nonce: bytes
    permissions: PermissionSet = field(default_factory=PermissionSet)
    l_flag: bool = False
    f_flag: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.identity, SecurityIdentity):
            raise ValueError("a key request's identity must be a SecurityIdentity")
        if not isinstance(self.nonce, bytes) or not 1 <= len(self.nonce) <= _NONCE_MAX:
            raise ValueError("a key request nonce must be 1 to 16 bytes")
        if not isinstance(self.permissions, PermissionSet):
            raise ValueError("a key request's permissions must be a PermissionSet")

    def encode(self) -> bytes:
        """The Security.4 encoding."""
        flags = (len(self.nonce) - 1) | (_KEY_REQUEST_L if self.l_flag else 0)
        flags |= _KEY_REQUEST_F if self.f_flag else 0
        return (
            bytes((flags,))
            + self.identity.encode()
            + self.nonce
            + encode_permission_set(self.permissions)
        )


def read_key_request(reader: Reader) -> KeyRequest:
    """Read a Security.4 key request (untrusted input)."""
    flags = reader.u8()
    if flags & _KEY_REQUEST_RESERVED:
        raise BadPacket(f"key request: reserved bits 0x30 set in {flags:#04x}")
    identity = read_identity(reader)
    nonce = reader.take((flags & 0x0F) + 1)
    permissions = read_permission_set(reader)
    return KeyRequest(
        identity,
        nonce,
        permissions,
        l_flag=bool(flags & _KEY_REQUEST_L),
        f_flag=bool(flags & _KEY_REQUEST_F),
    )


# -- Security.5: ticket -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ticket:
    """Security.5: a key grant, ``MAC (32) || KEY (32)``; the holder of the
    identity secret recovers the key from it (:mod:`dofpy.security.crypto`)."""

    mac: bytes
    key: bytes

    def __post_init__(self) -> None:
        for part in (self.mac, self.key):
            if not isinstance(part, bytes) or len(part) != TICKET_PART_SIZE:
                raise ValueError("a ticket is a 32-byte MAC and a 32-byte KEY")

    def encode(self) -> bytes:
        """The 64-byte encoding."""
        return self.mac + self.key

    @classmethod
    def from_bytes(cls, data: bytes) -> Ticket:
        """Split 64 bytes into MAC and KEY; ``ValueError`` on another length."""
        if not isinstance(data, bytes) or len(data) != TICKET_SIZE:
            raise ValueError(f"a ticket is {TICKET_SIZE} bytes")
        return cls(data[:TICKET_PART_SIZE], data[TICKET_PART_SIZE:])


def read_ticket(reader: Reader) -> Ticket:
    """Read a Security.5 ticket (untrusted input)."""
    return Ticket(reader.take(TICKET_PART_SIZE), reader.take(TICKET_PART_SIZE))


# -- Security.13: security mode -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecurityMode:
    """Security.13: a security mode, carried as a DSP option.

    ``SecurityMode.ccm(CcmOptions(...))`` is the usual one. ``family`` is the
    DSP option family (2 for security modes), ``protocol_id`` the mode (0x6001
    CCM; the dissector flags ids outside 0x6000..0x6FFF) and ``value`` the
    mode's own option bytes.
    """

    protocol_id: int = CCM_PROTOCOL_ID
    value: bytes = b""
    family: int = SECURITY_MODE_FAMILY

    def __post_init__(self) -> None:
        check_u8(self.family, "security mode family")
        if isinstance(self.protocol_id, bool) or self.protocol_id not in _SECURITY_MODE_IDS:
            raise ValueError(f"security mode id {self.protocol_id!r} outside 0x6000..0x6FFF")
        if not isinstance(self.value, bytes) or len(self.value) > 0xFF:
            raise ValueError("security mode value must be bytes, at most 255")
        # A CCM option value is a strength count, that many strengths and a
        # flags byte; one cut short is a malformed packet to every other
        # OpenDOF implementation (Wireshark's dissector included), so dofpy
        # neither sends nor accepts one. The options' meaning is checked
        # where they are used (ccm_options).
        value = self.value
        if (
            self.protocol_id == CCM_PROTOCOL_ID
            and self.family == SECURITY_MODE_FAMILY
            and value
            and len(value) < value[0] + 2
        ):
            raise ValueError(
                f"CCM option value of {len(value)} bytes is cut short: {value[0]} strengths"
                " and a flags byte need "
                f"{value[0] + 2}"
            )

    @classmethod
    def ccm(cls, options: CcmOptions | None = None) -> SecurityMode:
        """The CCM security mode with ``options`` (default: AES-256, encrypted,
        16-byte tag)."""
        return cls(CCM_PROTOCOL_ID, (options or CcmOptions()).encode())

    def ccm_options(self) -> CcmOptions:
        """The CCM options in ``value`` (raises ``BadPacket`` if this is not
        CCM or they do not parse)."""
        if self.protocol_id != CCM_PROTOCOL_ID:
            raise BadPacket(f"security mode {self.protocol_id:#06x} is not CCM")
        return decode_ccm_options_untrusted(self.value)

    def encode(self) -> bytes:
        """The Security.13 encoding (that of the DSP option it is)."""
        return DspOption(self.family, self.protocol_id, self.value).encode()


def read_security_mode(reader: Reader) -> SecurityMode:
    """Read a Security.13 security mode (untrusted input)."""
    family = reader.u8()
    protocol_id = reader.u16()
    value = reader.take(reader.u8())
    if protocol_id not in _SECURITY_MODE_IDS:
        raise BadPacket(f"security mode id {protocol_id:#06x} outside 0x6000..0x6FFF")
    try:
        return SecurityMode(protocol_id, value, family)
    except ValueError as exc:
        raise BadPacket(str(exc)) from None


# AES-256, encrypted, 16-byte tag.
_DEFAULT_MODE = SecurityMode.ccm()


# -- Security.6.1: initiator block --------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitiatorBlock:
    """Security.6.1: what the initiator asks for: its key request, the
    security mode it wants and the desired duration."""

    request: KeyRequest
    security_mode: SecurityMode = _DEFAULT_MODE
    desired_duration: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.request, KeyRequest):
            raise ValueError("an initiator block's request must be a KeyRequest")
        if not isinstance(self.security_mode, SecurityMode):
            raise ValueError("an initiator block's security mode must be a SecurityMode")
        check_u8(self.desired_duration, "desired duration")

    def encode(self) -> bytes:
        """The Security.6.1 encoding."""
        return bytes((self.desired_duration,)) + self.security_mode.encode() + self.request.encode()


def read_initiator_block(reader: Reader) -> InitiatorBlock:
    """Read a Security.6.1 initiator block (untrusted input)."""
    duration = reader.u8()
    mode = read_security_mode(reader)
    return InitiatorBlock(read_key_request(reader), mode, duration)


# -- Security.10-12: scopes and validations -------------------------------------------


@dataclass(frozen=True, slots=True)
class PermissionScope:
    """Security.12: a mode and up to 63 permission group ids (none for
    ``REFERENCE``)."""

    mode: ScopeMode
    group_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.mode, bool) or not isinstance(self.mode, int):
            raise ValueError(f"permission scope mode {self.mode!r} is not a ScopeMode")
        object.__setattr__(self, "mode", ScopeMode(self.mode))
        check_group_ids(self.group_ids, "permission scope", _SCOPE_MAX_IDS)
        if self.mode == ScopeMode.REFERENCE and self.group_ids:
            raise ValueError("a reference permission scope carries no group ids")

    def encode(self) -> bytes:
        """The Security.12 encoding."""
        return bytes(((self.mode << 6) | len(self.group_ids),)) + b"".join(
            encode_c4(group) for group in self.group_ids
        )


def _read_group_ids(reader: Reader, count: int) -> tuple[int, ...]:
    if count > reader.remaining():  # each id takes at least one byte
        raise BadPacket(f"{count} group ids cannot fit in {reader.remaining()} bytes")
    return tuple(reader.c4() for _ in range(count))


def _read_permission_scope(reader: Reader) -> PermissionScope:
    first = reader.u8()
    mode, count = ScopeMode(first >> 6), first & _SCOPE_MAX_IDS
    if mode == ScopeMode.REFERENCE:
        if count:
            raise BadPacket("reference permission scope (mode 0) with a non-zero count")
        return PermissionScope(mode)
    return PermissionScope(mode, _read_group_ids(reader, count))


def encode_security_scope(group_ids: tuple[int, ...]) -> bytes:
    """The Security.10 encoding of a security scope (permission group ids)."""
    return encode_c2(len(group_ids)) + b"".join(encode_c4(group) for group in group_ids)


def read_security_scope(reader: Reader) -> tuple[int, ...]:
    """Read a Security.10 security scope (untrusted input)."""
    return _read_group_ids(reader, reader.c2())


def encode_validation(scopes: tuple[PermissionScope, ...]) -> bytes:
    """The Security.11 encoding of a validation (permission scopes)."""
    return encode_c2(len(scopes)) + b"".join(scope.encode() for scope in scopes)


def read_validation(reader: Reader) -> tuple[PermissionScope, ...]:
    """Read a Security.11 validation (untrusted input)."""
    count = reader.c2()
    if count > reader.remaining():  # each scope takes at least one byte
        raise BadPacket(f"{count} permission scopes cannot fit in {reader.remaining()} bytes")
    return tuple(_read_permission_scope(reader) for _ in range(count))


# -- Security.6.3: authenticator block ------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthenticatorBlock:
    """Security.6.3: what the Authenticator granted: duration, the session's
    security scope (permission group ids) and the validations of both sides."""

    granted_duration: int = 0
    scope: tuple[int, ...] = ()
    initiator_validation: tuple[PermissionScope, ...] = ()
    responder_validation: tuple[PermissionScope, ...] = ()

    def __post_init__(self) -> None:
        check_u8(self.granted_duration, "granted duration")
        check_group_ids(self.scope, "security scope")
        check_validation(self.initiator_validation, "initiator validation")
        check_validation(self.responder_validation, "responder validation")

    def encode(self) -> bytes:
        """The Security.6.3 encoding."""
        return (
            bytes((self.granted_duration,))
            + encode_security_scope(self.scope)
            + encode_validation(self.initiator_validation)
            + encode_validation(self.responder_validation)
        )


def read_authenticator_block(reader: Reader) -> AuthenticatorBlock:
    """Read a Security.6.3 authenticator block (untrusted input)."""
    duration = reader.u8()
    scope = read_security_scope(reader)
    initiator = read_validation(reader)
    return AuthenticatorBlock(duration, scope, initiator, read_validation(reader))
