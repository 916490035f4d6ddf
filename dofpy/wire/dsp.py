"""DSP, the DOF Session Protocol (application 0): session open, configuration
and termination.

The application payload (after the c2 application id 0) is an opcode byte and
a body. The DPP response flag, not the opcode byte, tells a command from a
response; the dissector ORs 0x80 into the opcode for responses, so the opcode
byte on the wire is always below 0x80. Layouts, as the dissector reads them:

============  =====  ==========  ==========================================
PDU           code   DPP flag    body
============  =====  ==========  ==========================================
Query         0      command     (empty)
QueryResp     0      response    (the dissector does not decode it; dofpy
                                 sends the application ids, c2 each)
ConfigReq     1      command     options
ConfigAck     2      response    (empty)
ConfigNak     3      response    options
ConfigReject  4      response    (empty)
Terminate     5      command     (empty)
TerminateRsp  5      response    (empty)
Open          6      command     (empty)
OpenResponse  6      response    application ids (c2 each)
OpenSecure    7      response    application ids (c2 each)
============  =====  ==========  ==========================================

An option is ``code (1 byte, the family: 0 TEP, 1 OAP, 2 CCM, 3 TRP,
255 general) · data (2 bytes, big-endian; the protocol id, e.g. 1 for OAP,
0x6001 for CCM) · length (1 byte) · value``.

An empty payload (the application id alone) is the implicit no-op
``DSP [nop]``; the dissector flags it as an expert *comment*.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from dofpy.errors import BadPacket
from dofpy.wire._codec import C2_MAX, Reader, encode_c2

__all__ = [
    "DspConfigAck",
    "DspConfigNak",
    "DspConfigReject",
    "DspConfigRequest",
    "DspNop",
    "DspOpcode",
    "DspOpen",
    "DspOpenResponse",
    "DspOpenSecureResponse",
    "DspOption",
    "DspOptionFamily",
    "DspPdu",
    "DspQuery",
    "DspQueryResponse",
    "DspTerminate",
    "DspTerminateResponse",
    "decode_dsp_untrusted",
    "encode_dsp",
]


class DspOpcode(enum.IntEnum):
    """DSP opcodes (the byte on the wire; the DPP flag marks responses)."""

    QUERY = 0
    CONFIG_REQUEST = 1
    CONFIG_ACK = 2
    CONFIG_NAK = 3
    CONFIG_REJECT = 4
    TERMINATE = 5
    OPEN = 6
    OPEN_SECURE = 7


class DspOptionFamily(enum.IntEnum):
    """The ``code`` of a DSP option."""

    TEP = 0
    OAP = 1
    CCM = 2
    TRP = 3
    GENERAL = 255


@dataclass(frozen=True, slots=True)
class DspOption:
    """One DSP option: family code (u8), data (u16, the protocol id) and value."""

    code: int
    data: int
    value: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFF:
            raise ValueError(f"DSP option code {self.code} outside 0..255")
        if not 0 <= self.data <= 0xFFFF:
            raise ValueError(f"DSP option data {self.data} outside 0..65535")
        if len(self.value) > 0xFF:
            raise ValueError(f"DSP option value of {len(self.value)} bytes exceeds 255")

    def encode(self) -> bytes:
        """The wire encoding of the option."""
        return (
            bytes((self.code,))
            + self.data.to_bytes(2, "big")
            + bytes((len(self.value),))
            + self.value
        )


def _check_app_ids(app_ids: tuple[int, ...]) -> None:
    for app_id in app_ids:
        if isinstance(app_id, bool) or not 0 <= app_id <= C2_MAX:
            raise ValueError(f"application id {app_id} outside 0..{C2_MAX:#x}")


@dataclass(frozen=True, slots=True)
class DspNop:
    """The implicit no-op: an application id 0 with nothing after it."""

    is_response: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class DspQuery:
    """Query command: which applications does the peer support?"""

    is_response: ClassVar[bool] = False
    opcode: ClassVar[DspOpcode] = DspOpcode.QUERY


@dataclass(frozen=True, slots=True)
class DspQueryResponse:
    """Query response: the application ids the peer supports."""

    app_ids: tuple[int, ...] = ()
    is_response: ClassVar[bool] = True
    opcode: ClassVar[DspOpcode] = DspOpcode.QUERY

    def __post_init__(self) -> None:
        _check_app_ids(self.app_ids)


@dataclass(frozen=True, slots=True)
class DspConfigRequest:
    """Configuration request: the options the sender proposes."""

    options: tuple[DspOption, ...] = ()
    is_response: ClassVar[bool] = False
    opcode: ClassVar[DspOpcode] = DspOpcode.CONFIG_REQUEST


@dataclass(frozen=True, slots=True)
class DspConfigAck:
    """Configuration accepted."""

    is_response: ClassVar[bool] = True
    opcode: ClassVar[DspOpcode] = DspOpcode.CONFIG_ACK


@dataclass(frozen=True, slots=True)
class DspConfigNak:
    """Configuration refused; the options the responder would accept."""

    options: tuple[DspOption, ...] = ()
    is_response: ClassVar[bool] = True
    opcode: ClassVar[DspOpcode] = DspOpcode.CONFIG_NAK


@dataclass(frozen=True, slots=True)
class DspConfigReject:
    """Configuration rejected outright."""

    is_response: ClassVar[bool] = True
    opcode: ClassVar[DspOpcode] = DspOpcode.CONFIG_REJECT


@dataclass(frozen=True, slots=True)
class DspTerminate:
    """Terminate/close the session."""

    is_response: ClassVar[bool] = False
    opcode: ClassVar[DspOpcode] = DspOpcode.TERMINATE


@dataclass(frozen=True, slots=True)
class DspTerminateResponse:
    """Acknowledges a terminate."""

    is_response: ClassVar[bool] = True
    opcode: ClassVar[DspOpcode] = DspOpcode.TERMINATE


@dataclass(frozen=True, slots=True)
class DspOpen:
    """Open a session."""

    is_response: ClassVar[bool] = False
    opcode: ClassVar[DspOpcode] = DspOpcode.OPEN


@dataclass(frozen=True, slots=True)
class DspOpenResponse:
    """Session opened; the application ids available on it."""

    app_ids: tuple[int, ...] = ()
    is_response: ClassVar[bool] = True
    opcode: ClassVar[DspOpcode] = DspOpcode.OPEN

    def __post_init__(self) -> None:
        _check_app_ids(self.app_ids)


@dataclass(frozen=True, slots=True)
class DspOpenSecureResponse:
    """Session opened, security required; the application ids available."""

    app_ids: tuple[int, ...] = ()
    is_response: ClassVar[bool] = True
    opcode: ClassVar[DspOpcode] = DspOpcode.OPEN_SECURE

    def __post_init__(self) -> None:
        _check_app_ids(self.app_ids)


DspPdu = (
    DspNop
    | DspQuery
    | DspQueryResponse
    | DspConfigRequest
    | DspConfigAck
    | DspConfigNak
    | DspConfigReject
    | DspTerminate
    | DspTerminateResponse
    | DspOpen
    | DspOpenResponse
    | DspOpenSecureResponse
)

_EMPTY_COMMANDS: dict[int, DspPdu] = {
    DspOpcode.QUERY: DspQuery(),
    DspOpcode.TERMINATE: DspTerminate(),
    DspOpcode.OPEN: DspOpen(),
}
_EMPTY_RESPONSES: dict[int, DspPdu] = {
    DspOpcode.CONFIG_ACK: DspConfigAck(),
    DspOpcode.CONFIG_REJECT: DspConfigReject(),
    DspOpcode.TERMINATE: DspTerminateResponse(),
}


def encode_dsp(pdu: DspPdu) -> bytes:
    """The DSP application payload (after the application id) for ``pdu``.

    Send it in a DPP packet with ``app_id=AppId.DSP`` and
    ``is_response=pdu.is_response``.
    """
    if isinstance(pdu, DspNop):
        return b""
    out = bytearray((pdu.opcode,))
    if isinstance(pdu, DspQueryResponse | DspOpenResponse | DspOpenSecureResponse):
        for app_id in pdu.app_ids:
            out += encode_c2(app_id)
    elif isinstance(pdu, DspConfigRequest | DspConfigNak):
        for option in pdu.options:
            out += option.encode()
    return bytes(out)


def _read_app_ids(reader: Reader) -> tuple[int, ...]:
    app_ids: list[int] = []
    while not reader.at_end():
        app_ids.append(reader.c2())
    return tuple(app_ids)


def _read_options(reader: Reader) -> tuple[DspOption, ...]:
    options: list[DspOption] = []
    while not reader.at_end():
        code = reader.u8()
        data = reader.u16()
        value = reader.take(reader.u8())
        options.append(DspOption(code, data, value))
    return tuple(options)


def decode_dsp_untrusted(payload: bytes, is_response: bool) -> DspPdu:
    """Decode a DSP application payload (after the application id 0).

    ``is_response`` is the DPP packet's response flag.
    """
    reader = Reader(payload)
    if reader.at_end():
        if is_response:
            raise BadPacket("empty DSP response")
        return DspNop()
    opcode = reader.u8()
    table = _EMPTY_RESPONSES if is_response else _EMPTY_COMMANDS
    pdu: DspPdu
    if opcode in table:
        pdu = table[opcode]
    elif is_response and opcode == DspOpcode.QUERY:
        pdu = DspQueryResponse(_read_app_ids(reader))
    elif is_response and opcode == DspOpcode.OPEN:
        pdu = DspOpenResponse(_read_app_ids(reader))
    elif is_response and opcode == DspOpcode.OPEN_SECURE:
        pdu = DspOpenSecureResponse(_read_app_ids(reader))
    elif is_response and opcode == DspOpcode.CONFIG_NAK:
        pdu = DspConfigNak(_read_options(reader))
    elif not is_response and opcode == DspOpcode.CONFIG_REQUEST:
        pdu = DspConfigRequest(_read_options(reader))
    else:
        kind = "response" if is_response else "command"
        raise BadPacket(f"DSP opcode {opcode} is not a valid {kind}")
    reader.expect_end(f"DSP {type(pdu).__name__}")
    return pdu
