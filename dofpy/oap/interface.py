"""OAP interfaces: an IID with typed properties, methods, events and exceptions.

An interface is a contract between providers and requestors. Every item has an
item id (unique within the interface) that travels on the wire, and a name for
programs. Values are typed with a small set of value types that map onto the
CBOR value lists carried on the wire, with records (:func:`dofpy.wire.record.record`)
and lists of records (:class:`RecordList`); both sides check values against the
declaration, so a provider never sees a mistyped argument and a requestor never
returns a mistyped result. :func:`outgoing_values` checks what the application
sends and turns records into CBOR maps; :func:`incoming_values_untrusted` checks
what a peer sent and turns maps back into record instances.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dofpy.errors import BadPacket
from dofpy.wire.oid import IID
from dofpy.wire.record import is_record, record_from_value_untrusted, record_to_value

__all__ = [
    "EventDef",
    "ExceptionDef",
    "Interface",
    "Item",
    "Method",
    "Param",
    "ParamType",
    "Property",
    "RecordList",
    "ValueType",
    "check_values",
    "incoming_values_untrusted",
    "outgoing_values",
]


class ValueType(enum.Enum):
    """The types a value in an OAP value list may declare."""

    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    TEXT = "text"
    BYTES = "bytes"
    LIST = "list"
    MAP = "map"
    ANY = "any"

    def accepts(self, value: object) -> bool:
        match self:
            case ValueType.BOOL:
                return isinstance(value, bool)
            case ValueType.INT:
                return isinstance(value, int) and not isinstance(value, bool)
            case ValueType.FLOAT:
                return isinstance(value, float | int) and not isinstance(value, bool)
            case ValueType.TEXT:
                return isinstance(value, str)
            case ValueType.BYTES:
                return isinstance(value, bytes)
            case ValueType.LIST:
                return isinstance(value, list | tuple)
            case ValueType.MAP:
                return isinstance(value, dict)
            case ValueType.ANY:
                return True


@dataclass(frozen=True, slots=True)
class RecordList:
    """A value type: a list of records of one class (a CBOR array of maps).

    ``Param("devices", RecordList(DeviceSummary))``: the application sends a
    sequence of ``DeviceSummary`` and receives a tuple of them.
    """

    record: type[Any]

    def __post_init__(self) -> None:
        if not is_record(self.record):
            raise TypeError(f"RecordList({self.record!r}): not a record class (use @record)")


ParamType = ValueType | RecordList | type[Any]
"""What a value may be declared as: a :class:`ValueType`, a record class, or a
:class:`RecordList`."""


def _check_param_type(kind: object, where: str) -> None:
    if not (isinstance(kind, ValueType | RecordList) or is_record(kind)):
        raise TypeError(f"{where}: type must be a ValueType, a record class or a RecordList")


def _type_name(kind: ParamType) -> str:
    if isinstance(kind, ValueType):
        return kind.value
    if isinstance(kind, RecordList):
        return f"a list of {kind.record.__name__}"
    return kind.__name__


@dataclass(frozen=True, slots=True)
class Param:
    """A named, typed value in a method's arguments or results, or an event's values."""

    name: str
    type: ParamType
    optional: bool = False

    def __post_init__(self) -> None:
        _check_param_type(self.type, f"parameter {self.name}")


def _check_count(params: Sequence[Param], values: Sequence[Any], what: str) -> str | None:
    required = sum(1 for p in params if not p.optional)
    if required <= len(values) <= len(params):
        return None
    if required != len(params):
        return f"{what}: expected {required}..{len(params)} values, got {len(values)}"
    return f"{what}: expected {len(params)} values, got {len(values)}"


def _outgoing(param: Param, value: Any, what: str) -> Any:
    kind = param.type
    if isinstance(kind, ValueType):
        if not kind.accepts(value):
            raise TypeError(
                f"{what}: {param.name} must be {kind.value}, got {type(value).__name__}"
            )
        return value
    if isinstance(kind, RecordList):
        if not isinstance(value, list | tuple):
            raise TypeError(f"{what}: {param.name} must be {_type_name(kind)}")
        return [_outgoing_record(kind.record, item, param, what) for item in value]
    return _outgoing_record(kind, value, param, what)


def _outgoing_record(kind: type[Any], value: Any, param: Param, what: str) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"{what}: {param.name} must be {kind.__name__}, got {type(value).__name__}")
    try:
        return record_to_value(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{what}: {param.name}: {exc}") from None


def outgoing_values(params: Sequence[Param], values: Sequence[Any], what: str) -> tuple[Any, ...]:
    """``values`` (as the application gives them) checked against ``params`` and
    ready for the wire: records become CBOR maps, record lists lists of maps.

    Raises ``TypeError``/``ValueError`` unless ``values`` fit ``params``.
    """
    problem = _check_count(params, values, what)
    if problem is not None:
        raise ValueError(problem)
    return tuple(
        value if value is None and param.optional else _outgoing(param, value, what)
        for param, value in zip(params, values, strict=False)
    )


def _incoming(param: Param, value: Any, what: str) -> Any:
    kind = param.type
    if isinstance(kind, ValueType):
        if not kind.accepts(value):
            raise BadPacket(
                f"{what}: {param.name} must be {kind.value}, got {type(value).__name__}"
            )
        return value
    try:
        if isinstance(kind, RecordList):
            if not isinstance(value, list | tuple):
                raise BadPacket(f"must be {_type_name(kind)}, got {type(value).__name__}")
            return tuple(record_from_value_untrusted(kind.record, item) for item in value)
        return record_from_value_untrusted(kind, value)
    except BadPacket as exc:
        raise BadPacket(f"{what}: {param.name}: {exc}") from None


def incoming_values_untrusted(
    params: Sequence[Param], values: Sequence[Any], what: str
) -> tuple[Any, ...]:
    """``values`` from a peer (a decoded value list) checked against ``params`` and
    ready for the application: CBOR maps become record instances, record lists
    tuples of them.

    Untrusted input: raises only ``BadPacket`` (naming the parameter and field).
    """
    problem = _check_count(params, values, what)
    if problem is not None:
        raise BadPacket(problem)
    return tuple(
        value if value is None and param.optional else _incoming(param, value, what)
        for param, value in zip(params, values, strict=False)
    )


def check_values(params: Sequence[Param], values: Sequence[Any], what: str) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``values`` (as the application
    gives them) fit ``params``; :func:`outgoing_values` also converts them."""
    outgoing_values(params, values, what)


@dataclass(frozen=True, slots=True)
class Property:
    """A property: read with Get, written with Set, watched with Subscribe."""

    item_id: int
    name: str
    type: ParamType
    readable: bool = True
    writable: bool = False
    observable: bool = False

    def __post_init__(self) -> None:
        _check_param_type(self.type, f"property {self.name}")

    @property
    def params(self) -> tuple[Param, ...]:
        return (Param(self.name, self.type),)


@dataclass(frozen=True, slots=True)
class Method:
    """A method: called with Invoke; arguments in, results out."""

    item_id: int
    name: str
    arguments: tuple[Param, ...] = ()
    results: tuple[Param, ...] = ()


@dataclass(frozen=True, slots=True)
class EventDef:
    """An event: signalled by the provider to every registered requestor."""

    item_id: int
    name: str
    values: tuple[Param, ...] = ()


@dataclass(frozen=True, slots=True)
class ExceptionDef:
    """An exception a provider may raise from a method or a property access."""

    item_id: int
    name: str
    values: tuple[Param, ...] = ()


Item = Property | Method | EventDef | ExceptionDef


@dataclass(frozen=True, slots=True)
class Interface:
    """An interface: its IID, a name, and its items by item id."""

    iid: IID
    name: str
    items: tuple[Item, ...]
    _by_id: Mapping[int, Item] = field(init=False, repr=False, compare=False)
    _by_name: Mapping[str, Item] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[int, Item] = {}
        by_name: dict[str, Item] = {}
        for item in self.items:
            if not 0 <= item.item_id <= 0x7FFF:
                raise ValueError(f"{self.name}.{item.name}: item id {item.item_id} not a c2")
            if item.item_id in by_id:
                raise ValueError(f"{self.name}: item id {item.item_id} used twice")
            if item.name in by_name:
                raise ValueError(f"{self.name}: item name {item.name!r} used twice")
            by_id[item.item_id] = item
            by_name[item.name] = item
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_by_name", by_name)

    @classmethod
    def define(cls, iid: IID | str, name: str, items: Iterable[Item]) -> Interface:
        return cls(IID.from_text(iid) if isinstance(iid, str) else iid, name, tuple(items))

    def item(self, key: int | str) -> Item:
        """The item with this id or name; ``KeyError`` if there is none."""
        table: Mapping[Any, Item] = self._by_id if isinstance(key, int) else self._by_name
        try:
            return table[key]
        except KeyError:
            raise KeyError(f"interface {self.name} has no item {key!r}") from None

    def _typed(self, key: int | str, kind: type[Any]) -> Any:
        item = self.item(key)
        if not isinstance(item, kind):
            raise TypeError(
                f"{self.name}.{item.name} is a {type(item).__name__}, not a {kind.__name__}"
            )
        return item

    def property(self, key: int | str) -> Property:
        result: Property = self._typed(key, Property)
        return result

    def method(self, key: int | str) -> Method:
        result: Method = self._typed(key, Method)
        return result

    def event(self, key: int | str) -> EventDef:
        result: EventDef = self._typed(key, EventDef)
        return result

    def exception(self, key: int | str) -> ExceptionDef:
        result: ExceptionDef = self._typed(key, ExceptionDef)
        return result

    def client(
        self, node: RequestorNode, peer: Address, object_id: OID, *, identity: OID | None = None
    ) -> ObjectClient:
        """A proxy for ``object_id`` at ``peer`` through this interface, whose
        items are attributes: ``await proxy.add(2, 3)``, ``await
        proxy.temperature.get()``, ``async with proxy.alarm.register() as
        signals:`` (see :mod:`dofpy.oap.client`). ``node`` is the requestor
        (a :class:`dofpy.DofNode`); with ``identity`` only that authenticated
        identity may answer (see :meth:`dofpy.DofNode.get`)."""
        from dofpy.oap.client import ObjectClient  # noqa: PLC0415 (client imports this module)

        return ObjectClient(node, peer, object_id, self, identity)


# Only the type checker needs these (dofpy.oap.client imports this module);
# kept here, apart from the imports above, so that this addition merges
# cleanly with concurrent changes to them.
import typing  # noqa: E402

if typing.TYPE_CHECKING:
    from dofpy._core import Address
    from dofpy.oap.client import ObjectClient, RequestorNode
    from dofpy.wire.oid import OID
