"""The Authenticator: the domain's Authentication Server (TRP), its stores
(SQLite, or PostgreSQL for replicas) and daemon."""

from dofpy_services.authenticator.daemon import AuthenticatorCore, format_keylog_line
from dofpy_services.authenticator.service import AUTHENTICATOR, AuthenticatorConfig, serve
from dofpy_services.authenticator.store import (
    AuditEntry,
    AuthenticatorStore,
    NodeSummary,
    SqliteStore,
    StoreError,
    open_store,
)

__all__ = [
    "AUTHENTICATOR",
    "AuditEntry",
    "AuthenticatorConfig",
    "AuthenticatorCore",
    "AuthenticatorStore",
    "NodeSummary",
    "SqliteStore",
    "StoreError",
    "format_keylog_line",
    "open_store",
    "serve",
]
