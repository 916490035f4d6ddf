"""Records: frozen dataclasses that travel as canonical CBOR maps (a dofpy extension).

A record is declared with :func:`record`, which makes a class a frozen,
slotted dataclass and reads its field types once, at declaration::

    @record
    class DeviceReport:
        device: OID
        version: UInt32
        state: DeviceState            # an IntEnum or an Enum with str values
        tags: tuple[str, ...] = ()
        note: str | None = None

On the wire a record is one CBOR map (RFC 8949) whose keys are the field names
as text strings, in the deterministic encoding of RFC 8949 section 4.2.1
(shortest heads and floats, keys sorted; for text keys the bytewise and the
length-first orders agree), within the limits of :mod:`dofpy.wire.values`.
Field types and their wire form:

- ``bool``, ``int``, ``float``, ``str``, ``bytes``: the CBOR type of that
  kind (a float is always a CBOR float, an int never is one);
- ``Annotated[int, IntRange(low, high)]`` (and :data:`UInt8` .. :data:`UInt64`):
  an int refused outside ``low .. high``; ``Annotated[str | bytes | tuple, MaxLen(n)]``:
  at most ``n`` UTF-8 bytes, bytes or items;
- :class:`~dofpy.wire.oid.OID` and :class:`~dofpy.wire.oid.IID`: a byte
  string holding their DOF wire encoding (compact, and already canonical);
- ``enum.IntEnum``, or an ``enum.Enum`` whose values are all ints or all
  strs: the member's value; an unknown value is refused (enums are closed:
  declare an ``int`` or ``str`` field for an open set);
- another record: a nested map; ``tuple[T, ...]``: an array;
- ``T | None`` (fields only, not inside a tuple): ``None`` is sent as an
  absent key, never as CBOR null; its default, if any, must be ``None``.

Every field with a value is sent, defaulted or not, so a record means the same
to a peer whose defaults differ. On decode a missing key takes the field's
default (or ``None`` for ``T | None``); a missing required field is refused.
**Unknown keys are ignored** on decode: a newer peer may add optional fields
and older peers still read its records (so a decoded record may re-encode to
fewer bytes than it came in). Decoding raises only ``BadPacket``, naming the
field; a ``ValueError`` or ``TypeError`` from the record's ``__post_init__``
(a validating record) is refused the same way.

The field codecs and the schema they make up are in
:mod:`dofpy.wire.record_codecs`; this module declares records and is their
public encode and decode.

Field types are resolved with :func:`typing.get_type_hints` when the class is
decorated, so the types a record names must exist by then (define nested
records first; a record may name itself, e.g. a tree of nodes).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Annotated, Any, TypeVar, dataclass_transform

import cbor2

from dofpy.errors import BadPacket
from dofpy.wire.oid import IID, OID, decode_iid_untrusted, decode_oid_untrusted
from dofpy.wire.record_codecs import (
    _INT_MAX,
    _INT_MIN,
    _SCHEMA_ATTRIBUTE,
    IntRange,
    MaxLen,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    _Bool,
    _Bytes,
    _Codec,
    _Enum,
    _Field,
    _Float,
    _Identifier,
    _Int,
    _Nested,
    _Schema,
    _schema,
    _Text,
    _Tuple,
    _Walk,
    is_record,
)
from dofpy.wire.values import MAX_VALUES_SIZE, _decode_canonical

__all__ = [
    "IntRange",
    "MaxLen",
    "UInt8",
    "UInt16",
    "UInt32",
    "UInt64",
    "decode_record_untrusted",
    "encode_record",
    "is_record",
    "record",
    "record_from_value_untrusted",
    "record_to_value",
]

R = TypeVar("R")


_NO_LIMIT = MAX_VALUES_SIZE  # nothing in a value list can be longer than the list itself


def _codec_for(hint: Any, owner: type[Any], where: str) -> _Codec:
    """The codec for one (non-optional) type annotation; ``TypeError`` if unsupported."""
    metadata: tuple[object, ...] = ()
    if typing.get_origin(hint) is Annotated:
        hint, *extra = typing.get_args(hint)
        metadata = tuple(m for m in extra if isinstance(m, IntRange | MaxLen))
    ranges = [m for m in metadata if isinstance(m, IntRange)]
    limits = [m for m in metadata if isinstance(m, MaxLen)]
    if len(ranges) > 1 or len(limits) > 1:
        raise TypeError(f"{where}: more than one IntRange or MaxLen")
    origin = typing.get_origin(hint)
    takes_range = hint is int
    takes_limit = hint in (str, bytes) or origin is tuple
    if (ranges and not takes_range) or (limits and not takes_limit):
        raise TypeError(f"{where}: IntRange applies to int, MaxLen to str, bytes and tuples")
    limit = limits[0].limit if limits else _NO_LIMIT
    if hint is bool:
        return _Bool()
    if hint is int:
        bounds = ranges[0] if ranges else IntRange(_INT_MIN, _INT_MAX)
        return _Int(bounds.low, bounds.high)
    if hint is float:
        return _Float()
    if hint is str:
        return _Text(limit)
    if hint is bytes:
        return _Bytes(limit)
    if hint is OID:
        return _Identifier(OID, decode_oid_untrusted)
    if hint is IID:
        return _Identifier(IID, decode_iid_untrusted)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{where}: only tuple[T, ...] is supported, not {hint}")
        if _optional_inner(args[0]) is not None:
            raise TypeError(f"{where}: tuple items cannot be optional (None is an absent key)")
        return _Tuple(_codec_for(args[0], owner, f"{where}[]"), limit)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_codec(hint, where)
    if isinstance(hint, type) and (hint is owner or is_record(hint)):
        return _Nested(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        raise TypeError(f"{where}: {hint.__name__} is not a record (decorate it with @record)")
    if origin is list:
        raise TypeError(f"{where}: use tuple[T, ...] for a sequence, not {hint}")
    raise TypeError(f"{where}: unsupported field type {hint!r}")


def _enum_codec(kind: type[enum.Enum], where: str) -> _Codec:
    members = list(kind)
    if not members:
        raise TypeError(f"{where}: enum {kind.__name__} has no members")
    value_types = {type(m.value) for m in members}
    if issubclass(kind, int) or value_types == {int}:
        if not all(isinstance(m.value, int) and not isinstance(m.value, bool) for m in members):
            raise TypeError(f"{where}: enum {kind.__name__} values must all be int")
        return _Enum(kind, int)
    if value_types == {str}:
        return _Enum(kind, str)
    raise TypeError(f"{where}: enum {kind.__name__} values must be all int or all str")


def _optional_inner(hint: Any) -> Any | None:
    """``T`` for ``T | None`` (or ``Optional[T]``), else ``None``; other unions refused."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    args = typing.get_args(hint)
    others = [a for a in args if a is not type(None)]
    if len(others) != 1 or len(args) != 2:
        raise TypeError(f"unsupported union {hint}: only T | None")
    return others[0]


def _build_schema(kind: type[Any]) -> _Schema:
    try:
        hints = typing.get_type_hints(kind, localns={kind.__name__: kind}, include_extras=True)
    except Exception as exc:  # NameError, or anything a broken annotation raises
        raise TypeError(f"{kind.__name__}: cannot resolve field types: {exc}") from None
    fields = []
    for field in dataclasses.fields(kind):
        where = f"{kind.__name__}.{field.name}"
        if not field.init:
            raise TypeError(f"{where}: every field of a record must be an __init__ field")
        hint = hints[field.name]
        try:
            inner = _optional_inner(hint)
        except TypeError as exc:
            raise TypeError(f"{where}: {exc}") from None
        has_default = (
            field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        )
        if inner is not None and has_default and field.default is not None:
            raise TypeError(f"{where}: the default of a T | None field must be None")
        codec = _codec_for(hint if inner is None else inner, kind, where)
        fields.append(
            _Field(field.name, codec, inner is not None, not has_default and inner is None)
        )
    return _Schema(kind, tuple(fields))


@dataclass_transform(frozen_default=True)
def record(cls: type[R]) -> type[R]:
    """Declare a record: make ``cls`` a frozen, slotted dataclass that encodes to
    a canonical CBOR map. ``TypeError`` for a field type records do not support.

    A class that is already a frozen dataclass is kept as it is.
    """
    if "__dataclass_fields__" in cls.__dict__:
        params = cls.__dict__["__dataclass_params__"]
        if not params.frozen:
            raise TypeError(f"{cls.__name__}: a record must be a frozen dataclass")
        kind: type[R] = cls
    else:
        kind = dataclasses.dataclass(frozen=True, slots=True)(cls)
    setattr(kind, _SCHEMA_ATTRIBUTE, _build_schema(kind))
    return kind


# -- public encode / decode --------------------------------------------------------------


def record_to_value(value: object) -> dict[str, object]:
    """The CBOR map of a record instance, as Python objects (for a value list).

    Raises ``TypeError`` or ``ValueError`` for a field value its type does not allow.
    """
    # The nearest record class: an undecorated subclass encodes as its record base.
    kind = type(value)
    if not isinstance(kind.__dict__.get(_SCHEMA_ATTRIBUTE), _Schema):
        kind = next((k for k in kind.__mro__ if is_record(k)), kind)
    schema = _schema(kind)
    return schema.encode(value, schema.kind.__name__, 0, _Walk())


def encode_record(value: object) -> bytes:
    """The canonical CBOR encoding of a record instance (one map)."""
    encoded: bytes = cbor2.dumps(record_to_value(value), canonical=True)
    if len(encoded) > MAX_VALUES_SIZE:
        raise ValueError(f"record of {len(encoded)} bytes exceeds {MAX_VALUES_SIZE}")
    return encoded


def record_from_value_untrusted(cls: type[R], value: object) -> R:
    """A ``cls`` instance from an already-decoded CBOR map (as in a value list).

    Untrusted input: raises only ``BadPacket``, naming the field at fault.
    """
    schema = _schema(cls)
    decoded: R = schema.decode(value, cls.__name__, 0, _Walk())
    return decoded


def decode_record_untrusted(cls: type[R], data: bytes) -> R:
    """A ``cls`` instance from canonical CBOR bytes holding one map.

    Untrusted input: raises only ``BadPacket`` (non-canonical or malformed
    CBOR, limits, and everything :func:`record_from_value_untrusted` refuses).
    """
    schema = _schema(cls)
    raw = bytes(data)
    if not raw or raw[0] >> 5 != 5:  # major type 5: a map
        raise BadPacket(f"{cls.__name__}: a record must be one CBOR map")
    value = _decode_canonical(raw, "record")
    decoded: R = schema.decode(value, cls.__name__, 0, _Walk())
    return decoded
