"""The Authenticator's store: domains, nodes, permissions, revocations and an
append-only audit log, as migrations 1 and 2 of service ``authenticator`` on the
services' store layer (:mod:`dofpy_services.store`: a SQLite file, the
embedded default, or a PostgreSQL database that replicas share).

Two faces over the same operations: :class:`AuthenticatorStore` blocks (the
CLI, tests; made by :func:`open_store`) and :class:`AsyncAuthenticatorStore`
runs each call in a worker thread and batches audit lines (the daemon; made by
:func:`open_async_store`).

Identity secrets are not stored: each is derived from its domain's master key
(:func:`dofpy.security.identity.derive_identity_secret`) with the node's
credential generation, so rotating a credential is bumping that number. The
master keys are in the database, which is therefore a secret (the SQLite file
is created 0600).

Every operator request is one transaction that first locks the node's row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write transactions lock the
whole file), so replicas sharing one database never interleave two changes of
the same node (two grants cannot take the same position; two rotations cannot
return the same generation); uniqueness (a domain, a node, a revocation, a
grant) is the primary keys' and a unique index's, so the replica that loses a
race gets a clear ``StoreError``.

The ``audit`` table refuses UPDATE, DELETE (and on PostgreSQL TRUNCATE): its
triggers raise, so the log only ever grows. On PostgreSQL the owner of a table
can disable its triggers: in production the tables belong to an administrative
role and the service runs as a role with only the privileges of
docs/operations.md ("PostgreSQL").
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Self

from dofpy.errors import BadPacket
from dofpy.security.authenticator import NodeRecord
from dofpy.security.identity import MASTER_KEY_SIZE, Domain
from dofpy.wire._codec import C2_MAX, encode_c2
from dofpy.wire.oid import OID, decode_oid_untrusted
from dofpy.wire.permissions import (
    Permission,
    PermissionSet,
    decode_permission_set_untrusted,
    encode_permission,
)
from dofpy_services.authenticator.grants import describe_permission, legacy_permission_text
from dofpy_services.store import (
    CallObserver,
    Database,
    Migration,
    Row,
    StoreConflict,
    StoreError,
    StoreRefused,
    StoreStatistics,
    SyncDatabase,
    Transaction,
    WriteBatcher,
    is_postgres_url,
    open_database,
    open_database_sync,
    open_write_batcher,
)

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SERVICE",
    "AsyncAuthenticatorStore",
    "AuditEntry",
    "AuthenticatorStore",
    "NodeSummary",
    "PostgresStore",
    "SqliteStore",
    "StoreError",
    "is_postgres_url",
    "open_async_store",
    "open_store",
]

SERVICE = "authenticator"

# IF NOT EXISTS (and OR REPLACE, DROP ... IF EXISTS): the tables may predate
# the store layer's migrations, and adopting them must change nothing.
_TABLES_SQLITE = """
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

_TABLES_POSTGRES = """
CREATE TABLE IF NOT EXISTS domains (
    oid BYTEA PRIMARY KEY,
    text TEXT NOT NULL,
    master_key BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    domain BYTEA NOT NULL REFERENCES domains(oid),
    identity BYTEA NOT NULL,
    text TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    max_duration INTEGER NOT NULL DEFAULT 255,
    PRIMARY KEY (domain, identity)
);
CREATE TABLE IF NOT EXISTS permissions (
    domain BYTEA NOT NULL,
    identity BYTEA NOT NULL,
    position INTEGER NOT NULL,
    permission BYTEA NOT NULL,
    PRIMARY KEY (domain, identity, position),
    FOREIGN KEY (domain, identity) REFERENCES nodes(domain, identity)
);
CREATE TABLE IF NOT EXISTS revocations (
    domain BYTEA NOT NULL,
    identity BYTEA NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (domain, identity),
    FOREIGN KEY (domain, identity) REFERENCES nodes(domain, identity)
);
CREATE TABLE IF NOT EXISTS audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;
DROP TRIGGER IF EXISTS audit_no_update ON audit;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
DROP TRIGGER IF EXISTS audit_no_delete ON audit;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
DROP TRIGGER IF EXISTS audit_no_truncate ON audit;
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
"""

# Version 2: audit rows name their domain, node and permission (the permission
# in the text form of :mod:`~dofpy_services.authenticator.grants`, not a Python
# repr); a node holds each permission once. Duplicates stored by version 1 are
# removed, keeping the first grant, each removal audited. Version 1's audit rows
# stay as they are (the log is append-only) and are rendered when read.
_DEDUPLICATE = """
INSERT INTO audit (at, event, detail, domain, node)
SELECT {now}, 'ungrant',
       'duplicate grant at position ' || p.position || ' removed by schema migration 2',
       d.text, n.text
FROM permissions p
JOIN nodes n ON n.domain = p.domain AND n.identity = p.identity
JOIN domains d ON d.oid = p.domain
WHERE EXISTS (SELECT 1 FROM permissions q
              WHERE q.domain = p.domain AND q.identity = p.identity
                AND q.permission = p.permission AND q.position < p.position);
DELETE FROM permissions
WHERE EXISTS (SELECT 1 FROM permissions q
              WHERE q.domain = permissions.domain AND q.identity = permissions.identity
                AND q.permission = permissions.permission
                AND q.position < permissions.position);
CREATE UNIQUE INDEX permissions_once ON permissions (domain, identity, permission);
"""

_STRUCTURED_AUDIT = """
ALTER TABLE audit ADD COLUMN domain TEXT;
ALTER TABLE audit ADD COLUMN node TEXT;
ALTER TABLE audit ADD COLUMN permission TEXT;
"""

MIGRATIONS = (
    Migration(
        1,
        "domains, nodes, permissions, revocations, append-only audit",
        _TABLES_SQLITE,
        _TABLES_POSTGRES,
    ),
    Migration(
        2,
        "audit rows name domain, node and permission; each permission granted once",
        _STRUCTURED_AUDIT + _DEDUPLICATE.format(now="CAST(strftime('%s', 'now') AS REAL)"),
        _STRUCTURED_AUDIT + _DEDUPLICATE.format(now="EXTRACT(EPOCH FROM now())"),
    ),
)

# The version of the tables above; a store refuses a database with a newer one.
SCHEMA_VERSION = len(MIGRATIONS)


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
    """One line of the audit log: when (Unix seconds), what (``event``: the
    command, ``trp-granted``, ...), and, when the event concerns them, the
    domain, the node and the permission in text form (OIDs as ``str(OID)``,
    the permission as :func:`~dofpy_services.authenticator.grants.describe_permission`
    writes it); ``detail`` holds the rest (``reason=stolen``, the peer, ...)."""

    id: int
    at: float
    event: str
    detail: str
    domain: str | None = None
    node: str | None = None
    permission: str | None = None


# -- the operations, each a function of one transaction ----------------------------------


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


def _has_domain(tx: Transaction, domain: OID) -> bool:
    return tx.row("SELECT 1 FROM domains WHERE oid = ?", (domain.encode(),)) is not None


def _domain(tx: Transaction, domain: OID) -> Domain:
    row = tx.row("SELECT master_key FROM domains WHERE oid = ?", (domain.encode(),))
    if row is None:
        raise StoreError(f"unknown domain {domain}")
    return Domain(domain, bytes(row[0]))


def _permissions(tx: Transaction, domain: OID, identity: OID) -> PermissionSet:
    rows = tx.rows(
        "SELECT permission FROM permissions WHERE domain = ? AND identity = ? ORDER BY position",
        (domain.encode(), identity.encode()),
    )
    return _permission_set(identity, [bytes(row[0]) for row in rows])


def _lookup(tx: Transaction, domain: OID, identity: OID) -> NodeRecord | None:
    row = tx.row(
        "SELECT d.master_key, n.generation, n.max_duration,"
        " EXISTS (SELECT 1 FROM revocations r"
        "         WHERE r.domain = n.domain AND r.identity = n.identity)"
        " FROM nodes n JOIN domains d ON d.oid = n.domain"
        " WHERE n.domain = ? AND n.identity = ?",
        (domain.encode(), identity.encode()),
    )
    if row is None:
        return None
    master_key, generation, max_duration, revoked = row
    credential = Domain(domain, bytes(master_key)).credential_for(identity, int(generation))
    return NodeRecord(
        credential, _permissions(tx, domain, identity), bool(revoked), int(max_duration)
    )


def _is_revoked(tx: Transaction, domain: OID, identity: OID) -> bool:
    row = tx.row(
        "SELECT 1 FROM revocations WHERE domain = ? AND identity = ?",
        (domain.encode(), identity.encode()),
    )
    return row is not None


# One audit row: (at, event, detail, domain, node, permission).
AuditLine = tuple[float, str, str, str | None, str | None, str | None]

_INSERT_AUDIT = (
    "INSERT INTO audit (at, event, detail, domain, node, permission) VALUES (?, ?, ?, ?, ?, ?)"
)


def _audit_line(
    now: float,
    event: str,
    detail: str,
    domain: OID | None = None,
    node: OID | None = None,
    permission: Permission | None = None,
) -> AuditLine:
    return (
        now,
        event,
        detail,
        None if domain is None else str(domain),
        None if node is None else str(node),
        None if permission is None else describe_permission(permission),
    )


def _append_audit(
    tx: Transaction,
    now: float,
    event: str,
    detail: str,
    domain: OID | None = None,
    node: OID | None = None,
    permission: Permission | None = None,
) -> None:
    tx.execute(_INSERT_AUDIT, _audit_line(now, event, detail, domain, node, permission))


def _append_audit_lines(tx: Transaction, lines: Sequence[AuditLine]) -> None:
    tx.executemany(_INSERT_AUDIT, lines)


def _lock_node(tx: Transaction, domain: OID, identity: OID) -> None:
    """Inside a write: lock the node's row until the transaction ends (the
    whole file, on SQLite), or ``StoreError`` if there is none."""
    sql = "SELECT 1 FROM nodes WHERE domain = ? AND identity = ?"
    if tx.dialect == "postgresql":
        sql += " FOR UPDATE"
    if tx.row(sql, (domain.encode(), identity.encode())) is None:
        raise StoreError(f"{identity} is not enrolled in {domain}")


def _init_domain(tx: Transaction, domain: OID, master_key: bytes, now: float) -> None:
    if _has_domain(tx, domain):
        raise StoreError(f"domain {domain} already exists")
    tx.execute(
        "INSERT INTO domains (oid, text, master_key) VALUES (?, ?, ?)",
        (domain.encode(), str(domain), master_key),
    )
    _append_audit(tx, now, "init-domain", "", domain)


def _add_node(tx: Transaction, domain: OID, identity: OID, now: float, max_duration: int) -> None:
    try:
        _domain(tx, domain).credential_for(identity)  # refuses unusable identities
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    if _lookup(tx, domain, identity) is not None:
        raise StoreError(f"{identity} is already enrolled in {domain}")
    tx.execute(
        "INSERT INTO nodes (domain, identity, text, max_duration) VALUES (?, ?, ?, ?)",
        (domain.encode(), identity.encode(), str(identity), max_duration),
    )
    _append_audit(tx, now, "add-node", f"max_duration={max_duration}", domain, identity)


def _has_grant(tx: Transaction, domain: OID, identity: OID, blob: bytes) -> bool:
    row = tx.row(
        "SELECT 1 FROM permissions WHERE domain = ? AND identity = ? AND permission = ?",
        (domain.encode(), identity.encode(), blob),
    )
    return row is not None


def _already_granted(identity: OID, permission: Permission) -> StoreError:
    return StoreError(f"{identity} already has the grant '{describe_permission(permission)}'")


def _grant(tx: Transaction, domain: OID, identity: OID, permission: Permission, now: float) -> None:
    key = (domain.encode(), identity.encode())
    blob = encode_permission(permission)
    _lock_node(tx, domain, identity)
    if _has_grant(tx, domain, identity, blob):
        raise _already_granted(identity, permission)
    row = tx.row(
        "SELECT COALESCE(MAX(position), -1) FROM permissions WHERE domain = ? AND identity = ?",
        key,
    )
    position = -1 if row is None else int(row[0])
    tx.execute(
        "INSERT INTO permissions (domain, identity, position, permission) VALUES (?, ?, ?, ?)",
        (*key, position + 1, blob),
    )
    _append_audit(tx, now, "grant", "", domain, identity, permission)


def _ungrant(
    tx: Transaction, domain: OID, identity: OID, permission: Permission, now: float
) -> None:
    _lock_node(tx, domain, identity)
    removed = tx.execute(
        "DELETE FROM permissions WHERE domain = ? AND identity = ? AND permission = ?",
        (domain.encode(), identity.encode(), encode_permission(permission)),
    )
    if not removed:
        raise StoreError(
            f"{identity} has no grant '{describe_permission(permission)}' in {domain}"
            " (see its grants with 'dofpy authenticator list')"
        )
    _append_audit(tx, now, "ungrant", "", domain, identity, permission)


def _revoke(tx: Transaction, domain: OID, identity: OID, reason: str, now: float) -> None:
    _lock_node(tx, domain, identity)
    if _is_revoked(tx, domain, identity):
        raise StoreError(f"{identity} is already revoked")
    tx.execute(
        "INSERT INTO revocations (domain, identity, at, reason) VALUES (?, ?, ?, ?)",
        (domain.encode(), identity.encode(), now, reason),
    )
    _append_audit(tx, now, "revoke", f"reason={reason}", domain, identity)


def _lift_revocation(tx: Transaction, domain: OID, identity: OID) -> bool:
    removed = tx.execute(
        "DELETE FROM revocations WHERE domain = ? AND identity = ?",
        (domain.encode(), identity.encode()),
    )
    return removed > 0


def _not_revoked(domain: OID, identity: OID) -> StoreError:
    return StoreError(f"{identity} is not revoked in {domain}")


def _reinstate(tx: Transaction, domain: OID, identity: OID, now: float) -> None:
    _lock_node(tx, domain, identity)
    if not _lift_revocation(tx, domain, identity):
        raise _not_revoked(domain, identity)
    _append_audit(tx, now, "reinstate", "", domain, identity)


def _bump_generation(tx: Transaction, domain: OID, identity: OID) -> int:
    row = tx.row(
        "UPDATE nodes SET generation = generation + 1"
        " WHERE domain = ? AND identity = ? RETURNING generation",
        (domain.encode(), identity.encode()),
    )
    if row is None:  # pragma: no cover - the caller locked the row
        raise StoreError(f"{identity} is not enrolled in {domain}")
    return int(row[0])


def _re_enrol(tx: Transaction, domain: OID, identity: OID, now: float) -> int:
    _lock_node(tx, domain, identity)
    if not _lift_revocation(tx, domain, identity):
        raise StoreError(
            f"{identity} is not revoked in {domain}: 'rotate' gives an active node a new secret"
        )
    generation = _bump_generation(tx, domain, identity)
    _append_audit(tx, now, "re-enrol", f"generation={generation}", domain, identity)
    return generation


def _rotate(tx: Transaction, domain: OID, identity: OID, now: float) -> int:
    _lock_node(tx, domain, identity)
    if _is_revoked(tx, domain, identity):
        # Its new secret would be refused like the old one.
        raise StoreError(
            f"{identity} is revoked in {domain}: a new secret would be refused too;"
            " 'dofpy authenticator re-enrol' lifts the revocation with a new secret"
            " ('reinstate' lifts it alone)"
        )
    generation = _bump_generation(tx, domain, identity)
    _append_audit(tx, now, "rotate", f"generation={generation}", domain, identity)
    return generation


def _domains(tx: Transaction) -> list[OID]:
    return [_stored_oid(bytes(row[0])) for row in tx.rows("SELECT oid FROM domains ORDER BY text")]


def _nodes(tx: Transaction, domain: OID | None) -> list[NodeSummary]:
    # Three queries whatever the number of nodes: one round trip per node
    # would make ``list`` slow on a remote database.
    # ``domain = COALESCE(?, domain)`` matches every row when no domain is given.
    params = (None if domain is None else domain.encode(),)
    nodes = tx.rows(
        "SELECT domain, identity, generation, max_duration FROM nodes"
        " WHERE domain = COALESCE(?, domain) ORDER BY text",
        params,
    )
    revoked = {
        (bytes(r[0]), bytes(r[1]))
        for r in tx.rows(
            "SELECT domain, identity FROM revocations WHERE domain = COALESCE(?, domain)", params
        )
    }
    granted: dict[tuple[bytes, bytes], list[bytes]] = {}
    for raw_domain, raw_identity, blob in tx.rows(
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


# Schema version 1 wrote "domain=OID identity=OID REST" (or "domain=OID") into
# ``detail``, REST being the permission's repr for a grant.
_OID_TEXT = r"\[(?:[^\]\\]|\\.)*\]"
_LEGACY_DETAIL = re.compile(
    rf"domain=(?P<domain>{_OID_TEXT})(?: identity=(?P<node>{_OID_TEXT}))?(?: (?P<rest>.*))?",
    re.S,
)
_LEGACY_GENERATION = re.compile(r"gen=(\d+)")


def _entry(row: Row) -> AuditEntry:
    entry_id, at, event, detail, domain, node, permission = row
    entry = AuditEntry(
        int(entry_id),
        float(at),
        str(event),
        str(detail),
        None if domain is None else str(domain),
        None if node is None else str(node),
        None if permission is None else str(permission),
    )
    if domain is not None or event.startswith("trp-"):
        return entry
    legacy = _LEGACY_DETAIL.fullmatch(entry.detail)
    if legacy is None:
        return entry
    rest = legacy.group("rest") or ""
    if event == "grant":
        permission = legacy_permission_text(rest) or rest
        rest = ""
    elif event == "rotate":
        rest = _LEGACY_GENERATION.sub(r"generation=\1", rest)
    return replace(
        entry,
        domain=legacy.group("domain"),
        node=legacy.group("node"),
        permission=permission,
        detail=rest,
    )


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _concerns(entry: AuditEntry, node: str) -> bool:
    if entry.node == node:
        return True
    named = rf"(?:^|\s)(?:identity|initiator|responder)={re.escape(node)}(?:\s|$)"
    return re.search(named, entry.detail) is not None


def _audit_log(
    tx: Transaction, since: float | None = None, node: OID | None = None
) -> list[AuditEntry]:
    sql = "SELECT id, at, event, detail, domain, node, permission FROM audit"
    where: list[str] = []
    params: list[object] = []
    if since is not None:
        where.append("at >= ?")
        params.append(since)
    if node is not None:
        # The node's column, or its text in the detail (TRP decisions, schema 1's
        # rows): narrowed here, decided exactly by _concerns below.
        where.append("(node = ? OR detail LIKE ? ESCAPE '\\')")
        params += [str(node), f"%{_like_escaped(str(node))}%"]
    if where:
        sql += " WHERE " + " AND ".join(where)
    entries = [_entry(row) for row in tx.rows(sql + " ORDER BY id", params)]
    if node is not None:
        entries = [entry for entry in entries if _concerns(entry, str(node))]
    return entries


def _delete_audit(tx: Transaction) -> None:
    tx.execute("DELETE FROM audit")


# -- the blocking face ---------------------------------------------------------------------


class AuthenticatorStore:
    """The Authenticator's database, blocking: what the CLI (and the daemon
    until it moves to :class:`AsyncAuthenticatorStore`) needs of it; a
    :class:`dofpy.security.authenticator.CredentialStore`. Made by
    :func:`open_store`; safe to use from several threads."""

    def __init__(self, database: SyncDatabase) -> None:
        self.database = database

    def close(self) -> None:
        """Close the database."""
        self.database.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- CredentialStore ------------------------------------------------------------

    def has_domain(self, domain: OID) -> bool:
        """Whether this AS serves ``domain``."""
        return self.database.read(partial(_has_domain, domain=domain), kind="has_domain")

    def lookup(self, domain: OID, identity: OID) -> NodeRecord | None:
        """The record of ``identity`` enrolled in ``domain``, or ``None``."""
        return self.database.read(partial(_lookup, domain=domain, identity=identity), kind="lookup")

    # -- administration ---------------------------------------------------------------

    def domain(self, domain: OID) -> Domain:
        """The domain with its master key; ``StoreError`` if unknown."""
        return self.database.read(partial(_domain, domain=domain), kind="domain")

    def init_domain(self, domain: OID, master_key: bytes, now: float) -> Domain:
        """Create a domain with ``master_key`` (32 bytes)."""
        if len(master_key) != MASTER_KEY_SIZE:
            raise StoreError(f"a master key is {MASTER_KEY_SIZE} bytes")
        try:
            self.database.write(
                partial(_init_domain, domain=domain, master_key=master_key, now=now),
                kind="init_domain",
            )
        except StoreConflict:  # another replica created it meanwhile
            raise StoreError(f"domain {domain} already exists") from None
        return Domain(domain, master_key)

    def add_node(self, domain: OID, identity: OID, now: float, max_duration: int = 255) -> None:
        """Enrol ``identity`` in ``domain``."""
        if not 0 <= max_duration <= 0xFF:
            raise StoreError(f"max duration {max_duration} outside 0..255")
        try:
            self.database.write(
                partial(
                    _add_node, domain=domain, identity=identity, now=now, max_duration=max_duration
                ),
                kind="add_node",
            )
        except StoreConflict:  # another replica enrolled it meanwhile
            raise StoreError(f"{identity} is already enrolled in {domain}") from None

    def grant(self, domain: OID, identity: OID, permission: Permission, now: float) -> None:
        """Add ``permission`` to the node's permissions; ``StoreError`` if the
        node holds it already (a node holds each permission once)."""
        try:
            self.database.write(
                partial(_grant, domain=domain, identity=identity, permission=permission, now=now),
                kind="grant",
            )
        except StoreConflict:  # another replica granted it meanwhile
            raise _already_granted(identity, permission) from None

    def ungrant(self, domain: OID, identity: OID, permission: Permission, now: float) -> None:
        """Remove ``permission`` from the node's permissions; ``StoreError``
        if the node does not hold it. Sessions already keyed keep what they
        were granted until their duration ends."""
        self.database.write(
            partial(_ungrant, domain=domain, identity=identity, permission=permission, now=now),
            kind="ungrant",
        )

    def revoke(self, domain: OID, identity: OID, reason: str, now: float) -> None:
        """Revoke the node: the AS refuses it from now on."""
        try:
            self.database.write(
                partial(_revoke, domain=domain, identity=identity, reason=reason, now=now),
                kind="revoke",
            )
        except StoreConflict:  # pragma: no cover - the node's row is locked first
            raise StoreError(f"{identity} is already revoked") from None

    def reinstate(self, domain: OID, identity: OID, now: float) -> None:
        """Lift the node's revocation: its identity secret works again.
        ``StoreError`` if it is not revoked."""
        self.database.write(
            partial(_reinstate, domain=domain, identity=identity, now=now), kind="reinstate"
        )

    def re_enrol(self, domain: OID, identity: OID, now: float) -> int:
        """Lift the node's revocation and give it a new identity secret (a
        device back from repair: the secret it had stays refused); returns the
        new generation. ``StoreError`` if it is not revoked."""
        return self.database.write(
            partial(_re_enrol, domain=domain, identity=identity, now=now), kind="re_enrol"
        )

    def rotate(self, domain: OID, identity: OID, now: float) -> int:
        """Bump the node's credential generation (a new identity secret);
        returns the new generation. ``StoreError`` if the node is revoked (its
        new secret would be refused too: see :meth:`re_enrol`)."""
        return self.database.write(
            partial(_rotate, domain=domain, identity=identity, now=now), kind="rotate"
        )

    def is_revoked(self, domain: OID, identity: OID) -> bool:
        """Whether the node was revoked."""
        return self.database.read(
            partial(_is_revoked, domain=domain, identity=identity), kind="is_revoked"
        )

    def permissions(self, domain: OID, identity: OID) -> PermissionSet:
        """The node's granted permissions, in grant order."""
        return self.database.read(
            partial(_permissions, domain=domain, identity=identity), kind="permissions"
        )

    def domains(self) -> list[OID]:
        """Every domain served."""
        return self.database.read(_domains, kind="domains")

    def nodes(self, domain: OID | None = None) -> list[NodeSummary]:
        """Every enrolled node (of ``domain``, or of all domains)."""
        return self.database.read(partial(_nodes, domain=domain), kind="nodes")

    # -- audit --------------------------------------------------------------------------

    def audit(
        self,
        now: float,
        event: str,
        detail: str,
        *,
        domain: OID | None = None,
        node: OID | None = None,
        permission: Permission | None = None,
    ) -> None:
        """Append one line to the audit log: ``event`` at ``now``, about
        ``domain``, ``node`` and ``permission`` when given, ``detail`` the rest."""
        self.database.write(
            partial(
                _append_audit,
                now=now,
                event=event,
                detail=detail,
                domain=domain,
                node=node,
                permission=permission,
            ),
            kind="audit",
        )

    def audit_log(self, *, since: float | None = None, node: OID | None = None) -> list[AuditEntry]:
        """The audit log, oldest first: every line, or those at or after
        ``since`` (Unix seconds) and those concerning ``node`` (as the node of
        a command, or either side of a TRP decision)."""
        return self.database.read(partial(_audit_log, since=since, node=node), kind="audit_log")

    def try_tamper_audit(self) -> bool:
        """Try to delete the audit log; True if the database allowed it (it
        must not). For operators' self-checks and tests."""
        try:
            self.database.write(_delete_audit, kind="tamper_audit")
        except StoreRefused:
            return False
        return True


def open_store(
    location: str | os.PathLike[str], *, on_call: CallObserver | None = None
) -> AuthenticatorStore:
    """The Authenticator's store at ``location``: a ``postgresql://`` URL, or a
    SQLite file (created if missing); migrated to :data:`SCHEMA_VERSION`."""
    return AuthenticatorStore(
        open_database_sync(location, service=SERVICE, migrations=MIGRATIONS, on_call=on_call)
    )


class SqliteStore(AuthenticatorStore):
    """An :class:`AuthenticatorStore` in the SQLite file at ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if is_postgres_url(path):
            raise StoreError(f"{path} is a PostgreSQL URL, not a file")
        super().__init__(open_database_sync(path, service=SERVICE, migrations=MIGRATIONS))


class PostgresStore(AuthenticatorStore):
    """An :class:`AuthenticatorStore` in the PostgreSQL database at ``url``."""

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        if not is_postgres_url(url):
            raise StoreError(f"{url} is not a postgresql:// URL")
        super().__init__(
            open_database_sync(url, service=SERVICE, migrations=MIGRATIONS, pool_size=pool_size)
        )


# -- the trio face ----------------------------------------------------------------------


class AsyncAuthenticatorStore:
    """The Authenticator's database for the daemon: every call in a worker
    thread (never on the trio loop), audit lines committed in batches. Made by
    :func:`open_async_store`; ``sync`` is the blocking face on the same
    database (for start-up and administration; leaving the ``async with``
    closes it, not ``sync.close``)."""

    def __init__(self, database: Database, audit_lines: WriteBatcher[AuditLine]) -> None:
        self.database = database
        self.sync = AuthenticatorStore(database.sync)
        self._audit_lines = audit_lines

    async def has_domain(self, domain: OID) -> bool:
        """Whether this AS serves ``domain``."""
        return await self.database.read(partial(_has_domain, domain=domain), kind="has_domain")

    async def lookup(self, domain: OID, identity: OID) -> NodeRecord | None:
        """The record of ``identity`` enrolled in ``domain``, or ``None``."""
        return await self.database.read(
            partial(_lookup, domain=domain, identity=identity), kind="lookup"
        )

    async def domain(self, domain: OID) -> Domain:
        """The domain with its master key; ``StoreError`` if unknown."""
        return await self.database.read(partial(_domain, domain=domain), kind="domain")

    async def audit(
        self,
        now: float,
        event: str,
        detail: str,
        *,
        domain: OID | None = None,
        node: OID | None = None,
        permission: Permission | None = None,
    ) -> None:
        """Append one line to the audit log (see :meth:`AuthenticatorStore.audit`);
        returns once it committed (in a batch with whatever other lines were
        submitted meanwhile)."""
        await self._audit_lines.submit(_audit_line(now, event, detail, domain, node, permission))

    async def audit_log(
        self, *, since: float | None = None, node: OID | None = None
    ) -> list[AuditEntry]:
        """The audit log, oldest first (see :meth:`AuthenticatorStore.audit_log`)."""
        return await self.database.read(
            partial(_audit_log, since=since, node=node), kind="audit_log"
        )

    def statistics(self) -> StoreStatistics:
        """The database's counters."""
        return self.database.statistics()


@asynccontextmanager
async def open_async_store(
    location: str | os.PathLike[str],
    *,
    pool_size: int = 4,
    audit_batch: int = 64,
    audit_delay: float = 0.005,
    on_call: CallObserver | None = None,
) -> AsyncIterator[AsyncAuthenticatorStore]:
    """``async with open_async_store(location) as store:`` -- the
    Authenticator's store for trio: ``pool_size`` calls at once, audit lines
    gathered up to ``audit_batch`` per transaction for at most ``audit_delay``
    seconds. Leaving the block commits the audit lines submitted, then closes."""
    async with (
        open_database(
            location, service=SERVICE, migrations=MIGRATIONS, pool_size=pool_size, on_call=on_call
        ) as database,
        open_write_batcher(
            database,
            _append_audit_lines,
            max_items=audit_batch,
            max_delay=audit_delay,
            kind="audit",
        ) as audit_lines,
    ):
        yield AsyncAuthenticatorStore(database, audit_lines)
