"""What every Authenticator store is: the records it returns, the
:class:`AuthenticatorStore` protocol the daemon and the CLI use, and
:class:`SqlStore`, the behaviour both SQL backends share.

Identity secrets are not stored: each is derived from its domain's master key
(:func:`dofpy.security.identity.derive_identity_secret`) with the node's
credential generation, so rotating a credential is bumping that number. The
master keys are in the database, which is therefore a secret.

:class:`SqlStore` writes each operator request as one transaction that first
locks the node's row, so that several Authenticator replicas sharing one
database never interleave two changes of the same node (two grants cannot take
the same position; two rotations cannot return the same generation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, Self

from dofpy.errors import BadPacket
from dofpy.security.authority import CredentialStore, NodeRecord
from dofpy.security.identity import MASTER_KEY_SIZE, Domain
from dofpy.wire._codec import C2_MAX, encode_c2
from dofpy.wire.oid import OID, decode_oid_untrusted
from dofpy.wire.permissions import (
    Permission,
    PermissionSet,
    decode_permission_set_untrusted,
    encode_permission,
)

__all__ = [
    "SCHEMA_VERSION",
    "AuditEntry",
    "AuthenticatorStore",
    "NodeSummary",
    "SqlStore",
    "StoreError",
]

# The version of the tables below; a store refuses a database with a newer one.
SCHEMA_VERSION = 1

# A database row as the drivers return it (bytes, int, float, str columns).
Row = tuple[Any, ...]


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


class AuthenticatorStore(CredentialStore, Protocol):
    """The Authenticator's database: what the daemon and the CLI need of it
    (:class:`~dofpy_services.authenticator.store.SqliteStore` and
    :class:`~dofpy_services.authenticator.postgres_store.PostgresStore`)."""

    def close(self) -> None:
        """Close the database."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def domain(self, domain: OID) -> Domain:
        """The domain with its master key; ``StoreError`` if unknown."""
        ...

    def init_domain(self, domain: OID, master_key: bytes, now: float) -> Domain:
        """Create a domain with ``master_key`` (32 bytes)."""
        ...

    def add_node(self, domain: OID, identity: OID, now: float, max_duration: int = 255) -> None:
        """Enrol ``identity`` in ``domain``."""
        ...

    def grant(self, domain: OID, identity: OID, permission: Permission, now: float) -> None:
        """Add ``permission`` to the node's permissions."""
        ...

    def revoke(self, domain: OID, identity: OID, reason: str, now: float) -> None:
        """Revoke the node: the AS refuses it from now on."""
        ...

    def rotate(self, domain: OID, identity: OID, now: float) -> int:
        """Bump the node's credential generation; returns the new one."""
        ...

    def is_revoked(self, domain: OID, identity: OID) -> bool:
        """Whether the node was revoked."""
        ...

    def permissions(self, domain: OID, identity: OID) -> PermissionSet:
        """The node's granted permissions, in grant order."""
        ...

    def domains(self) -> list[OID]:
        """Every domain served."""
        ...

    def nodes(self, domain: OID | None = None) -> list[NodeSummary]:
        """Every enrolled node (of ``domain``, or of all domains)."""
        ...

    def audit(self, now: float, event: str, detail: str) -> None:
        """Append one line to the audit log."""
        ...

    def audit_log(self) -> list[AuditEntry]:
        """The whole audit log, oldest first."""
        ...

    def try_tamper_audit(self) -> bool:
        """Try to delete the audit log; True if the database allowed it."""
        ...


def _permission_set(identity: OID, blobs: Sequence[bytes]) -> PermissionSet:
    if len(blobs) > C2_MAX:
        raise StoreError("too many permissions on one node")
    try:
        return decode_permission_set_untrusted(encode_c2(len(blobs)) + b"".join(blobs))
    except BadPacket as exc:  # the database was edited by hand or is corrupt
        raise StoreError(f"stored permissions of {identity} do not decode: {exc}") from None


def _stored_oid(data: bytes) -> OID:
    try:
        return decode_oid_untrusted(data)
    except BadPacket as exc:
        raise StoreError(f"a stored OID does not decode: {exc}") from None


class SqlStore(ABC):
    """The Authenticator's operations over a SQL database; a backend supplies
    the connection primitives. Statements use ``?`` placeholders and portable
    SQL."""

    # Reads the node's row and locks it until the transaction ends, where the
    # backend has row locks (SQLite's transactions lock the whole file).
    _LOCK_NODE_SQL = "SELECT 1 FROM nodes WHERE domain = ? AND identity = ?"

    # -- backend primitives ---------------------------------------------------------

    @abstractmethod
    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one statement; its rows (empty for statements without any)."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[object]:
        """A write transaction: committed on exit, rolled back on an exception."""

    @abstractmethod
    def _is_conflict(self, exc: Exception) -> bool:
        """Whether ``exc`` is a uniqueness violation (another writer was first)."""

    @abstractmethod
    def close(self) -> None:
        """Close the database."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _row(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    # -- CredentialStore ------------------------------------------------------------

    def has_domain(self, domain: OID) -> bool:
        """Whether this AS serves ``domain``."""
        return self._row("SELECT 1 FROM domains WHERE oid = ?", (domain.encode(),)) is not None

    def domain(self, domain: OID) -> Domain:
        """The domain with its master key; ``StoreError`` if unknown."""
        row = self._row("SELECT master_key FROM domains WHERE oid = ?", (domain.encode(),))
        if row is None:
            raise StoreError(f"unknown domain {domain}")
        return Domain(domain, bytes(row[0]))

    def lookup(self, domain: OID, identity: OID) -> NodeRecord | None:
        """The record of ``identity`` enrolled in ``domain``, or ``None``."""
        key = (domain.encode(), identity.encode())
        row = self._row(
            "SELECT d.master_key, n.generation, n.max_duration,"
            " EXISTS (SELECT 1 FROM revocations r"
            "         WHERE r.domain = n.domain AND r.identity = n.identity)"
            " FROM nodes n JOIN domains d ON d.oid = n.domain"
            " WHERE n.domain = ? AND n.identity = ?",
            key,
        )
        if row is None:
            return None
        master_key, generation, max_duration, revoked = row
        credential = Domain(domain, bytes(master_key)).credential_for(identity, int(generation))
        return NodeRecord(
            credential, self.permissions(domain, identity), bool(revoked), int(max_duration)
        )

    # -- administration ---------------------------------------------------------------

    def init_domain(self, domain: OID, master_key: bytes, now: float) -> Domain:
        """Create a domain with ``master_key`` (32 bytes)."""
        if len(master_key) != MASTER_KEY_SIZE:
            raise StoreError(f"a master key is {MASTER_KEY_SIZE} bytes")
        result = Domain(domain, master_key)
        try:
            with self._transaction():
                if self.has_domain(domain):
                    raise StoreError(f"domain {domain} already exists")
                self._rows(
                    "INSERT INTO domains (oid, text, master_key) VALUES (?, ?, ?)",
                    (domain.encode(), str(domain), master_key),
                )
                self._audit(now, "init-domain", f"domain={domain}")
        except StoreError:
            raise
        except Exception as exc:
            if self._is_conflict(exc):  # another replica created it meanwhile
                raise StoreError(f"domain {domain} already exists") from None
            raise
        return result

    def _lock_node(self, domain: OID, identity: OID) -> None:
        """Inside a transaction: lock the node's row, or ``StoreError``."""
        row = self._row(
            self._LOCK_NODE_SQL,
            (domain.encode(), identity.encode()),
        )
        if row is None:
            raise StoreError(f"{identity} is not enrolled in {domain}")

    def add_node(self, domain: OID, identity: OID, now: float, max_duration: int = 255) -> None:
        """Enrol ``identity`` in ``domain``."""
        if not 0 <= max_duration <= 0xFF:
            raise StoreError(f"max duration {max_duration} outside 0..255")
        try:
            self.domain(domain).credential_for(identity)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        conflict = StoreError(f"{identity} is already enrolled in {domain}")
        try:
            with self._transaction():
                if self.lookup(domain, identity) is not None:
                    raise conflict
                self._rows(
                    "INSERT INTO nodes (domain, identity, text, max_duration) VALUES (?, ?, ?, ?)",
                    (domain.encode(), identity.encode(), str(identity), max_duration),
                )
                self._audit(now, "add-node", f"domain={domain} identity={identity}")
        except StoreError:
            raise
        except Exception as exc:
            if self._is_conflict(exc):  # another replica enrolled it meanwhile
                raise conflict from None
            raise

    def grant(self, domain: OID, identity: OID, permission: Permission, now: float) -> None:
        """Add ``permission`` to the node's permissions."""
        data = encode_permission(permission)
        key = (domain.encode(), identity.encode())
        with self._transaction():
            self._lock_node(domain, identity)
            row = self._row(
                "SELECT COALESCE(MAX(position), -1) FROM permissions"
                " WHERE domain = ? AND identity = ?",
                key,
            )
            position = -1 if row is None else int(row[0])
            self._rows(
                "INSERT INTO permissions (domain, identity, position, permission)"
                " VALUES (?, ?, ?, ?)",
                (*key, position + 1, data),
            )
            self._audit(now, "grant", f"domain={domain} identity={identity} {permission}")

    def revoke(self, domain: OID, identity: OID, reason: str, now: float) -> None:
        """Revoke the node: the AS refuses it from now on."""
        with self._transaction():
            self._lock_node(domain, identity)
            if self.is_revoked(domain, identity):
                raise StoreError(f"{identity} is already revoked")
            self._rows(
                "INSERT INTO revocations (domain, identity, at, reason) VALUES (?, ?, ?, ?)",
                (domain.encode(), identity.encode(), now, reason),
            )
            self._audit(now, "revoke", f"domain={domain} identity={identity} reason={reason}")

    def rotate(self, domain: OID, identity: OID, now: float) -> int:
        """Bump the node's credential generation (a new identity secret);
        returns the new generation."""
        with self._transaction():
            self._lock_node(domain, identity)
            row = self._row(
                "UPDATE nodes SET generation = generation + 1"
                " WHERE domain = ? AND identity = ? RETURNING generation",
                (domain.encode(), identity.encode()),
            )
            if row is None:  # pragma: no cover - the row is locked above
                raise StoreError(f"{identity} is not enrolled in {domain}")
            generation = int(row[0])
            self._audit(now, "rotate", f"domain={domain} identity={identity} gen={generation}")
        return generation

    def is_revoked(self, domain: OID, identity: OID) -> bool:
        """Whether the node was revoked."""
        row = self._row(
            "SELECT 1 FROM revocations WHERE domain = ? AND identity = ?",
            (domain.encode(), identity.encode()),
        )
        return row is not None

    def permissions(self, domain: OID, identity: OID) -> PermissionSet:
        """The node's granted permissions, in grant order."""
        rows = self._rows(
            "SELECT permission FROM permissions WHERE domain = ? AND identity = ?"
            " ORDER BY position",
            (domain.encode(), identity.encode()),
        )
        return _permission_set(identity, [bytes(row[0]) for row in rows])

    def domains(self) -> list[OID]:
        """Every domain served."""
        rows = self._rows("SELECT oid FROM domains ORDER BY text")
        return [_stored_oid(bytes(row[0])) for row in rows]

    def nodes(self, domain: OID | None = None) -> list[NodeSummary]:
        """Every enrolled node (of ``domain``, or of all domains)."""
        # Three queries whatever the number of nodes: one round trip per node
        # would make ``list`` slow on a remote database.
        # ``domain = COALESCE(?, domain)`` matches every row when no domain is given.
        params = (None if domain is None else domain.encode(),)
        nodes = self._rows(
            "SELECT domain, identity, generation, max_duration FROM nodes"
            " WHERE domain = COALESCE(?, domain) ORDER BY text",
            params,
        )
        revoked = {
            (bytes(r[0]), bytes(r[1]))
            for r in self._rows(
                "SELECT domain, identity FROM revocations WHERE domain = COALESCE(?, domain)",
                params,
            )
        }
        granted: dict[tuple[bytes, bytes], list[bytes]] = {}
        for raw_domain, raw_identity, blob in self._rows(
            "SELECT domain, identity, permission FROM permissions"
            " WHERE domain = COALESCE(?, domain) ORDER BY position",
            params,
        ):
            granted.setdefault((bytes(raw_domain), bytes(raw_identity)), []).append(bytes(blob))
        result = []
        for raw_domain, raw_identity, generation, max_duration in nodes:
            key = (bytes(raw_domain), bytes(raw_identity))
            identity = _stored_oid(key[1])
            result.append(
                NodeSummary(
                    _stored_oid(key[0]),
                    identity,
                    int(generation),
                    int(max_duration),
                    key in revoked,
                    _permission_set(identity, granted.get(key, [])),
                )
            )
        return result

    # -- audit --------------------------------------------------------------------------

    def _audit(self, now: float, event: str, detail: str) -> None:
        self._rows("INSERT INTO audit (at, event, detail) VALUES (?, ?, ?)", (now, event, detail))

    def audit(self, now: float, event: str, detail: str) -> None:
        """Append one line to the audit log."""
        with self._transaction():
            self._audit(now, event, detail)

    def audit_log(self) -> list[AuditEntry]:
        """The whole audit log, oldest first."""
        rows = self._rows("SELECT id, at, event, detail FROM audit ORDER BY id")
        return [AuditEntry(int(r[0]), float(r[1]), str(r[2]), str(r[3])) for r in rows]

    def try_tamper_audit(self) -> bool:
        """Try to delete the audit log; True if the database allowed it (it
        must not). For operators' self-checks and tests."""
        try:
            with self._transaction():
                self._rows("DELETE FROM audit")
        except Exception as exc:
            if self._is_refused(exc):
                return False
            raise
        return True

    @abstractmethod
    def _is_refused(self, exc: Exception) -> bool:
        """Whether ``exc`` is the database refusing a statement (a trigger or
        a missing privilege), as opposed to a broken connection."""
