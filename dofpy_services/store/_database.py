"""A service's database: :class:`SyncDatabase` (blocking, for CLI commands and
tests) and :class:`Database` (the same calls from trio, each in a worker
thread bounded by a :class:`trio.CapacityLimiter`, never on the event loop)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Self, TypeVar

import trio

from dofpy_services.store._base import (
    Backend,
    Dialect,
    Migration,
    Transaction,
    check_migrations,
    is_postgres_url,
)
from dofpy_services.store._errors import StoreError, StoreUnavailable

__all__ = [
    "CallObserver",
    "Database",
    "StoreStatistics",
    "SyncDatabase",
    "open_database",
    "open_database_sync",
]

T = TypeVar("T")

# Called after every store call, in the worker thread that ran it: (kind, seconds, ok).
CallObserver = Callable[[str, float, bool], None]


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """What a database has done so far (see :meth:`SyncDatabase.statistics`)."""

    calls: int
    # Calls that raised (StoreError or a bug), StoreUnavailable included.
    errors: int
    # Calls that failed with StoreUnavailable (connection lost, server unreachable).
    unavailable: int
    # Connections found broken and replaced (PostgreSQL; 0 for SQLite).
    reconnects: int
    # Calls running right now.
    in_flight: int
    # Per kind of call ("read", "write", "lookup", ...): how many, and their seconds summed.
    calls_by_kind: dict[str, int] = field(default_factory=dict)
    seconds_by_kind: dict[str, float] = field(default_factory=dict)


class SyncDatabase:
    """A service's tables, migrated, on SQLite or PostgreSQL; every call blocks
    the calling thread and may come from any thread. Made by
    :func:`open_database_sync` (or by :func:`open_database`, as ``db.sync``)."""

    def __init__(self, backend: Backend, service: str, on_call: CallObserver | None) -> None:
        self._backend = backend
        self.service = service
        self._on_call = on_call
        self._lock = threading.Lock()
        self._calls = self._errors = self._unavailable = self._in_flight = 0
        self._calls_by_kind: dict[str, int] = {}
        self._seconds_by_kind: dict[str, float] = {}

    @property
    def dialect(self) -> Dialect:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._backend.dialect

    @property
    def where(self) -> str:
        """Where the database is (a path, or PostgreSQL's host/port/name)."""
        return self._backend.where

    def read(self, fn: Callable[[Transaction], T], *, kind: str = "read") -> T:
        """``fn(tx)`` in a read-only transaction (one snapshot); its result."""
        return self._call(fn, write=False, kind=kind)

    def write(self, fn: Callable[[Transaction], T], *, kind: str = "write") -> T:
        """``fn(tx)`` in one write transaction, committed when ``fn`` returns
        and rolled back when it raises; its result."""
        return self._call(fn, write=True, kind=kind)

    def _call(self, fn: Callable[[Transaction], T], *, write: bool, kind: str) -> T:
        with self._lock:
            self._in_flight += 1
        start = time.perf_counter()
        ok = unavailable = False
        try:
            result = self._backend.run(fn, write=write, kind=kind)
            ok = True
            return result
        except StoreUnavailable:
            unavailable = True
            raise
        finally:
            seconds = time.perf_counter() - start
            with self._lock:
                self._in_flight -= 1
                self._calls += 1
                self._errors += not ok
                self._unavailable += unavailable
                self._calls_by_kind[kind] = self._calls_by_kind.get(kind, 0) + 1
                self._seconds_by_kind[kind] = self._seconds_by_kind.get(kind, 0.0) + seconds
            if self._on_call is not None:
                self._on_call(kind, seconds, ok)

    def statistics(self) -> StoreStatistics:
        """Counters of the calls so far (for metrics and tests)."""
        reconnects = self._backend.reconnects()
        with self._lock:
            return StoreStatistics(
                calls=self._calls,
                errors=self._errors,
                unavailable=self._unavailable,
                reconnects=reconnects,
                in_flight=self._in_flight,
                calls_by_kind=dict(self._calls_by_kind),
                seconds_by_kind=dict(self._seconds_by_kind),
            )

    def close(self) -> None:
        """Close every connection."""
        self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Database:
    """A :class:`SyncDatabase` for trio: each call runs in a worker thread,
    at most ``pool_size`` at once (on SQLite, writes one at a time besides).
    A cancelled call still finishes in its thread (and commits or not) before
    the cancellation is delivered: a write is never abandoned half-way."""

    def __init__(self, sync: SyncDatabase, pool_size: int) -> None:
        self.sync = sync
        self._limiter = trio.CapacityLimiter(pool_size)
        # SQLite has one writer: a queued write must not hold a reader's thread.
        self._write_limiter = trio.CapacityLimiter(1) if sync.dialect == "sqlite" else self._limiter

    @property
    def dialect(self) -> Dialect:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.sync.dialect

    async def read(self, fn: Callable[[Transaction], T], *, kind: str = "read") -> T:
        """:meth:`SyncDatabase.read` in a worker thread."""
        return await trio.to_thread.run_sync(
            partial(self.sync.read, fn, kind=kind), limiter=self._limiter
        )

    async def write(self, fn: Callable[[Transaction], T], *, kind: str = "write") -> T:
        """:meth:`SyncDatabase.write` in a worker thread."""
        return await trio.to_thread.run_sync(
            partial(self.sync.write, fn, kind=kind), limiter=self._write_limiter
        )

    def statistics(self) -> StoreStatistics:
        """Counters of the calls so far."""
        return self.sync.statistics()


def open_database_sync(
    location: str | os.PathLike[str],
    *,
    service: str,
    migrations: Sequence[Migration],
    pool_size: int = 4,
    min_connections: int = 1,
    busy_timeout: float = 5.0,
    connect_timeout: float = 10.0,
    acquire_timeout: float = 10.0,
    reconnect_timeout: float = 30.0,
    on_call: CallObserver | None = None,
) -> SyncDatabase:
    """Open ``service``'s database at ``location`` (a ``postgresql://`` URL, or
    a SQLite file path, created if missing) and apply the ``migrations`` it
    lacks. Every failure an operator can cause is a :class:`StoreError`:
    unreachable server, psycopg missing, not a database, schema newer than
    ``migrations``.

    ``pool_size``: PostgreSQL connections at most (``min_connections`` kept
    open); ``busy_timeout``: how long a SQLite write waits for another
    process's; ``acquire_timeout``: how long a PostgreSQL call waits for a
    connection (server down) before StoreUnavailable; ``reconnect_timeout``:
    the longest the pool backs off between reconnection attempts;
    ``on_call``: told of every call (kind, seconds, ok), from its thread.
    """
    check_migrations(service, migrations)
    if pool_size < 1:
        raise ValueError("pool_size must be at least 1")
    backend: Backend
    if is_postgres_url(location):
        try:
            # Imported here: SQLite-only installations need not have psycopg.
            import psycopg  # noqa: F401, PLC0415
            import psycopg_pool  # noqa: F401, PLC0415

            from dofpy_services.store._postgres import PostgresBackend  # noqa: PLC0415
        except ImportError as exc:
            raise StoreError(
                "PostgreSQL needs psycopg 3 and psycopg_pool:"
                f" pip install 'dofpy[postgres]' ({exc})"
            ) from None
        backend = PostgresBackend(
            str(location),
            service,
            migrations,
            pool_size=pool_size,
            min_connections=min_connections,
            connect_timeout=connect_timeout,
            acquire_timeout=acquire_timeout,
            reconnect_timeout=reconnect_timeout,
        )
    else:
        from dofpy_services.store._sqlite import SqliteBackend  # noqa: PLC0415

        backend = SqliteBackend(location, service, migrations, busy_timeout=busy_timeout)
    return SyncDatabase(backend, service, on_call)


@asynccontextmanager
async def open_database(
    location: str | os.PathLike[str],
    *,
    service: str,
    migrations: Sequence[Migration],
    pool_size: int = 4,
    min_connections: int = 1,
    busy_timeout: float = 5.0,
    connect_timeout: float = 10.0,
    acquire_timeout: float = 10.0,
    reconnect_timeout: float = 30.0,
    on_call: CallObserver | None = None,
) -> AsyncIterator[Database]:
    """``async with open_database(...) as db:`` -- :func:`open_database_sync`
    (opened and closed in a worker thread) as a :class:`Database`; calls run
    ``pool_size`` at a time."""
    sync = await trio.to_thread.run_sync(
        partial(
            open_database_sync,
            location,
            service=service,
            migrations=migrations,
            pool_size=pool_size,
            min_connections=min_connections,
            busy_timeout=busy_timeout,
            connect_timeout=connect_timeout,
            acquire_timeout=acquire_timeout,
            reconnect_timeout=reconnect_timeout,
            on_call=on_call,
        )
    )
    try:
        yield Database(sync, pool_size)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(sync.close)
