"""Client proxies checked without a network: a recording node shows what the
proxy asks of it, and that nothing is asked when the arguments are wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from dofpy._core import Address
from dofpy.oap.client import ItemClient, NotificationStream
from dofpy.oap.core import Notification
from dofpy.oap.interface import Interface, Method, Param, Property, ValueType
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.wire.oid import OID

PEER = ("127.0.0.1", 3567)

SHAPES = Interface.define(
    "[1:{01000044}]",
    "Shapes",
    [
        Method(1, "reset", (), ()),
        Method(
            2,
            "divide",
            (Param("a", ValueType.INT), Param("b", ValueType.INT)),
            (Param("quotient", ValueType.INT), Param("remainder", ValueType.INT)),
        ),
        Method(
            3,
            "find",
            (
                Param("name", ValueType.TEXT),
                Param("limit", ValueType.INT, optional=True),
                Param("cursor", ValueType.BYTES, optional=True),
            ),
            (Param("found", ValueType.LIST),),
        ),
        Property(4, "secret", ValueType.BYTES, readable=False, writable=True),
        Property(5, "size", ValueType.INT),
    ],
)


class Stream:
    async def receive(self) -> Notification:
        return Notification(1, (30,), 1, 0)

    def __aiter__(self) -> AsyncIterator[Notification]:
        raise NotImplementedError


class RecordingNode:
    """Answers every request with canned values and records it."""

    def __init__(self, results: tuple[Any, ...] = ()) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.identities: list[OID | None] = []
        self.results = results

    async def get(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        prop: str,
        *,
        identity: OID | None = None,
    ) -> Any:
        self.calls.append(("get", peer, object_id, interface.name, prop))
        self.identities.append(identity)
        return self.results[0]

    async def set(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        prop: str,
        value: Any,
        *,
        identity: OID | None = None,
    ) -> None:
        self.calls.append(("set", peer, object_id, interface.name, prop, value))
        self.identities.append(identity)

    async def invoke(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        method: str,
        *args: Any,
        identity: OID | None = None,
    ) -> tuple[Any, ...]:
        self.calls.append(("invoke", peer, object_id, interface.name, method, *args))
        self.identities.append(identity)
        return self.results

    @asynccontextmanager
    async def subscribe(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        item: str,
        *,
        identity: OID | None = None,
    ) -> AsyncIterator[NotificationStream]:
        self.calls.append(("subscribe", peer, object_id, interface.name, item))
        self.identities.append(identity)
        yield Stream()
        self.calls.append(("unsubscribe", item))


async def test_each_kind_of_item_maps_onto_the_node() -> None:
    node = RecordingNode((5,))
    thermo = THERMOSTAT.client(node, PEER, THERMOSTAT_OID)
    assert await thermo.add(2, 3) == 5
    assert await thermo.add(a=2, b=3) == 5
    assert await thermo.add(2, b=3) == 5
    assert await thermo.temperature.get() == 5
    await thermo.label.set("kitchen")
    async with thermo.temperature.subscribe() as changes:
        assert (await changes.receive()).values == (30,)
    async with thermo.alarm.register() as signals:
        assert (await signals.receive()).values == (30,)
    here = (PEER, THERMOSTAT_OID, "Thermostat")
    assert node.calls == [
        ("invoke", *here, "add", 2, 3),
        ("invoke", *here, "add", 2, 3),
        ("invoke", *here, "add", 2, 3),
        ("get", *here, "temperature"),
        ("set", *here, "label", "kitchen"),
        ("subscribe", *here, "temperature"),
        ("unsubscribe", "temperature"),
        ("subscribe", *here, "alarm"),
        ("unsubscribe", "alarm"),
    ]


async def test_a_client_bound_to_an_identity_passes_it_on_every_request() -> None:
    node = RecordingNode((5,))
    expected = OID(3, b"thermostat-host@example.org")
    thermo = THERMOSTAT.client(node, PEER, THERMOSTAT_OID, identity=expected)
    await thermo.add(2, 3)
    await thermo.temperature.get()
    await thermo.label.set("kitchen")
    async with thermo.temperature.subscribe():
        pass
    assert node.identities == [expected] * 4
    await THERMOSTAT.client(node, PEER, THERMOSTAT_OID).temperature.get()
    assert node.identities[-1] is None


async def test_results_none_one_or_a_tuple() -> None:
    shapes = SHAPES.client(RecordingNode(()), PEER, THERMOSTAT_OID)
    assert await shapes.reset() is None
    shapes = SHAPES.client(RecordingNode((3, 1)), PEER, THERMOSTAT_OID)
    assert await shapes.divide(7, 2) == (3, 1)


async def test_optional_arguments_by_name_fill_the_gaps_with_none() -> None:
    node = RecordingNode(([],))
    shapes = SHAPES.client(node, PEER, THERMOSTAT_OID)
    assert await shapes.find("x") == []
    assert await shapes.find("x", cursor=b"c") == []
    assert await shapes.find(name="x", limit=3) == []
    assert [call[5:] for call in node.calls] == [("x",), ("x", None, b"c"), ("x", 3)]


@pytest.mark.parametrize(
    ("use", "error", "message"),
    [
        (lambda c: c.add(1), ValueError, "add arguments: expected 2 values, got 1"),
        (lambda c: c.add(1, "2"), TypeError, "b must be int, got str"),
        (lambda c: c.add(1, 2, 3), TypeError, "takes 2 arguments, got 3"),
        (lambda c: c.add(1, c=2), TypeError, "Thermostat.add has no argument c"),
        (lambda c: c.add(1, a=2), TypeError, "Thermostat.add got a twice"),
        (lambda c: c.add(b=2), TypeError, "Thermostat.add is missing argument a"),
        (lambda c: c.label.set(7), TypeError, "label must be text, got int"),
        (lambda c: c.temperature.set(22), TypeError, "cannot be written"),
        (lambda c: c.temperature(), TypeError, "Thermostat.temperature is a property"),
        (lambda c: c.add.get(), TypeError, "Thermostat.add is a method: it cannot be read"),
        (lambda c: c.alarm.set("x"), TypeError, "is an event: it cannot be written"),
    ],
)
async def test_bad_use_raises_before_anything_is_sent(
    use: Any, error: type[Exception], message: str
) -> None:
    node = RecordingNode((5,))
    thermo = THERMOSTAT.client(node, PEER, THERMOSTAT_OID)
    with pytest.raises(error, match=message):
        await use(thermo)
    assert node.calls == []


async def test_access_the_declaration_forbids_raises_before_anything_is_sent() -> None:
    node = RecordingNode()
    thermo = THERMOSTAT.client(node, PEER, THERMOSTAT_OID)
    with pytest.raises(TypeError, match=r"label is a property \(readable, writable\)"):
        thermo.label.subscribe()
    with pytest.raises(TypeError, match="add is a method: it cannot be registered for"):
        thermo.add.register()
    with pytest.raises(TypeError, match="alarm is an event: it cannot be subscribed to"):
        thermo.alarm.subscribe()
    shapes = SHAPES.client(node, PEER, THERMOSTAT_OID)
    with pytest.raises(TypeError, match=r"secret is a property \(writable\): it cannot be read"):
        await shapes.secret.get()
    assert node.calls == []


def test_unknown_names_list_the_interface_items() -> None:
    thermo = THERMOSTAT.client(RecordingNode(), PEER, THERMOSTAT_OID)
    expected = (
        "interface Thermostat has no property, method or event 'humidity'; "
        "it has: temperature, label, add, alarm, count_calls"
    )
    with pytest.raises(AttributeError) as info:
        _ = thermo.humidity
    assert str(info.value) == expected
    # An exception is an item, but not one a requestor uses.
    with pytest.raises(AttributeError, match="no property, method or event 'Overflow'"):
        _ = thermo.Overflow
    with pytest.raises(AttributeError):
        _ = thermo._private
    assert not hasattr(thermo, "__deepcopy__")


def test_items_are_attributes_and_subscripts() -> None:
    thermo = THERMOSTAT.client(RecordingNode(), PEER, THERMOSTAT_OID)
    assert isinstance(thermo.add, ItemClient)
    assert repr(thermo["add"]) == "<Thermostat.add: a method>"
    assert {"temperature", "label", "add", "alarm", "count_calls"} <= set(dir(thermo))
    assert "Overflow" not in dir(thermo)
    assert "Thermostat client of" in repr(thermo)
