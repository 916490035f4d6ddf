"""A response too long for one datagram is refused at the provider, and the
requestor hears why at once (sans-IO, on the seeded simulator)."""

from __future__ import annotations

import random

import pytest

from dofpy.errors import LocalProtocolError
from dofpy.oap.core import (
    IncomingRequest,
    OapConfig,
    OapCore,
    OapEvent,
    OapRequestFailed,
    RequestCompleted,
)
from dofpy.oap.errors import OapError, OapErrorCode
from dofpy.oap.interface import Interface, Method, Param, Property, ValueType
from dofpy.session.node import NodeConfig
from dofpy.testing import LinkConditions, LocalDomain, Network, grant
from dofpy.testing.netsim import TraceKind
from dofpy.wire.oid import OID

BLOBS = Interface.define(
    "[1:{01000045}]",
    "Blobs",
    [
        Method(1, "dump", (Param("size", ValueType.INT),), (Param("data", ValueType.BYTES),)),
        Property(2, "blob", ValueType.BYTES),
    ],
)
BLOBS_OID = OID(3, b"blobs@blobs.example")
PROVIDER = ("10.2.0.1", 3567)
CLIENT = ("10.2.0.2", 40000)
PROVIDER_ID = OID(3, b"provider@blobs.example")
CLIENT_ID = OID(3, b"client@blobs.example")


class World:
    """A provider answering ``dump(n)`` with ``n`` bytes, and a requestor;
    secured through one LocalDomain when ``secure``."""

    def __init__(self, *, secure: bool, max_datagram: int | None = None) -> None:
        self.net = Network(3, default=LinkConditions(delay=0.002), trace=True)
        limit = {} if max_datagram is None else {"max_datagram": max_datagram}
        if secure:
            local = LocalDomain(OID(6, b"blobs.example"), rng=random.Random(5).randbytes)
            local.enrol(PROVIDER_ID, grant("p", interface=BLOBS.iid))
            local.enrol(CLIENT_ID, grant("rx", interface=BLOBS.iid))
            provider_node = NodeConfig(
                node_id=PROVIDER_ID, security=local.security(PROVIDER_ID), **limit
            )
            client_node = NodeConfig(node_id=CLIENT_ID, security=local.security(CLIENT_ID))
        else:
            provider_node, client_node = NodeConfig(**limit), NodeConfig()
        self.provider = OapCore(OapConfig(node=provider_node))
        self.client = OapCore(OapConfig(node=client_node))
        self.provider.provide(BLOBS_OID, BLOBS)
        self.net.add(self.provider, PROVIDER)
        self.net.add(self.client, CLIENT)
        self.refusals: list[LocalProtocolError] = []
        self.events: list[OapEvent] = []

    def _pump(self) -> bool:
        while (event := self.provider.next_event()) is not None:
            if isinstance(event, IncomingRequest):
                size = event.values[0] if event.values else 70_000
                try:
                    self.provider.respond(event, [bytes(size)], self.net.now)
                except LocalProtocolError as exc:
                    self.refusals.append(exc)
                self.net.wakeup(PROVIDER)
        while (event := self.client.next_event()) is not None:
            self.events.append(event)
        return False

    def dump(self, size: int) -> OapEvent:
        request_id = self.client.invoke(PROVIDER, BLOBS_OID, BLOBS, "dump", [size], self.net.now)
        return self._result(request_id)

    def get_blob(self) -> OapEvent:
        return self._result(self.client.get(PROVIDER, BLOBS_OID, BLOBS, "blob", self.net.now))

    def _result(self, request_id: int) -> OapEvent:
        def done() -> bool:
            self._pump()
            return any(getattr(e, "request_id", None) == request_id for e in self.events)

        self.net.wakeup(CLIENT)
        self.net.run_until(done, max_time=30)
        return next(e for e in self.events if getattr(e, "request_id", None) == request_id)

    def last_response_length(self) -> int:
        sent = [
            e
            for e in self.net.trace
            if e.kind is TraceKind.SEND and e.src == PROVIDER and e.dst == CLIENT
        ]
        return len(sent[-1].data)


@pytest.mark.parametrize("secure", [False, True])
def test_an_oversize_response_fails_at_once_with_the_reason(secure: bool) -> None:
    world = World(secure=secure)
    sent_at = world.net.now
    failed = world.dump(70_000)
    assert isinstance(failed, OapRequestFailed)
    error = failed.error
    assert isinstance(error, OapError)
    assert error.error_code is OapErrorCode.INTERNAL
    assert "exceeds the 65507-byte datagram limit" in str(error)
    assert "return pages (a cursor) or use the block transfer" in str(error)
    # Answered, not timed out: no retransmission, within a few link delays.
    assert world.client.statistics().node.retransmissions == 0
    assert world.net.now - sent_at < 0.5
    (refusal,) = world.refusals
    assert str(refusal).startswith("dump: response of 700")
    # A Get of a value too long for a datagram is refused the same way.
    got = world.get_blob()
    assert isinstance(got, OapRequestFailed) and "datagram limit" in str(got.error)
    assert len(world.refusals) == 2
    # And a response that fits is still served.
    fits = world.dump(60_000)
    assert isinstance(fits, RequestCompleted) and fits.values == (bytes(60_000),)


def largest_served(secure: bool, limit: int) -> tuple[int, int]:
    """The largest ``dump`` payload a provider with ``max_datagram=limit``
    serves, and the length of the datagram that carried it."""
    world = World(secure=secure, max_datagram=limit)
    served: list[tuple[int, int]] = []  # (payload size, datagram length)
    refused: list[int] = []
    for size in range(1100, 1200):
        event = world.dump(size)
        if isinstance(event, RequestCompleted):
            assert not refused, "a longer response was served after a shorter was refused"
            served.append((size, world.last_response_length()))
        else:
            assert isinstance(event, OapRequestFailed)
            assert f"exceeds the {limit}-byte datagram limit" in str(event.error)
            refused.append(size)
    assert served and refused
    assert all(length <= limit for _, length in served)
    largest, length = served[-1]
    assert refused[0] == largest + 1
    return largest, length


def test_the_limit_is_the_length_of_the_datagram_as_sent() -> None:
    limit = 1200
    clear, clear_length = largest_served(secure=False, limit=limit)
    sealed, sealed_length = largest_served(secure=True, limit=limit)
    # In the clear the check is exact.
    assert clear_length == limit
    # Sealed, it allows for a 4-byte packet number where early packets use 1.
    assert limit - 3 <= sealed_length <= limit
    # Sealing costs the 16-byte tag, the CCM header and the security header.
    assert clear - sealed >= 16 + 2 + 1


def test_max_datagram_is_validated() -> None:
    with pytest.raises(ValueError, match="max_datagram"):
        NodeConfig(max_datagram=10)
    with pytest.raises(ValueError, match="max_datagram"):
        NodeConfig(max_datagram=70_000)
