"""The Authenticator: the domain's Authentication Server (TRP), its store
(SQLite, or PostgreSQL for replicas; see :mod:`dofpy_services.store`) and
daemon."""

from dofpy_services.authenticator.daemon import AuthenticatorCore, format_keylog_line
from dofpy_services.authenticator.grants import describe_permission, parse_permission
from dofpy_services.authenticator.service import AUTHENTICATOR, AuthenticatorConfig, serve
from dofpy_services.authenticator.store import (
    AsyncAuthenticatorStore,
    AuditEntry,
    AuthenticatorStore,
    NodeSummary,
    PostgresStore,
    SqliteStore,
    StoreError,
    open_async_store,
    open_store,
)

__all__ = [
    "AUTHENTICATOR",
    "AsyncAuthenticatorStore",
    "AuditEntry",
    "AuthenticatorConfig",
    "AuthenticatorCore",
    "AuthenticatorStore",
    "NodeSummary",
    "PostgresStore",
    "SqliteStore",
    "StoreError",
    "describe_permission",
    "format_keylog_line",
    "open_async_store",
    "open_store",
    "parse_permission",
    "serve",
]
