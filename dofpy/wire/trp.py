"""TRP, the Ticket Request Protocol (application 129): a node asks its domain's
Authentication Server (AS) for session keys, tickets and security scopes.

The application payload (after the c2 application id 129) is an opcode byte and
a body. As for DSP, the DPP response flag (not the opcode byte) marks a
response; the dissector ORs 0x80 into the opcode of responses, so the byte on
the wire is always below 0x80 and a response carries its command's opcode.
Layouts, as Wireshark's DOF dissector reads them (Security.N are the shared
blocks of DOF 2008.16, see the end)::

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

The identity, identity resolution, key request, ticket, initiator /
responder / authenticator blocks, security scope, validation and security mode
are the shared security blocks of :mod:`dofpy.wire.security`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from dofpy.errors import BadPacket
from dofpy.wire._codec import C4_MAX, Reader, encode_c4
from dofpy.wire.oid import OID, read_oid
from dofpy.wire.permissions import PermissionSet, encode_permission_set, read_permission_set
from dofpy.wire.security import (
    AuthenticatorBlock,
    IdentityResolution,
    InitiatorBlock,
    KeyRequest,
    PermissionScope,
    SecurityIdentity,
    SecurityMode,
    Ticket,
    check_group_ids,
    check_u8,
    check_validation,
    encode_security_scope,
    encode_validation,
    read_authenticator_block,
    read_identity,
    read_identity_resolution,
    read_initiator_block,
    read_key_request,
    read_security_mode,
    read_security_scope,
    read_ticket,
    read_validation,
)

__all__ = [
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
    "TrpError",
    "TrpOpcode",
    "TrpPdu",
    "TrpReject",
    "ValidateCredentialCommand",
    "ValidateCredentialResponse",
    "decode_trp_untrusted",
    "encode_trp",
]


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


# -- PDUs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrpReject:
    """The AS refused the command."""

    error: TrpError
    opcode: ClassVar[TrpOpcode] = TrpOpcode.REJECT
    is_response: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_u8(int(self.error), "TRP error code")

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
    security_mode: SecurityMode
    ssid: int
    permissions: PermissionSet = field(default_factory=PermissionSet)
    group_validation: tuple[PermissionScope, ...] = ()
    initiator_validation: tuple[PermissionScope, ...] = ()
    opcode: ClassVar[TrpOpcode] = TrpOpcode.REQUEST_KEK
    is_response: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for name in ("thb", "tmin", "tmax"):
            check_u8(getattr(self, name), name.upper())
        if isinstance(self.epoch, bool) or not 0 <= self.epoch <= 0xFFFF:
            raise ValueError(f"epoch {self.epoch} outside 0..65535")
        check_group_ids(self.scope, "security scope")
        if not isinstance(self.security_mode, SecurityMode):
            raise ValueError("security_mode must be a SecurityMode")
        if isinstance(self.ssid, bool) or not 0 <= self.ssid <= C4_MAX:
            raise ValueError(f"SSID {self.ssid} outside 0..{C4_MAX:#x}")
        check_validation(self.group_validation, "group validation")
        check_validation(self.initiator_validation, "initiator validation")

    def body(self) -> bytes:
        return (
            self.ticket.encode()
            + bytes((self.thb, self.tmin, self.tmax))
            + self.epoch.to_bytes(2, "big")
            + self.group_sid.encode()
            + encode_security_scope(self.scope)
            + self.security_mode.encode()
            + encode_c4(self.ssid)
            + encode_permission_set(self.permissions)
            + encode_validation(self.group_validation)
            + encode_validation(self.initiator_validation)
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
        check_u8(self.duration, "duration")

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
        check_u8(self.duration, "duration")
        check_group_ids(self.scope, "security scope")
        check_validation(self.validation, "validation")

    def body(self) -> bytes:
        return (
            self.ticket.encode()
            + bytes((self.duration,))
            + encode_security_scope(self.scope)
            + encode_validation(self.validation)
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
    scope = read_security_scope(reader)
    mode = read_security_mode(reader)
    ssid = reader.c4()
    permissions = read_permission_set(reader)
    group_validation = read_validation(reader)
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
        read_validation(reader),
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
    scope = read_security_scope(reader)
    return RequestScopesResponse(ticket, duration, scope, read_validation(reader))


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
