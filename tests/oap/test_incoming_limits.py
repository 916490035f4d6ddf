"""The provider's requests in progress are bounded per requestor and in bytes,
not only in count, on the seeded simulator.

The attack: an enrolled node, granted on the interface like any genuine
requestor, floods the provider with requests its application is slow to
answer (here: never, until the test says), from one address and then from a
second one under the same identity. Beyond ``max_incoming_per_peer`` its
requests are refused BUSY, counted by its authenticated identity (a second
address is no way around it), while a genuine requestor is still served; once
the application answers, the flooder's share is free again. In the clear,
the share is the address's. The bytes the requests hold are bounded by
``max_incoming_bytes``: a request that would go past it is refused BUSY too.
"""

from __future__ import annotations

import dataclasses

import pytest

from dofpy.oap.core import (
    IncomingRequest,
    OapConfig,
    OapCore,
    OapEvent,
    OapRequestFailed,
    RequestCompleted,
)
from dofpy.oap.errors import OapError, OapErrorCode
from dofpy.session.node import NodeConfig
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.testing.secure import (
    CLIENT,
    CLIENT_ID,
    PROVIDER,
    PROVIDER_ID,
    SecureDomain,
    thermostat_grant,
)
from dofpy.wire.oid import OID

FLOODER_ID = OID(3, b"flooder@example.org")
FLOODER = ("10.1.0.3", 40001)
FLOODER_AGAIN = ("10.1.0.4", 40002)  # the same identity from another address
PER_PEER = 4


class World:
    """A provider whose application answers only when told (``answer``)."""

    def __init__(self, net: Network, provider: OapCore) -> None:
        self.net = net
        self.provider = provider
        self.cores: dict[tuple[str, int], OapCore] = {}
        self.events: dict[int, list[OapEvent]] = {id(provider): []}
        self.held: list[IncomingRequest] = []

    def add(self, address: tuple[str, int], core: OapCore) -> OapCore:
        self.net.add(core, address)
        self.cores[address] = core
        self.events[id(core)] = []
        return core

    def pump(self) -> bool:
        while (event := self.provider.next_event()) is not None:
            if isinstance(event, IncomingRequest):
                self.held.append(event)
        for core in self.cores.values():
            while (event := core.next_event()) is not None:
                self.events[id(core)].append(event)
        return False

    def get(self, address: tuple[str, int]) -> int:
        request = self.cores[address].get(
            PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", self.net.now
        )
        self.net.wakeup(address)
        return request

    def outcome(self, address: tuple[str, int], request: int) -> OapEvent | None:
        events = self.events[id(self.cores[address])]
        return next((e for e in events if getattr(e, "request_id", None) == request), None)

    def settle(self, seconds: float = 2.0) -> None:
        """Run until nothing more happens for a while (retries included)."""
        self.net.run_until(self.pump, max_time=seconds)

    def result(self, address: tuple[str, int], request: int) -> OapEvent:
        def done() -> bool:
            self.pump()
            return self.outcome(address, request) is not None

        assert self.net.run_until(done, max_time=60), f"request {request} never ended"
        event = self.outcome(address, request)
        assert event is not None
        return event

    def answer_all(self) -> None:
        for request in self.held:
            self.provider.respond(request, [21], self.net.now)
        self.held.clear()
        self.net.wakeup(PROVIDER)


def _busy(event: OapEvent) -> str:
    assert isinstance(event, OapRequestFailed), event
    assert isinstance(event.error, OapError), event.error
    assert event.error.error_code is OapErrorCode.BUSY
    return str(event.error)


def secure_world(**limits: int) -> World:
    domain = SecureDomain(seed=3)
    domain.local.enrol(FLOODER_ID, thermostat_grant("rwx"))
    provider = OapCore(OapConfig(node=domain.local.node_config(PROVIDER_ID), **limits))
    provider.provide(THERMOSTAT_OID, THERMOSTAT)
    world = World(domain.net, provider)
    world.net.add(provider, PROVIDER)
    for address, identity in (
        (CLIENT, CLIENT_ID),
        (FLOODER, FLOODER_ID),
        (FLOODER_AGAIN, FLOODER_ID),
    ):
        node = domain.local.node_config(identity, asks=thermostat_grant("rwx"))
        world.add(address, OapCore(OapConfig(node=node)))
    return world


def test_one_identity_flooding_slow_requests_is_refused_and_the_others_served() -> None:
    w = secure_world(max_incoming_per_peer=PER_PEER)
    # The flooder's share, from its first address...
    first = [w.get(FLOODER) for _ in range(PER_PEER)]
    w.settle()
    assert len(w.held) == PER_PEER
    assert all(w.outcome(FLOODER, r) is None for r in first)  # held, not refused
    # ...and beyond it: from the same address, and from another one under the
    # same identity (the share is the identity's, not the address's).
    again = w.get(FLOODER)
    elsewhere = w.get(FLOODER_AGAIN)
    assert "your requests" in _busy(w.result(FLOODER, again))
    assert "your requests" in _busy(w.result(FLOODER_AGAIN, elsewhere))
    assert len(w.held) == PER_PEER
    # The genuine requestor is still served, while the flood is held.
    genuine = w.get(CLIENT)
    w.settle()
    assert [r.identity for r in w.held].count(CLIENT_ID) == 1
    stats = w.provider.statistics()
    assert (stats.requests_in_progress, stats.requests_busy) == (PER_PEER + 1, 2)
    assert stats.request_bytes_in_progress > 0
    w.answer_all()
    assert w.result(CLIENT, genuine) == RequestCompleted(genuine, (21,))
    for request in first:
        assert w.result(FLOODER, request) == RequestCompleted(request, (21,))
    stats = w.provider.statistics()
    assert (stats.requests_in_progress, stats.request_bytes_in_progress) == (0, 0)
    # Its share free again once answered.
    later = w.get(FLOODER_AGAIN)
    w.settle()
    assert len(w.held) == 1 and w.outcome(FLOODER_AGAIN, later) is None
    w.answer_all()
    assert w.result(FLOODER_AGAIN, later) == RequestCompleted(later, (21,))


def _plain_world(**limits: int) -> World:
    net = Network(5, default=LinkConditions(delay=0.002))
    provider = OapCore(OapConfig(**limits))
    provider.provide(THERMOSTAT_OID, THERMOSTAT)
    world = World(net, provider)
    net.add(provider, PROVIDER)
    for address in (CLIENT, FLOODER, FLOODER_AGAIN):
        world.add(address, OapCore())
    return world


def test_in_the_clear_the_share_is_the_address() -> None:
    w = _plain_world(max_incoming_per_peer=PER_PEER)
    held = [w.get(FLOODER) for _ in range(PER_PEER)]
    refused = w.get(FLOODER)
    assert "your requests" in _busy(w.result(FLOODER, refused))
    # Another address is another requestor in the clear: nothing ties them.
    other = w.get(FLOODER_AGAIN)
    w.settle()
    assert w.outcome(FLOODER_AGAIN, other) is None and len(w.held) == PER_PEER + 1
    w.answer_all()
    for request in held:
        assert w.result(FLOODER, request) == RequestCompleted(request, (21,))
    assert w.result(FLOODER_AGAIN, other) == RequestCompleted(other, (21,))


def test_the_bytes_of_requests_in_progress_are_bounded() -> None:
    limit = 4_000
    node = NodeConfig(max_datagram=limit)
    net = Network(7, default=LinkConditions(delay=0.002))
    provider = OapCore(OapConfig(node=node, max_incoming_bytes=limit))
    provider.provide(THERMOSTAT_OID, THERMOSTAT)
    w = World(net, provider)
    net.add(provider, PROVIDER)
    w.add(FLOODER, OapCore(OapConfig(node=node)))
    w.add(CLIENT, OapCore(OapConfig(node=node)))
    label = "x" * 1_500  # a Set of about 1,530 bytes: two fit 4,000, three do not

    def set_label(address: tuple[str, int]) -> int:
        request = w.cores[address].set(
            PROVIDER, THERMOSTAT_OID, THERMOSTAT, "label", label, w.net.now
        )
        w.net.wakeup(address)
        return request

    held = [set_label(FLOODER), set_label(FLOODER)]
    w.settle()
    assert len(w.held) == 2
    size = provider.statistics().request_bytes_in_progress
    assert 2 * len(label) < size <= limit
    refused = set_label(CLIENT)
    assert "bytes" in _busy(w.result(CLIENT, refused))
    # A small request still fits beside them.
    small = w.get(CLIENT)
    w.settle()
    assert len(w.held) == 3
    for request in w.held:
        values = [21] if request.item.name == "temperature" else []
        provider.respond(request, values, w.net.now)
    w.held.clear()
    w.net.wakeup(PROVIDER)
    for request in held:
        assert w.result(FLOODER, request) == RequestCompleted(request, ())
    assert w.result(CLIENT, small) == RequestCompleted(small, (21,))
    assert provider.statistics().request_bytes_in_progress == 0
    again = set_label(CLIENT)
    w.settle()
    assert w.outcome(CLIENT, again) is None and len(w.held) == 1


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_incoming_per_peer"):
        OapConfig(max_incoming_per_peer=0)
    with pytest.raises(ValueError, match="max_incoming_bytes"):
        OapConfig(max_incoming_bytes=1000)
    small = NodeConfig(max_datagram=1200)
    assert OapConfig(node=small, max_incoming_bytes=1200).max_incoming_bytes == 1200
    assert dataclasses.replace(OapConfig(), max_incoming_per_peer=1).max_incoming_per_peer == 1
