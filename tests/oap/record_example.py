"""A small fleet interface whose values are records, shared by the record tests."""

from __future__ import annotations

import enum
from typing import Annotated

from dofpy.oap.interface import EventDef, Interface, Method, Param, Property, RecordList, ValueType
from dofpy.trio import Provider
from dofpy.wire.oid import OID
from dofpy.wire.record import MaxLen, UInt32, record


class DeviceState(enum.IntEnum):
    NORMAL = 0
    REPROGRAM = 1


@record
class DeviceSummary:
    device: OID
    version: UInt32
    state: DeviceState = DeviceState.NORMAL


@record
class DeviceReport:
    summary: DeviceSummary
    tags: tuple[Annotated[str, MaxLen(16)], ...] = ()
    note: str | None = None


@record
class Query:
    minimum_version: UInt32 = 0
    state: DeviceState | None = None


FLEET = Interface.define(
    "[1:{01000101}]",
    "Fleet",
    [
        Property(1, "last_report", DeviceReport, writable=True, observable=True),
        Method(
            2,
            "query",
            (Param("filter", Query),),
            (Param("devices", RecordList(DeviceSummary)), Param("total", ValueType.INT)),
        ),
        EventDef(3, "reported", (Param("report", DeviceReport),)),
    ],
)
FLEET_OID = OID(3, b"fleet@example.org")

DEVICES = (
    DeviceSummary(OID(3, b"d1@example.org"), 7),
    DeviceSummary(OID(3, b"d2@example.org"), 9, DeviceState.REPROGRAM),
    DeviceSummary(OID(3, b"d3@example.org"), 12),
)


def select(query: Query) -> tuple[DeviceSummary, ...]:
    return tuple(
        d for d in DEVICES if d.version >= query.minimum_version and query.state in (None, d.state)
    )


class Fleet(Provider):
    """Serves the fleet interface; handlers see and return record instances."""

    def __init__(self) -> None:
        self.last_report = DeviceReport(DEVICES[0], ("lab",))
        self.filters: list[object] = []

    def get_last_report(self) -> DeviceReport:
        return self.last_report

    def set_last_report(self, report: object) -> None:
        assert isinstance(report, DeviceReport)
        self.last_report = report

    def query(self, query: object) -> tuple[tuple[DeviceSummary, ...], int]:
        self.filters.append(query)
        assert isinstance(query, Query)
        found = select(query)
        return found, len(found)
