"""The Authenticator's stores: domains, nodes, permissions, revocations and an
append-only audit log.

:class:`SqliteStore` (one file, the embedded default) and
:class:`~dofpy_services.authenticator.postgres_store.PostgresStore` (the
scale-out backend that replicas share; needs the ``postgres`` extra, psycopg 3)
both implement :class:`AuthenticatorStore`. :func:`open_store` picks one from
what an operator wrote after ``--db``: a ``postgresql://`` URL or a file path.
"""

from __future__ import annotations

import os

from dofpy_services.authenticator._base import (
    SCHEMA_VERSION,
    AuditEntry,
    AuthenticatorStore,
    NodeSummary,
    StoreError,
)
from dofpy_services.authenticator.sqlite_store import SqliteStore

__all__ = [
    "SCHEMA_VERSION",
    "AuditEntry",
    "AuthenticatorStore",
    "NodeSummary",
    "SqliteStore",
    "StoreError",
    "is_postgres_url",
    "open_store",
]


def is_postgres_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a file."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def open_store(location: str | os.PathLike[str]) -> AuthenticatorStore:
    """The store at ``location``: a :class:`PostgresStore` for a
    ``postgresql://`` URL, else a :class:`SqliteStore` on that file (created
    if missing)."""
    if not is_postgres_url(location):
        return SqliteStore(location)
    try:
        # Imported here: SQLite-only installations need not have psycopg.
        from dofpy_services.authenticator.postgres_store import PostgresStore  # noqa: PLC0415
    except ImportError as exc:
        raise StoreError(
            f"PostgreSQL needs psycopg 3: pip install 'dofpy[postgres]' ({exc})"
        ) from None
    return PostgresStore(str(location))
