"""The Authenticator's stores: one behavioural suite run on SQLite and on a
real PostgreSQL (``db_location``), replicas sharing one database, concurrent
writers, the append-only audit log, schema versions and, on PostgreSQL, the
privileges docs/operations.md tells operators to set."""

from __future__ import annotations

import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from dofpy.testing.postgres import with_options
from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import (
    Action,
    BindingPermission,
    IamPermission,
    ProviderPermission,
    RequestorPermission,
    encode_permission,
)
from dofpy_services.authenticator import (
    AuthenticatorStore,
    SqliteStore,
    StoreError,
    open_async_store,
    open_store,
)
from dofpy_services.authenticator.store import SCHEMA_VERSION, is_postgres_url

DOMAIN = OID(6, b"example.org")
OTHER_DOMAIN = OID(6, b"other.org")
DEVICE = OID(3, b"device@example.org")
CLIENT = OID(3, b"client@example.org")
KEY = bytes(range(32))
OPERATIONS_MD = Path(__file__).resolve().parents[2] / "docs" / "operations.md"

T = TypeVar("T")


def raw(location: str, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Run ``statement`` (``?`` placeholders) on the database directly,
    bypassing the store, as an intruder or a careless operator would."""
    if is_postgres_url(location):
        import psycopg  # noqa: PLC0415

        with psycopg.connect(location, autocommit=True) as conn:
            cursor = conn.execute(statement.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description is not None else []
    conn = sqlite3.connect(location, isolation_level=None)
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


def enrolled(location: str) -> AuthenticatorStore:
    store = open_store(location)
    store.init_domain(DOMAIN, KEY, 1.0)
    store.add_node(DOMAIN, DEVICE, 2.0)
    store.add_node(DOMAIN, CLIENT, 3.0, max_duration=60)
    return store


def in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(i)`` for i in range(count) on as many threads, started
    together; their results, or the first exception."""
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:  # handed to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


# -- the behavioural suite, on both backends ----------------------------------------------


def test_enrol_grant_and_lookup(db_location: str) -> None:
    binding = BindingPermission(Action.READ | Action.SUBSCRIBE, OID(0), IID(1, b"\x01"))
    with enrolled(db_location) as store:
        store.init_domain(OTHER_DOMAIN, bytes(32), 4.0)
        store.add_node(OTHER_DOMAIN, DEVICE, 5.0)
        for permission in (binding, RequestorPermission(), IamPermission(OID(3, b"alias"))):
            store.grant(DOMAIN, CLIENT, permission, 6.0)

        assert store.has_domain(DOMAIN) and not store.has_domain(OID(6, b"nowhere"))
        assert store.domains() == [DOMAIN, OTHER_DOMAIN]
        assert store.domain(DOMAIN).master_key == KEY
        record = store.lookup(DOMAIN, CLIENT)
        assert record is not None
        assert record.credential == store.domain(DOMAIN).credential_for(CLIENT)
        assert record.max_duration == 60 and not record.revoked
        assert list(record.permissions) == [
            binding,
            RequestorPermission(),
            IamPermission(OID(3, b"alias")),
        ]
        assert store.lookup(DOMAIN, OID(3, b"ghost")) is None
        assert store.lookup(OID(6, b"nowhere"), CLIENT) is None

        everyone = store.nodes()
        assert [(n.domain, n.identity) for n in everyone] == [
            (DOMAIN, CLIENT),
            (DOMAIN, DEVICE),
            (OTHER_DOMAIN, DEVICE),
        ]
        assert list(everyone[0].permissions) == list(record.permissions)
        assert [n.identity for n in store.nodes(OTHER_DOMAIN)] == [DEVICE]
        assert store.nodes(OID(6, b"nowhere")) == []


def test_rotate_and_revoke(db_location: str) -> None:
    with enrolled(db_location) as store:
        first = store.domain(DOMAIN).credential_for(DEVICE).secret
        assert store.rotate(DOMAIN, DEVICE, 7.0) == 1
        assert store.rotate(DOMAIN, DEVICE, 8.0) == 2
        record = store.lookup(DOMAIN, DEVICE)
        assert record is not None and record.credential.generation == 2
        assert record.credential.secret != first
        store.revoke(DOMAIN, DEVICE, "stolen", 9.0)
        assert store.is_revoked(DOMAIN, DEVICE) and not store.is_revoked(DOMAIN, CLIENT)
        record = store.lookup(DOMAIN, DEVICE)
        assert record is not None and record.revoked
        summary = {n.identity: n for n in store.nodes(DOMAIN)}
        assert summary[DEVICE].revoked and summary[DEVICE].generation == 2
        assert not summary[CLIENT].revoked and summary[CLIENT].generation == 0
        events = [(e.event, e.at) for e in store.audit_log()]
        assert events == [
            ("init-domain", 1.0),
            ("add-node", 2.0),
            ("add-node", 3.0),
            ("rotate", 7.0),
            ("rotate", 8.0),
            ("revoke", 9.0),
        ]
        assert store.audit_log()[-1].detail.endswith("reason=stolen")


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (lambda s: s.init_domain(DOMAIN, KEY, 0.0), "already exists"),
        (lambda s: s.init_domain(OTHER_DOMAIN, bytes(31), 0.0), "32 bytes"),
        (lambda s: s.add_node(DOMAIN, DEVICE, 0.0), "already enrolled"),
        (lambda s: s.add_node(OTHER_DOMAIN, DEVICE, 0.0), "unknown domain"),
        (lambda s: s.add_node(DOMAIN, OID(3, b"x"), 0.0, max_duration=256), "0..255"),
        (lambda s: s.add_node(DOMAIN, OID(0), 0.0), "plain, non-broadcast"),
        (lambda s: s.grant(DOMAIN, OID(3, b"ghost"), ProviderPermission(), 0.0), "not enrolled"),
        (lambda s: s.revoke(OTHER_DOMAIN, DEVICE, "why", 0.0), "not enrolled"),
        (lambda s: s.rotate(DOMAIN, OID(3, b"ghost"), 0.0), "not enrolled"),
        (lambda s: s.domain(OTHER_DOMAIN), "unknown domain"),
    ],
)
def test_refused_requests_change_nothing(
    db_location: str, operation: Callable[[AuthenticatorStore], object], message: str
) -> None:
    with enrolled(db_location) as store:
        before = (store.nodes(), store.domains(), store.audit_log())
        with pytest.raises(StoreError, match=message):
            operation(store)
        assert (store.nodes(), store.domains(), store.audit_log()) == before


READS = BindingPermission(Action.READ | Action.SUBSCRIBE, OID(0), IID(1, b"\x01"))


def test_a_permission_is_granted_once(db_location: str) -> None:
    with enrolled(db_location) as store:
        store.grant(DOMAIN, CLIENT, READS, 4.0)
        before = (store.nodes(), store.audit_log())
        same = BindingPermission(Action.SUBSCRIBE | Action.READ, OID(0), IID(1, b"\x01"))
        with pytest.raises(StoreError, match=r"already has the grant 'rs \* \[\{01\}:\{01\}\]'"):
            store.grant(DOMAIN, CLIENT, same, 5.0)
        assert (store.nodes(), store.audit_log()) == before
        assert list(store.permissions(DOMAIN, CLIENT)) == [READS]
    # The schema itself refuses a second copy, whoever writes it.
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        raw(
            db_location,
            "INSERT INTO permissions (domain, identity, position, permission) VALUES (?, ?, 99, ?)",
            (DOMAIN.encode(), CLIENT.encode(), encode_permission(READS)),
        )


def test_ungrant_removes_one_grant_and_audits_it(db_location: str) -> None:
    executes = BindingPermission(Action.EXECUTE, OID(9), None, class_match=True)
    with enrolled(db_location) as store:
        store.grant(DOMAIN, CLIENT, READS, 4.0)
        store.grant(DOMAIN, CLIENT, executes, 5.0)
        store.ungrant(DOMAIN, CLIENT, READS, 6.0)
        assert list(store.permissions(DOMAIN, CLIENT)) == [executes]
        record = store.lookup(DOMAIN, CLIENT)
        assert record is not None and list(record.permissions) == [executes]
        last = store.audit_log()[-1]
        assert (last.event, last.at, last.domain, last.node, last.permission) == (
            "ungrant",
            6.0,
            str(DOMAIN),
            str(CLIENT),
            "rs * [{01}:{01}]",
        )
        before = store.audit_log()
        with pytest.raises(StoreError, match="has no grant 'rs"):
            store.ungrant(DOMAIN, CLIENT, READS, 7.0)
        with pytest.raises(StoreError, match="not enrolled"):
            store.ungrant(DOMAIN, OID(3, b"ghost"), READS, 7.0)
        assert store.audit_log() == before
        # Granting it again after removal is a fresh grant, after the others.
        store.grant(DOMAIN, CLIENT, READS, 8.0)
        assert list(store.permissions(DOMAIN, CLIENT)) == [executes, READS]


def test_a_revoked_node_is_reinstated_or_re_enrolled(db_location: str) -> None:
    with enrolled(db_location) as store:
        original = store.domain(DOMAIN).credential_for(DEVICE).secret
        for refused, message in (
            (store.reinstate, "not revoked"),
            (store.re_enrol, "not revoked.*'rotate'"),
        ):
            with pytest.raises(StoreError, match=message):
                refused(DOMAIN, DEVICE, 4.0)
        store.revoke(DOMAIN, DEVICE, "sent for repair", 5.0)
        before = (store.nodes(), store.audit_log())
        with pytest.raises(StoreError, match=r"is revoked in .*re-enrol"):
            store.rotate(DOMAIN, DEVICE, 6.0)
        assert (store.nodes(), store.audit_log()) == before

        store.reinstate(DOMAIN, DEVICE, 7.0)  # revoked by mistake: the same secret
        record = store.lookup(DOMAIN, DEVICE)
        assert record is not None and not record.revoked
        assert record.credential.secret == original

        store.revoke(DOMAIN, DEVICE, "returned (RMA)", 8.0)
        assert store.re_enrol(DOMAIN, DEVICE, 9.0) == 1  # back from repair: a new secret
        record = store.lookup(DOMAIN, DEVICE)
        assert record is not None and not record.revoked
        assert record.credential.generation == 1 and record.credential.secret != original
        events = [(e.event, e.node, e.detail) for e in store.audit_log()[-4:]]
        assert events == [
            ("revoke", str(DEVICE), "reason=sent for repair"),
            ("reinstate", str(DEVICE), ""),
            ("revoke", str(DEVICE), "reason=returned (RMA)"),
            ("re-enrol", str(DEVICE), "generation=1"),
        ]
        with pytest.raises(StoreError, match="not enrolled"):
            store.re_enrol(DOMAIN, OID(3, b"ghost"), 10.0)


def test_audit_entries_name_domain_node_and_permission(db_location: str) -> None:
    with enrolled(db_location) as store:
        store.grant(DOMAIN, DEVICE, READS, 10.0)
        store.rotate(DOMAIN, CLIENT, 11.0)
        store.audit(
            12.0,
            "trp-granted",
            f"peer=127.0.0.1:1 initiator={CLIENT} responder={DEVICE} reason=granted",
        )
        store.audit(13.0, "serve", "listen=127.0.0.1:3567")
        entries = store.audit_log()
        assert [(e.event, e.domain, e.node, e.permission, e.detail) for e in entries[:4]] == [
            ("init-domain", str(DOMAIN), None, None, ""),
            ("add-node", str(DOMAIN), str(DEVICE), None, "max_duration=255"),
            ("add-node", str(DOMAIN), str(CLIENT), None, "max_duration=60"),
            ("grant", str(DOMAIN), str(DEVICE), "rs * [{01}:{01}]", ""),
        ]
        assert [e.at for e in store.audit_log(since=11.0)] == [11.0, 12.0, 13.0]
        # A node's own commands and the TRP decisions it is either side of.
        assert [e.event for e in store.audit_log(node=DEVICE)] == [
            "add-node",
            "grant",
            "trp-granted",
        ]
        assert [e.event for e in store.audit_log(node=CLIENT, since=11.5)] == ["trp-granted"]
        # A name that is a prefix of another's, or holds LIKE's wildcards, is not a pattern.
        assert store.audit_log(node=OID(3, b"device@example")) == []
        assert store.audit_log(node=OID(3, b"%")) == []
        assert store.audit_log(node=OID(3, b"_evice@example.org")) == []


def test_a_schema_1_database_is_migrated(db_location: str) -> None:
    """A database dofpy with schema 1 wrote: its duplicate grants go (each
    removal audited), its audit rows (Python reprs) read as schema 2's."""
    from dofpy_services.authenticator.store import MIGRATIONS, SERVICE  # noqa: PLC0415
    from dofpy_services.store import open_database_sync  # noqa: PLC0415

    open_database_sync(db_location, service=SERVICE, migrations=MIGRATIONS[:1]).close()
    key = (DOMAIN.encode(), DEVICE.encode())
    raw(db_location, "INSERT INTO domains VALUES (?, ?, ?)", (DOMAIN.encode(), str(DOMAIN), KEY))
    raw(
        db_location,
        "INSERT INTO nodes (domain, identity, text) VALUES (?, ?, ?)",
        (*key, str(DEVICE)),
    )
    executes = BindingPermission(Action.EXECUTE, OID(9), None, class_match=True)
    for position, permission in enumerate((READS, executes, READS, READS)):
        raw(
            db_location,
            "INSERT INTO permissions VALUES (?, ?, ?, ?)",
            (*key, position, encode_permission(permission)),
        )
    device = f"domain={DOMAIN} identity={DEVICE}"
    for event, detail in (
        ("init-domain", f"domain={DOMAIN}"),
        ("grant", f"{device} {READS}"),
        ("grant", f"{device} {IamPermission(OID(3, b'alias'))}"),
        ("grant", f"{device} {RequestorPermission()}"),
        ("rotate", f"{device} gen=3"),
        ("revoke", f"{device} reason=stolen"),
        ("trp-refused", f"peer=10.0.0.1:3567 initiator={DEVICE} responder=None reason=x"),
    ):
        raw(db_location, "INSERT INTO audit (at, event, detail) VALUES (1, ?, ?)", (event, detail))

    with open_store(db_location) as store:
        assert list(store.permissions(DOMAIN, DEVICE)) == [READS, executes]
        log = store.audit_log()
    rendered = [(e.event, e.domain, e.node, e.permission, e.detail) for e in log]
    assert rendered[:7] == [
        ("init-domain", str(DOMAIN), None, None, ""),
        ("grant", str(DOMAIN), str(DEVICE), "rs * [{01}:{01}]", ""),
        ("grant", str(DOMAIN), str(DEVICE), "iam [{03}:alias]", ""),
        ("grant", str(DOMAIN), str(DEVICE), "requestor", ""),
        ("rotate", str(DOMAIN), str(DEVICE), None, "generation=3"),
        ("revoke", str(DOMAIN), str(DEVICE), None, "reason=stolen"),
        (
            "trp-refused",
            None,
            None,
            None,
            f"peer=10.0.0.1:3567 initiator={DEVICE} responder=None reason=x",
        ),
    ]
    assert rendered[7:] == [
        (
            "ungrant",
            str(DOMAIN),
            str(DEVICE),
            None,
            f"duplicate grant at position {position} removed by schema migration 2",
        )
        for position in (2, 3)
    ]


def test_revoking_twice_is_refused(db_location: str) -> None:
    with enrolled(db_location) as store:
        store.revoke(DOMAIN, DEVICE, "lost", 4.0)
        with pytest.raises(StoreError, match="already revoked"):
            store.revoke(DOMAIN, DEVICE, "lost again", 5.0)
        assert [e.event for e in store.audit_log()].count("revoke") == 1


def test_audit_log_only_grows(db_location: str) -> None:
    with enrolled(db_location) as store:
        store.audit(4.0, "serve", "listen=127.0.0.1:3567")
        log = store.audit_log()
        assert [e.id for e in log] == sorted(e.id for e in log)
        assert not store.try_tamper_audit()
        assert store.audit_log() == log
    # Nor can anyone bypassing the store change or delete a line.
    for statement in ("UPDATE audit SET detail = 'nothing happened'", "DELETE FROM audit"):
        with pytest.raises(Exception, match="append-only"):
            raw(db_location, statement)
    with open_store(db_location) as store:
        assert store.audit_log() == log


def test_two_replicas_see_each_others_changes(db_location: str) -> None:
    with enrolled(db_location) as first, open_store(db_location) as second:
        second.add_node(DOMAIN, OID(3, b"new@example.org"), 4.0)
        record = first.lookup(DOMAIN, OID(3, b"new@example.org"))
        assert record is not None and not record.revoked
        first.grant(DOMAIN, OID(3, b"new@example.org"), ProviderPermission(), 5.0)
        second_record = second.lookup(DOMAIN, OID(3, b"new@example.org"))
        assert second_record is not None
        assert list(second_record.permissions) == [ProviderPermission()]
        assert second.rotate(DOMAIN, CLIENT, 6.0) == 1
        assert first.rotate(DOMAIN, CLIENT, 7.0) == 2
        first.revoke(DOMAIN, DEVICE, "gone", 8.0)
        assert second.is_revoked(DOMAIN, DEVICE)
        with pytest.raises(StoreError, match="already enrolled"):
            first.add_node(DOMAIN, OID(3, b"new@example.org"), 9.0)
        assert first.audit_log() == second.audit_log()


def test_concurrent_rotations_never_lose_an_increment(db_location: str) -> None:
    enrolled(db_location).close()
    rounds = 20

    def rotate_many(_: int) -> list[int]:
        # Each thread is a replica with its own connection.
        with open_store(db_location) as store:
            return [store.rotate(DOMAIN, DEVICE, float(i)) for i in range(rounds)]

    generations = in_threads(3, rotate_many)
    returned = sorted(g for per_replica in generations for g in per_replica)
    assert returned == list(range(1, 3 * rounds + 1))
    with open_store(db_location) as store:
        record = store.lookup(DOMAIN, DEVICE)
        assert record is not None and record.credential.generation == 3 * rounds
        assert [e.event for e in store.audit_log()].count("rotate") == 3 * rounds


def test_concurrent_grants_keep_every_permission(db_location: str) -> None:
    enrolled(db_location).close()

    def grant_many(replica: int) -> int:
        with open_store(db_location) as store:
            for i in range(10):
                name = f"alias-{replica}-{i}".encode()
                store.grant(DOMAIN, CLIENT, IamPermission(OID(3, name)), float(i))
        return replica

    in_threads(3, grant_many)
    with open_store(db_location) as store:
        granted = store.permissions(DOMAIN, CLIENT)
    assert len(granted) == 30
    for replica in range(3):  # each replica's grants kept their order
        mine = [
            p.identity.data
            for p in granted
            if isinstance(p, IamPermission) and p.identity.data.startswith(b"alias-%d-" % replica)
        ]
        assert mine == [f"alias-{replica}-{i}".encode() for i in range(10)]


def test_concurrent_enrolment_of_one_node_succeeds_once(db_location: str) -> None:
    enrolled(db_location).close()
    newcomer = OID(3, b"newcomer@example.org")

    def enrol(_: int) -> str:
        with open_store(db_location) as store:
            try:
                store.add_node(DOMAIN, newcomer, 4.0)
            except StoreError as exc:
                return str(exc)
            return "enrolled"

    outcomes = in_threads(4, enrol)
    assert outcomes.count("enrolled") == 1
    assert all("already enrolled" in o for o in outcomes if o != "enrolled")


def test_concurrent_domain_creation_succeeds_once(db_location: str) -> None:
    open_store(db_location).close()

    def create(replica: int) -> str:
        with open_store(db_location) as store:
            try:
                store.init_domain(DOMAIN, bytes([replica]) * 32, 1.0)
            except StoreError as exc:
                return str(exc)
            return "created"

    outcomes = in_threads(4, create)
    assert outcomes.count("created") == 1
    assert all("already exists" in o for o in outcomes if o != "created")


def test_corrupt_permissions_are_a_store_error(db_location: str) -> None:
    enrolled(db_location).close()
    raw(
        db_location,
        "INSERT INTO permissions (domain, identity, position, permission) VALUES (?, ?, 0, ?)",
        (DOMAIN.encode(), CLIENT.encode(), b"\xff\xff"),
    )
    with open_store(db_location) as store, pytest.raises(StoreError, match="do not decode"):
        store.lookup(DOMAIN, CLIENT)


def test_a_newer_schema_is_refused(db_location: str) -> None:
    enrolled(db_location).close()
    raw(
        db_location,
        "INSERT INTO dofpy_migrations (service, version, description, applied_at)"
        " VALUES ('authenticator', ?, 'from a newer dofpy', 0)",
        (SCHEMA_VERSION + 1,),
    )
    with pytest.raises(StoreError, match=f"authenticator .* schema version {SCHEMA_VERSION + 1}"):
        open_store(db_location)


# -- SQLite only --------------------------------------------------------------------------


def test_sqlite_file_is_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "as.db"
    SqliteStore(path).close()
    assert (path.stat().st_mode & 0o777) == 0o600
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        open_store(junk)


# -- PostgreSQL only ----------------------------------------------------------------------


def test_postgres_audit_cannot_be_truncated(postgres_url: str) -> None:
    enrolled(postgres_url).close()
    with pytest.raises(Exception, match="append-only"):
        raw(postgres_url, "TRUNCATE audit")
    with open_store(postgres_url) as store:
        assert len(store.audit_log()) == 3


def test_postgres_tables_are_created_once(postgres_url: str) -> None:
    # Replicas starting together: the advisory lock lets one create the tables.
    stores = in_threads(4, lambda _: open_store(postgres_url))
    for store in stores:
        store.close()
    assert raw(postgres_url, "SELECT service, version FROM dofpy_migrations ORDER BY 2") == [
        ("authenticator", version) for version in range(1, SCHEMA_VERSION + 1)
    ]


def test_postgres_unreachable_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        open_store("postgresql://nobody@127.0.0.1:1/test?connect_timeout=2")


def test_postgres_without_psycopg_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreError, match=r"dofpy\[postgres\]"):
        open_store("postgresql://127.0.0.1/test")


def _documented_grants(schema: str, service: str, report: str) -> str:
    """The privilege statements of docs/operations.md, for our schema and roles."""
    text = OPERATIONS_MD.read_text()
    match = re.search(r"```sql\n(.*?dofpy_authenticator.*?)```", text, re.S)
    assert match is not None, "docs/operations.md lost its PostgreSQL privileges block"
    statements = match.group(1).replace("dofpy_authenticator", service)
    statements = statements.replace("dofpy_report", report)
    return re.sub(r"\bdofpy\b", schema, statements)


@pytest.fixture
def roles(postgres_admin_url: str, postgres_schema: str) -> Any:
    """The documented service and report roles (random names), dropped after."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    service, report = f"{postgres_schema}_service", f"{postgres_schema}_report"
    yield service, report
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        for role in (service, report):
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_postgres_documented_privileges(
    postgres_admin_url: str, postgres_schema: str, postgres_url: str, roles: tuple[str, str]
) -> None:
    import psycopg  # noqa: PLC0415

    service, report = roles
    enrolled(postgres_url).close()  # the tables belong to the administrator
    try:
        raw(postgres_admin_url, _documented_grants(postgres_schema, service, report))
    except psycopg.errors.InsufficientPrivilege as exc:
        pytest.skip(f"the test user may not create roles: {exc}")

    as_service = with_options(postgres_admin_url, search_path=postgres_schema, role=service)
    with open_store(as_service) as store:  # everything the daemon and the CLI do
        store.add_node(DOMAIN, OID(3, b"svc@example.org"), 4.0)
        store.grant(DOMAIN, OID(3, b"svc@example.org"), RequestorPermission(), 5.0)
        assert store.rotate(DOMAIN, OID(3, b"svc@example.org"), 6.0) == 1
        store.ungrant(DOMAIN, OID(3, b"svc@example.org"), RequestorPermission(), 6.5)
        store.revoke(DOMAIN, DEVICE, "test", 7.0)
        store.reinstate(DOMAIN, DEVICE, 7.1)
        store.revoke(DOMAIN, DEVICE, "test", 7.2)
        assert store.re_enrol(DOMAIN, DEVICE, 7.3) == 1
        store.revoke(DOMAIN, DEVICE, "test", 7.4)
        store.init_domain(OTHER_DOMAIN, KEY, 8.0)
        assert store.domain(DOMAIN).master_key == KEY
        assert len(store.nodes()) == 3
        store.audit(9.0, "serve", "ok")
        assert not store.try_tamper_audit()
    for statement in (
        "ALTER TABLE audit DISABLE TRIGGER audit_no_delete",
        "DROP TRIGGER audit_no_delete ON audit",
        "UPDATE nodes SET max_duration = 1",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            raw(as_service, statement)

    as_report = with_options(postgres_admin_url, search_path=postgres_schema, role=report)
    assert raw(as_report, "SELECT text FROM domains ORDER BY text") == [
        ("[{06}:example.org]",),
        ("[{06}:other.org]",),
    ]
    assert len(raw(as_report, "SELECT * FROM audit")) == 14
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        raw(as_report, "SELECT master_key FROM domains")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        raw(as_report, "INSERT INTO audit (at, event, detail) VALUES (0, 'forged', '')")


# -- the trio face, on both backends --------------------------------------------------------


async def test_async_store_reads_and_batches_audit_lines(
    db_location: str, autojump_clock: trio.testing.MockClock
) -> None:
    enrolled(db_location).close()
    async with open_async_store(db_location, pool_size=2, audit_delay=1.0) as store:
        assert await store.has_domain(DOMAIN) and not await store.has_domain(OTHER_DOMAIN)
        assert (await store.domain(DOMAIN)).master_key == KEY
        record = await store.lookup(DOMAIN, CLIENT)
        assert record is not None and record.max_duration == 60
        assert await store.lookup(DOMAIN, OID(3, b"ghost")) is None
        with pytest.raises(StoreError, match="unknown domain"):
            await store.domain(OTHER_DOMAIN)
        store.sync.revoke(DOMAIN, DEVICE, "lost", 4.0)  # the blocking face, same database
        revoked = await store.lookup(DOMAIN, DEVICE)
        assert revoked is not None and revoked.revoked

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(store.audit, 10.0 + i, "trp-granted", f"line {i}")
        log = await store.audit_log()
        assert sorted(e.detail for e in log if e.event == "trp-granted") == sorted(
            f"line {i}" for i in range(30)
        )
        # Every line was submitted before the first batch's delay ran out: one commit.
        assert store.statistics().calls_by_kind["audit"] == 1
