"""The SQLite backend (stdlib ``sqlite3``): the embedded default, one file.

The file is created private (0600: services keep secrets in it) and opened in
WAL mode with ``synchronous=FULL`` (a commit survives a power cut) and foreign
keys on. Writes go through one connection under a lock, each in ``BEGIN
IMMEDIATE`` so that it takes the file's write lock before it reads what it
will change (another process waits up to the busy timeout). Reads use their
own connections, ``query_only``, one per concurrent reader, and in WAL mode
never wait for a writer.
"""

from __future__ import annotations

import os
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from dofpy_services.store._base import (
    MIGRATIONS_TABLE_SQL,
    Backend,
    Dialect,
    Migration,
    Row,
    Transaction,
    apply_migrations,
)
from dofpy_services.store._errors import (
    StoreConflict,
    StoreError,
    StoreRefused,
    StoreUnavailable,
)

__all__ = ["SqliteBackend"]

T = TypeVar("T")

# Extended result codes (``sqlite3.Error.sqlite_errorname``) by what they mean here.
_CONFLICTS = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")
_UNUSABLE = (
    "SQLITE_NOTADB",
    "SQLITE_CORRUPT",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
    "SQLITE_PERM",
)


def _translate(exc: sqlite3.Error, where: str, kind: str) -> StoreError | None:
    """The StoreError ``exc`` means, or ``None`` for a programming error."""
    name = getattr(exc, "sqlite_errorname", "")
    if isinstance(exc, sqlite3.IntegrityError):
        if name in _CONFLICTS:
            return StoreConflict(str(exc))
        if name == "SQLITE_CONSTRAINT_TRIGGER":  # RAISE(ABORT, ...) in a trigger
            return StoreRefused(str(exc))
        return StoreError(f"{where}: {exc} during {kind}")
    if name.startswith(_BUSY):
        return StoreUnavailable(f"{where} stayed locked by another writer during {kind}; retry")
    if name.startswith(_UNUSABLE):
        return StoreError(f"{where}: {exc} during {kind}")
    return None


class _SqliteTransaction:
    """A :class:`~dofpy_services.store.Transaction` on one connection."""

    __slots__ = ("_conn", "_kind", "_where")

    def __init__(self, conn: sqlite3.Connection, where: str, kind: str) -> None:
        self._conn = conn
        self._where = where
        self._kind = kind

    @property
    def dialect(self) -> Dialect:
        return "sqlite"

    def rows(self, sql: str, params: Sequence[object] = (), *, binary: bool = False) -> list[Row]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, self._where, self._kind) or exc from None

    def row(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        try:
            return self._conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise _translate(exc, self._where, self._kind) or exc from None

    def executemany(self, sql: str, params: Iterable[Sequence[object]]) -> None:
        try:
            self._conn.executemany(sql, params)
        except sqlite3.Error as exc:
            raise _translate(exc, self._where, self._kind) or exc from None

    def script(self, script: str) -> None:
        """Run a script of statements inside this transaction (unlike
        ``executescript``, which commits first)."""
        statement = ""
        for piece in script.split(";"):
            statement += piece + ";"
            # A trigger's body holds semicolons: wait for a complete statement.
            if sqlite3.complete_statement(statement):
                if statement.strip(" \t\r\n;"):
                    self.execute(statement)
                statement = ""
        if statement.strip(" \t\r\n;"):
            raise ValueError(f"incomplete SQL statement in a migration: {statement!r}")


class SqliteBackend(Backend):
    """The database in the SQLite file at ``path`` (created if missing)."""

    dialect: Dialect = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        service: str,
        migrations: Sequence[Migration],
        *,
        busy_timeout: float = 5.0,
    ) -> None:
        self._path = Path(path)
        self.where = str(self._path)
        self._busy_timeout = busy_timeout
        self._write_lock = threading.Lock()
        self._idle_readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._create_private()
        self._writer = self._connect(query_only=False)
        try:
            self._set_up(service, migrations)
        except BaseException:
            self._writer.close()
            raise

    def _create_private(self) -> None:
        if self._path.is_dir():
            raise StoreError(f"{self._path} is a directory, not a database file")
        try:
            # Private before the first secret is written into it.
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        except OSError as exc:
            raise StoreError(f"cannot create {self._path}: {exc.strerror}") from None
        os.close(fd)

    def _connect(self, *, query_only: bool) -> sqlite3.Connection:
        try:
            # Autocommit mode: ``run`` issues BEGIN itself.
            conn = sqlite3.connect(
                self._path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self._busy_timeout,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self._path}: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")
            if query_only:
                conn.execute("PRAGMA query_only = ON")
            else:
                self._enter_wal(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{self._path} is not a usable SQLite database: {exc}") from None
        return conn

    def _enter_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL. Processes creating the file together race
        for it, and SQLite answers "database is locked" at once (its busy
        handler does not cover the switch), so retry with capped, jittered
        back-off within the busy timeout."""
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.001
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))  # jitter, not a secret
            delay = min(delay * 2, 0.05)

    def _set_up(self, service: str, migrations: Sequence[Migration]) -> None:
        def migrate(tx: _SqliteTransaction) -> None:
            tx.execute(MIGRATIONS_TABLE_SQL)
            apply_migrations(tx, tx.script, service, migrations, self.where, time.time())

        # BEGIN IMMEDIATE is the lock: processes opening together migrate in turn.
        try:
            self._write(migrate, "migrations")
        except sqlite3.Error as exc:  # a migration's SQL failed: nothing of it stays
            raise StoreError(f"cannot set up the {service} tables in {self.where}: {exc}") from None

    def run(self, fn: Callable[[Transaction], T], *, write: bool, kind: str) -> T:
        if self._closed:
            raise StoreError(f"{self.where} is closed")
        if write:
            return self._write(fn, kind)
        conn = self._take_reader()
        try:
            return self._transaction(conn, "BEGIN", fn, kind)
        finally:
            self._idle_readers.put(conn)

    def _write(self, fn: Callable[[_SqliteTransaction], T], kind: str) -> T:
        with self._write_lock:
            return self._transaction(self._writer, "BEGIN IMMEDIATE", fn, kind)

    def _take_reader(self) -> sqlite3.Connection:
        try:
            return self._idle_readers.get_nowait()
        except queue.Empty:
            pass
        conn = self._connect(query_only=True)
        with self._readers_lock:
            self._all_readers.append(conn)
        return conn

    def _transaction(
        self,
        conn: sqlite3.Connection,
        begin: str,
        fn: Callable[[_SqliteTransaction], T],
        kind: str,
    ) -> T:
        tx = _SqliteTransaction(conn, self.where, kind)
        tx.execute(begin)
        try:
            result = fn(tx)
            tx.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def reconnects(self) -> int:
        return 0  # a file does not disconnect

    def close(self) -> None:
        self._closed = True
        with self._write_lock:
            self._writer.close()
        with self._readers_lock:
            for conn in self._all_readers:
                conn.close()
            self._all_readers.clear()
