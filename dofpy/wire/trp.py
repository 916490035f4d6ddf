"""TRP, the Ticket Request Protocol (application 129): a node asks its domain's
Authentication Server (AS) for session keys, tickets and security scopes.

The application payload (after the c2 application id 129) is an opcode byte and
a body. As for DSP, the DPP response flag (not the opcode byte) marks a
response; the dissector ORs 0x80 into the opcode of responses, so the byte on
the wire is always below 0x80 and a response carries its command's opcode.
Layouts, as Wireshark's DOF dissector reads them (Security.N are the shared
blocks of DOF 2008.16, below)::

    Reject              0  rsp  error code (1 byte, TrpError)
    Request KEK         1  cmd  domain (OID) · key request · group (OID)
                           rsp  initiator ticket · THB (1) · TMIN (1) · TMAX (1)
                                · epoch (2, BE) · group SID (OID) · security
                                scope · security mode · SSID (c4) · permission
                                set · group validation · initiator validation
    Request Random      2  cmd  domain · key request
                           rsp  initiator ticket
    Request Session     3  cmd  domain · responder block · initiator block
                           rsp  responder ticket · initiator ticket ·
                                authenticator block
    Request Scopes      4  cmd  domain · duration (1) · key request · node (OID)
                           rsp  initiator ticket · duration (1) · security
                                scope · validation
    Resolve Credential  6  cmd  domain · identity resolution
                           rsp  identity resolution
    Validate Credential 9  cmd  domain · identity · data (rest, opaque)
                           rsp  data (rest, opaque)

Opcodes 7, 8 and 10 (local / remote domain) have no public layout; the
decoder refuses them.

Shared security blocks:

- identity (Security.3.1): credential type (c2) · stage (1 byte, must be 0) ·
  node (OID)
- identity resolution (3.2): credential type (c2) · stage (1) · length (c2) ·
  public data
- key request (Security.4): flags (0x80 L, 0x40 F, 0x30 reserved zero, 0x0F
  nonce length - 1) · identity · nonce (1..16 bytes) · permission set
- ticket (Security.5): MAC (32) · KEY (32)
- initiator block (6.1): desired duration (1) · security mode · key request
- responder block (6.2): key request
- authenticator block (6.3): granted duration (1) · security scope ·
  initiator validation · responder validation
- security scope (10): count (c2) · permission group id (c4) each
- validation (11): count (c2) · permission scope (12) each
- permission scope (12): byte (bits 7-6 mode: 0 reference, 1 relative,
  2 absolute, 3 continued; bits 5-0 count) · count group ids (c4), absent for
  mode 0
- security mode (13): a DSP option (code, protocol id 0x6000..0x6FFF, length,
  value), e.g. CCM 0x6001
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from dofpy.errors import BadPacket
from dofpy.wire._codec import C2_MAX, C4_MAX, Reader, encode_c2, encode_c4
from dofpy.wire.dsp import DspOption, DspOptionFamily
from dofpy.wire.oid import OID, read_oid
from dofpy.wire.permissions import PermissionSet, encode_permission_set, read_permission_set

__all__ = [
    "CCM_SECURITY_MODE",
    "GROUP_ALL_SCOPES",
    "GROUP_NO_MASK",
    "GROUP_SESSION_SCOPE",
    "KEY_CREDENTIAL",
    "TICKET_SIZE",
    "AuthenticatorBlock",
    "IdentityResolution",
    "InitiatorBlock",
    "KeyRequest",
    "PermissionScope",
    "RequestKekCommand",
    "RequestKekResponse",
    "RequestRandomCommand",
    "RequestRandomResponse",
    "RequestScopesCommand",
    "RequestScopesResponse",
    "RequestSessionCommand",
    "RequestSessionResponse",
    "ResolveCredentialCommand",
    "ResolveCredentialResponse",
    "ScopeMode",
    "SecurityIdentity",
    "Ticket",
    "TrpError",
    "TrpOpcode",
    "TrpPdu",
    "TrpReject",
    "ValidateCredentialCommand",
    "ValidateCredentialResponse",
    "decode_trp_untrusted",
    "default_ccm_mode",
    "encode_trp",
    "read_authenticator_block",
    "read_identity",
    "read_identity_resolution",
    "read_initiator_block",
    "read_key_request",
    "read_security_mode",
    "read_ticket",
]

TICKET_SIZE = 32
# dofpy's credential type for a 256-bit key credential (identity secret). No
# public registry gives the number; it only has to agree between our nodes.
KEY_CREDENTIAL = 1
# Permission group ids with a meaning of their own (the dissector names them).
GROUP_ALL_SCOPES = 0x3FFFFFFF
GROUP_NO_MASK = 0x3FFFFFFE
GROUP_SESSION_SCOPE = 0x3FFFFFFD
_NONCE_MAX = 16
_KEY_REQUEST_L = 0x80
_KEY_REQUEST_F = 0x40
_KEY_REQUEST_RESERVED = 0x30
_SCOPE_MAX_IDS = 0x3F


class TrpOpcode(enum.IntEnum):
    """TRP opcodes (the byte on the wire; the DPP flag marks responses)."""

    REJECT = 0
    REQUEST_KEK = 1
    REQUEST_RANDOM = 2
    REQUEST_SESSION = 3
    REQUEST_SECURITY_SCOPES = 4
    RESOLVE_CREDENTIAL = 6
    VALIDATE_CREDENTIAL = 9


class TrpError(enum.IntEnum):
    """Error codes of a TRP Reject."""

    PARSE_ERROR = 1
    ACCESS_DENIED = 2
    UNKNOWN_INITIATOR = 3
    UNKNOWN_RESPONDER = 4
    UNKNOWN_DOMAIN = 5
    HIGH_LOAD = 6
    BAD_MODE = 7
    INCOMPATIBLE_SECURITY_IDENTIFIERS = 8
    INTERNAL_ERROR = 127


class ScopeMode(enum.IntEnum):
    """Mode of a permission scope (Security.12)."""

    REFERENCE = 0
    RELATIVE = 1
    ABSOLUTE = 2
    CONTINUED = 3


def _check_u8(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValueError(f"{name} {value!r} outside 0..255")


def _check_c2(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= C2_MAX:
        raise ValueError(f"{name} {value!r} outside 0..{C2_MAX:#x}")


def _check_group_ids(ids: tuple[int, ...], name: str, maximum: int = C2_MAX) -> None:
    if not isinstance(ids, tuple):
        raise ValueError(f"{name} must be a tuple")
    if len(ids) > maximum:
        raise ValueError(f"{name} has {len(ids)} ids, more than {maximum}")
    for group in ids:
        if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group <= C4_MAX:
            raise ValueError(f"{name}: permission group id {group!r} outside 0..{C4_MAX:#x}")


# -- shared security blocks -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecurityIdentity:
    """Security.3.1: who a key request is for (credential type and node OID)."""

    node: OID
    credential_type: int = KEY_CREDENTIAL

    def __post_init__(self) -> None:
        _check_c2(self.credential_type, "credential type")

    def encode(self) -> bytes:
        """The Security.3.1 encoding (stage is always 0)."""
        return encode_c2(self.credential_type) + b"\x00" + self.node.encode()


def read_identity(reader: Reader) -> SecurityIdentity:
    """Read a Security.3.1 identity (untrusted input)."""
    credential_type = reader.c2()
    if reader.u8() != 0:
        raise BadPacket("identity: stage must be 0")
    return SecurityIdentity(read_oid(reader), credential_type)


@dataclass(frozen=True, slots=True)
class IdentityResolution:
    """Security.3.2: a credential's public data."""

    credential_type: int
    stage: int = 0
    public_data: bytes = b""

    def __post_init__(self) -> None:
        _check_c2(self.credential_type, "credential type")
        _check_u8(self.stage, "identity resolution stage")
        if len(self.public_data) > C2_MAX:
            raise ValueError(f"public data of {len(self.public_data)} bytes exceeds {C2_MAX}")

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


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """Security.4: a node's key request: identity, nonce (1..16 bytes) and the
    permissions it asks for. ``l_flag``/``f_flag`` are the L and F bits, carried
    as they are."""

    identity: SecurityIdentity
    nonce: bytes
    permissions: PermissionSet = field(default_factory=PermissionSet)
    l_flag: bool = False
    f_flag: bool = False

    def __post_init__(self) -> None:
        if not 1 <= len(self.nonce) <= _NONCE_MAX:
            raise ValueError(f"key request nonce of {len(self.nonce)} bytes: needs 1..16")

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
        raise BadPacket("key request: reserved bits 0x30 set")
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


@dataclass(frozen=True, slots=True)
class Ticket:
    """Security.5: a key grant, ``MAC (32) || KEY (32)``; the holder of the
    identity secret recovers the key from it."""

    mac: bytes
    key: bytes

    def __post_init__(self) -> None:
        if len(self.mac) != TICKET_SIZE or len(self.key) != TICKET_SIZE:
            raise ValueError("a ticket is a 32-byte MAC and a 32-byte KEY")

    def encode(self) -> bytes:
        """The 64-byte encoding."""
        return self.mac + self.key

    @classmethod
    def from_bytes(cls, data: bytes) -> Ticket:
        """Split 64 bytes into MAC and KEY; ``ValueError`` on another length."""
        if len(data) != 2 * TICKET_SIZE:
            raise ValueError(f"a ticket is 64 bytes, not {len(data)}")
        return cls(data[:TICKET_SIZE], data[TICKET_SIZE:])


def read_ticket(reader: Reader) -> Ticket:
    """Read a Security.5 ticket (untrusted input)."""
    return Ticket(reader.take(TICKET_SIZE), reader.take(TICKET_SIZE))


CCM_SECURITY_MODE = 0x6001


def _check_security_mode(mode: DspOption) -> None:
    if not 0x6000 <= mode.data <= 0x6FFF:
        raise ValueError(f"security mode protocol {mode.data:#x} outside 0x6000..0x6FFF")


def read_security_mode(reader: Reader) -> DspOption:
    """Read a Security.13 security mode (a DSP option; untrusted input)."""
    code = reader.u8()
    data = reader.u16()
    value = reader.take(reader.u8())
    if not 0x6000 <= data <= 0x6FFF:
        raise BadPacket(f"security mode protocol {data:#x} outside 0x6000..0x6FFF")
    return DspOption(code, data, value)


def default_ccm_mode(mac_length: int = 16) -> DspOption:
    """The CCM security mode option as the dissector's CCM code reads it: a
    strength count of 1, strength 1 (AES-256), then a flags byte with 0x80
    (encrypted) and the tag length ``mac_length`` (4, 6, ..., 16) as
    ``(mac_length - 2) / 2`` in bits 0-2."""
    if mac_length not in range(4, 17, 2):
        raise ValueError(f"CCM tag length {mac_length} not one of 4, 6, ..., 16")
    flags = 0x80 | (mac_length - 2) // 2
    return DspOption(DspOptionFamily.CCM, CCM_SECURITY_MODE, bytes((1, 1, flags)))


@dataclass(frozen=True, slots=True)
class InitiatorBlock:
    """Security.6.1: the initiator's desired duration, security mode and key
    request."""

    desired_duration: int
    security_mode: DspOption
    request: KeyRequest

    def __post_init__(self) -> None:
        _check_u8(self.desired_duration, "desired duration")
        _check_security_mode(self.security_mode)

    def encode(self) -> bytes:
        """The Security.6.1 encoding."""
        return bytes((self.desired_duration,)) + self.security_mode.encode() + self.request.encode()


def read_initiator_block(reader: Reader) -> InitiatorBlock:
    """Read a Security.6.1 initiator block (untrusted input)."""
    duration = reader.u8()
    mode = read_security_mode(reader)
    return InitiatorBlock(duration, mode, read_key_request(reader))


@dataclass(frozen=True, slots=True)
class PermissionScope:
    """Security.12: a mode and up to 63 permission group ids (none for
    ``REFERENCE``)."""

    mode: ScopeMode
    group_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ScopeMode(self.mode))
        _check_group_ids(self.group_ids, "permission scope", _SCOPE_MAX_IDS)
        if self.mode == ScopeMode.REFERENCE and self.group_ids:
            raise ValueError("a reference permission scope carries no group ids")

    def encode(self) -> bytes:
        """The Security.12 encoding."""
        out = bytearray(((self.mode << 6) | len(self.group_ids),))
        for group in self.group_ids:
            out += encode_c4(group)
        return bytes(out)


def _read_group_ids(reader: Reader, count: int) -> tuple[int, ...]:
    if count > reader.remaining():
        raise BadPacket(f"{count} group ids cannot fit in {reader.remaining()} bytes")
    return tuple(reader.c4() for _ in range(count))


def _read_permission_scope(reader: Reader) -> PermissionScope:
    first = reader.u8()
    mode, count = ScopeMode(first >> 6), first & _SCOPE_MAX_IDS
    if mode == ScopeMode.REFERENCE:
        if count:
            raise BadPacket("reference permission scope with a non-zero count")
        return PermissionScope(mode)
    return PermissionScope(mode, _read_group_ids(reader, count))


def _encode_scope(group_ids: tuple[int, ...]) -> bytes:
    out = bytearray(encode_c2(len(group_ids)))
    for group in group_ids:
        out += encode_c4(group)
    return bytes(out)


def _read_scope(reader: Reader) -> tuple[int, ...]:
    return _read_group_ids(reader, reader.c2())


def _encode_validation(scopes: tuple[PermissionScope, ...]) -> bytes:
    out = bytearray(encode_c2(len(scopes)))
    for scope in scopes:
        out += scope.encode()
    return bytes(out)


def _read_validation(reader: Reader) -> tuple[PermissionScope, ...]:
    count = reader.c2()
    if count > reader.remaining():
        raise BadPacket(f"{count} permission scopes cannot fit in {reader.remaining()} bytes")
    return tuple(_read_permission_scope(reader) for _ in range(count))


def _check_validation(scopes: tuple[PermissionScope, ...], name: str) -> None:
    if not isinstance(scopes, tuple) or len(scopes) > C2_MAX:
        raise ValueError(f"{name} must be a tuple of at most {C2_MAX} permission scopes")


@dataclass(frozen=True, slots=True)
class AuthenticatorBlock:
    """Security.6.3: what the AS granted: duration, the session's security
    scope (permission group ids) and the initiator's / responder's validations."""

    granted_duration: int
    scope: tuple[int, ...] = ()
    initiator_validation: tuple[PermissionScope, ...] = ()
    responder_validation: tuple[PermissionScope, ...] = ()

    def __post_init__(self) -> None:
        _check_u8(self.granted_duration, "granted duration")
        _check_group_ids(self.scope, "security scope")
        _check_validation(self.initiator_validation, "initiator validation")
        _check_validation(self.responder_validation, "responder validation")

    def encode(self) -> bytes:
        """The Security.6.3 encoding."""
        return (
            bytes((self.granted_duration,))
            + _encode_scope(self.scope)
            + _encode_validation(self.initiator_validation)
            + _encode_validation(self.responder_validation)
        )


def read_authenticator_block(reader: Reader) -> AuthenticatorBlock:
    """Read a Security.6.3 authenticator block (untrusted input)."""
    duration = reader.u8()
    scope = _read_scope(reader)
    initiator = _read_validation(reader)
    return AuthenticatorBlock(duration, scope, initiator, _read_validation(reader))


# -- PDUs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrpReject:
    """The AS refused the command."""

    error: TrpError
    opcode: ClassVar[TrpOpcode] = TrpOpcode.REJECT
    is_response: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_u8(int(self.error), "TRP error code")

    def body(self) -> bytes:
        return bytes((int(self.error),))


@dataclass(frozen=True, slots=True)
class RequestKekCommand:
    """Ask for a group's key-encryption key."""

    domain: OID
    request: KeyRequest
    group: OID
    opcode: ClassVar[TrpOpcode] = TrpOpcode.REQUEST_KEK
    is_response: ClassVar[bool] = False

    def body(self) -> bytes:
        return self.domain.encode() + self.request.encode() + self.group.encode()


@dataclass(frozen=True, slots=True)
class RequestKekResponse:
    """The group key grant and the group's parameters."""

    ticket: Ticket
    thb: int
    tmin: int
    tmax: int
    epoch: int
    group_sid: OID
    scope: tuple[int, ...]
    security_mode: DspOption
    ssid: int
    permissions: PermissionSet = field(default_factory=PermissionSet)
    group_validation: tuple[PermissionScope, ...] = ()
    initiator_validation: tuple[PermissionScope, ...] = ()
    opcode: ClassVar[TrpOpcode] = TrpOpcode.REQUEST_KEK
    is_response: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for name in ("thb", "tmin", "tmax"):
            _check_u8(getattr(self, name), name.upper())
        if isinstance(self.epoch, bool) or not 0 <= self.epoch <= 0xFFFF:
            raise ValueError(f"epoch {self.epoch} outside 0..65535")
        _check_group_ids(self.scope, "security scope")
        _check_security_mode(self.security_mode)
        if isinstance(self.ssid, bool) or not 0 <= self.ssid <= C4_MAX:
            raise ValueError(f"SSID {self.ssid} outside 0..{C4_MAX:#x}")
        _check_validation(self.group_validation, "group validation")
        _check_validation(self.initiator_validation, "initiator validation")

    def body(self) -> bytes:
        return (
            self.ticket.encode()
            + bytes((self.thb, self.tmin, self.tmax))
            + self.epoch.to_bytes(2, "big")
            + self.group_sid.encode()
            + _encode_scope(self.scope)
            + self.security_mode.encode()
            + encode_c4(self.ssid)
            + encode_permission_set(self.permissions)
            + _encode_validation(self.group_validation)
            + _encode_validation(self.initiator_validation)
        )


@dataclass(frozen=True, slots=True)
class RequestRandomCommand:
    """Ask the AS for a random key, wrapped for the requester."""

    domain: OID
    request: KeyRequest
    opcode: ClassVar[TrpOpcode] = TrpOpcode.REQUEST_RANDOM
    is_response: ClassVar[bool] = False

    def body(self) -> bytes:
        return self.domain.encode() + self.request.encode()


@dataclass(frozen=True, slots=True)
class RequestRandomResponse:
    """The random key, as a ticket for the requester."""

    ticket: Ticket
    opcode: ClassVar[TrpOpcode] = TrpOpcode.REQUEST_RANDOM
    is_response: ClassVar[bool] = True

    def body(self) -> bytes:
        return self.ticket.encode()


@dataclass(frozen=True, slots=True)
class RequestSessionCommand:
    """A responder asks for a session key with an initiator: its own key
    request (responder block) and the initiator's block from the TEP Rekey."""

    domain: OID
    responder: KeyRequest
    initiator: InitiatorBlock
    opcode: ClassVar[TrpOpcode] = TrpOpcode.REQUEST_SESSION
    is_response: ClassVar[bool] = False

    def body(self) -> bytes:
        return self.domain.encode() + self.responder.encode() + self.initiator.encode()


@dataclass(frozen=True, slots=True)
class RequestSessionResponse:
    """The session key twice: a ticket for the responder and one for the
    initiator (which the responder forwards in the TEP Accept), and what the
    AS granted."""

    responder_ticket: Ticket
    initiator_ticket: Ticket
    authenticator: AuthenticatorBlock
    opcode: ClassVar[TrpOpcode] = TrpOpcode.REQUEST_SESSION
    is_response: ClassVar[bool] = True

    def body(self) -> bytes:
        return (
            self.responder_ticket.encode()
            + self.initiator_ticket.encode()
            + self.authenticator.encode()
        )


@dataclass(frozen=True, slots=True)
class RequestScopesCommand:
    """Ask which security scopes a node may use."""

    domain: OID
    duration: int
    request: KeyRequest
    node: OID
    opcode: ClassVar[TrpOpcode] = TrpOpcode.REQUEST_SECURITY_SCOPES
    is_response: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_u8(self.duration, "duration")

    def body(self) -> bytes:
        return (
            self.domain.encode()
            + bytes((self.duration,))
            + self.request.encode()
            + self.node.encode()
        )


@dataclass(frozen=True, slots=True)
class RequestScopesResponse:
    """The scopes granted, with a ticket."""

    ticket: Ticket
    duration: int
    scope: tuple[int, ...] = ()
    validation: tuple[PermissionScope, ...] = ()
    opcode: ClassVar[TrpOpcode] = TrpOpcode.REQUEST_SECURITY_SCOPES
    is_response: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_u8(self.duration, "duration")
        _check_group_ids(self.scope, "security scope")
        _check_validation(self.validation, "validation")

    def body(self) -> bytes:
        return (
            self.ticket.encode()
            + bytes((self.duration,))
            + _encode_scope(self.scope)
            + _encode_validation(self.validation)
        )


@dataclass(frozen=True, slots=True)
class ResolveCredentialCommand:
    """Ask the AS to resolve a credential's public data."""

    domain: OID
    resolution: IdentityResolution
    opcode: ClassVar[TrpOpcode] = TrpOpcode.RESOLVE_CREDENTIAL
    is_response: ClassVar[bool] = False

    def body(self) -> bytes:
        return self.domain.encode() + self.resolution.encode()


@dataclass(frozen=True, slots=True)
class ResolveCredentialResponse:
    """The resolved credential."""

    resolution: IdentityResolution
    opcode: ClassVar[TrpOpcode] = TrpOpcode.RESOLVE_CREDENTIAL
    is_response: ClassVar[bool] = True

    def body(self) -> bytes:
        return self.resolution.encode()


@dataclass(frozen=True, slots=True)
class ValidateCredentialCommand:
    """Ask the AS to validate an identity's credential; ``data`` is opaque."""

    domain: OID
    identity: SecurityIdentity
    data: bytes = b""
    opcode: ClassVar[TrpOpcode] = TrpOpcode.VALIDATE_CREDENTIAL
    is_response: ClassVar[bool] = False

    def body(self) -> bytes:
        return self.domain.encode() + self.identity.encode() + self.data


@dataclass(frozen=True, slots=True)
class ValidateCredentialResponse:
    """The validation result; ``data`` is opaque."""

    data: bytes = b""
    opcode: ClassVar[TrpOpcode] = TrpOpcode.VALIDATE_CREDENTIAL
    is_response: ClassVar[bool] = True

    def body(self) -> bytes:
        return self.data


TrpPdu = (
    TrpReject
    | RequestKekCommand
    | RequestKekResponse
    | RequestRandomCommand
    | RequestRandomResponse
    | RequestSessionCommand
    | RequestSessionResponse
    | RequestScopesCommand
    | RequestScopesResponse
    | ResolveCredentialCommand
    | ResolveCredentialResponse
    | ValidateCredentialCommand
    | ValidateCredentialResponse
)


def encode_trp(pdu: TrpPdu) -> bytes:
    """The TRP application payload (after the application id) for ``pdu``.

    Send it in a DPP packet with ``app_id=AppId.TRP`` and
    ``is_response=pdu.is_response``.
    """
    return bytes((pdu.opcode,)) + pdu.body()


# -- decoding -------------------------------------------------------------------------


def _reject(reader: Reader) -> TrpPdu:
    code = reader.u8()
    try:
        return TrpReject(TrpError(code))
    except ValueError:
        raise BadPacket(f"unknown TRP error code {code}") from None


def _kek_command(reader: Reader) -> TrpPdu:
    domain = read_oid(reader)
    request = read_key_request(reader)
    return RequestKekCommand(domain, request, read_oid(reader))


def _kek_response(reader: Reader) -> TrpPdu:
    ticket = read_ticket(reader)
    thb, tmin, tmax = reader.u8(), reader.u8(), reader.u8()
    epoch = reader.u16()
    group_sid = read_oid(reader)
    scope = _read_scope(reader)
    mode = read_security_mode(reader)
    ssid = reader.c4()
    permissions = read_permission_set(reader)
    group_validation = _read_validation(reader)
    return RequestKekResponse(
        ticket,
        thb,
        tmin,
        tmax,
        epoch,
        group_sid,
        scope,
        mode,
        ssid,
        permissions,
        group_validation,
        _read_validation(reader),
    )


def _random_command(reader: Reader) -> TrpPdu:
    domain = read_oid(reader)
    return RequestRandomCommand(domain, read_key_request(reader))


def _session_command(reader: Reader) -> TrpPdu:
    domain = read_oid(reader)
    responder = read_key_request(reader)
    return RequestSessionCommand(domain, responder, read_initiator_block(reader))


def _session_response(reader: Reader) -> TrpPdu:
    responder = read_ticket(reader)
    initiator = read_ticket(reader)
    return RequestSessionResponse(responder, initiator, read_authenticator_block(reader))


def _scopes_command(reader: Reader) -> TrpPdu:
    domain = read_oid(reader)
    duration = reader.u8()
    request = read_key_request(reader)
    return RequestScopesCommand(domain, duration, request, read_oid(reader))


def _scopes_response(reader: Reader) -> TrpPdu:
    ticket = read_ticket(reader)
    duration = reader.u8()
    scope = _read_scope(reader)
    return RequestScopesResponse(ticket, duration, scope, _read_validation(reader))


def _resolve_command(reader: Reader) -> TrpPdu:
    domain = read_oid(reader)
    return ResolveCredentialCommand(domain, read_identity_resolution(reader))


def _validate_command(reader: Reader) -> TrpPdu:
    domain = read_oid(reader)
    identity = read_identity(reader)
    return ValidateCredentialCommand(domain, identity, reader.rest())


_COMMANDS: dict[int, Callable[[Reader], TrpPdu]] = {
    TrpOpcode.REQUEST_KEK: _kek_command,
    TrpOpcode.REQUEST_RANDOM: _random_command,
    TrpOpcode.REQUEST_SESSION: _session_command,
    TrpOpcode.REQUEST_SECURITY_SCOPES: _scopes_command,
    TrpOpcode.RESOLVE_CREDENTIAL: _resolve_command,
    TrpOpcode.VALIDATE_CREDENTIAL: _validate_command,
}
_RESPONSES: dict[int, Callable[[Reader], TrpPdu]] = {
    TrpOpcode.REJECT: _reject,
    TrpOpcode.REQUEST_KEK: _kek_response,
    TrpOpcode.REQUEST_RANDOM: lambda reader: RequestRandomResponse(read_ticket(reader)),
    TrpOpcode.REQUEST_SESSION: _session_response,
    TrpOpcode.REQUEST_SECURITY_SCOPES: _scopes_response,
    TrpOpcode.RESOLVE_CREDENTIAL: lambda r: ResolveCredentialResponse(read_identity_resolution(r)),
    TrpOpcode.VALIDATE_CREDENTIAL: lambda reader: ValidateCredentialResponse(reader.rest()),
}


def decode_trp_untrusted(payload: bytes, is_response: bool) -> TrpPdu:
    """Decode a TRP application payload (after the application id 129).

    ``is_response`` is the DPP packet's response flag. Raises only
    ``BadPacket``.
    """
    reader = Reader(payload)
    if reader.at_end():
        raise BadPacket("empty TRP payload (the TRP no-op carries nothing to decode)")
    opcode = reader.u8()
    table = _RESPONSES if is_response else _COMMANDS
    parse = table.get(opcode)
    if parse is None:
        kind = "response" if is_response else "command"
        raise BadPacket(f"unsupported TRP {kind} opcode {opcode:#04x}")
    try:
        pdu = parse(reader)
    except ValueError as exc:  # a constructor refused a decoded value
        raise BadPacket(f"TRP: {exc}") from None
    reader.expect_end("TRP payload")
    return pdu
