"""Test support for code built on dofpy: a seeded, in-memory network simulator
that drives sans-IO protocol cores on a virtual clock (no trio, no sockets), and
a security domain held in memory (:class:`LocalDomain`)."""

from dofpy.testing.domain import LocalDomain, grant
from dofpy.testing.netsim import (
    LinkConditions,
    LinkStatistics,
    Network,
    NetworkStatistics,
    TraceEvent,
    TraceKind,
)

__all__ = [
    "LinkConditions",
    "LinkStatistics",
    "LocalDomain",
    "Network",
    "NetworkStatistics",
    "TraceEvent",
    "TraceKind",
    "grant",
]
