"""Fuzz target for the whole receive path of a node: ``OapCore.receive_datagram``
(DNP, DPP, DSP, common operations, OAP, values, provider dispatch, duplicate
cache), followed by a timer tick. It must never raise: a node counts and drops
what it cannot parse."""

from __future__ import annotations

from dofpy.oap.core import OapCore
from dofpy.oap.interface import EventDef, Interface, Method, Param, Property, ValueType
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame
from dofpy.wire.oap import (
    Binding,
    GetCommand,
    InvokeCommand,
    RegisterCommand,
    SetCommand,
    SignalCommand,
    encode_oap,
)
from dofpy.wire.oid import OID

_IFACE = Interface.define(
    "[1:{01000005}]",
    "Fuzzed",
    [
        Property(1, "p", ValueType.INT, writable=True, observable=True),
        Method(2, "m", (Param("a", ValueType.INT),), (Param("r", ValueType.INT),)),
        EventDef(3, "e", (Param("x", ValueType.TEXT),)),
    ],
)
_OID = OID(3, b"fuzz@example.org")
_BINDING = Binding(_IFACE.iid, _OID)
_PEER = ("192.0.2.1", 3567)


def _command(payload: bytes, op: int) -> bytes:
    return encode_frame(
        DppPacket(AppId.OAP, payload, op_id_type=OpIdType.IMPLIED_SENDER, op_count=op)
    )


SEEDS: tuple[bytes, ...] = (
    _command(encode_oap(GetCommand(1, _BINDING)), 1),
    _command(encode_oap(SetCommand(1, _BINDING, (5,))), 2),
    _command(encode_oap(InvokeCommand(2, _BINDING, (1,))), 3),
    _command(encode_oap(RegisterCommand(3, _BINDING)), 4),
    _command(encode_oap(SignalCommand(3, _BINDING, 1, ("x",))), 5),
    encode_frame(DppPacket(AppId.DSP, b"\x06", op_id_type=OpIdType.IMPLIED_SENDER, op_count=6)),
    encode_frame(DppPacket(AppId.COMMON, b"\x03", op_id_type=OpIdType.IMPLIED_SENDER, op_count=7)),
)


def target(data: bytes) -> None:
    """Feed one datagram to a fresh node; any exception is a crash."""
    core = OapCore()
    core.provide(_OID, _IFACE)
    core.receive_datagram(data, _PEER, 1.0)
    while core.next_event() is not None:
        pass
    core.datagrams_to_send(1.0)
    core.handle_timer(100.0)
