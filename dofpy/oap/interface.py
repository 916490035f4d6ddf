"""OAP interfaces: an IID with typed properties, methods, events and exceptions.

An interface is a contract between providers and requestors. Every item has an
item id (unique within the interface) that travels on the wire, and a name for
programs. Values are typed with a small set of value types that map onto the
CBOR value lists carried on the wire; both sides check values against the
declaration, so a provider never sees a mistyped argument and a requestor never
returns a mistyped result.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dofpy.wire.oid import IID

__all__ = [
    "Event",
    "ExceptionDef",
    "Interface",
    "Item",
    "Method",
    "Param",
    "Property",
    "ValueType",
    "check_values",
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
class Param:
    """A named, typed value in a method's arguments or results, or an event's values."""

    name: str
    type: ValueType
    optional: bool = False


def check_values(params: Sequence[Param], values: Sequence[Any], what: str) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``values`` fit ``params``."""
    required = sum(1 for p in params if not p.optional)
    if not required <= len(values) <= len(params):
        raise ValueError(
            f"{what}: expected {required}..{len(params)} values, got {len(values)}"
            if required != len(params)
            else f"{what}: expected {len(params)} values, got {len(values)}"
        )
    for param, value in zip(params, values, strict=False):
        if value is None and param.optional:
            continue
        if not param.type.accepts(value):
            raise TypeError(
                f"{what}: {param.name} must be {param.type.value}, got {type(value).__name__}"
            )


@dataclass(frozen=True, slots=True)
class Property:
    """A property: read with Get, written with Set, watched with Subscribe."""

    item_id: int
    name: str
    type: ValueType
    readable: bool = True
    writable: bool = False
    observable: bool = False

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
class Event:
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


Item = Property | Method | Event | ExceptionDef


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

    def event(self, key: int | str) -> Event:
        result: Event = self._typed(key, Event)
        return result

    def exception(self, key: int | str) -> ExceptionDef:
        result: ExceptionDef = self._typed(key, ExceptionDef)
        return result

    def client(self, node: RequestorNode, peer: Address, object_id: OID) -> ObjectClient:
        """A proxy for ``object_id`` at ``peer`` through this interface, whose
        items are attributes: ``await proxy.add(2, 3)``, ``await
        proxy.temperature.get()``, ``async with proxy.alarm.register() as
        signals:`` (see :mod:`dofpy.oap.client`). ``node`` is the requestor
        (a :class:`dofpy.DofNode`)."""
        from dofpy.oap.client import ObjectClient  # noqa: PLC0415 (client imports this module)

        return ObjectClient(node, peer, object_id, self)


# Only the type checker needs these (dofpy.oap.client imports this module);
# kept here, apart from the imports above, so that this addition merges
# cleanly with concurrent changes to them.
import typing  # noqa: E402

if typing.TYPE_CHECKING:
    from dofpy._core import Address
    from dofpy.oap.client import ObjectClient, RequestorNode
    from dofpy.wire.oid import OID
