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

The initiator block (Security.6.1), key request (Security.4, the responder
block 6.2), ticket (Security.5) and authenticator block (Security.6.3) are the
shared security blocks of :mod:`dofpy.wire.security`. TEP's own block:

- responder init (TEP.2.2.1): SSID c4 (only when the packet is not secure)
  · initial state (Security.9: c2 length, bytes).

An empty payload (the application id alone) is the dissector's "TEP [nop]";
dofpy neither sends nor accepts it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

from dofpy.errors import BadPacket
from dofpy.wire._codec import C2_MAX, C4_MAX, Reader, encode_c2, encode_c4
from dofpy.wire.oid import OID, read_oid
from dofpy.wire.security import (
    AuthenticatorBlock,
    InitiatorBlock,
    KeyRequest,
    Ticket,
    check_u8,
    read_authenticator_block,
    read_initiator_block,
    read_key_request,
    read_ticket,
)

__all__ = [
    "CONFIRMATION_SIZE",
    "ResponderInit",
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

CONFIRMATION_SIZE = 32


class TepOpcode(enum.IntEnum):
    """The TEP operation byte on the wire (the DPP flag marks responses)."""

    REJECT = 0x00  # response
    REQUEST = 0x01  # command; as a response: Accept
    END_SESSION = 0x05
    SESSION_ENDING = 0x06
    REKEY = 0x11  # Request with K
    CONFIRM = 0x21  # Request with C; as a response: Confirm Ack


def _check_bytes(value: object, size: int, name: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"TEP {name} must be {size} bytes")


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

    ticket: Ticket
    confirmation: bytes
    responder_init: ResponderInit | None
    responder: KeyRequest
    authenticator: AuthenticatorBlock = field(default_factory=AuthenticatorBlock)

    def __post_init__(self) -> None:
        if not isinstance(self.ticket, Ticket):
            raise ValueError("ticket must be a Ticket")
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
        check_u8(self.code, "TEP reject code")
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
        out += pdu.ticket.encode() + pdu.confirmation
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
        pdu = TepRekey(domain, read_initiator_block(reader))
    elif not is_response and opcode == TepOpcode.REQUEST:
        pdu = TepRequest(read_initiator_block(reader))
    elif not is_response and opcode == TepOpcode.CONFIRM:
        pdu = TepConfirm(reader.take(CONFIRMATION_SIZE))
    elif is_response and opcode == TepOpcode.REQUEST:
        ticket = read_ticket(reader)
        confirmation = reader.take(CONFIRMATION_SIZE)
        init = _read_responder_init(reader, secure) if answers_rekey else None
        responder = read_key_request(reader)
        pdu = TepAccept(ticket, confirmation, init, responder, read_authenticator_block(reader))
    elif is_response and opcode == TepOpcode.REJECT:
        pdu = TepReject(reader.u8(), reader.rest())
    else:
        kind = "response" if is_response else "command"
        raise BadPacket(f"TEP operation {opcode:#04x} is not a valid {kind}")
    reader.expect_end(f"TEP {type(pdu).__name__}")
    return pdu
