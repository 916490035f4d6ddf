"""The Authenticator: the domain's Authentication Server (TRP), its stores
(SQLite, or PostgreSQL for replicas) and daemon."""

from dofpy_services.authenticator.daemon import AuthenticatorCore, format_keylog_line, serve
from dofpy_services.authenticator.store import (
    AuditEntry,
    AuthenticatorStore,
    NodeSummary,
    SqliteStore,
    StoreError,
    open_store,
)

__all__ = [
    "AuditEntry",
    "AuthenticatorCore",
    "AuthenticatorStore",
    "NodeSummary",
    "SqliteStore",
    "StoreError",
    "format_keylog_line",
    "open_store",
    "serve",
]
