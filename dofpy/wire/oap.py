"""OAP, the Object Access Protocol (DPP application 1): PDUs and their codec.

An OAP payload is what follows the DPP application id (c2, value 1). It starts
with an opcode byte: bits 0-4 the opcode; bit 5 a flag (command control present
on most commands, provider OID present on responses); bits 6-7 the alias size
code (0: none, a full binding follows; 1, 2, 3: an alias of 1, 2, 4 bytes).
Whether the PDU is a command or a response is the DPP response flag, not a bit
of the opcode byte, so decoding needs it: ``decode_oap_untrusted(payload,
is_response)``.

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

import enum
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from dofpy.errors import BadPacket
from dofpy.wire._codec import C2_MAX, Reader, encode_c2
from dofpy.wire.oid import IID, OID, read_iid, read_oid
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

OAP_APP_ID = 1
"""The DPP application id of OAP (version 1)."""


class OapOpcode(enum.IntEnum):
    """OAP opcodes (bits 0-4 of the opcode byte)."""

    CHANGE = 2
    FULL_CONNECT = 3
    CONNECT = 4
    ADVERTISE = 5
    DEFINE = 6
    EXCEPTION = 9
    GET = 10
    INVOKE = 12
    OPEN = 14
    PROVIDE = 16
    SET = 20
    SIGNAL = 22
    SUBSCRIBE = 24
    REGISTER = 25
    ACTIVATE = 28
    WATCH = 30


_OPCODE_MASK = 0x1F
_FLAG = 0x20  # command control present (commands) / provider OID present (responses)
_ALIAS_SHIFT = 6
_ALIAS_SIZES = {0: 0, 1: 1, 2: 2, 3: 4}
_ALIAS_CODES = {size: code for code, size in _ALIAS_SIZES.items()}

_EXC_INTERNAL = 0x80
_EXC_FINAL = 0x40
_EXC_PROVIDER = 0x20

_CC_CACHE_DELAY = 0x40
_CC_VERBOSITY = 0x30
_CC_NO_EXECUTE = 0x08
_CC_ACKS = 0x04
_CC_EXECUTION_DELAY = 0x02
_CC_HEURISTIC = 0x01
_CC_RESERVED = 0x80
_MAX_ACKS = 0xFF


def _check_c2(value: int, name: str) -> None:
    if type(value) is not int or not 0 <= value <= C2_MAX:
        raise ValueError(f"{name} must be an int in 0..{C2_MAX}, got {value!r}")


def _check_u16(value: int, name: str) -> None:
    if type(value) is not int or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be an int in 0..65535, got {value!r}")


# -- building blocks -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandControl:
    """Optional command control of a command (present when the opcode byte has
    bit 5 set). The all-default value is not allowed: pass ``None`` instead,
    so that the encoding stays minimal.

    ``acks`` lists the OIDs (at most 255) of providers whose responses the
    requestor already has, so that they need not answer a retried command
    again; ``verbosity`` is 0..3; ``heuristic`` and ``cache_delay`` are c2
    values; ``execution_delay`` and ``no_execute`` are bare flags (the
    dissector reads no field for the execution delay flag).
    """

    heuristic: int | None = None
    execution_delay: bool = False
    acks: tuple[OID, ...] = ()
    no_execute: bool = False
    verbosity: int = 0
    cache_delay: int | None = None

    def __post_init__(self) -> None:
        if self.heuristic is not None:
            _check_c2(self.heuristic, "heuristic")
        if self.cache_delay is not None:
            _check_c2(self.cache_delay, "cache delay")
        if type(self.verbosity) is not int or not 0 <= self.verbosity <= 3:
            raise ValueError(f"verbosity must be 0..3, got {self.verbosity!r}")
        object.__setattr__(self, "acks", tuple(self.acks))
        if len(self.acks) > _MAX_ACKS:
            raise ValueError(f"at most {_MAX_ACKS} acks, got {len(self.acks)}")
        if not all(isinstance(ack, OID) for ack in self.acks):
            raise ValueError("acks must be OIDs")
        if self._flags() == 0:
            raise ValueError("an all-default CommandControl is not minimal: pass None instead")

    def _flags(self) -> int:
        flags = self.verbosity << 4
        if self.heuristic is not None:
            flags |= _CC_HEURISTIC
        if self.execution_delay:
            flags |= _CC_EXECUTION_DELAY
        if self.acks:
            flags |= _CC_ACKS
        if self.no_execute:
            flags |= _CC_NO_EXECUTE
        if self.cache_delay is not None:
            flags |= _CC_CACHE_DELAY
        return flags

    def encode(self) -> bytes:
        """The wire form: flags byte, then heuristic, ack list, cache delay."""
        out = bytearray((self._flags(),))
        if self.heuristic is not None:
            out += encode_c2(self.heuristic)
        if self.acks:
            out.append(len(self.acks))
            for ack in self.acks:
                out += ack.encode()
        if self.cache_delay is not None:
            out += encode_c2(self.cache_delay)
        return bytes(out)


def _read_command_control(reader: Reader) -> CommandControl:
    flags = reader.u8()
    if flags & _CC_RESERVED:
        raise BadPacket("command control: reserved bit 7 set")
    if flags == 0:
        raise BadPacket("command control present but empty (not minimal)")
    heuristic = reader.c2() if flags & _CC_HEURISTIC else None
    acks: tuple[OID, ...] = ()
    if flags & _CC_ACKS:
        count = reader.u8()
        if count == 0:
            raise BadPacket("command control: empty ack list (not minimal)")
        acks = tuple(read_oid(reader) for _ in range(count))
    cache_delay = reader.c2() if flags & _CC_CACHE_DELAY else None
    return CommandControl(
        heuristic=heuristic,
        execution_delay=bool(flags & _CC_EXECUTION_DELAY),
        acks=acks,
        no_execute=bool(flags & _CC_NO_EXECUTE),
        verbosity=(flags & _CC_VERBOSITY) >> 4,
        cache_delay=cache_delay,
    )


@dataclass(frozen=True, slots=True)
class Alias:
    """A short alias for a binding, defined by a Provide in the same session.

    ``size`` is the wire width in bytes (1, 2 or 4), chosen by the provider
    that defined the alias; ``value`` must fit in it.
    """

    value: int
    size: int = 1

    def __post_init__(self) -> None:
        if self.size not in (1, 2, 4):
            raise ValueError(f"alias size must be 1, 2 or 4 bytes, got {self.size!r}")
        if type(self.value) is not int or not 0 <= self.value < 1 << (8 * self.size):
            raise ValueError(f"alias {self.value!r} does not fit in {self.size} bytes")

    def encode(self) -> bytes:
        return self.value.to_bytes(self.size, "big")


@dataclass(frozen=True, slots=True)
class Binding:
    """A full binding: an interface (IID) on an object (OID)."""

    interface: IID
    object_id: OID

    def encode(self) -> bytes:
        return self.interface.encode() + self.object_id.encode()


Target: TypeAlias = Alias | Binding
"""What a command addresses: an alias or a full binding."""


def _target_bits(target: Target) -> int:
    if isinstance(target, Alias):
        return _ALIAS_CODES[target.size] << _ALIAS_SHIFT
    return 0


def _check_target(target: object) -> None:
    if not isinstance(target, Alias | Binding):
        raise ValueError(f"target must be an Alias or a Binding, got {type(target).__name__}")


def _read_binding(reader: Reader) -> Binding:
    return Binding(read_iid(reader), read_oid(reader))


def _read_target(reader: Reader, alias_size: int) -> Target:
    if alias_size:
        return Alias(int.from_bytes(reader.take(alias_size), "big"), alias_size)
    return _read_binding(reader)


def _normalise_values(pdu: object, values: object) -> None:
    """Store ``values`` on the frozen ``pdu`` as a tuple (a list is accepted)."""
    if not isinstance(values, list | tuple):
        raise ValueError(f"values must be a tuple or list, not {type(values).__name__}")
    object.__setattr__(pdu, "values", tuple(values))


# -- commands ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetCommand:
    """Read property ``item_id`` of the target; answered by a GetResponse."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.GET
    IS_RESPONSE: ClassVar[bool] = False

    item_id: int
    target: Target
    command_control: CommandControl | None = None

    def __post_init__(self) -> None:
        _check_c2(self.item_id, "item id")
        _check_target(self.target)


@dataclass(frozen=True, slots=True)
class SetCommand:
    """Write property ``item_id`` of the target; answered by a SetResponse."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.SET
    IS_RESPONSE: ClassVar[bool] = False

    item_id: int
    target: Target
    values: tuple[object, ...] = ()
    command_control: CommandControl | None = None

    def __post_init__(self) -> None:
        _check_c2(self.item_id, "item id")
        _check_target(self.target)
        _normalise_values(self, self.values)


@dataclass(frozen=True, slots=True)
class InvokeCommand:
    """Call method ``item_id`` of the target with ``values`` as arguments;
    answered by an InvokeResponse carrying the results."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.INVOKE
    IS_RESPONSE: ClassVar[bool] = False

    item_id: int
    target: Target
    values: tuple[object, ...] = ()
    command_control: CommandControl | None = None

    def __post_init__(self) -> None:
        _check_c2(self.item_id, "item id")
        _check_target(self.target)
        _normalise_values(self, self.values)


@dataclass(frozen=True, slots=True)
class SubscribeCommand:
    """Ask to be told of changes of property ``item_id`` (by Change commands),
    at most once per ``minimum_delta`` (c2; the dissector names no unit)."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.SUBSCRIBE
    IS_RESPONSE: ClassVar[bool] = False

    item_id: int
    target: Target
    minimum_delta: int = 0
    command_control: CommandControl | None = None

    def __post_init__(self) -> None:
        _check_c2(self.item_id, "item id")
        _check_target(self.target)
        _check_c2(self.minimum_delta, "minimum delta")


@dataclass(frozen=True, slots=True)
class RegisterCommand:
    """Ask to receive event ``item_id`` of the target (by Signal commands)."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.REGISTER
    IS_RESPONSE: ClassVar[bool] = False

    item_id: int
    target: Target
    command_control: CommandControl | None = None

    def __post_init__(self) -> None:
        _check_c2(self.item_id, "item id")
        _check_target(self.target)


@dataclass(frozen=True, slots=True)
class _TargetOnlyCommand:
    """Shared shape of Watch, Activate, Connect and Full Connect."""

    OPCODE: ClassVar[OapOpcode]
    IS_RESPONSE: ClassVar[bool] = False

    target: Target
    command_control: CommandControl | None = None

    def __post_init__(self) -> None:
        _check_target(self.target)


@dataclass(frozen=True, slots=True)
class WatchCommand(_TargetOnlyCommand):
    """Watch for providers of the target binding."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.WATCH


@dataclass(frozen=True, slots=True)
class ActivateCommand(_TargetOnlyCommand):
    """Ask providers of the target binding to become active."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.ACTIVATE


@dataclass(frozen=True, slots=True)
class ConnectCommand(_TargetOnlyCommand):
    """Connect to the target binding."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.CONNECT


@dataclass(frozen=True, slots=True)
class FullConnectCommand(_TargetOnlyCommand):
    """Full Connect to the target binding."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.FULL_CONNECT


@dataclass(frozen=True, slots=True)
class AdvertiseCommand:
    """Announce that this node provides ``binding``.

    No command control: the dissector misreads it on Advertise, so dofpy
    never sends it (and refuses it on input).
    """

    OPCODE: ClassVar[OapOpcode] = OapOpcode.ADVERTISE
    IS_RESPONSE: ClassVar[bool] = False

    binding: Binding

    def __post_init__(self) -> None:
        if not isinstance(self.binding, Binding):
            raise ValueError("Advertise needs a Binding")


@dataclass(frozen=True, slots=True)
class ProvideCommand:
    """Provide ``binding`` and define ``alias`` for it in this session; later
    commands in the session may address the binding by the alias."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.PROVIDE
    IS_RESPONSE: ClassVar[bool] = False

    alias: Alias
    binding: Binding

    def __post_init__(self) -> None:
        if not isinstance(self.alias, Alias):
            raise ValueError("Provide needs an Alias (the dissector requires one)")
        if not isinstance(self.binding, Binding):
            raise ValueError("Provide needs a Binding")


@dataclass(frozen=True, slots=True)
class OpenCommand:
    """Open: a target, then an interface and an object id; answered by an
    OpenResponse."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.OPEN
    IS_RESPONSE: ClassVar[bool] = False

    target: Target
    interface: IID
    object_id: OID

    def __post_init__(self) -> None:
        _check_target(self.target)


@dataclass(frozen=True, slots=True)
class _SequencedCommand:
    """Shared shape of Change and Signal."""

    OPCODE: ClassVar[OapOpcode]
    IS_RESPONSE: ClassVar[bool] = False

    item_id: int
    target: Target
    sequence: int
    values: tuple[object, ...] = ()

    def __post_init__(self) -> None:
        _check_c2(self.item_id, "item id")
        _check_target(self.target)
        _check_u16(self.sequence, "sequence")
        _normalise_values(self, self.values)


@dataclass(frozen=True, slots=True)
class ChangeCommand(_SequencedCommand):
    """Tell a subscriber the new value of property ``item_id``."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.CHANGE


@dataclass(frozen=True, slots=True)
class SignalCommand(_SequencedCommand):
    """Deliver an occurrence of event ``item_id`` to a registrant."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.SIGNAL


@dataclass(frozen=True, slots=True)
class DefineCommand:
    """Define: the opcode byte alone; answered by a DefineResponse."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.DEFINE
    IS_RESPONSE: ClassVar[bool] = False


# -- responses -----------------------------------------------------------------


def _check_provider(provider: object) -> None:
    if provider is not None and not isinstance(provider, OID):
        raise ValueError("provider must be an OID or None")


@dataclass(frozen=True, slots=True)
class GetResponse:
    """The value of a property; ``provider`` names the answering provider."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.GET
    IS_RESPONSE: ClassVar[bool] = True

    values: tuple[object, ...] = ()
    provider: OID | None = None

    def __post_init__(self) -> None:
        _check_provider(self.provider)
        _normalise_values(self, self.values)


@dataclass(frozen=True, slots=True)
class InvokeResponse:
    """The results of a method call."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.INVOKE
    IS_RESPONSE: ClassVar[bool] = True

    values: tuple[object, ...] = ()
    provider: OID | None = None

    def __post_init__(self) -> None:
        _check_provider(self.provider)
        _normalise_values(self, self.values)


@dataclass(frozen=True, slots=True)
class SetResponse:
    """A property was written."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.SET
    IS_RESPONSE: ClassVar[bool] = True

    provider: OID | None = None

    def __post_init__(self) -> None:
        _check_provider(self.provider)


@dataclass(frozen=True, slots=True)
class SubscribeResponse:
    """A subscription was accepted."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.SUBSCRIBE
    IS_RESPONSE: ClassVar[bool] = True

    provider: OID | None = None

    def __post_init__(self) -> None:
        _check_provider(self.provider)


@dataclass(frozen=True, slots=True)
class RegisterResponse:
    """A registration was accepted; ``sequence`` is the event's current update
    sequence (u16), which later Signal commands continue."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.REGISTER
    IS_RESPONSE: ClassVar[bool] = True

    sequence: int
    provider: OID | None = None

    def __post_init__(self) -> None:
        _check_u16(self.sequence, "sequence")
        _check_provider(self.provider)


@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    """A command failed: exception ``code`` (c2) and detail ``values``.

    ``internal``: the failure is inside the provider; ``final``: no further
    response follows for this operation; ``provider`` names the provider.
    The dissector (tshark 4.0) shows the flags but does not parse the
    provider OID of an Exception: it treats those bytes as the code.
    """

    OPCODE: ClassVar[OapOpcode] = OapOpcode.EXCEPTION
    IS_RESPONSE: ClassVar[bool] = True

    code: int
    values: tuple[object, ...] = ()
    internal: bool = False
    final: bool = True
    provider: OID | None = None

    def __post_init__(self) -> None:
        _check_c2(self.code, "exception code")
        _check_provider(self.provider)
        _normalise_values(self, self.values)


@dataclass(frozen=True, slots=True)
class DefineResponse:
    """Answer to Define: the opcode byte alone."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.DEFINE
    IS_RESPONSE: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class OpenResponse:
    """Answer to Open: the opcode byte alone."""

    OPCODE: ClassVar[OapOpcode] = OapOpcode.OPEN
    IS_RESPONSE: ClassVar[bool] = True


OapPdu: TypeAlias = (
    GetCommand
    | SetCommand
    | InvokeCommand
    | SubscribeCommand
    | RegisterCommand
    | WatchCommand
    | ActivateCommand
    | ConnectCommand
    | FullConnectCommand
    | AdvertiseCommand
    | ProvideCommand
    | OpenCommand
    | ChangeCommand
    | SignalCommand
    | DefineCommand
    | GetResponse
    | InvokeResponse
    | SetResponse
    | SubscribeResponse
    | RegisterResponse
    | ExceptionResponse
    | DefineResponse
    | OpenResponse
)
"""Every OAP PDU dofpy encodes and decodes."""


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
