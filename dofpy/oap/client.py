"""Typed client proxies: a remote object's items as attributes.

:meth:`Interface.client` gives an :class:`ObjectClient` for one object of one
peer, so that callers name items as attributes instead of passing their names
as strings::

    thermo = THERMOSTAT.client(node, peer, HALL)
    await thermo.add(2, 3)                     # Invoke: 5
    await thermo.temperature.get()             # Get
    await thermo.temperature.set(22)           # Set
    async with thermo.temperature.subscribe() as changes: ...
    async with thermo.alarm.register() as signals: ...

Every argument is checked against the interface before anything is sent
(``TypeError``/``ValueError``), and an unknown item is an ``AttributeError``
naming the interface's items. The proxy holds no state of its own and does no
I/O: it calls the node's awaitable ``get``/``set``/``invoke``/``subscribe``
(any object with those, see :class:`RequestorNode`; :class:`dofpy.DofNode`
is one), so this module does not depend on trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from dofpy._core import Address
from dofpy.oap.core import Notification
from dofpy.oap.interface import EventDef, Interface, Item, Method, Property, check_values
from dofpy.wire.oid import OID

__all__ = ["ItemClient", "NotificationStream", "ObjectClient", "RequestorNode"]


class NotificationStream(Protocol):
    """What a subscription yields: :class:`Notification` values until it ends."""

    async def receive(self) -> Notification: ...

    def __aiter__(self) -> AsyncIterator[Notification]: ...


class RequestorNode(Protocol):
    """The requestor side of a node, as the proxies use it."""

    async def get(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        prop: str,
        *,
        identity: OID | None = None,
    ) -> Any: ...

    async def set(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        prop: str,
        value: Any,
        *,
        identity: OID | None = None,
    ) -> None: ...

    async def invoke(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        method: str,
        *args: Any,
        identity: OID | None = None,
    ) -> tuple[Any, ...]: ...

    def subscribe(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        item: str,
        *,
        identity: OID | None = None,
    ) -> AbstractAsyncContextManager[NotificationStream]: ...


def _kind(item: Item) -> str:
    """``item``'s kind with its article: "a property", "an event"..."""
    match item:
        case Property():
            return "a property"
        case Method():
            return "a method"
        case EventDef():
            return "an event"
        case _:
            return "an exception"


class ItemClient:
    """One item of a remote object: call it (a method), ``get``/``set``/
    ``subscribe`` it (a property) or ``register`` for it (an event). Using an
    item in a way its kind or declaration does not allow raises ``TypeError``
    before anything is sent."""

    __slots__ = ("_item", "_object")

    def __init__(self, target: ObjectClient, item: Property | Method | EventDef) -> None:
        self._object = target
        self._item = item

    def __repr__(self) -> str:
        return f"<{self._name}: {_kind(self._item)}>"

    @property
    def _name(self) -> str:
        return f"{self._object._interface.name}.{self._item.name}"

    def _wrong(self, action: str) -> TypeError:
        item = self._item
        qualified = ""
        if isinstance(item, Property):
            flags = [
                flag
                for flag, on in (
                    ("readable", item.readable),
                    ("writable", item.writable),
                    ("observable", item.observable),
                )
                if on
            ]
            qualified = f" ({', '.join(flags) or 'no access'})"
        return TypeError(f"{self._name} is {_kind(item)}{qualified}: it cannot be {action}")

    def _property(self, action: str) -> Property:
        if not isinstance(self._item, Property):
            raise self._wrong(action)
        return self._item

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Invoke the method with these arguments (positional, or by parameter
        name); returns ``None`` when it declares no results, the value when it
        declares one, the tuple of them when several."""
        method = self._item
        if not isinstance(method, Method):
            raise self._wrong("invoked")
        arguments = _bind(method, args, kwargs, self._name)
        target = self._object
        results = await target._node.invoke(
            target._peer,
            target._object_id,
            target._interface,
            method.name,
            *arguments,
            identity=target._identity,
        )
        if not method.results:
            return None
        if len(method.results) == 1:
            return results[0]
        return results

    async def get(self) -> Any:
        """Read the property."""
        prop = self._property("read")
        if not prop.readable:
            raise self._wrong("read")
        target = self._object
        return await target._node.get(
            target._peer, target._object_id, target._interface, prop.name, identity=target._identity
        )

    async def set(self, value: Any) -> None:
        """Write the property (executed at most once)."""
        prop = self._property("written")
        if not prop.writable:
            raise self._wrong("written")
        check_values(prop.params, (value,), f"{self._name} value")
        target = self._object
        await target._node.set(
            target._peer,
            target._object_id,
            target._interface,
            prop.name,
            value,
            identity=target._identity,
        )

    def subscribe(self) -> AbstractAsyncContextManager[NotificationStream]:
        """Subscribe to the observable property: ``async with prop.subscribe()
        as changes:`` yields its changes (each a :class:`Notification` whose
        ``values`` are ``(new_value,)``)."""
        prop = self._property("subscribed to")
        if not prop.observable:
            raise self._wrong("subscribed to")
        return self._watch()

    def register(self) -> AbstractAsyncContextManager[NotificationStream]:
        """Register for the event: ``async with event.register() as signals:``
        yields each signal (a :class:`Notification` of the event's values)."""
        if not isinstance(self._item, EventDef):
            raise self._wrong("registered for")
        return self._watch()

    def _watch(self) -> AbstractAsyncContextManager[NotificationStream]:
        target = self._object
        return target._node.subscribe(
            target._peer,
            target._object_id,
            target._interface,
            self._item.name,
            identity=target._identity,
        )


def _bind(
    method: Method, args: tuple[Any, ...], kwargs: dict[str, Any], what: str
) -> tuple[Any, ...]:
    """The argument list of ``method`` from positional and named arguments,
    checked against its declaration."""
    params = method.arguments
    if len(args) > len(params):
        raise TypeError(f"{what} takes {len(params)} arguments, got {len(args)}")
    values: list[Any] = list(args)
    if kwargs:
        names = [p.name for p in params]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise TypeError(f"{what} has no argument {', '.join(unknown)}")
        twice = sorted(name for name in kwargs if names.index(name) < len(args))
        if twice:
            raise TypeError(f"{what} got {', '.join(twice)} twice")
        last = max(names.index(name) for name in kwargs)
        for index in range(len(args), last + 1):
            param = params[index]
            if param.name in kwargs:
                values.append(kwargs[param.name])
            elif param.optional:
                values.append(None)
            else:
                raise TypeError(f"{what} is missing argument {param.name}")
    check_values(params, values, f"{what} arguments")
    return tuple(values)


class ObjectClient:
    """A remote object seen through one interface: its properties, methods and
    events as attributes (each an :class:`ItemClient`); ``client["name"]``
    reaches any item too (one whose name is not an identifier). Made by
    :meth:`Interface.client`. The proxy has no public attributes of its own,
    so that no item name is hidden by one. With ``identity`` every request
    is bound to that authenticated identity (see :meth:`dofpy.DofNode.get`)."""

    __slots__ = ("_identity", "_interface", "_node", "_object_id", "_peer")

    def __init__(
        self,
        node: RequestorNode,
        peer: Address,
        object_id: OID,
        interface: Interface,
        identity: OID | None = None,
    ) -> None:
        self._node = node
        self._peer = peer
        self._object_id = object_id
        self._interface = interface
        self._identity = identity

    def __repr__(self) -> str:
        return f"<{self._interface.name} client of {self._object_id} at {self._peer}>"

    def __getattr__(self, name: str) -> ItemClient:
        # Only called for names that are not the proxy's own attributes.
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> ItemClient:
        try:
            item = self._interface.item(name)
        except KeyError:
            item = None
        if not isinstance(item, Property | Method | EventDef):
            raise AttributeError(
                f"interface {self._interface.name} has no property, method or event "
                f"{name!r}; it has: {', '.join(self._names()) or 'none'}"
            )
        return ItemClient(self, item)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._names()})

    def _names(self) -> list[str]:
        return [
            item.name
            for item in self._interface.items
            if isinstance(item, Property | Method | EventDef)
        ]
