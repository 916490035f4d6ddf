"""OAP, the Object Access Protocol (DPP application 1): PDUs and their codec.

An OAP payload is what follows the DPP application id (c2, value 1). It starts
with an opcode byte: bits 0-4 the opcode; bit 5 a flag (command control present
on most commands, provider OID present on responses); bits 6-7 the alias size
code (0: none, a full binding follows; 1, 2, 3: an alias of 1, 2, 4 bytes).
Whether the PDU is a command or a response is the DPP response flag, not a bit
of the opcode byte, so decoding needs it: ``decode_oap_untrusted(payload,
is_response)``.

The PDU classes live in :mod:`dofpy.wire.oap_pdus`, the opcodes, command
control and targets in :mod:`dofpy.wire.oap_fields`; this module is the codec
and re-exports both, so ``dofpy.wire.oap`` stays the one import path.

Layouts (learnt from Wireshark's DOF dissector; see docs/protocol.md, section 2):

=====================  ==========================================================
Get / Set / Invoke     op · [cc] · item c2 · target · [values: Set, Invoke]
Subscribe              op · [cc] · item c2 · target · minimum delta c2
Register               op · [cc] · item c2 · target
Watch / Activate /     op · [cc] · target
Connect / Full Connect
Advertise              op · binding
Change / Signal        op · item c2 · target · sequence u16 · values
Open                   op · target · IID · OID
Provide                op (alias size > 0) · alias · IID · OID
Define                 op
Get / Invoke resp.     op · [provider OID] · values
Set / Subscribe resp.  op · [provider OID]
Register resp.         op · [provider OID] · sequence u16
Exception resp.        op (0x80 internal, 0x40 final, 0x20 provider) ·
                       [provider OID] · code c2 · values
Define / Open resp.    op
=====================  ==========================================================

``target`` is an alias (1, 2 or 4 bytes, big-endian) or a binding (IID then
OID); ``values`` is the CBOR value list of ``dofpy.wire.values``, running to
the end of the payload. Command control (``cc``): flags byte (0x40 cache
delay c2 follows, 0x30 verbosity, 0x08 no execute, 0x04 ack list follows,
0x02 execution delay, 0x01 heuristic c2 follows) then heuristic, ack list
(count u8 then that many OIDs), cache delay, in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

from dofpy.errors import BadPacket
from dofpy.wire._codec import Reader, encode_c2
from dofpy.wire.oap_fields import (
    _ALIAS_SHIFT,
    _ALIAS_SIZES,
    _EXC_FINAL,
    _EXC_INTERNAL,
    _EXC_PROVIDER,
    _FLAG,
    _OPCODE_MASK,
    OAP_APP_ID,
    Alias,
    Binding,
    CommandControl,
    OapOpcode,
    Target,
    _read_binding,
    _read_command_control,
    _read_target,
    _target_bits,
)
from dofpy.wire.oap_pdus import (
    ActivateCommand,
    AdvertiseCommand,
    ChangeCommand,
    ConnectCommand,
    DefineCommand,
    DefineResponse,
    ExceptionResponse,
    FullConnectCommand,
    GetCommand,
    GetResponse,
    InvokeCommand,
    InvokeResponse,
    OapPdu,
    OpenCommand,
    OpenResponse,
    ProvideCommand,
    RegisterCommand,
    RegisterResponse,
    SetCommand,
    SetResponse,
    SignalCommand,
    SubscribeCommand,
    SubscribeResponse,
    WatchCommand,
    _SequencedCommand,
    _TargetOnlyCommand,
)
from dofpy.wire.oid import OID, read_iid, read_oid
from dofpy.wire.values import decode_values_untrusted, encode_values

__all__ = [
    "OAP_APP_ID",
    "ActivateCommand",
    "AdvertiseCommand",
    "Alias",
    "Binding",
    "ChangeCommand",
    "CommandControl",
    "CommandHead",
    "ConnectCommand",
    "DefineCommand",
    "DefineResponse",
    "ExceptionResponse",
    "FullConnectCommand",
    "GetCommand",
    "GetResponse",
    "InvokeCommand",
    "InvokeResponse",
    "OapOpcode",
    "OapPdu",
    "OpenCommand",
    "OpenResponse",
    "ProvideCommand",
    "RegisterCommand",
    "RegisterResponse",
    "SetCommand",
    "SetResponse",
    "SignalCommand",
    "SubscribeCommand",
    "SubscribeResponse",
    "Target",
    "WatchCommand",
    "decode_oap_untrusted",
    "encode_oap",
    "probe_command_head_untrusted",
]


# -- encoding ------------------------------------------------------------------


def _encode_controlled(
    pdu: GetCommand
    | SetCommand
    | InvokeCommand
    | SubscribeCommand
    | RegisterCommand
    | _TargetOnlyCommand,
    item_id: int | None,
) -> bytearray:
    control = pdu.command_control
    if control is not None and not isinstance(control, CommandControl):
        raise ValueError("command_control must be a CommandControl or None")
    out = bytearray((pdu.OPCODE | _target_bits(pdu.target) | (_FLAG if control else 0),))
    if control is not None:
        out += control.encode()
    if item_id is not None:
        out += encode_c2(item_id)
    out += pdu.target.encode()
    return out


def _provider_header(opcode: OapOpcode, provider: OID | None) -> bytearray:
    out = bytearray((opcode | (_FLAG if provider is not None else 0),))
    if provider is not None:
        out += provider.encode()
    return out


def encode_oap(pdu: OapPdu) -> bytes:
    """Encode an OAP PDU (the bytes after the DPP application id).

    Raises ``ValueError`` for values the wire cannot carry.
    """
    out: bytearray
    if isinstance(pdu, GetCommand | RegisterCommand):
        out = _encode_controlled(pdu, pdu.item_id)
    elif isinstance(pdu, SetCommand | InvokeCommand):
        out = _encode_controlled(pdu, pdu.item_id)
        out += encode_values(pdu.values)
    elif isinstance(pdu, SubscribeCommand):
        out = _encode_controlled(pdu, pdu.item_id)
        out += encode_c2(pdu.minimum_delta)
    elif isinstance(pdu, _TargetOnlyCommand):
        out = _encode_controlled(pdu, None)
    elif isinstance(pdu, AdvertiseCommand):
        out = bytearray((pdu.OPCODE,)) + pdu.binding.encode()
    elif isinstance(pdu, ProvideCommand):
        out = bytearray((pdu.OPCODE | _target_bits(pdu.alias),))
        out += pdu.alias.encode() + pdu.binding.encode()
    elif isinstance(pdu, OpenCommand):
        out = bytearray((pdu.OPCODE | _target_bits(pdu.target),))
        out += pdu.target.encode() + pdu.interface.encode() + pdu.object_id.encode()
    elif isinstance(pdu, _SequencedCommand):
        out = bytearray((pdu.OPCODE | _target_bits(pdu.target),))
        out += encode_c2(pdu.item_id) + pdu.target.encode()
        out += pdu.sequence.to_bytes(2, "big") + encode_values(pdu.values)
    elif isinstance(pdu, GetResponse | InvokeResponse):
        out = _provider_header(pdu.OPCODE, pdu.provider) + encode_values(pdu.values)
    elif isinstance(pdu, SetResponse | SubscribeResponse):
        out = _provider_header(pdu.OPCODE, pdu.provider)
    elif isinstance(pdu, RegisterResponse):
        out = _provider_header(pdu.OPCODE, pdu.provider) + pdu.sequence.to_bytes(2, "big")
    elif isinstance(pdu, ExceptionResponse):
        flags = (
            (_EXC_INTERNAL if pdu.internal else 0)
            | (_EXC_FINAL if pdu.final else 0)
            | (_EXC_PROVIDER if pdu.provider is not None else 0)
        )
        out = bytearray((pdu.OPCODE | flags,))
        if pdu.provider is not None:
            out += pdu.provider.encode()
        out += encode_c2(pdu.code) + encode_values(pdu.values)
    elif isinstance(pdu, DefineCommand | DefineResponse | OpenResponse):
        out = bytearray((pdu.OPCODE,))
    else:
        raise ValueError(f"not an OAP PDU: {type(pdu).__name__}")
    return bytes(out)


# -- decoding ------------------------------------------------------------------


def _no_flag_bits(byte0: int, mask: int, what: str) -> None:
    if byte0 & mask:
        raise BadPacket(f"{what}: reserved bits 0x{byte0 & mask:02x} set in the opcode byte")


def _decode_command(opcode: OapOpcode, byte0: int, reader: Reader) -> OapPdu:
    alias_size = _ALIAS_SIZES[byte0 >> _ALIAS_SHIFT]
    has_flag = bool(byte0 & _FLAG)
    if opcode in (OapOpcode.GET, OapOpcode.SET, OapOpcode.INVOKE):
        control = _read_command_control(reader) if has_flag else None
        item_id = reader.c2()
        target = _read_target(reader, alias_size)
        if opcode == OapOpcode.GET:
            return GetCommand(item_id, target, control)
        values = decode_values_untrusted(reader.rest())
        if opcode == OapOpcode.SET:
            return SetCommand(item_id, target, values, control)
        return InvokeCommand(item_id, target, values, control)
    if opcode in (OapOpcode.SUBSCRIBE, OapOpcode.REGISTER):
        control = _read_command_control(reader) if has_flag else None
        item_id = reader.c2()
        target = _read_target(reader, alias_size)
        if opcode == OapOpcode.REGISTER:
            return RegisterCommand(item_id, target, control)
        return SubscribeCommand(item_id, target, reader.c2(), control)
    if opcode in _TARGET_ONLY:
        control = _read_command_control(reader) if has_flag else None
        return _TARGET_ONLY[opcode](_read_target(reader, alias_size), control)
    if opcode == OapOpcode.ADVERTISE:
        _no_flag_bits(byte0, 0xE0, "Advertise")
        return AdvertiseCommand(_read_binding(reader))
    if opcode == OapOpcode.PROVIDE:
        _no_flag_bits(byte0, _FLAG, "Provide")
        if alias_size == 0:
            raise BadPacket("Provide without an alias")
        alias = Alias(int.from_bytes(reader.take(alias_size), "big"), alias_size)
        return ProvideCommand(alias, _read_binding(reader))
    if opcode == OapOpcode.OPEN:
        _no_flag_bits(byte0, _FLAG, "Open")
        target = _read_target(reader, alias_size)
        return OpenCommand(target, read_iid(reader), read_oid(reader))
    if opcode in (OapOpcode.CHANGE, OapOpcode.SIGNAL):
        _no_flag_bits(byte0, _FLAG, opcode.name.title())
        item_id = reader.c2()
        target = _read_target(reader, alias_size)
        sequence = reader.u16()
        values = decode_values_untrusted(reader.rest())
        if opcode == OapOpcode.CHANGE:
            return ChangeCommand(item_id, target, sequence, values)
        return SignalCommand(item_id, target, sequence, values)
    if opcode == OapOpcode.DEFINE:
        _no_flag_bits(byte0, 0xE0, "Define")
        return DefineCommand()
    raise BadPacket(f"OAP {opcode.name} is not a command")


_TARGET_ONLY: dict[
    OapOpcode,
    type[WatchCommand] | type[ActivateCommand] | type[ConnectCommand] | type[FullConnectCommand],
] = {
    OapOpcode.WATCH: WatchCommand,
    OapOpcode.ACTIVATE: ActivateCommand,
    OapOpcode.CONNECT: ConnectCommand,
    OapOpcode.FULL_CONNECT: FullConnectCommand,
}


def _decode_response(opcode: OapOpcode, byte0: int, reader: Reader) -> OapPdu:
    if opcode == OapOpcode.EXCEPTION:
        provider = read_oid(reader) if byte0 & _EXC_PROVIDER else None
        code = reader.c2()
        values = decode_values_untrusted(reader.rest())
        return ExceptionResponse(
            code,
            values,
            internal=bool(byte0 & _EXC_INTERNAL),
            final=bool(byte0 & _EXC_FINAL),
            provider=provider,
        )
    if opcode in (OapOpcode.DEFINE, OapOpcode.OPEN):
        _no_flag_bits(byte0, 0xE0, f"{opcode.name.title()} response")
        return DefineResponse() if opcode == OapOpcode.DEFINE else OpenResponse()
    if opcode not in _PROVIDER_RESPONSES:
        raise BadPacket(f"OAP {opcode.name} has no response")
    _no_flag_bits(byte0, 0xC0, f"{opcode.name.title()} response")
    provider = read_oid(reader) if byte0 & _FLAG else None
    if opcode == OapOpcode.GET:
        return GetResponse(decode_values_untrusted(reader.rest()), provider)
    if opcode == OapOpcode.INVOKE:
        return InvokeResponse(decode_values_untrusted(reader.rest()), provider)
    if opcode == OapOpcode.REGISTER:
        return RegisterResponse(reader.u16(), provider)
    if opcode == OapOpcode.SET:
        return SetResponse(provider)
    return SubscribeResponse(provider)


_PROVIDER_RESPONSES = frozenset(
    {OapOpcode.GET, OapOpcode.INVOKE, OapOpcode.SET, OapOpcode.SUBSCRIBE, OapOpcode.REGISTER}
)


def decode_oap_untrusted(payload: bytes, is_response: bool) -> OapPdu:
    """Decode an OAP payload (the bytes after the DPP application id).

    ``is_response`` is the DPP response flag of the packet. Raises only
    ``BadPacket``: for unknown opcodes, opcodes that are illegal in that
    direction, reserved bits, non-minimal or truncated fields and trailing
    bytes.
    """
    reader = Reader(payload)
    if reader.at_end():
        raise BadPacket("empty OAP payload (an implicit no-op, which dofpy does not use)")
    byte0 = reader.u8()
    try:
        opcode = OapOpcode(byte0 & _OPCODE_MASK)
    except ValueError:
        raise BadPacket(f"unknown OAP opcode {byte0 & _OPCODE_MASK}") from None
    try:
        if is_response:
            pdu = _decode_response(opcode, byte0, reader)
        else:
            pdu = _decode_command(opcode, byte0, reader)
    except ValueError as exc:  # a constructor refused a decoded field
        raise BadPacket(f"OAP {opcode.name}: {exc}") from None
    reader.expect_end(f"OAP {opcode.name}")
    return pdu


# -- the head of a command, for dispatch before the full decode ------------------


@dataclass(frozen=True, slots=True)
class CommandHead:
    """The start of an OAP command with an item and a target and no command
    control: opcode, item id, target, and ``end``, the offset in the payload
    where the rest (a sequence, a value list...) begins.

    A node reads only this much to route a command to an interceptor, which
    then decodes (and checks) the rest of the payload itself.
    """

    opcode: OapOpcode
    item_id: int
    target: Target
    end: int


_HEADED_OPCODES = frozenset(
    int(opcode)
    for opcode in (
        OapOpcode.GET,
        OapOpcode.SET,
        OapOpcode.INVOKE,
        OapOpcode.SUBSCRIBE,
        OapOpcode.REGISTER,
        OapOpcode.CHANGE,
        OapOpcode.SIGNAL,
    )
)


def probe_command_head_untrusted(payload: bytes) -> CommandHead | None:
    """The :class:`CommandHead` of an OAP command payload, read as
    :func:`decode_oap_untrusted` reads it; ``None`` for commands of another
    shape (other opcodes, command control present), which need the full
    decode. Raises only ``BadPacket`` (empty payload, truncated or
    non-minimal item or target).

    Nothing after the target is looked at: the caller decodes the rest.
    """
    if not payload:
        raise BadPacket("empty OAP payload (an implicit no-op, which dofpy does not use)")
    byte0 = payload[0]
    if byte0 & _FLAG or byte0 & _OPCODE_MASK not in _HEADED_OPCODES:
        return None
    reader = Reader(payload, 1)
    item_id = reader.c2()
    target = _read_target(reader, _ALIAS_SIZES[byte0 >> _ALIAS_SHIFT])
    return CommandHead(OapOpcode(byte0 & _OPCODE_MASK), item_id, target, reader.pos)
