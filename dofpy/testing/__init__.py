"""Test support for code built on dofpy — the harnesses dofpy's own suites use,
for services and applications to use too instead of writing their own.

- :mod:`~dofpy.testing.netsim` — a seeded, in-memory network simulator that
  drives sans-IO protocol cores on a virtual clock (no trio, no sockets).
- :mod:`~dofpy.testing.domain` — a security domain held in memory
  (:class:`LocalDomain`, :func:`grant`).
- :mod:`~dofpy.testing.secure` — secured nodes from a LocalDomain: a
  :class:`SecureDomain` on the simulator, and :func:`open_secure_pair` (a
  provider and a requestor over UDP on 127.0.0.1, session established).
- :mod:`~dofpy.testing.example` — the :data:`THERMOSTAT` example interface
  and its :class:`Thermostat` provider.
- :mod:`~dofpy.testing.transfer` — block-transfer runs on the simulator.
- :mod:`~dofpy.testing.tshark` — tshark's DOF dissector as the wire oracle.
- :mod:`~dofpy.testing.postgres` — a PostgreSQL test server and a fresh
  schema per test.
- :mod:`~dofpy.testing.external` — skip without an external tool, fail when
  ``CI=true``.

Nothing here imports pytest or psycopg until a helper that needs it is called.
"""

from dofpy.testing.domain import LocalDomain, grant
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID, Thermostat
from dofpy.testing.external import unavailable
from dofpy.testing.netsim import (
    LinkConditions,
    LinkStatistics,
    Network,
    NetworkStatistics,
    TraceEvent,
    TraceKind,
)
from dofpy.testing.postgres import fresh_schema, require_postgres, with_options
from dofpy.testing.secure import SecureDomain, SecurePair, open_secure_node, open_secure_pair
from dofpy.testing.transfer import make_object, run_to_event
from dofpy.testing.tshark import (
    Datagram,
    OracleResult,
    check_datagrams,
    require_tshark,
    run_tshark,
)

__all__ = [
    "THERMOSTAT",
    "THERMOSTAT_OID",
    "Datagram",
    "LinkConditions",
    "LinkStatistics",
    "LocalDomain",
    "Network",
    "NetworkStatistics",
    "OracleResult",
    "SecureDomain",
    "SecurePair",
    "Thermostat",
    "TraceEvent",
    "TraceKind",
    "check_datagrams",
    "fresh_schema",
    "grant",
    "make_object",
    "open_secure_node",
    "open_secure_pair",
    "require_postgres",
    "require_tshark",
    "run_to_event",
    "run_tshark",
    "unavailable",
    "with_options",
]
