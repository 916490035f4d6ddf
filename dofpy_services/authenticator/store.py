"""SQLite store of the Authenticator: domains, nodes, permissions, revocations
and an append-only audit log (stdlib ``sqlite3``).

Identity secrets are not stored: each is derived from its domain's master key
(:func:`dofpy.security.identity.derive_identity_secret`) with the node's
credential generation, so rotating a credential is bumping that number. The
master keys are in the database: keep the file private (it is created with
mode 0600) and back it up as a secret.

The ``audit`` table refuses UPDATE and DELETE (SQLite triggers), so the log
only ever grows.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from dofpy.errors import BadPacket
from dofpy.security.authority import NodeRecord
from dofpy.security.identity import MASTER_KEY_SIZE, Domain
from dofpy.wire._codec import C2_MAX, encode_c2
from dofpy.wire.oid import OID, decode_oid_untrusted
from dofpy.wire.permissions import (
    Permission,
    PermissionSet,
    decode_permission_set_untrusted,
    encode_permission,
)

__all__ = ["AuditEntry", "NodeSummary", "SqliteStore", "StoreError"]

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


class StoreError(Exception):
    """An operator request the store cannot carry out (unknown domain, ...)."""


@dataclass(frozen=True, slots=True)
class NodeSummary:
    """One enrolled node as ``list`` shows it."""

    domain: OID
    identity: OID
    generation: int
    max_duration: int
    revoked: bool
    permissions: PermissionSet


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log."""

    id: int
    at: float
    event: str
    detail: str


class SqliteStore:
    """The Authenticator's database; also a
    :class:`dofpy.security.authority.CredentialStore`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        if not path.exists():
            # Create the file private before SQLite writes master keys into it.
            path.touch(mode=0o600)
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- CredentialStore ------------------------------------------------------------

    def has_domain(self, domain: OID) -> bool:
        row = self._db.execute("SELECT 1 FROM domains WHERE oid = ?", (domain.encode(),))
        return row.fetchone() is not None

    def domain(self, domain: OID) -> Domain:
        """The domain with its master key; ``StoreError`` if unknown."""
        row = self._db.execute(
            "SELECT master_key FROM domains WHERE oid = ?", (domain.encode(),)
        ).fetchone()
        if row is None:
            raise StoreError(f"unknown domain {domain}")
        return Domain(domain, bytes(row[0]))

    def lookup(self, domain: OID, identity: OID) -> NodeRecord | None:
        if not self.has_domain(domain):
            return None
        row = self._db.execute(
            "SELECT generation, max_duration FROM nodes WHERE domain = ? AND identity = ?",
            (domain.encode(), identity.encode()),
        ).fetchone()
        if row is None:
            return None
        generation, max_duration = int(row[0]), int(row[1])
        credential = self.domain(domain).credential_for(identity, generation)
        return NodeRecord(
            credential,
            self.permissions(domain, identity),
            self.is_revoked(domain, identity),
            max_duration,
        )

    # -- administration ---------------------------------------------------------------

    def init_domain(self, domain: OID, master_key: bytes, now: float) -> Domain:
        """Create a domain with ``master_key`` (32 bytes)."""
        if len(master_key) != MASTER_KEY_SIZE:
            raise StoreError(f"a master key is {MASTER_KEY_SIZE} bytes")
        result = Domain(domain, master_key)
        if self.has_domain(domain):
            raise StoreError(f"domain {domain} already exists")
        with self._db:
            self._db.execute(
                "INSERT INTO domains (oid, text, master_key) VALUES (?, ?, ?)",
                (domain.encode(), str(domain), master_key),
            )
            self._audit(now, "init-domain", f"domain={domain}")
        return result

    def _require_node(self, domain: OID, identity: OID) -> None:
        if self.lookup(domain, identity) is None:
            raise StoreError(f"{identity} is not enrolled in {domain}")

    def add_node(self, domain: OID, identity: OID, now: float, max_duration: int = 255) -> None:
        """Enrol ``identity`` in ``domain``."""
        if not 0 <= max_duration <= 0xFF:
            raise StoreError(f"max duration {max_duration} outside 0..255")
        self.domain(domain)
        if self.lookup(domain, identity) is not None:
            raise StoreError(f"{identity} is already enrolled in {domain}")
        try:
            self.domain(domain).credential_for(identity)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        with self._db:
            self._db.execute(
                "INSERT INTO nodes (domain, identity, text, max_duration) VALUES (?, ?, ?, ?)",
                (domain.encode(), identity.encode(), str(identity), max_duration),
            )
            self._audit(now, "add-node", f"domain={domain} identity={identity}")

    def grant(self, domain: OID, identity: OID, permission: Permission, now: float) -> None:
        """Add ``permission`` to the node's permissions."""
        self._require_node(domain, identity)
        data = encode_permission(permission)
        with self._db:
            row = self._db.execute(
                "SELECT COALESCE(MAX(position), -1) FROM permissions"
                " WHERE domain = ? AND identity = ?",
                (domain.encode(), identity.encode()),
            ).fetchone()
            self._db.execute(
                "INSERT INTO permissions (domain, identity, position, permission)"
                " VALUES (?, ?, ?, ?)",
                (domain.encode(), identity.encode(), int(row[0]) + 1, data),
            )
            self._audit(now, "grant", f"domain={domain} identity={identity} {permission}")

    def revoke(self, domain: OID, identity: OID, reason: str, now: float) -> None:
        """Revoke the node: the AS refuses it from now on."""
        self._require_node(domain, identity)
        if self.is_revoked(domain, identity):
            raise StoreError(f"{identity} is already revoked")
        with self._db:
            self._db.execute(
                "INSERT INTO revocations (domain, identity, at, reason) VALUES (?, ?, ?, ?)",
                (domain.encode(), identity.encode(), now, reason),
            )
            self._audit(now, "revoke", f"domain={domain} identity={identity} reason={reason}")

    def rotate(self, domain: OID, identity: OID, now: float) -> int:
        """Bump the node's credential generation (a new identity secret);
        returns the new generation."""
        self._require_node(domain, identity)
        with self._db:
            self._db.execute(
                "UPDATE nodes SET generation = generation + 1 WHERE domain = ? AND identity = ?",
                (domain.encode(), identity.encode()),
            )
            row = self._db.execute(
                "SELECT generation FROM nodes WHERE domain = ? AND identity = ?",
                (domain.encode(), identity.encode()),
            ).fetchone()
            self._audit(now, "rotate", f"domain={domain} identity={identity} gen={row[0]}")
        return int(row[0])

    def is_revoked(self, domain: OID, identity: OID) -> bool:
        """Whether the node was revoked."""
        row = self._db.execute(
            "SELECT 1 FROM revocations WHERE domain = ? AND identity = ?",
            (domain.encode(), identity.encode()),
        ).fetchone()
        return row is not None

    def permissions(self, domain: OID, identity: OID) -> PermissionSet:
        """The node's granted permissions, in grant order."""
        rows = self._db.execute(
            "SELECT permission FROM permissions WHERE domain = ? AND identity = ?"
            " ORDER BY position",
            (domain.encode(), identity.encode()),
        ).fetchall()
        if len(rows) > C2_MAX:
            raise StoreError("too many permissions on one node")
        encoded = encode_c2(len(rows))
        try:
            return decode_permission_set_untrusted(encoded + b"".join(bytes(r[0]) for r in rows))
        except BadPacket as exc:  # the file was edited by hand or is corrupt
            raise StoreError(f"stored permissions of {identity} do not decode: {exc}") from None

    def domains(self) -> list[OID]:
        """Every domain served."""
        rows = self._db.execute("SELECT oid FROM domains ORDER BY text").fetchall()
        return [decode_oid_untrusted(bytes(row[0])) for row in rows]

    def nodes(self, domain: OID | None = None) -> list[NodeSummary]:
        """Every enrolled node (of ``domain``, or of all domains)."""
        rows = self._db.execute(
            "SELECT domain, identity, generation, max_duration FROM nodes ORDER BY text"
        ).fetchall()
        result = []
        for raw_domain, raw_identity, generation, max_duration in rows:
            node_domain = decode_oid_untrusted(bytes(raw_domain))
            if domain is not None and node_domain != domain:
                continue
            identity = decode_oid_untrusted(bytes(raw_identity))
            result.append(
                NodeSummary(
                    node_domain,
                    identity,
                    int(generation),
                    int(max_duration),
                    self.is_revoked(node_domain, identity),
                    self.permissions(node_domain, identity),
                )
            )
        return result

    # -- audit --------------------------------------------------------------------------

    def _audit(self, now: float, event: str, detail: str) -> None:
        self._db.execute(
            "INSERT INTO audit (at, event, detail) VALUES (?, ?, ?)", (now, event, detail)
        )

    def audit(self, now: float, event: str, detail: str) -> None:
        """Append one line to the audit log."""
        with self._db:
            self._audit(now, event, detail)

    def audit_log(self) -> list[AuditEntry]:
        """The whole audit log, oldest first."""
        rows = self._db.execute("SELECT id, at, event, detail FROM audit ORDER BY id").fetchall()
        return [AuditEntry(int(r[0]), float(r[1]), str(r[2]), str(r[3])) for r in rows]

    def try_tamper_audit(self) -> bool:
        """Try to delete the audit log; True if the database allowed it (it
        must not). For operators' self-checks and tests."""
        with contextlib.suppress(sqlite3.DatabaseError), self._db:
            self._db.execute("DELETE FROM audit")
            return True
        return False
