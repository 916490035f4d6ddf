"""TEP, the Ticket Exchange Protocol (application 128): two nodes agree a
session key with the help of tickets from the domain's Authenticator.

The application payload (after the c2 application id 128) is an operation
byte and a body. Bits 0-3 are the opcode; on a Request command bit 0x10 (K)
asks for a new key and bit 0x20 (C) carries a confirmation. The DPP response
flag tells commands from responses (the dissector ORs 0x80 into the opcode
for its names). Layouts, as Wireshark's DOF dissector reads them:

============  ====  ========  ===============================================
PDU           byte  DPP       body
============  ====  ========  ===============================================
Request       0x01  command   initiator block
Rekey         0x11  command   domain OID (only when the packet is not secure)
                              · initiator block
Confirm       0x21  command   32-byte ticket confirmation (same operation id
                              as the Rekey)
End Session   0x05  command   (empty)
Sess. Ending  0x06  command   (empty)
Accept        0x01  response  initiator ticket (32-byte MAC · 32-byte KEY) ·
                              32-byte confirmation · responder init (only in
                              answer to a Rekey) · responder block ·
                              authenticator block
Confirm Ack   0x21  response  (empty)
Reject        0x00  response  code (1 byte) · description (rest, optional)
============  ====  ========  ===============================================

Blocks (numbers are the specification's, as the dissector names them):

- initiator block (Security.6.1): desired duration (1 byte) · desired
  security mode (Security.13, a DSP option: family 1 byte, protocol id
  2 bytes, length 1 byte, value) · key request (Security.4).
- key request (Security.4): flags (0x80 L, 0x40 F, 0x30 reserved 0, 0x0F nonce
  length - 1) · identity (Security.3.1: credential type c2 · stage 1 byte,
  0 · node OID) · nonce (1..16 bytes) · permission set (Security.2: c2 count
  of permissions, each a c2 type, and when the type is odd a c2 length and
  data).
- responder init (TEP.2.2.1): SSID c4 (only when the packet is not secure)
  · initial state (Security.9: c2 length, bytes).
- responder block (Security.6.2): a key request.
- authenticator block (Security.6.3): granted duration (1 byte) · session
  scope (Security.10: c2 count, c4 permission-group ids) · initiator and
  responder validation (Security.11 each: c2 count of Security.12 scopes,
  each a byte ``mode << 6 | count`` followed, when mode is not 0, by count c4
  group ids).

An empty payload (the application id alone) is the dissector's "TEP [nop]";
dofpy neither sends nor accepts it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from dofpy.errors import BadPacket
from dofpy.wire._codec import C2_MAX, C4_MAX, Reader, encode_c2, encode_c4
from dofpy.wire.ccm import CCM_PROTOCOL_ID, CcmOptions, decode_ccm_options_untrusted
from dofpy.wire.oid import OID, read_oid

__all__ = [
    "CONFIRMATION_SIZE",
    "TICKET_SIZE",
    "AuthenticatorBlock",
    "Credential",
    "InitiatorBlock",
    "KeyRequest",
    "PermissionScope",
    "PermissionSet",
    "ResponderInit",
    "SecurityMode",
    "TepAccept",
    "TepConfirm",
    "TepConfirmAck",
    "TepEndSession",
    "TepOpcode",
    "TepPdu",
    "TepReject",
    "TepRekey",
    "TepRequest",
    "TepSessionEnding",
    "decode_tep_untrusted",
    "encode_tep",
]

TICKET_SIZE = 64
CONFIRMATION_SIZE = 32
_MAX_NONCE = 16
_SECURITY_MODE_FAMILY = 2  # the DSP option family of security modes (CCM)


class TepOpcode(enum.IntEnum):
    """The TEP operation byte on the wire (the DPP flag marks responses)."""

    REJECT = 0x00  # response
    REQUEST = 0x01  # command; as a response: Accept
    END_SESSION = 0x05
    SESSION_ENDING = 0x06
    REKEY = 0x11  # Request with K
    CONFIRM = 0x21  # Request with C; as a response: Confirm Ack


def _check_u8(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValueError(f"TEP {name} {value!r} outside 0..255")


def _check_c2(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= C2_MAX:
        raise ValueError(f"TEP {name} {value!r} outside 0..{C2_MAX:#x}")


def _check_groups(groups: tuple[int, ...], limit: int, name: str) -> None:
    if not isinstance(groups, tuple) or len(groups) > limit:
        raise ValueError(f"{name} must be a tuple of at most {limit} group ids")
    for group in groups:
        if isinstance(group, bool) or not 0 <= group <= C4_MAX:
            raise ValueError(f"{name} group id {group} outside 0..{C4_MAX:#x}")


def _check_bytes(value: object, size: int, name: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"TEP {name} must be {size} bytes")


# -- permission set (kept opaque; dofpy.wire.permissions gives its meaning) ------


@dataclass(frozen=True, slots=True)
class PermissionSet:
    """A Security.2 permission set, kept as its raw (validated) encoding.

    ``PermissionSet()`` is the empty set (``00``). The structure is checked
    so that the blocks after it can be found; the meaning of each permission
    is another module's business.
    """

    raw: bytes = b"\x00"

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes):
            raise ValueError("a permission set's raw encoding must be bytes")
        reader = Reader(self.raw)
        try:
            _skip_permission_set(reader)
            reader.expect_end("permission set")
        except BadPacket as exc:
            raise ValueError(f"not a permission set encoding: {exc}") from None


def _skip_permission_set(reader: Reader) -> bytes:
    """Read one permission set and return its bytes. The c2 reads refuse
    non-minimal forms, so re-encoding gives back exactly the bytes read."""
    count = reader.c2()
    if count > reader.remaining():  # each permission takes at least one byte
        raise BadPacket(f"permission set of {count} in {reader.remaining()} bytes")
    out = bytearray(encode_c2(count))
    for _ in range(count):
        permission_type = reader.c2()
        out += encode_c2(permission_type)
        if permission_type % 2:  # odd types carry a length and data
            length = reader.c2()
            out += encode_c2(length) + reader.take(length)
    return bytes(out)


def _read_permission_set(reader: Reader) -> PermissionSet:
    return PermissionSet(_skip_permission_set(reader))


# -- blocks ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecurityMode:
    """Security.13: the desired security mode, a DSP option.

    ``SecurityMode.ccm(CcmOptions(...))`` is the usual one. ``family`` is the
    DSP option family (2 for security modes), ``protocol_id`` the mode
    (0x6001 CCM), ``value`` the mode's own option bytes.
    """

    protocol_id: int = CCM_PROTOCOL_ID
    value: bytes = b""
    family: int = _SECURITY_MODE_FAMILY

    def __post_init__(self) -> None:
        _check_u8(self.family, "security mode family")
        if isinstance(self.protocol_id, bool) or not 0x6000 <= self.protocol_id <= 0x6FFF:
            # The dissector flags ids outside the security-mode range.
            raise ValueError(f"security mode id {self.protocol_id} outside 0x6000..0x6FFF")
        if not isinstance(self.value, bytes) or len(self.value) > 0xFF:
            raise ValueError("security mode value must be at most 255 bytes")

    @classmethod
    def ccm(cls, options: CcmOptions | None = None) -> SecurityMode:
        """The CCM security mode with ``options`` (default: AES-256, 16-byte tag)."""
        return cls(CCM_PROTOCOL_ID, (options or CcmOptions()).encode())

    def ccm_options(self) -> CcmOptions:
        """The CCM options in ``value`` (raises ``BadPacket`` if they do not parse)."""
        if self.protocol_id != CCM_PROTOCOL_ID:
            raise BadPacket(f"security mode {self.protocol_id:#06x} is not CCM")
        return decode_ccm_options_untrusted(self.value)

    def encode(self) -> bytes:
        """The wire encoding."""
        return (
            bytes((self.family,))
            + self.protocol_id.to_bytes(2, "big")
            + bytes((len(self.value),))
            + self.value
        )


# AES-256, encrypted, 16-byte tag.
_DEFAULT_MODE = SecurityMode.ccm()


def _read_security_mode(reader: Reader) -> SecurityMode:
    family = reader.u8()
    protocol_id = reader.u16()
    value = reader.take(reader.u8())
    try:
        return SecurityMode(protocol_id, value, family)
    except ValueError as exc:
        raise BadPacket(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Credential:
    """Security.3.1: an identity: credential type (c2), stage and node OID.

    The node OID's encoding is the "identity" that tshark's identity-secret
    table matches.
    """

    node: OID
    credential_type: int = 1
    stage: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.node, OID):
            raise ValueError("a credential's node must be an OID")
        _check_c2(self.credential_type, "credential type")
        _check_u8(self.stage, "credential stage")

    def encode(self) -> bytes:
        """The wire encoding."""
        return encode_c2(self.credential_type) + bytes((self.stage,)) + self.node.encode()


def _read_credential(reader: Reader) -> Credential:
    credential_type = reader.c2()
    stage = reader.u8()
    return Credential(read_oid(reader), credential_type, stage)


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """Security.4: who asks (``identity``), its nonce (1..16 bytes) and the
    permissions it asks for. ``flag_l`` / ``flag_f`` are the specification's L
    and F bits (0x80, 0x40), kept for round trips; dofpy sends them clear."""

    identity: Credential
    nonce: bytes
    permissions: PermissionSet = PermissionSet()
    flag_l: bool = False
    flag_f: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.identity, Credential):
            raise ValueError("a key request's identity must be a Credential")
        if not isinstance(self.nonce, bytes) or not 1 <= len(self.nonce) <= _MAX_NONCE:
            raise ValueError("a key request nonce must be 1 to 16 bytes")
        if not isinstance(self.permissions, PermissionSet):
            raise ValueError("a key request's permissions must be a PermissionSet")

    def encode(self) -> bytes:
        """The wire encoding."""
        flags = (0x80 if self.flag_l else 0) | (0x40 if self.flag_f else 0) | (len(self.nonce) - 1)
        return bytes((flags,)) + self.identity.encode() + self.nonce + self.permissions.raw


def _read_key_request(reader: Reader) -> KeyRequest:
    flags = reader.u8()
    if flags & 0x30:
        raise BadPacket(f"key request reserved flag bits set: {flags:#04x}")
    identity = _read_credential(reader)
    nonce = reader.take((flags & 0x0F) + 1)
    permissions = _read_permission_set(reader)
    return KeyRequest(identity, nonce, permissions, bool(flags & 0x80), bool(flags & 0x40))


@dataclass(frozen=True, slots=True)
class InitiatorBlock:
    """Security.6.1: what the initiator asks for."""

    request: KeyRequest
    security_mode: SecurityMode = _DEFAULT_MODE
    desired_duration: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.request, KeyRequest):
            raise ValueError("an initiator block's request must be a KeyRequest")
        if not isinstance(self.security_mode, SecurityMode):
            raise ValueError("an initiator block's security mode must be a SecurityMode")
        _check_u8(self.desired_duration, "desired duration")

    def encode(self) -> bytes:
        """The wire encoding."""
        return bytes((self.desired_duration,)) + self.security_mode.encode() + self.request.encode()


def _read_initiator_block(reader: Reader) -> InitiatorBlock:
    duration = reader.u8()
    mode = _read_security_mode(reader)
    return InitiatorBlock(_read_key_request(reader), mode, duration)


@dataclass(frozen=True, slots=True)
class ResponderInit:
    """TEP.2.2.1: the new session's security state identifier (SSID, sent only
    when the Accept is not itself secure) and the security mode's initial
    state (Security.9). Its exact encoding enters the ticket confirmation."""

    ssid: int | None
    initial_state: bytes = b""

    def __post_init__(self) -> None:
        if self.ssid is not None and (isinstance(self.ssid, bool) or not 0 <= self.ssid <= C4_MAX):
            raise ValueError(f"SSID {self.ssid} outside 0..{C4_MAX:#x}")
        if not isinstance(self.initial_state, bytes) or len(self.initial_state) > C2_MAX:
            raise ValueError("initial state must be bytes, at most 0x7FFF")

    def encode(self) -> bytes:
        """The wire encoding."""
        head = encode_c4(self.ssid) if self.ssid is not None else b""
        return head + encode_c2(len(self.initial_state)) + self.initial_state


def _read_responder_init(reader: Reader, secure: bool) -> ResponderInit:
    ssid = None if secure else reader.c4()
    return ResponderInit(ssid, reader.take(reader.c2()))


@dataclass(frozen=True, slots=True)
class PermissionScope:
    """Security.12: ``mode`` (0..3; 0 = no groups follow) and the group ids
    (at most 63)."""

    mode: int
    groups: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.mode, bool) or not 0 <= self.mode <= 3:
            raise ValueError(f"permission scope mode {self.mode} outside 0..3")
        _check_groups(self.groups, 0x3F, "permission scope")
        if self.mode == 0 and self.groups:
            raise ValueError("permission scope mode 0 carries no groups")

    def encode(self) -> bytes:
        """The wire encoding."""
        return bytes(((self.mode << 6) | len(self.groups),)) + b"".join(
            encode_c4(group) for group in self.groups
        )


def _read_scopes(reader: Reader) -> tuple[PermissionScope, ...]:
    count = reader.c2()
    if count > reader.remaining():
        raise BadPacket(f"validation of {count} scopes in {reader.remaining()} bytes")
    scopes = []
    for _ in range(count):
        first = reader.u8()
        mode, n = first >> 6, first & 0x3F
        if mode == 0 and n:
            raise BadPacket("permission scope mode 0 with a non-zero count")
        groups = tuple(reader.c4() for _ in range(n)) if mode else ()
        scopes.append(PermissionScope(mode, groups))
    return tuple(scopes)


def _encode_scopes(scopes: tuple[PermissionScope, ...]) -> bytes:
    return encode_c2(len(scopes)) + b"".join(scope.encode() for scope in scopes)


def _read_groups(reader: Reader) -> tuple[int, ...]:
    count = reader.c2()
    if count > reader.remaining():
        raise BadPacket(f"security scope of {count} ids in {reader.remaining()} bytes")
    return tuple(reader.c4() for _ in range(count))


@dataclass(frozen=True, slots=True)
class AuthenticatorBlock:
    """Security.6.3: what the Authenticator granted: duration, the session's
    security scope (permission-group ids) and the validations of both sides."""

    granted_duration: int = 0
    scope: tuple[int, ...] = ()
    initiator_validation: tuple[PermissionScope, ...] = ()
    responder_validation: tuple[PermissionScope, ...] = ()

    def __post_init__(self) -> None:
        _check_u8(self.granted_duration, "granted duration")
        _check_groups(self.scope, C2_MAX, "security scope")
        for name in ("initiator_validation", "responder_validation"):
            scopes = getattr(self, name)
            if not isinstance(scopes, tuple) or len(scopes) > C2_MAX:
                raise ValueError(f"{name} must be a tuple of PermissionScope")
            if not all(isinstance(scope, PermissionScope) for scope in scopes):
                raise ValueError(f"{name} must hold PermissionScope values")

    def encode(self) -> bytes:
        """The wire encoding."""
        return (
            bytes((self.granted_duration,))
            + encode_c2(len(self.scope))
            + b"".join(encode_c4(group) for group in self.scope)
            + _encode_scopes(self.initiator_validation)
            + _encode_scopes(self.responder_validation)
        )


def _read_authenticator_block(reader: Reader) -> AuthenticatorBlock:
    duration = reader.u8()
    scope = _read_groups(reader)
    initiator = _read_scopes(reader)
    responder = _read_scopes(reader)
    return AuthenticatorBlock(duration, scope, initiator, responder)


# -- PDUs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TepRequest:
    """Request (inside an existing secure session): the initiator block only."""

    OPCODE: ClassVar[TepOpcode] = TepOpcode.REQUEST
    IS_RESPONSE: ClassVar[bool] = False

    initiator: InitiatorBlock

    def __post_init__(self) -> None:
        if not isinstance(self.initiator, InitiatorBlock):
            raise ValueError("initiator must be an InitiatorBlock")


@dataclass(frozen=True, slots=True)
class TepRekey:
    """Rekey: ask for a new session key. ``domain`` is required when the packet
    is not secure and absent when it is (the session names the domain)."""

    OPCODE: ClassVar[TepOpcode] = TepOpcode.REKEY
    IS_RESPONSE: ClassVar[bool] = False

    domain: OID | None
    initiator: InitiatorBlock

    def __post_init__(self) -> None:
        if self.domain is not None and not isinstance(self.domain, OID):
            raise ValueError("domain must be an OID or None")
        if not isinstance(self.initiator, InitiatorBlock):
            raise ValueError("initiator must be an InitiatorBlock")


@dataclass(frozen=True, slots=True)
class TepConfirm:
    """Confirm: the initiator proves it derived the session key."""

    OPCODE: ClassVar[TepOpcode] = TepOpcode.CONFIRM
    IS_RESPONSE: ClassVar[bool] = False

    confirmation: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.confirmation, CONFIRMATION_SIZE, "confirmation")


@dataclass(frozen=True, slots=True)
class TepEndSession:
    """End Session command."""

    OPCODE: ClassVar[TepOpcode] = TepOpcode.END_SESSION
    IS_RESPONSE: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class TepSessionEnding:
    """Session Ending command."""

    OPCODE: ClassVar[TepOpcode] = TepOpcode.SESSION_ENDING
    IS_RESPONSE: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class TepAccept:
    """Accept: the responder's answer to a Request or Rekey.

    ``ticket`` is the initiator ticket (32-byte MAC then 32-byte KEY, see
    :mod:`dofpy.security.crypto`); ``confirmation`` the HMAC proving the
    responder knows the key. ``responder_init`` is present exactly when the
    command was a Rekey; its ``ssid`` exactly when the Accept is not secure.
    """

    OPCODE: ClassVar[TepOpcode] = TepOpcode.REQUEST
    IS_RESPONSE: ClassVar[bool] = True

    ticket: bytes
    confirmation: bytes
    responder_init: ResponderInit | None
    responder: KeyRequest
    authenticator: AuthenticatorBlock = AuthenticatorBlock()

    def __post_init__(self) -> None:
        _check_bytes(self.ticket, TICKET_SIZE, "ticket")
        _check_bytes(self.confirmation, CONFIRMATION_SIZE, "confirmation")
        if self.responder_init is not None and not isinstance(self.responder_init, ResponderInit):
            raise ValueError("responder_init must be a ResponderInit or None")
        if not isinstance(self.responder, KeyRequest):
            raise ValueError("responder must be a KeyRequest")
        if not isinstance(self.authenticator, AuthenticatorBlock):
            raise ValueError("authenticator must be an AuthenticatorBlock")


@dataclass(frozen=True, slots=True)
class TepConfirmAck:
    """Confirm Ack response (empty)."""

    OPCODE: ClassVar[TepOpcode] = TepOpcode.CONFIRM
    IS_RESPONSE: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class TepReject:
    """Reject response: an error code and an optional description."""

    OPCODE: ClassVar[TepOpcode] = TepOpcode.REJECT
    IS_RESPONSE: ClassVar[bool] = True

    code: int
    description: bytes = b""

    def __post_init__(self) -> None:
        _check_u8(self.code, "reject code")
        if not isinstance(self.description, bytes):
            raise ValueError("reject description must be bytes")


TepPdu = (
    TepRequest
    | TepRekey
    | TepConfirm
    | TepEndSession
    | TepSessionEnding
    | TepAccept
    | TepConfirmAck
    | TepReject
)


def encode_tep(pdu: TepPdu) -> bytes:
    """The TEP application payload (after the application id) for ``pdu``.

    Send it in a DPP packet with ``app_id=AppId.TEP`` and
    ``is_response=pdu.IS_RESPONSE``. A Rekey's ``domain`` must be given
    exactly when that packet is not secure; an Accept's ``responder_init.ssid``
    likewise.
    """
    out = bytearray((pdu.OPCODE,))
    if isinstance(pdu, TepRekey):
        if pdu.domain is not None:
            out += pdu.domain.encode()
        out += pdu.initiator.encode()
    elif isinstance(pdu, TepRequest):
        out += pdu.initiator.encode()
    elif isinstance(pdu, TepConfirm):
        out += pdu.confirmation
    elif isinstance(pdu, TepAccept):
        out += pdu.ticket + pdu.confirmation
        if pdu.responder_init is not None:
            out += pdu.responder_init.encode()
        out += pdu.responder.encode() + pdu.authenticator.encode()
    elif isinstance(pdu, TepReject):
        out.append(pdu.code)
        out += pdu.description
    return bytes(out)


_EMPTY: dict[tuple[bool, int], TepPdu] = {
    (False, TepOpcode.END_SESSION): TepEndSession(),
    (False, TepOpcode.SESSION_ENDING): TepSessionEnding(),
    (True, TepOpcode.CONFIRM): TepConfirmAck(),
}


def decode_tep_untrusted(
    payload: bytes, *, is_response: bool, secure: bool = False, answers_rekey: bool = True
) -> TepPdu:
    """Decode a TEP application payload (after the application id 128).

    ``is_response`` is the DPP response flag; ``secure`` says the packet was
    protected (then a Rekey has no domain and an Accept's responder init no
    SSID); ``answers_rekey`` says an Accept answers a Rekey rather than a
    Request (then it carries a responder init).
    """
    reader = Reader(payload)
    opcode = reader.u8()
    pdu: TepPdu
    if (is_response, opcode) in _EMPTY:
        pdu = _EMPTY[(is_response, opcode)]
    elif not is_response and opcode == TepOpcode.REKEY:
        domain = None if secure else read_oid(reader)
        pdu = TepRekey(domain, _read_initiator_block(reader))
    elif not is_response and opcode == TepOpcode.REQUEST:
        pdu = TepRequest(_read_initiator_block(reader))
    elif not is_response and opcode == TepOpcode.CONFIRM:
        pdu = TepConfirm(reader.take(CONFIRMATION_SIZE))
    elif is_response and opcode == TepOpcode.REQUEST:
        ticket = reader.take(TICKET_SIZE)
        confirmation = reader.take(CONFIRMATION_SIZE)
        init = _read_responder_init(reader, secure) if answers_rekey else None
        responder = _read_key_request(reader)
        pdu = TepAccept(ticket, confirmation, init, responder, _read_authenticator_block(reader))
    elif is_response and opcode == TepOpcode.REJECT:
        pdu = TepReject(reader.u8(), reader.rest())
    else:
        kind = "response" if is_response else "command"
        raise BadPacket(f"TEP operation {opcode:#04x} is not a valid {kind}")
    reader.expect_end(f"TEP {type(pdu).__name__}")
    return pdu
