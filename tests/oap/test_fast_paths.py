"""The OAP layer's fast paths (the gate's permission cache, and below it the
session's) change nothing but speed: the seeded simulator runs the same
secure THERMOSTAT traffic with the node's ``fast_paths`` on and off and sees
the same events, statistics and datagrams on both sides."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dofpy.oap.core import (
    AccessDenied,
    IncomingRequest,
    Notification,
    OapConfig,
    OapCore,
    OapEvent,
    OapStatistics,
    RequestCompleted,
    RequestKind,
)
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.testing.netsim import LinkConditions, TraceEvent
from dofpy.testing.secure import (
    CLIENT,
    CLIENT_ID,
    PROVIDER,
    PROVIDER_ID,
    SecureDomain,
    thermostat_grant,
)

Run = tuple[list[OapEvent], list[OapEvent], OapStatistics, OapStatistics, tuple[TraceEvent, ...]]


def _comparable(events: list[OapEvent]) -> list[tuple[object, ...]]:
    """The events with their exceptions as (class, args): exceptions compare
    by identity, the runs' must compare by what they say."""

    def field_value(value: object) -> object:
        if isinstance(value, BaseException):
            return type(value), value.args
        return value

    return [
        (type(e), *(field_value(getattr(e, f.name)) for f in dataclasses.fields(e)))  # type: ignore[arg-type]
        for e in events
    ]


def _answer(provider: OapCore, request: IncomingRequest, now: float) -> None:
    value: Any
    if request.kind is RequestKind.GET:
        value = 21 if request.item.name == "temperature" else "hall"
        provider.respond(request, [value], now)
    elif request.kind is RequestKind.SET:
        provider.respond(request, [], now)
    else:
        a, b = request.values
        provider.respond(request, [a + b], now)


def _run(fast_paths: bool, seed: int, conditions: LinkConditions) -> Run:
    # The client may read, execute and subscribe, not write: its Sets are
    # refused by the gate (AccessDenied), everything else passes it.
    world = SecureDomain(
        seed=seed, conditions=conditions, client_grant="rxs", client_asks="rxs", trace=True
    )
    net = world.net
    provider_node = world.local.node_config(PROVIDER_ID)
    provider = OapCore(OapConfig(node=dataclasses.replace(provider_node, fast_paths=fast_paths)))
    provider.provide(THERMOSTAT_OID, THERMOSTAT)
    net.add(provider, PROVIDER)
    client_node = world.local.node_config(CLIENT_ID, asks=thermostat_grant("rxs"))
    client = OapCore(OapConfig(node=dataclasses.replace(client_node, fast_paths=fast_paths)))
    net.add(client, CLIENT)
    now = net.now
    requests = {client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", now)}
    requests |= {
        client.invoke(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "add", [i, 2], now) for i in range(12)
    }
    requests |= {
        client.set(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "label", "x", now) for _ in range(3)
    }
    subscription = client.subscribe(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", now)
    net.wakeup(CLIENT)
    client_events: list[OapEvent] = []
    provider_events: list[OapEvent] = []
    ended: set[int] = set()
    notified = False

    def step() -> bool:
        nonlocal notified
        while (event := provider.next_event()) is not None:
            provider_events.append(event)
            if isinstance(event, IncomingRequest):
                _answer(provider, event, net.now)
                net.wakeup(PROVIDER)
        while (event := client.next_event()) is not None:
            client_events.append(event)
            request_id = getattr(event, "request_id", None)
            if request_id in requests:
                ended.add(request_id)
            if request_id == subscription and not notified:
                notified = True
                for value in (22, 23, 24):
                    provider.notify_change(
                        THERMOSTAT_OID, THERMOSTAT, "temperature", value, net.now
                    )
                net.wakeup(PROVIDER)
        return ended == requests and notified

    assert net.run_until(step, max_time=120.0)
    net.run_until(
        lambda: bool(step()) and False, max_time=20.0
    )  # notifications, refreshes, retransmissions
    step()
    return client_events, provider_events, client.statistics(), provider.statistics(), net.trace


@pytest.mark.parametrize(
    ("seed", "conditions"),
    [
        (1, LinkConditions(delay=0.002)),
        (2, LinkConditions(loss=0.1, duplicate=0.1, reorder=0.1, delay=0.005)),
        (3, LinkConditions(loss=0.2, duplicate=0.2, corrupt=0.05, delay=0.003, jitter=0.002)),
    ],
)
def test_fast_paths_on_and_off_see_the_same_oap_traffic(
    seed: int, conditions: LinkConditions
) -> None:
    fast = _run(True, seed, conditions)
    reference = _run(False, seed, conditions)
    assert _comparable(fast[0]) == _comparable(reference[0])  # the client's events
    assert _comparable(fast[1]) == _comparable(reference[1])  # the provider's events
    assert fast[2] == reference[2]  # the client's statistics
    assert fast[3] == reference[3]  # the provider's statistics
    assert fast[4] == reference[4]  # every datagram, in order, with its fate
    # The runs did what they are for: answers, refusals by the gate, changes.
    client_events, provider_events = fast[0], fast[1]
    assert sum(isinstance(e, RequestCompleted) for e in client_events) >= 13
    assert any(isinstance(e, AccessDenied) for e in provider_events)
    assert any(isinstance(e, Notification) for e in client_events)
    assert fast[4], "the simulator traced no datagram"
