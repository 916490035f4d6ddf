"""A small example interface and its provider, for tests of code that speaks OAP.

:data:`THERMOSTAT` has one of everything OAP offers: an observable property
(``temperature``), a writable one (``label``), methods (``add``, which raises
the interface's ``Overflow`` exception above 1000, and ``count_calls``), an
event (``alarm``) and an exception. :class:`Thermostat` provides it over UDP
(``node.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())``); sans-IO tests
provide :data:`THERMOSTAT` on an :class:`~dofpy.oap.core.OapCore` and answer
its requests themselves.
"""

from __future__ import annotations

from dofpy.oap.errors import ProviderException
from dofpy.oap.interface import (
    EventDef,
    ExceptionDef,
    Interface,
    Method,
    Param,
    Property,
    ValueType,
)
from dofpy.trio import Provider
from dofpy.wire.oid import OID

THERMOSTAT = Interface.define(
    "[1:{01000001}]",
    "Thermostat",
    [
        Property(1, "temperature", ValueType.INT, observable=True),
        Property(2, "label", ValueType.TEXT, writable=True),
        Method(
            3,
            "add",
            (Param("a", ValueType.INT), Param("b", ValueType.INT)),
            (Param("sum", ValueType.INT),),
        ),
        EventDef(4, "alarm", (Param("reason", ValueType.TEXT),)),
        ExceptionDef(5, "Overflow", (Param("limit", ValueType.INT),)),
        Method(6, "count_calls", (), (Param("calls", ValueType.INT),)),
    ],
)
THERMOSTAT_OID = OID(3, b"thermostat@example.org")

__all__ = ["THERMOSTAT", "THERMOSTAT_OID", "Thermostat"]


class Thermostat(Provider):
    """Provides :data:`THERMOSTAT`: 21 degrees in the hall; counts ``add`` calls."""

    def __init__(self) -> None:
        self.temperature = 21
        self.label = "hall"
        self.add_calls = 0

    def get_temperature(self) -> int:
        return self.temperature

    def get_label(self) -> str:
        return self.label

    async def set_label(self, value: str) -> None:
        self.label = value

    def add(self, a: int, b: int) -> int:
        self.add_calls += 1
        if a + b > 1000:
            raise ProviderException(THERMOSTAT.exception("Overflow"), [1000])
        return a + b

    def count_calls(self) -> int:
        return self.add_calls
