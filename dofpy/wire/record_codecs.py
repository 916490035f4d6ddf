"""The machinery of records (:mod:`dofpy.wire.record`): the field annotations
(:class:`IntRange`, :class:`MaxLen`, ``UInt8`` .. ``UInt64``), one codec per
field type, and the schema a record class carries (its fields and their
codecs, built once at declaration by :mod:`dofpy.wire.record`).

Encoding raises ``TypeError``/``ValueError``, decoding only ``BadPacket``;
both spend one item budget per walk, the bound of a value list. The public
API and the wire rules are :mod:`dofpy.wire.record`, which re-exports the
annotations.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from dofpy.errors import BadPacket
from dofpy.wire.oid import IID, OID
from dofpy.wire.values import MAX_DEPTH, MAX_ITEMS

__all__ = ["IntRange", "MaxLen", "UInt8", "UInt16", "UInt32", "UInt64", "is_record"]

_SCHEMA_ATTRIBUTE = "__dofpy_record__"
_ABSENT = object()  # a key missing from a decoded map (None is a value there)
_INT_MIN = -(1 << 64)
_INT_MAX = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class IntRange:
    """``Annotated[int, IntRange(low, high)]``: an int in ``low .. high`` inclusive."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if not _INT_MIN <= self.low <= self.high <= _INT_MAX:
            raise ValueError(f"IntRange({self.low}, {self.high}) outside -2**64 .. 2**64-1")


@dataclass(frozen=True, slots=True)
class MaxLen:
    """``Annotated[str, MaxLen(n)]`` (UTF-8 bytes), ``bytes`` (bytes) or a tuple (items)."""

    limit: int

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"MaxLen({self.limit}) is negative")


UInt8 = Annotated[int, IntRange(0, 0xFF)]
UInt16 = Annotated[int, IntRange(0, 0xFFFF)]
UInt32 = Annotated[int, IntRange(0, 0xFFFF_FFFF)]
UInt64 = Annotated[int, IntRange(0, (1 << 64) - 1)]


class _Walk:
    """The item budget of one encode or decode (the same bound as a value list)."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items = 0

    def spend(self, path: str, error: type[Exception]) -> None:
        self.items += 1
        if self.items > MAX_ITEMS:
            raise error(f"{path}: record has more than {MAX_ITEMS} items")


# -- codecs: one per field type; encode raises TypeError/ValueError, decode BadPacket ----


class _Codec:
    """Encodes one field type (raising ``TypeError``/``ValueError``) and decodes it
    (raising ``BadPacket``); ``path`` names the value in messages, ``depth``
    counts the containers around it."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, value: Any, path: str, depth: int, walk: _Walk) -> object:
        raise NotImplementedError

    def decode(self, value: object, path: str, depth: int, walk: _Walk) -> Any:
        raise NotImplementedError


def _wrong(path: str, expected: str, value: object) -> BadPacket:
    return BadPacket(f"{path}: expected {expected}, got {type(value).__name__}")


class _Bool(_Codec):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("bool")

    def encode(self, value: Any, path: str, depth: int, walk: _Walk) -> object:
        if not isinstance(value, bool):
            raise TypeError(f"{path}: must be bool, got {type(value).__name__}")
        return bool(value)

    def decode(self, value: object, path: str, depth: int, walk: _Walk) -> Any:
        if type(value) is not bool:
            raise _wrong(path, "bool", value)
        return value


class _Int(_Codec):
    __slots__ = ("high", "low")

    def __init__(self, low: int, high: int) -> None:
        super().__init__("int")
        self.low, self.high = low, high

    def encode(self, value: Any, path: str, depth: int, walk: _Walk) -> object:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{path}: must be int, got {type(value).__name__}")
        if not self.low <= value <= self.high:
            raise ValueError(f"{path}: {value} outside {self.low} .. {self.high}")
        return int(value)

    def decode(self, value: object, path: str, depth: int, walk: _Walk) -> Any:
        if type(value) is not int:
            raise _wrong(path, "int", value)
        if not self.low <= value <= self.high:
            raise BadPacket(f"{path}: {value} outside {self.low} .. {self.high}")
        return value


class _Float(_Codec):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("float")

    def encode(self, value: Any, path: str, depth: int, walk: _Walk) -> object:
        if not isinstance(value, float | int) or isinstance(value, bool):
            raise TypeError(f"{path}: must be float, got {type(value).__name__}")
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"{path}: {value} does not fit a float") from None

    def decode(self, value: object, path: str, depth: int, walk: _Walk) -> Any:
        if type(value) is not float:
            raise _wrong(path, "float", value)
        return value


class _Text(_Codec):
    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__("str")
        self.limit = limit

    def encode(self, value: Any, path: str, depth: int, walk: _Walk) -> object:
        if not isinstance(value, str):
            raise TypeError(f"{path}: must be str, got {type(value).__name__}")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(f"{path}: text is not encodable as UTF-8") from None
        if size > self.limit:
            raise ValueError(f"{path}: {size} UTF-8 bytes exceed {self.limit}")
        return str(value)

    def decode(self, value: object, path: str, depth: int, walk: _Walk) -> Any:
        if type(value) is not str:
            raise _wrong(path, "str", value)
        if value.isascii():  # the common case: one byte per character, always encodable
            if len(value) > self.limit:
                raise BadPacket(f"{path}: {len(value)} UTF-8 bytes exceed {self.limit}")
            return value
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise BadPacket(f"{path}: text is not valid UTF-8") from None
        if size > self.limit:
            raise BadPacket(f"{path}: {size} UTF-8 bytes exceed {self.limit}")
        return value


class _Bytes(_Codec):
    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__("bytes")
        self.limit = limit

    def encode(self, value: Any, path: str, depth: int, walk: _Walk) -> object:
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"{path}: must be bytes, got {type(value).__name__}")
        if len(value) > self.limit:
            raise ValueError(f"{path}: {len(value)} bytes exceed {self.limit}")
        return bytes(value)

    def decode(self, value: object, path: str, depth: int, walk: _Walk) -> Any:
        if type(value) is not bytes:
            raise _wrong(path, "bytes", value)
        if len(value) > self.limit:
            raise BadPacket(f"{path}: {len(value)} bytes exceed {self.limit}")
        return value


class _Identifier(_Codec):
    """OID or IID as a byte string holding the DOF wire encoding."""

    __slots__ = ("decoder", "kind")

    def __init__(self, kind: type[OID] | type[IID], decoder: Callable[[bytes], object]) -> None:
        super().__init__(kind.__name__)
        self.kind, self.decoder = kind, decoder

    def encode(self, value: Any, path: str, depth: int, walk: _Walk) -> object:
        if not isinstance(value, self.kind):
            raise TypeError(f"{path}: must be {self.name}, got {type(value).__name__}")
        encoded: bytes = value.encode()
        return encoded

    def decode(self, value: object, path: str, depth: int, walk: _Walk) -> Any:
        if type(value) is not bytes:
            raise _wrong(path, f"{self.name} (bytes)", value)
        try:
            decoded = self.decoder(value)
        except BadPacket as exc:
            raise BadPacket(f"{path}: {exc}") from None
        assert isinstance(decoded, OID | IID)
        # Defensive: the DOF decoders accept only minimal encodings today; a
        # record's canonical form must not depend on that staying true.
        if decoded.encode() != value:
            raise BadPacket(f"{path}: {self.name} not minimally encoded")
        return decoded


class _Enum(_Codec):
    __slots__ = ("kind", "member_type")

    def __init__(self, kind: type[enum.Enum], member_type: type[int] | type[str]) -> None:
        super().__init__(kind.__name__)
        self.kind, self.member_type = kind, member_type

    def encode(self, value: Any, path: str, depth: int, walk: _Walk) -> object:
        if not isinstance(value, self.kind):
            raise TypeError(f"{path}: must be {self.name}, got {type(value).__name__}")
        wire: object = value.value
        return wire

    def decode(self, value: object, path: str, depth: int, walk: _Walk) -> Any:
        if type(value) is not self.member_type:
            raise _wrong(path, f"{self.name} ({self.member_type.__name__})", value)
        try:
            return self.kind(value)
        except (ValueError, TypeError):
            raise BadPacket(f"{path}: {value!r} is not a {self.name}") from None


class _Tuple(_Codec):
    __slots__ = ("item", "limit")

    def __init__(self, item: _Codec, limit: int) -> None:
        super().__init__(f"tuple[{item.name}, ...]")
        self.item, self.limit = item, limit

    def encode(self, value: Any, path: str, depth: int, walk: _Walk) -> object:
        if not isinstance(value, tuple | list):
            raise TypeError(f"{path}: must be a tuple, got {type(value).__name__}")
        if len(value) > self.limit:
            raise ValueError(f"{path}: {len(value)} items exceed {self.limit}")
        if depth >= MAX_DEPTH:
            raise ValueError(f"{path}: record nested deeper than {MAX_DEPTH} levels")
        out = []
        for index, item in enumerate(value):
            walk.spend(path, ValueError)
            out.append(self.item.encode(item, f"{path}[{index}]", depth + 1, walk))
        return out

    def decode(self, value: object, path: str, depth: int, walk: _Walk) -> Any:
        if not isinstance(value, list | tuple):
            raise _wrong(path, "an array", value)
        if len(value) > self.limit:
            raise BadPacket(f"{path}: {len(value)} items exceed {self.limit}")
        if depth >= MAX_DEPTH:
            raise BadPacket(f"{path}: record nested deeper than {MAX_DEPTH} levels")
        out = []
        for index, item in enumerate(value):
            walk.spend(path, BadPacket)
            out.append(self.item.decode(item, f"{path}[{index}]", depth + 1, walk))
        return tuple(out)


class _Nested(_Codec):
    """A record inside a record; its schema is looked up when used, so that a
    record may name itself."""

    __slots__ = ("kind",)

    def __init__(self, kind: type[Any]) -> None:
        super().__init__(kind.__name__)
        self.kind = kind

    def encode(self, value: Any, path: str, depth: int, walk: _Walk) -> object:
        return _schema(self.kind).encode(value, path, depth, walk)

    def decode(self, value: object, path: str, depth: int, walk: _Walk) -> Any:
        return _schema(self.kind).decode(value, path, depth, walk)


# -- schemas -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    codec: _Codec
    nullable: bool  # ``T | None``: None travels as an absent key
    required: bool  # no default and not nullable: the key must be present
    dotted: str = ""  # ".name": appended to a path (built once, not per decode)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dotted", f".{self.name}")


@dataclass(frozen=True, slots=True)
class _Schema:
    kind: type[Any]
    fields: tuple[_Field, ...]

    def encode(self, value: Any, path: str, depth: int, walk: _Walk) -> dict[str, object]:
        if not isinstance(value, self.kind):
            raise TypeError(f"{path}: must be {self.kind.__name__}, got {type(value).__name__}")
        if depth >= MAX_DEPTH:
            raise ValueError(f"{path}: record nested deeper than {MAX_DEPTH} levels")
        out: dict[str, object] = {}
        inner = depth + 1
        for field in self.fields:
            name = field.name
            item = getattr(value, name)
            if item is None and field.nullable:
                continue
            walk.items += 1  # walk.spend, inlined (as in decode)
            if walk.items > MAX_ITEMS:
                raise ValueError(f"{path}: record has more than {MAX_ITEMS} items")
            out[name] = field.codec.encode(item, path + field.dotted, inner, walk)
        return out

    def decode(self, value: object, path: str, depth: int, walk: _Walk) -> Any:
        if not isinstance(value, dict):
            raise _wrong(path, f"{self.kind.__name__} (a map)", value)
        if depth >= MAX_DEPTH:
            raise BadPacket(f"{path}: record nested deeper than {MAX_DEPTH} levels")
        for key in value:
            if type(key) is not str:
                raise BadPacket(f"{path}: map key of type {type(key).__name__}; keys are text")
        arguments: dict[str, Any] = {}
        inner = depth + 1
        for field in self.fields:
            # walk.spend, inlined: this loop runs for every field of every
            # record of a page (benchmarks/version.py).
            walk.items += 1
            if walk.items > MAX_ITEMS:
                raise BadPacket(f"{path}: record has more than {MAX_ITEMS} items")
            name = field.name
            item = value.get(name, _ABSENT)
            if item is _ABSENT:
                if field.required:
                    raise BadPacket(f"{path}.{name}: required field missing")
                if field.nullable:
                    arguments[name] = None
                continue
            if item is None:
                raise BadPacket(f"{path}.{name}: null is never sent (None is an absent key)")
            arguments[name] = field.codec.decode(item, path + field.dotted, inner, walk)
        try:
            return self.kind(**arguments)
        except (ValueError, TypeError) as exc:
            raise BadPacket(f"{path}: {exc}") from None


def _schema(kind: type[Any]) -> _Schema:
    schema = kind.__dict__.get(_SCHEMA_ATTRIBUTE)
    if not isinstance(schema, _Schema):
        raise TypeError(f"{kind.__name__} is not a record (decorate it with @record)")
    return schema


def is_record(kind: object) -> bool:
    """True for a class declared with :func:`record`."""
    return isinstance(kind, type) and isinstance(kind.__dict__.get(_SCHEMA_ATTRIBUTE), _Schema)
