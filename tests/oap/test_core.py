"""The sans-IO OAP core on the seeded simulator: providers, requestors, refusals,
subscriptions and their leases."""

from __future__ import annotations

from typing import Any

import pytest

from dofpy.errors import DofError, LocalProtocolError
from dofpy.oap.core import (
    IncomingRequest,
    Notification,
    OapConfig,
    OapCore,
    OapEvent,
    OapRequestFailed,
    ProviderAnnounced,
    RequestCompleted,
    RequestKind,
    SubscriptionEnded,
)
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.oap.interface import ExceptionDef, Interface, Method, Param, Property, ValueType
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, decode_frame_untrusted, encode_frame
from dofpy.wire.oap import (
    Alias,
    Binding,
    ExceptionResponse,
    GetCommand,
    SetCommand,
    WatchCommand,
    decode_oap_untrusted,
    encode_oap,
)
from dofpy.wire.oid import OID

P = ("10.0.0.1", 3567)
R = ("10.0.0.2", 40000)


class Harness:
    """A provider core answering like the example Thermostat, and a requestor."""

    def __init__(
        self,
        seed: int = 1,
        conditions: LinkConditions | None = None,
        config: OapConfig | None = None,
    ) -> None:
        self.net = Network(seed, default=conditions or LinkConditions(delay=0.002))
        self.provider = OapCore(config)
        self.requestor = OapCore(config)
        self.provider.provide(THERMOSTAT_OID, THERMOSTAT)
        self.net.add(self.provider, P)
        self.net.add(self.requestor, R)
        self.label = "hall"
        self.events: list[OapEvent] = []
        self.incoming: list[IncomingRequest] = []
        self.auto_answer = True

    def answer(self, request: IncomingRequest) -> None:
        now = self.net.now
        if request.kind is RequestKind.GET:
            value: Any = 21 if request.item.name == "temperature" else self.label
            self.provider.respond(request, [value], now)
        elif request.kind is RequestKind.SET:
            self.label = request.values[0]
            self.provider.respond(request, [], now)
        elif request.item.name == "add":
            a, b = request.values
            if a + b > 1000:
                self.provider.respond_error(
                    request, ProviderException(THERMOSTAT.exception("Overflow"), [1000]), now
                )
            else:
                self.provider.respond(request, [a + b], now)
        else:
            self.provider.respond_error(request, OapError(OapErrorCode.BUSY, "later"), now)
        self.net.wakeup(P)

    def pump(self) -> bool:
        while (event := self.provider.next_event()) is not None:
            if isinstance(event, IncomingRequest):
                self.incoming.append(event)
                if self.auto_answer:
                    self.answer(event)
        while (event := self.requestor.next_event()) is not None:
            self.events.append(event)
        return False

    def run(self, count: int, max_time: float = 60) -> list[OapEvent]:
        self.net.wakeup(R)
        start = len(self.events)
        self.net.run_until(
            lambda: self.pump() or len(self.events) - start >= count, max_time=max_time
        )
        return self.events[start:]

    def result(self, request_id: int, max_time: float = 60) -> OapEvent:
        self.net.wakeup(R)
        self.net.run_until(
            lambda: (
                self.pump()
                or any(getattr(e, "request_id", None) == request_id for e in self.events)
            ),
            max_time=max_time,
        )
        return next(e for e in self.events if getattr(e, "request_id", None) == request_id)


def error_of(event: OapEvent) -> DofError:
    assert isinstance(event, OapRequestFailed), event
    return event.error


def test_get_set_invoke_and_declared_exception() -> None:
    h = Harness()
    now = h.net.now
    get = h.requestor.get(P, THERMOSTAT_OID, THERMOSTAT, "temperature", now)
    assert h.result(get) == RequestCompleted(get, (21,))
    put = h.requestor.set(P, THERMOSTAT_OID, THERMOSTAT, "label", "attic", now)
    assert h.result(put) == RequestCompleted(put, ())
    assert h.label == "attic"
    call = h.requestor.invoke(P, THERMOSTAT_OID, THERMOSTAT, "add", [40, 2], now)
    assert h.result(call) == RequestCompleted(call, (42,))
    bad = h.requestor.invoke(P, THERMOSTAT_OID, THERMOSTAT, "add", [999, 2], now)
    error = error_of(h.result(bad))
    assert isinstance(error, ProviderException)
    assert (error.definition.name, error.values) == ("Overflow", (1000,))
    busy = h.requestor.invoke(P, THERMOSTAT_OID, THERMOSTAT, "count_calls", [], now)
    assert isinstance(error_of(h.result(busy)), OapError)


def raw_command(h: Harness, pdu: Any, op: int | None = 500) -> None:
    packet = DppPacket(
        AppId.OAP,
        encode_oap(pdu),
        op_id_type=OpIdType.IMPLIED_SENDER if op is not None else OpIdType.NONE,
        op_count=op,
    )
    h.provider.receive_datagram(encode_frame(packet), R, h.net.now)


@pytest.mark.parametrize(
    ("pdu", "code"),
    [
        (GetCommand(1, Binding(THERMOSTAT.iid, OID(3, b"other@x"))), OapErrorCode.NOT_FOUND),
        (GetCommand(99, Binding(THERMOSTAT.iid, THERMOSTAT_OID)), OapErrorCode.NO_SUCH_ITEM),
        (SetCommand(1, Binding(THERMOSTAT.iid, THERMOSTAT_OID), (5,)), OapErrorCode.NOT_SUPPORTED),
        (SetCommand(2, Binding(THERMOSTAT.iid, THERMOSTAT_OID), (5,)), OapErrorCode.INVALID_VALUE),
        (GetCommand(3, Binding(THERMOSTAT.iid, THERMOSTAT_OID)), OapErrorCode.NOT_SUPPORTED),
        (GetCommand(1, Alias(7)), OapErrorCode.NOT_FOUND),
        (WatchCommand(Binding(THERMOSTAT.iid, THERMOSTAT_OID)), OapErrorCode.NOT_SUPPORTED),
    ],
)
def test_provider_refuses_bad_requests_before_the_application_sees_them(
    pdu: Any, code: OapErrorCode
) -> None:
    h = Harness()
    raw_command(h, pdu)
    h.pump()
    assert h.incoming == []
    assert h.provider.statistics().requests_refused == 1
    ((datagram, peer),) = h.provider.datagrams_to_send(h.net.now)
    assert peer == R
    # The requestor side decodes it into the matching error.
    _dnp, packet = decode_frame_untrusted(datagram)
    reply = decode_oap_untrusted(packet.payload, True)
    assert isinstance(reply, ExceptionResponse)
    assert (reply.code, reply.internal) == (code, True)


def test_commands_without_operation_id_are_refused_silently() -> None:
    h = Harness()
    raw_command(h, GetCommand(1, Binding(THERMOSTAT.iid, THERMOSTAT_OID)), op=None)
    h.pump()
    assert h.incoming == [] and h.provider.datagrams_to_send(0) == []
    assert h.provider.statistics().requests_refused == 1


def test_requestor_refuses_locally_what_the_interface_forbids() -> None:
    core = OapCore()
    with pytest.raises(LocalProtocolError):
        core.set(P, THERMOSTAT_OID, THERMOSTAT, "temperature", 3, 0)
    with pytest.raises(TypeError):
        core.set(P, THERMOSTAT_OID, THERMOSTAT, "label", 3, 0)
    with pytest.raises(ValueError):
        core.invoke(P, THERMOSTAT_OID, THERMOSTAT, "add", [1], 0)
    with pytest.raises(LocalProtocolError):
        core.subscribe(P, THERMOSTAT_OID, THERMOSTAT, "label", 0)
    with pytest.raises(LocalProtocolError):
        core.subscribe(P, THERMOSTAT_OID, THERMOSTAT, "add", 0)
    with pytest.raises(TypeError):
        core.get(P, THERMOSTAT_OID, THERMOSTAT, "add", 0)


def test_respond_twice_and_wrongly_typed_responses_are_local_errors() -> None:
    h = Harness()
    h.auto_answer = False
    call = h.requestor.get(P, THERMOSTAT_OID, THERMOSTAT, "temperature", h.net.now)
    h.net.wakeup(R)
    h.net.run_until(lambda: h.pump() or bool(h.incoming), max_time=5)
    (request,) = h.incoming
    with pytest.raises(LocalProtocolError):
        h.provider.respond(request, ["not an int"], h.net.now)
    with pytest.raises(LocalProtocolError):
        h.provider.respond(request, [1], h.net.now)
    h.net.wakeup(P)
    error = error_of(h.result(call))
    assert isinstance(error, OapError) and error.error_code is OapErrorCode.INTERNAL


@pytest.mark.parametrize("seed", range(4))
def test_lossy_link_set_and_invoke_execute_once(seed: int) -> None:
    h = Harness(seed, LinkConditions(loss=0.25, duplicate=0.25, reorder=0.2, delay=0.01))
    calls = [
        h.requestor.invoke(P, THERMOSTAT_OID, THERMOSTAT, "add", [i, 1], h.net.now)
        for i in range(20)
    ]
    results = {e.request_id: e for e in h.run(20, max_time=120)}
    executed = [r for r in h.incoming if r.kind is RequestKind.INVOKE]
    assert len(executed) == len({r.values for r in executed}) <= 20
    ok = [results[c] for c in calls if isinstance(results.get(c), RequestCompleted)]
    assert len(ok) >= 18
    assert all(
        isinstance(e, RequestCompleted) and e.values[0] == calls.index(e.request_id) + 1 for e in ok
    )


def test_subscription_notifications_lease_refresh_and_expiry() -> None:
    config = OapConfig(subscription_lease=6.0, subscription_refresh=2.0)
    h = Harness(config=config)
    sub = h.requestor.subscribe(P, THERMOSTAT_OID, THERMOSTAT, "temperature", h.net.now)
    assert h.result(sub) == RequestCompleted(sub, ())
    assert h.provider.statistics().subscribers == 1
    for value in (22, 23):
        assert (
            h.provider.notify_change(THERMOSTAT_OID, THERMOSTAT, "temperature", value, h.net.now)
            == 1
        )
        h.net.wakeup(P)
    got = h.run(2)
    assert [(n.values, n.missed) for n in got if isinstance(n, Notification)] == [
        ((22,), 0),
        ((23,), 0),
    ]
    # Refreshes keep the lease alive well past its length.
    h.net.run_until(h.pump, max_time=20)
    assert h.provider.statistics().subscribers == 1
    h.requestor.unsubscribe(sub)
    h.pump()
    assert SubscriptionEnded(sub, None) in h.events
    h.net.run_until(h.pump, max_time=10)
    assert h.provider.statistics().subscribers == 0
    # A change for nobody is sent to nobody.
    assert h.provider.notify_change(THERMOSTAT_OID, THERMOSTAT, "temperature", 1, h.net.now) == 0


def test_missed_events_are_counted_and_old_copies_dropped() -> None:
    h = Harness()
    sub = h.requestor.subscribe(P, THERMOSTAT_OID, THERMOSTAT, "alarm", h.net.now)
    h.result(sub)
    h.net.set_direction(P, R, LinkConditions(loss=1.0))
    h.provider.signal(THERMOSTAT_OID, THERMOSTAT, "alarm", ["lost"], h.net.now)
    h.net.wakeup(P)
    h.net.run_until(h.pump, max_time=0.5)
    h.net.set_direction(P, R, LinkConditions(duplicate=1.0))
    h.provider.signal(THERMOSTAT_OID, THERMOSTAT, "alarm", ["seen"], h.net.now)
    h.net.wakeup(P)
    h.net.run_until(h.pump, max_time=0.5)
    notes = [e for e in h.events if isinstance(e, Notification)]
    assert [(n.values, n.missed) for n in notes] == [(("seen",), 1)]
    assert h.requestor.statistics().notifications_missed == 1


def test_failed_subscription_and_unanswered_subscription() -> None:
    h = Harness()
    other = OID(3, b"missing@example.org")
    sub = h.requestor.subscribe(P, other, THERMOSTAT, "alarm", h.net.now)
    error = error_of(h.result(sub))
    assert isinstance(error, OapError) and error.error_code is OapErrorCode.NOT_FOUND
    assert h.requestor.statistics().subscriptions == 0


def test_provide_announces_an_alias_that_the_provider_resolves() -> None:
    h = Harness()
    alias = h.provider.announce(R, THERMOSTAT_OID, THERMOSTAT, h.net.now)
    h.net.wakeup(P)
    h.net.run_until(
        lambda: h.pump() or any(isinstance(e, ProviderAnnounced) for e in h.events), max_time=5
    )
    announced = next(e for e in h.events if isinstance(e, ProviderAnnounced))
    assert announced.alias.value == alias and announced.binding.object_id == THERMOSTAT_OID
    raw_command(h, GetCommand(1, Alias(alias)))
    h.pump()
    assert [r.item.name for r in h.incoming] == ["temperature"]
    with pytest.raises(LocalProtocolError):
        h.provider.announce(R, OID(3, b"not-provided@x"), THERMOSTAT, h.net.now)


def test_withdraw_drops_provider_and_subscribers() -> None:
    h = Harness()
    sub = h.requestor.subscribe(P, THERMOSTAT_OID, THERMOSTAT, "alarm", h.net.now)
    h.result(sub)
    h.provider.withdraw(THERMOSTAT_OID, THERMOSTAT)
    assert h.provider.statistics().subscribers == 0
    get = h.requestor.get(P, THERMOSTAT_OID, THERMOSTAT, "temperature", h.net.now)
    assert isinstance(error_of(h.result(get)), OapError)


def test_ping_and_open_session_complete() -> None:
    h = Harness()
    ping = h.requestor.ping(P, h.net.now)
    assert h.result(ping) == RequestCompleted(ping, ())
    opened = h.requestor.open_session(P, h.net.now)
    assert getattr(h.result(opened), "peer", None) == P


def test_busy_provider_refuses_beyond_max_incoming() -> None:
    h = Harness(config=OapConfig(max_incoming=1))
    h.auto_answer = False
    first = h.requestor.get(P, THERMOSTAT_OID, THERMOSTAT, "temperature", h.net.now)
    second = h.requestor.get(P, THERMOSTAT_OID, THERMOSTAT, "label", h.net.now)
    error = error_of(h.result(second))
    assert isinstance(error, OapError) and error.error_code is OapErrorCode.BUSY
    assert first != second and len(h.incoming) == 1


def test_interface_definitions_are_validated() -> None:
    with pytest.raises(ValueError, match="used twice"):
        Interface.define(
            "[1:{01}]", "X", [Property(1, "a", ValueType.INT), Property(1, "b", ValueType.INT)]
        )
    with pytest.raises(ValueError, match="used twice"):
        Interface.define(
            "[1:{01}]", "X", [Property(1, "a", ValueType.INT), Property(2, "a", ValueType.INT)]
        )
    with pytest.raises(ValueError, match="not a c2"):
        Interface.define("[1:{01}]", "X", [Method(0x8000, "m")])
    iface = Interface.define(
        "[1:{01}]",
        "X",
        [
            Method(1, "m", (Param("a", ValueType.INT), Param("b", ValueType.TEXT, optional=True))),
            ExceptionDef(2, "E"),
        ],
    )
    with pytest.raises(KeyError):
        iface.item("nope")
    with pytest.raises(TypeError):
        iface.property("m")
    assert iface.exception(2).name == "E"


@pytest.mark.parametrize(
    ("value_type", "good", "bad"),
    [
        (ValueType.BOOL, True, 1),
        (ValueType.INT, 3, True),
        (ValueType.FLOAT, 1.5, "x"),
        (ValueType.TEXT, "x", b"x"),
        (ValueType.BYTES, b"x", "x"),
        (ValueType.LIST, [1], {}),
        (ValueType.MAP, {1: 2}, []),
    ],
)
def test_value_types(value_type: ValueType, good: object, bad: object) -> None:
    assert value_type.accepts(good)
    assert not value_type.accepts(bad)
    assert ValueType.ANY.accepts(bad)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        OapConfig(subscription_lease=1, subscription_refresh=2)
    with pytest.raises(ValueError):
        OapConfig(max_incoming=0)
