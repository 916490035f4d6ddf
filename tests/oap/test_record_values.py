"""Records as OAP values through the sans-IO core: both sides convert and check them."""

from __future__ import annotations

from typing import Any

import pytest

from dofpy.errors import BadPacket, LocalProtocolError
from dofpy.oap.core import (
    IncomingRequest,
    Notification,
    OapCore,
    OapEvent,
    OapRequestFailed,
    RequestCompleted,
    RequestKind,
)
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.oap.interface import (
    EventDef,
    ExceptionDef,
    Interface,
    Method,
    Param,
    Property,
    RecordList,
    ValueType,
    incoming_values_untrusted,
    outgoing_values,
)
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, decode_frame_untrusted, encode_frame
from dofpy.wire.oap import (
    Binding,
    ExceptionResponse,
    InvokeCommand,
    decode_oap_untrusted,
    encode_oap,
)
from dofpy.wire.oid import OID
from dofpy.wire.record import record_to_value
from tests.oap.record_example import (
    DEVICES,
    FLEET,
    FLEET_OID,
    DeviceReport,
    DeviceState,
    DeviceSummary,
    Query,
    select,
)

P = ("10.0.0.1", 3567)
R = ("10.0.0.2", 40000)


# An older or faulty provider of the same interface that declares maps, not records.
LOOSE_FLEET = Interface.define(
    FLEET.iid,
    "Fleet",
    [
        Property(1, "last_report", ValueType.MAP, writable=True, observable=True),
        Method(
            2,
            "query",
            (Param("filter", ValueType.MAP),),
            (Param("devices", ValueType.LIST), Param("total", ValueType.INT)),
        ),
        EventDef(3, "reported", (Param("report", ValueType.MAP),)),
    ],
)


class Harness:
    """A provider core serving ``interface`` (FLEET or LOOSE_FLEET) and a requestor core."""

    def __init__(self, interface: Interface = FLEET) -> None:
        self.net = Network(1, default=LinkConditions(delay=0.002))
        self.provider = OapCore()
        self.requestor = OapCore()
        self.provider.provide(FLEET_OID, interface)
        self.net.add(self.provider, P)
        self.net.add(self.requestor, R)
        self.report: Any = DeviceReport(DEVICES[0], ("lab",))
        self.seen: list[tuple[Any, ...]] = []
        self.events: list[OapEvent] = []

    def answer(self, request: IncomingRequest) -> None:
        self.seen.append(request.values)
        now = self.net.now
        if request.kind is RequestKind.GET:
            self.provider.respond(request, [self.report], now)
        elif request.kind is RequestKind.SET:
            (self.report,) = request.values
            self.provider.respond(request, [], now)
        else:
            (query,) = request.values
            found = select(query)
            self.provider.respond(request, [found, len(found)], now)
        self.net.wakeup(P)

    def pump(self) -> bool:
        while (event := self.provider.next_event()) is not None:
            if isinstance(event, IncomingRequest):
                self.answer(event)
        while (event := self.requestor.next_event()) is not None:
            self.events.append(event)
        return False

    def result(self, request_id: int) -> OapEvent:
        self.net.wakeup(R)
        self.net.run_until(
            lambda: (
                self.pump()
                or any(getattr(e, "request_id", None) == request_id for e in self.events)
            ),
            max_time=60,
        )
        return next(e for e in self.events if getattr(e, "request_id", None) == request_id)


def test_get_set_invoke_carry_record_instances() -> None:
    h = Harness()
    got = h.requestor.get(P, FLEET_OID, FLEET, "last_report", h.net.now)
    assert h.result(got) == RequestCompleted(got, (h.report,))
    new = DeviceReport(DEVICES[1], ("a", "b"), note="moved")
    done = h.requestor.set(P, FLEET_OID, FLEET, "last_report", new, h.net.now)
    assert h.result(done) == RequestCompleted(done, ())
    assert h.report == new  # the provider received an instance, not a map
    query = Query(minimum_version=8)
    call = h.requestor.invoke(P, FLEET_OID, FLEET, "query", [query], h.net.now)
    assert h.result(call) == RequestCompleted(call, (DEVICES[1:], 2))
    assert h.seen[-1] == (query,)
    call = h.requestor.invoke(
        P, FLEET_OID, FLEET, "query", [Query(state=DeviceState.REPROGRAM)], h.net.now
    )
    assert h.result(call) == RequestCompleted(call, ((DEVICES[1],), 1))


def test_notifications_carry_record_instances() -> None:
    h = Harness()
    sub = h.requestor.subscribe(P, FLEET_OID, FLEET, "last_report", h.net.now)
    reg = h.requestor.subscribe(P, FLEET_OID, FLEET, "reported", h.net.now)
    h.result(sub)
    h.result(reg)
    report = DeviceReport(DEVICES[2])
    assert h.provider.notify_change(FLEET_OID, FLEET, "last_report", report, h.net.now) == 1
    assert h.provider.signal(FLEET_OID, FLEET, "reported", [report], h.net.now) == 1
    h.net.wakeup(P)
    h.net.run_until(
        lambda: h.pump() or sum(isinstance(e, Notification) for e in h.events) >= 2, max_time=10
    )
    notes = [e for e in h.events if isinstance(e, Notification)]
    assert sorted(n.subscription_id for n in notes) == sorted([sub, reg])
    assert all(n.values == (report,) for n in notes)


def test_provider_refuses_a_malformed_record_argument_and_keeps_serving() -> None:
    h = Harness()
    binding = Binding(FLEET.iid, FLEET_OID)
    bad = InvokeCommand(2, binding, ({"minimum_version": -1},))
    packet = DppPacket(AppId.OAP, encode_oap(bad), op_id_type=OpIdType.IMPLIED_SENDER, op_count=900)
    h.provider.receive_datagram(encode_frame(packet), R, h.net.now)
    h.pump()
    assert h.seen == []
    ((datagram, peer),) = h.provider.datagrams_to_send(h.net.now)
    assert peer == R
    reply = decode_oap_untrusted(decode_frame_untrusted(datagram)[1].payload, True)
    assert isinstance(reply, ExceptionResponse)
    assert (reply.code, reply.internal) == (OapErrorCode.INVALID_VALUE, True)
    assert "Query.minimum_version: -1 outside" in reply.values[0]
    assert h.provider.statistics().requests_refused == 1
    call = h.requestor.invoke(P, FLEET_OID, FLEET, "query", [Query()], h.net.now)
    assert h.result(call) == RequestCompleted(call, (DEVICES, 3))


def test_requestor_fails_a_response_whose_record_is_malformed() -> None:
    h = Harness(LOOSE_FLEET)
    broken = record_to_value(h.report)
    del broken["summary"]["device"]
    h.report = broken
    got = h.requestor.get(P, FLEET_OID, FLEET, "last_report", h.net.now)
    failed = h.result(got)
    assert isinstance(failed, OapRequestFailed)
    assert isinstance(failed.error, BadPacket)
    assert "DeviceReport.summary.device: required field missing" in str(failed.error)
    h.report = record_to_value(DeviceReport(DEVICES[2]))
    got = h.requestor.get(P, FLEET_OID, FLEET, "last_report", h.net.now)
    assert h.result(got) == RequestCompleted(got, (DeviceReport(DEVICES[2]),))


def test_requestor_drops_a_notification_whose_record_is_malformed() -> None:
    h = Harness(LOOSE_FLEET)
    sub = h.requestor.subscribe(P, FLEET_OID, FLEET, "reported", h.net.now)
    h.result(sub)
    assert h.provider.signal(FLEET_OID, LOOSE_FLEET, "reported", [{"tags": []}], h.net.now) == 1
    good = record_to_value(DeviceReport(DEVICES[0]))
    assert h.provider.signal(FLEET_OID, LOOSE_FLEET, "reported", [good], h.net.now) == 1
    h.net.wakeup(P)
    h.net.run_until(
        lambda: h.pump() or any(isinstance(e, Notification) for e in h.events), max_time=10
    )
    (note,) = [e for e in h.events if isinstance(e, Notification)]
    assert note.values == (DeviceReport(DEVICES[0]),)
    assert h.requestor.statistics().bad_oap_payloads == 1


def test_sending_side_refuses_what_the_declaration_does_not_allow() -> None:
    core = OapCore()
    with pytest.raises(TypeError, match="filter must be Query, got dict"):
        core.invoke(P, FLEET_OID, FLEET, "query", [{"minimum_version": 1}], 0)
    with pytest.raises(ValueError, match=r"filter: Query\.minimum_version: -1 outside"):
        core.invoke(P, FLEET_OID, FLEET, "query", [Query(minimum_version=-1)], 0)
    with pytest.raises(TypeError, match="last_report must be DeviceReport"):
        core.set(P, FLEET_OID, FLEET, "last_report", DEVICES[0], 0)
    h = Harness()
    h.report = DEVICES[0]  # the application answers with the wrong record
    got = h.requestor.get(P, FLEET_OID, FLEET, "last_report", h.net.now)
    with pytest.raises(LocalProtocolError, match="last_report must be DeviceReport"):
        h.result(got)


def test_value_conversion_functions() -> None:
    params = (
        Param("report", DeviceReport),
        Param("page", RecordList(DeviceSummary)),
        Param("more", DeviceSummary, optional=True),
    )
    report = DeviceReport(DEVICES[0])
    wire = outgoing_values(params, [report, list(DEVICES)], "page")
    assert wire == (record_to_value(report), [record_to_value(d) for d in DEVICES])
    assert incoming_values_untrusted(params, wire, "page") == (report, DEVICES)
    assert incoming_values_untrusted(params, (*wire, None), "page") == (report, DEVICES, None)
    with pytest.raises(BadPacket, match=r"expected 2\.\.3 values"):
        incoming_values_untrusted(params, wire[:1], "page")
    with pytest.raises(BadPacket, match=r"page: page: must be a list of DeviceSummary"):
        incoming_values_untrusted(params, (wire[0], {"x": 1}), "page")
    with pytest.raises(BadPacket, match=r"page: page: DeviceSummary.version: expected int"):
        incoming_values_untrusted(
            params, (wire[0], [{"device": b"\x03\x00", "version": "7"}]), "page"
        )
    with pytest.raises(BadPacket, match="count must be int"):
        incoming_values_untrusted((Param("count", ValueType.INT),), ("7",), "page")
    with pytest.raises(TypeError, match="must be a list of DeviceSummary"):
        outgoing_values(params, [report, DEVICES[0]], "page")
    with pytest.raises(TypeError, match="a record class"):
        Param("x", int)
    with pytest.raises(TypeError, match="a record class"):
        Property(9, "x", dict)
    with pytest.raises(TypeError, match="not a record class"):
        RecordList(OID)


UNKNOWN = ExceptionDef(4, "UnknownDevice", (Param("device", DeviceSummary),))
STRICT_FLEET = Interface.define(FLEET.iid, "Fleet", [*FLEET.items, UNKNOWN])


def test_declared_exceptions_carry_record_values() -> None:
    """A declared exception's values are converted and checked like any
    other: a record instance on both sides, a wrong value refused at the
    provider with INTERNAL."""
    h = Harness(STRICT_FLEET)
    answers = iter([(DEVICES[1],), ({"device": "not a summary"},)])

    def refuse(request: IncomingRequest) -> None:
        values = next(answers)
        try:
            h.provider.respond_error(request, ProviderException(UNKNOWN, values), h.net.now)
        except LocalProtocolError as exc:
            assert "bad exception UnknownDevice" in str(exc)
        h.net.wakeup(P)

    h.answer = refuse  # type: ignore[method-assign]
    call = h.requestor.invoke(P, FLEET_OID, STRICT_FLEET, "query", [Query()], h.net.now)
    failed = h.result(call)
    assert isinstance(failed, OapRequestFailed)
    assert isinstance(failed.error, ProviderException)
    assert failed.error.definition == UNKNOWN and failed.error.values == (DEVICES[1],)
    call = h.requestor.invoke(P, FLEET_OID, STRICT_FLEET, "query", [Query()], h.net.now)
    failed = h.result(call)
    assert isinstance(failed, OapRequestFailed) and isinstance(failed.error, OapError)
    assert failed.error.code == OapErrorCode.INTERNAL


def test_requestor_fails_a_declared_exception_with_a_malformed_record() -> None:
    loose = Interface.define(
        FLEET.iid,
        "Fleet",
        [*LOOSE_FLEET.items, ExceptionDef(4, "UnknownDevice", (Param("device", ValueType.MAP),))],
    )
    h = Harness(loose)

    def refuse(request: IncomingRequest) -> None:
        h.provider.respond_error(
            request, ProviderException(loose.exception(4), ({"version": 1},)), h.net.now
        )
        h.net.wakeup(P)

    h.answer = refuse  # type: ignore[method-assign]
    call = h.requestor.invoke(P, FLEET_OID, STRICT_FLEET, "query", [Query()], h.net.now)
    failed = h.result(call)
    assert isinstance(failed, OapRequestFailed) and isinstance(failed.error, BadPacket)
    assert "DeviceSummary.device: required field missing" in str(failed.error)
