"""The services' store layer: one interface, two backends.

``async with open_database(location, service=..., migrations=[...]) as db:``
opens a service's tables on SQLite (a file path: the embedded default) or
PostgreSQL (a ``postgresql://`` URL: shared by any number of processes) and
applies the numbered :class:`Migration` s the database lacks. ``await
db.read(fn)`` and ``await db.write(fn)`` run ``fn(tx)`` in one transaction in
a worker thread, never on the trio loop; ``db.sync`` (or
:func:`open_database_sync`) makes the same calls blocking, for CLI commands.
:func:`open_write_batcher` commits many small writes together. See
docs/architecture.md ("The store layer").
"""

from dofpy_services.store._base import Dialect, Migration, Row, Transaction, is_postgres_url
from dofpy_services.store._batcher import BatcherStatistics, WriteBatcher, open_write_batcher
from dofpy_services.store._database import (
    CallObserver,
    Database,
    StoreStatistics,
    SyncDatabase,
    open_database,
    open_database_sync,
)
from dofpy_services.store._errors import (
    StoreConflict,
    StoreError,
    StoreRefused,
    StoreUnavailable,
)

__all__ = [
    "BatcherStatistics",
    "CallObserver",
    "Database",
    "Dialect",
    "Migration",
    "Row",
    "StoreConflict",
    "StoreError",
    "StoreRefused",
    "StoreStatistics",
    "StoreUnavailable",
    "SyncDatabase",
    "Transaction",
    "WriteBatcher",
    "is_postgres_url",
    "open_database",
    "open_database_sync",
    "open_write_batcher",
]
