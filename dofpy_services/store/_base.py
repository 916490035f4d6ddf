"""What both backends share: the :class:`Transaction` a call's function gets,
numbered :class:`Migration` s, and the :class:`Backend` interface that
:mod:`~dofpy_services.store._database` runs calls on."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from dofpy_services.store._errors import StoreError

__all__ = [
    "MIGRATIONS_TABLE",
    "Backend",
    "Dialect",
    "Migration",
    "Row",
    "Transaction",
    "apply_migrations",
    "check_migrations",
    "is_postgres_url",
]

T = TypeVar("T")

# A database row as the drivers return it (bytes, int, float, str, None columns).
Row = tuple[Any, ...]

Dialect = Literal["sqlite", "postgresql"]

# One table records, per service, which migrations were applied; several
# services may share one database (or one PostgreSQL schema).
MIGRATIONS_TABLE = "dofpy_migrations"


class Transaction(Protocol):
    """One transaction, handed to the function of a ``read`` or ``write``.
    Statements use ``?`` placeholders and portable SQL; ``dialect`` says which
    database this is where the SQL must differ (``FOR UPDATE``, ...).

    Driver errors are translated: :class:`~dofpy_services.store.StoreConflict`
    (uniqueness), :class:`~dofpy_services.store.StoreRefused` (trigger or
    privilege), :class:`~dofpy_services.store.StoreUnavailable` (connection
    lost); programming errors (bad SQL) stay the driver's."""

    @property
    def dialect(self) -> Dialect:
        """``"sqlite"`` or ``"postgresql"``."""
        ...

    def rows(self, sql: str, params: Sequence[object] = (), *, binary: bool = False) -> list[Row]:
        """Run one statement; its rows (empty for statements without any).

        ``binary``: on PostgreSQL, the rows come in the binary format, loaded
        faster than text (bytea without hex, numbers without parsing: a
        stream of pages read 10-15% faster); only for columns of types
        psycopg loads in binary (bytea, text, integers, floats, booleans),
        never ``regclass`` or ``void`` (those come as bytes). SQLite ignores
        it."""
        ...

    def row(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        """Run one statement; its first row, or ``None``."""
        ...

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    def executemany(self, sql: str, params: Iterable[Sequence[object]]) -> None:
        """Run one statement once per parameter tuple."""
        ...


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered change of a service's tables. ``sql`` is a script of
    portable statements; ``postgres_sql`` replaces it on PostgreSQL where the
    two differ (types, triggers)."""

    version: int
    description: str
    sql: str
    postgres_sql: str | None = None

    def script(self, dialect: Dialect) -> str:
        """The statements to run on ``dialect``."""
        if dialect == "postgresql" and self.postgres_sql is not None:
            return self.postgres_sql
        return self.sql


def check_migrations(service: str, migrations: Sequence[Migration]) -> None:
    """``ValueError`` unless ``migrations`` are numbered 1, 2, 3, ... in order."""
    if not service:
        raise ValueError("a store needs a service name")
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"{service} migrations must be numbered 1, 2, ... in order: {versions}")


def is_postgres_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a file."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def newer_schema_message(service: str, where: str, found: int, known: int) -> str:
    return (
        f"the {service} tables in {where} are at schema version {found}, newer than"
        f" this dofpy's {known}: upgrade dofpy (or point it at another database)"
    )


class Backend(ABC):
    """A database the store layer runs calls on, from any thread."""

    dialect: Dialect
    # Where the database is, for messages (no password).
    where: str

    @abstractmethod
    def run(self, fn: Callable[[Transaction], T], *, write: bool, kind: str) -> T:
        """Run ``fn`` in one transaction (read-only unless ``write``), committed
        when it returns, rolled back when it raises; blocks the calling thread."""

    @abstractmethod
    def reconnects(self) -> int:
        """How many connections were found broken and replaced so far."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection."""


def apply_migrations(
    tx: Transaction,
    run_script: Callable[[str], None],
    service: str,
    migrations: Sequence[Migration],
    where: str,
    now: float,
) -> int:
    """Inside a transaction that holds the migration lock and has the
    migrations table: apply ``service``'s migrations the database lacks, in
    order; the version the database is now at. A database newer than
    ``migrations`` is refused (``StoreError``)."""
    row = tx.row(
        "SELECT COALESCE(MAX(version), 0) FROM dofpy_migrations WHERE service = ?", (service,)
    )
    current = 0 if row is None else int(row[0])
    if current > len(migrations):
        raise StoreError(newer_schema_message(service, where, current, len(migrations)))
    for migration in migrations[current:]:
        run_script(migration.script(tx.dialect))
        tx.execute(
            "INSERT INTO dofpy_migrations (service, version, description, applied_at)"
            " VALUES (?, ?, ?, ?)",
            (service, migration.version, migration.description, now),
        )
    return len(migrations)


MIGRATIONS_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS dofpy_migrations (
    service TEXT NOT NULL,
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (service, version)
)
"""
