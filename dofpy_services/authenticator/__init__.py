"""The Authenticator: the domain's Authentication Server (TRP), its SQLite
store and daemon."""

from dofpy_services.authenticator.daemon import AuthenticatorCore, format_keylog_line, serve
from dofpy_services.authenticator.store import AuditEntry, NodeSummary, SqliteStore, StoreError

__all__ = [
    "AuditEntry",
    "AuthenticatorCore",
    "NodeSummary",
    "SqliteStore",
    "StoreError",
    "format_keylog_line",
    "serve",
]
