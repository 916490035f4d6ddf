"""OAP building blocks: the opcodes, the opcode-byte and command-control
bits, command control and the targets (alias or binding) with their readers.

Split from :mod:`dofpy.wire.oap` (the codec) and :mod:`dofpy.wire.oap_pdus`
(the PDU classes) by concern; the layouts are documented in
:mod:`dofpy.wire.oap`, which re-exports every public name. The
underscore-prefixed names are shared by those two modules only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from dofpy.errors import BadPacket
from dofpy.wire._codec import C2_MAX, Reader, encode_c2
from dofpy.wire.oid import IID, OID, read_iid, read_oid

__all__ = ["OAP_APP_ID", "Alias", "Binding", "CommandControl", "OapOpcode", "Target"]

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
