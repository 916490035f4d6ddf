"""DPP common operations (application 0x7FFF): ping, heartbeat, query and the
source/operation management commands.

The application payload (after the c2 application id 0x7FFF) is an opcode byte
and a body; as with DSP, the DPP response flag (not the opcode byte) marks a
response, and the opcode byte on the wire stays below 0x40. Layouts, as the
dissector reads them ("SID" is an OID naming a source, "op count" a c4):

===========  ====  =========  ==========================================
PDU          code  DPP flag   body
===========  ====  =========  ==========================================
NodeDown     0     command    SID
SourceLost   1     command    SID · op count (the operation it refers to)
Rename       2     command    SID · op count
Ping         3     command    (empty)
PingResp     3     response   (empty)
CancelAll    4     command    SID
Heartbeat    5     command    (empty)
Query        6     command    (empty)
QueryResp    6     response   SID (the responder's source id)
SourceFound  8     command    SID · op count
===========  ====  =========  ==========================================

The dissector labels every other response "(Illegal)". It also learns the
sender's SID from the SID in NodeDown, SourceLost, Rename, CancelAll,
SourceFound and QueryResp, and shows it on later packets from that sender.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from dofpy.errors import BadPacket
from dofpy.wire._codec import C4_MAX, Reader, encode_c4
from dofpy.wire.oid import OID, read_oid

__all__ = [
    "CancelAll",
    "CommonOpcode",
    "CommonPdu",
    "Heartbeat",
    "NodeDown",
    "Ping",
    "PingResponse",
    "Query",
    "QueryResponse",
    "Rename",
    "SourceFound",
    "SourceLost",
    "decode_common_untrusted",
    "encode_common",
]


class CommonOpcode(enum.IntEnum):
    """DPP common-operation opcodes (the byte on the wire)."""

    NODE_DOWN = 0
    SOURCE_LOST = 1
    RENAME = 2
    PING = 3
    CANCEL_ALL = 4
    HEARTBEAT = 5
    QUERY = 6
    SOURCE_FOUND = 8


@dataclass(frozen=True, slots=True)
class Ping:
    """Ping command; answered by :class:`PingResponse` on the same operation id."""

    is_response: ClassVar[bool] = False
    opcode: ClassVar[CommonOpcode] = CommonOpcode.PING


@dataclass(frozen=True, slots=True)
class PingResponse:
    """Answer to a :class:`Ping`."""

    is_response: ClassVar[bool] = True
    opcode: ClassVar[CommonOpcode] = CommonOpcode.PING


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Heartbeat command (no response is defined)."""

    is_response: ClassVar[bool] = False
    opcode: ClassVar[CommonOpcode] = CommonOpcode.HEARTBEAT


@dataclass(frozen=True, slots=True)
class Query:
    """Query command: asks the peer for its source id."""

    is_response: ClassVar[bool] = False
    opcode: ClassVar[CommonOpcode] = CommonOpcode.QUERY


@dataclass(frozen=True, slots=True)
class QueryResponse:
    """Answer to a :class:`Query`: the responder's source id."""

    sid: OID
    is_response: ClassVar[bool] = True
    opcode: ClassVar[CommonOpcode] = CommonOpcode.QUERY


@dataclass(frozen=True, slots=True)
class NodeDown:
    """The node with source id ``sid`` is going down."""

    sid: OID
    is_response: ClassVar[bool] = False
    opcode: ClassVar[CommonOpcode] = CommonOpcode.NODE_DOWN


@dataclass(frozen=True, slots=True)
class CancelAll:
    """Cancel every operation of source ``sid``."""

    sid: OID
    is_response: ClassVar[bool] = False
    opcode: ClassVar[CommonOpcode] = CommonOpcode.CANCEL_ALL


@dataclass(frozen=True, slots=True)
class _OperationReference:
    sid: OID
    op_count: int

    def __post_init__(self) -> None:
        if isinstance(self.op_count, bool) or not 0 <= self.op_count <= C4_MAX:
            raise ValueError(f"operation count {self.op_count} outside 0..{C4_MAX:#x}")


@dataclass(frozen=True, slots=True)
class SourceLost(_OperationReference):
    """The source of operation (``sid``, ``op_count``) was lost."""

    is_response: ClassVar[bool] = False
    opcode: ClassVar[CommonOpcode] = CommonOpcode.SOURCE_LOST


@dataclass(frozen=True, slots=True)
class SourceFound(_OperationReference):
    """The source of operation (``sid``, ``op_count``) was found again."""

    is_response: ClassVar[bool] = False
    opcode: ClassVar[CommonOpcode] = CommonOpcode.SOURCE_FOUND


@dataclass(frozen=True, slots=True)
class Rename(_OperationReference):
    """Operation (``sid``, ``op_count``) is renamed to this packet's operation id."""

    is_response: ClassVar[bool] = False
    opcode: ClassVar[CommonOpcode] = CommonOpcode.RENAME


CommonPdu = (
    Ping
    | PingResponse
    | Heartbeat
    | Query
    | QueryResponse
    | NodeDown
    | CancelAll
    | SourceLost
    | SourceFound
    | Rename
)

_EMPTY_COMMANDS: dict[int, CommonPdu] = {
    CommonOpcode.PING: Ping(),
    CommonOpcode.HEARTBEAT: Heartbeat(),
    CommonOpcode.QUERY: Query(),
}
_SID_COMMANDS: dict[int, type[NodeDown | CancelAll]] = {
    CommonOpcode.NODE_DOWN: NodeDown,
    CommonOpcode.CANCEL_ALL: CancelAll,
}
_REFERENCE_COMMANDS: dict[int, type[SourceLost | SourceFound | Rename]] = {
    CommonOpcode.SOURCE_LOST: SourceLost,
    CommonOpcode.SOURCE_FOUND: SourceFound,
    CommonOpcode.RENAME: Rename,
}


def encode_common(pdu: CommonPdu) -> bytes:
    """The application payload (after the application id 0x7FFF) for ``pdu``.

    Send it in a DPP packet with ``app_id=AppId.COMMON`` and
    ``is_response=pdu.is_response``.
    """
    out = bytes((pdu.opcode,))
    if isinstance(pdu, QueryResponse | NodeDown | CancelAll):
        out += pdu.sid.encode()
    elif isinstance(pdu, SourceLost | SourceFound | Rename):
        out += pdu.sid.encode() + encode_c4(pdu.op_count)
    return out


def decode_common_untrusted(payload: bytes, is_response: bool) -> CommonPdu:
    """Decode a common-operation payload (after the application id 0x7FFF).

    ``is_response`` is the DPP packet's response flag.
    """
    reader = Reader(payload)
    opcode = reader.u8()
    pdu: CommonPdu
    if is_response:
        if opcode == CommonOpcode.PING:
            pdu = PingResponse()
        elif opcode == CommonOpcode.QUERY:
            pdu = QueryResponse(read_oid(reader))
        else:
            raise BadPacket(f"DPP common opcode {opcode} is not a valid response")
    elif opcode in _EMPTY_COMMANDS:
        pdu = _EMPTY_COMMANDS[opcode]
    elif opcode in _SID_COMMANDS:
        pdu = _SID_COMMANDS[opcode](read_oid(reader))
    elif opcode in _REFERENCE_COMMANDS:
        sid = read_oid(reader)
        pdu = _REFERENCE_COMMANDS[opcode](sid, reader.c4())
    else:
        raise BadPacket(f"DPP common opcode {opcode} is not a valid command")
    reader.expect_end(f"DPP common {type(pdu).__name__}")
    return pdu
