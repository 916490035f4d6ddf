"""SQLite store of the Authenticator (stdlib ``sqlite3``): the embedded
default, one file, no set-up.

The master keys are in the file: it is created with mode 0600; back it up as a
secret. The ``audit`` table refuses UPDATE and DELETE (SQLite triggers), so the
log only ever grows. The schema version is SQLite's ``user_version``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dofpy_services.authenticator._base import SCHEMA_VERSION, Row, SqlStore, StoreError

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS domains (
    oid BLOB PRIMARY KEY,
    text TEXT NOT NULL,
    master_key BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    domain BLOB NOT NULL REFERENCES domains(oid),
    identity BLOB NOT NULL,
    text TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    max_duration INTEGER NOT NULL DEFAULT 255,
    PRIMARY KEY (domain, identity)
);
CREATE TABLE IF NOT EXISTS permissions (
    domain BLOB NOT NULL,
    identity BLOB NOT NULL,
    position INTEGER NOT NULL,
    permission BLOB NOT NULL,
    PRIMARY KEY (domain, identity, position),
    FOREIGN KEY (domain, identity) REFERENCES nodes(domain, identity)
);
CREATE TABLE IF NOT EXISTS revocations (
    domain BLOB NOT NULL,
    identity BLOB NOT NULL,
    at REAL NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (domain, identity),
    FOREIGN KEY (domain, identity) REFERENCES nodes(domain, identity)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


class SqliteStore(SqlStore):
    """The Authenticator's database in one SQLite file; an
    :class:`~dofpy_services.authenticator.store.AuthenticatorStore` and a
    :class:`dofpy.security.authority.CredentialStore`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        if not path.exists():
            # Create the file private before SQLite writes master keys into it.
            path.touch(mode=0o600)
        # Autocommit mode: ``_transaction`` issues BEGIN IMMEDIATE itself, so a
        # write takes the database lock before it reads what it will change.
        # check_same_thread=False: the daemon calls the store from worker threads,
        # one at a time (SQLite's serialized mode guards the connection anyway).
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{path} has schema version {version}; this dofpy knows {SCHEMA_VERSION}"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (sqlite3.Error, StoreError) as exc:
            self._db.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{path} is not an Authenticator database: {exc}") from None

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self._db.execute(sql, params).fetchall()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _is_conflict(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def _is_refused(self, exc: Exception) -> bool:
        # RAISE(ABORT) in a trigger surfaces as IntegrityError.
        return isinstance(exc, sqlite3.IntegrityError)
