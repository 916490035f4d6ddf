"""Test support for code built on dofpy: a seeded, in-memory network simulator
that drives sans-IO protocol cores on a virtual clock (no trio, no sockets)."""

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
    "Network",
    "NetworkStatistics",
    "TraceEvent",
    "TraceKind",
]
