"""PostgreSQL store of the Authenticator (psycopg 3): the scale-out backend.
Any number of Authenticator replicas, and the CLI, may share one database.

The tables are those of the SQLite store (BYTEA for OIDs, keys and encoded
permissions), created in the first schema of the connection's ``search_path``
(choose one with ``?options=-csearch_path%3Dname`` in the URL) the first time a
store connects, under an advisory lock so that replicas starting together do
not race. ``schema_version`` holds the version; a store refuses a newer one.

Consistency between replicas: every change is one transaction that first locks
the node's row (``SELECT ... FOR UPDATE``), and uniqueness (a domain, a node, a
revocation) is the primary keys', so the replica that loses a race gets a
clear ``StoreError`` instead of a duplicate.

The ``audit`` table is append-only: triggers raise on UPDATE, DELETE and
TRUNCATE. The owner of a table can disable its triggers, so in production the
tables should belong to an administrative role and the service should run as
a role with only the privileges of docs/operations.md ("PostgreSQL"); no other
role has any privilege on ``domains.master_key``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import psycopg
from psycopg import errors as pg_errors

from dofpy_services.authenticator._base import SCHEMA_VERSION, Row, SqlStore, StoreError

__all__ = ["PostgresStore"]

# pg_advisory_xact_lock key that serialises schema creation ("dofpy-as" in ASCII).
_SCHEMA_LOCK = 0x646F6670792D6173

_SCHEMA = """
CREATE TABLE domains (
    oid BYTEA PRIMARY KEY,
    text TEXT NOT NULL,
    master_key BYTEA NOT NULL
);
CREATE TABLE nodes (
    domain BYTEA NOT NULL REFERENCES domains(oid),
    identity BYTEA NOT NULL,
    text TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    max_duration INTEGER NOT NULL DEFAULT 255,
    PRIMARY KEY (domain, identity)
);
CREATE TABLE permissions (
    domain BYTEA NOT NULL,
    identity BYTEA NOT NULL,
    position INTEGER NOT NULL,
    permission BYTEA NOT NULL,
    PRIMARY KEY (domain, identity, position),
    FOREIGN KEY (domain, identity) REFERENCES nodes(domain, identity)
);
CREATE TABLE revocations (
    domain BYTEA NOT NULL,
    identity BYTEA NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (domain, identity),
    FOREIGN KEY (domain, identity) REFERENCES nodes(domain, identity)
);
CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TABLE schema_version (version INTEGER NOT NULL);
"""


class PostgresStore(SqlStore):
    """The Authenticator's database in PostgreSQL at ``url`` (a libpq URL,
    ``postgresql://user@host:5432/dbname``); an
    :class:`~dofpy_services.authenticator.store.AuthenticatorStore`."""

    _LOCK_NODE_SQL = "SELECT 1 FROM nodes WHERE domain = ? AND identity = ? FOR UPDATE"

    def __init__(self, url: str) -> None:
        try:
            self._db = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}".strip()) from None
        try:
            self._create_schema()
        except BaseException:
            self._db.close()
            raise

    def _create_schema(self) -> None:
        try:
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                exists = self._db.execute("SELECT to_regclass('schema_version')").fetchone()
                if exists is None or exists[0] is None:
                    self._db.execute(_SCHEMA)
                    self._db.execute(
                        "INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,)
                    )
                    return
                row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        except psycopg.Error as exc:
            raise StoreError(f"cannot set up the Authenticator schema: {exc}") from None
        version = None if row is None else row[0]
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"the database has schema version {version}; this dofpy knows {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        cursor = self._db.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description is not None else []

    def _transaction(self) -> AbstractContextManager[object]:
        return self._db.transaction()

    def _is_conflict(self, exc: Exception) -> bool:
        return isinstance(exc, pg_errors.UniqueViolation)

    def _is_refused(self, exc: Exception) -> bool:
        return isinstance(exc, pg_errors.InsufficientPrivilege)
