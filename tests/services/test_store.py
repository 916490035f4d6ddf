"""The services' store layer (dofpy_services.store), each test on SQLite and on
a real PostgreSQL (``db_location``, see conftest.py): migrations, reads and
writes from trio, the write batcher, the trio loop serving while a store call
blocks, and, on PostgreSQL, connections killed in the middle of work."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from dofpy.testing.postgres import with_options
from dofpy.trio import open_node
from dofpy_services.store import (
    Migration,
    StoreConflict,
    StoreError,
    StoreRefused,
    StoreUnavailable,
    Transaction,
    is_postgres_url,
    open_database,
    open_database_sync,
    open_write_batcher,
)
from tests.services.test_authenticator_store import in_threads, raw

# How long a worker thread waits for the test's signal before giving up: only
# reached when the code under test is broken (the test then fails, not hangs).
SIGNAL_TIMEOUT = 20.0

STEPS = [
    Migration(1, "steps", "CREATE TABLE steps (version INTEGER NOT NULL);"),
    Migration(2, "items", "CREATE TABLE items (k INTEGER PRIMARY KEY, v TEXT NOT NULL);"),
    # Depends on migration 2's table: order matters.
    Migration(3, "items.note", "ALTER TABLE items ADD COLUMN note TEXT;"),
]


def recording(migrations: Sequence[Migration]) -> list[Migration]:
    """``migrations``, each also recording in ``steps`` that it ran."""
    return [
        Migration(m.version, m.description, m.sql + f"\nINSERT INTO steps VALUES ({m.version});")
        for m in migrations
    ]


ITEMS = recording(STEPS)


def service_name() -> str:
    """A service name of this test alone (PostgreSQL sessions are named after it)."""
    return f"test_{secrets.token_hex(4)}"


def put(k: int, v: str) -> Callable[[Transaction], int]:
    return lambda tx: tx.execute("INSERT INTO items (k, v) VALUES (?, ?)", (k, v))


def all_items(tx: Transaction) -> list[tuple[Any, ...]]:
    return tx.rows("SELECT k, v FROM items ORDER BY k")


# -- migrations ---------------------------------------------------------------------------


def test_migrations_apply_once_and_in_order(db_location: str) -> None:
    with open_database_sync(db_location, service="svc", migrations=ITEMS[:2]) as db:
        assert db.read(lambda tx: tx.rows("SELECT version FROM steps")) == [(1,), (2,)]
    # Reopening applies only what is new, once.
    for _ in range(2):
        with open_database_sync(db_location, service="svc", migrations=ITEMS) as db:
            db.write(lambda tx: tx.execute("INSERT INTO items (k, v, note) VALUES (1, 'a', 'n')"))
            assert db.read(lambda tx: tx.rows("SELECT version FROM steps")) == [(1,), (2,), (3,)]
            db.write(lambda tx: tx.execute("DELETE FROM items"))
    recorded = raw(db_location, "SELECT service, version, description FROM dofpy_migrations")
    assert sorted(recorded) == [("svc", 1, "steps"), ("svc", 2, "items"), ("svc", 3, "items.note")]


def test_services_share_a_database(db_location: str) -> None:
    other = [Migration(1, "other", "CREATE TABLE other_table (x INTEGER);")]
    open_database_sync(db_location, service="first", migrations=ITEMS).close()
    open_database_sync(db_location, service="second", migrations=other).close()
    open_database_sync(db_location, service="first", migrations=ITEMS).close()
    recorded = raw(db_location, "SELECT service, MAX(version) FROM dofpy_migrations GROUP BY 1")
    assert sorted(recorded) == [("first", 3), ("second", 1)]


def test_concurrent_opens_migrate_once(db_location: str) -> None:
    # Not idempotent (no IF NOT EXISTS): two processes racing would fail.
    def open_and_close(_: int) -> int:
        open_database_sync(db_location, service="svc", migrations=ITEMS).close()
        return 1

    assert in_threads(4, open_and_close) == [1, 1, 1, 1]
    assert raw(db_location, "SELECT version FROM steps ORDER BY version") == [(1,), (2,), (3,)]


def test_a_newer_database_is_refused(db_location: str) -> None:
    open_database_sync(db_location, service="svc", migrations=ITEMS).close()
    with pytest.raises(StoreError, match=r"svc tables .* schema version 3, newer than .*'s 2"):
        open_database_sync(db_location, service="svc", migrations=ITEMS[:2])


def test_a_failed_migration_leaves_nothing(db_location: str) -> None:
    open_database_sync(db_location, service="svc", migrations=ITEMS[:1]).close()
    broken = [*ITEMS[:1], Migration(2, "broken", "CREATE TABLE half (x INTEGER); NOT SQL;")]
    with pytest.raises(StoreError, match="cannot set up the svc tables"):
        open_database_sync(db_location, service="svc", migrations=broken)
    assert raw(db_location, "SELECT MAX(version) FROM dofpy_migrations") == [(1,)]
    with open_database_sync(db_location, service="svc", migrations=ITEMS) as db:  # no "half"
        db.write(lambda tx: tx.execute("CREATE TABLE half (y INTEGER)"))


def test_migrations_must_be_numbered_in_order(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="numbered 1, 2"):
        open_database_sync(tmp_path / "x.db", service="svc", migrations=[ITEMS[1]])


# -- reads and writes from trio -------------------------------------------------------------


async def test_reads_and_writes_from_trio(db_location: str) -> None:
    calls: list[tuple[str, bool]] = []
    async with open_database(
        db_location,
        service="svc",
        migrations=ITEMS,
        on_call=lambda kind, seconds, ok: calls.append((kind, ok)),
    ) as db:
        assert db.dialect == ("postgresql" if is_postgres_url(db_location) else "sqlite")
        async with trio.open_nursery() as nursery:
            for k in range(20):
                nursery.start_soon(db.write, put(k, f"v{k}"))
        assert await db.read(all_items) == [(k, f"v{k}") for k in range(20)]

        def put_then_fail(tx: Transaction) -> None:
            put(100, "never")(tx)
            raise RuntimeError("changed my mind")

        with pytest.raises(RuntimeError, match="changed my mind"):  # rolled back
            await db.write(put_then_fail, kind="put_then_fail")
        with pytest.raises(StoreConflict):
            await db.write(put(1, "again"))
        with pytest.raises(StoreError, match=r"read-only|readonly"):
            await db.read(put(101, "from a read"))
        assert await db.read(lambda tx: tx.row("SELECT COUNT(*) FROM items")) == (20,)
        assert await db.read(lambda tx: tx.row("SELECT v FROM items WHERE k = ?", (99,))) is None

        stats = db.statistics()
    assert stats.calls == 26 and stats.errors == 3 and stats.in_flight == 0
    assert stats.unavailable == stats.reconnects == 0
    assert stats.calls_by_kind == {"write": 21, "put_then_fail": 1, "read": 4}
    assert set(stats.seconds_by_kind) == set(stats.calls_by_kind)
    assert calls.count(("write", True)) == 20 and ("put_then_fail", False) in calls


async def test_a_refused_statement_is_store_refused(db_location: str) -> None:
    append_only = [
        Migration(
            1,
            "log",
            "CREATE TABLE log (x INTEGER);"
            " CREATE TRIGGER log_no_delete BEFORE DELETE ON log"
            " BEGIN SELECT RAISE(ABORT, 'append-only'); END;",
            "CREATE TABLE log (x INTEGER);"
            " CREATE FUNCTION log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'append-only' USING ERRCODE = 'insufficient_privilege'; END;"
            " $$; CREATE TRIGGER log_no_delete BEFORE DELETE ON log"
            " FOR EACH ROW EXECUTE FUNCTION log_append_only();",
        )
    ]
    async with open_database(db_location, service="svc", migrations=append_only) as db:
        await db.write(lambda tx: tx.executemany("INSERT INTO log VALUES (?)", [(1,), (2,)]))
        with pytest.raises(StoreRefused, match="append-only"):
            await db.write(lambda tx: tx.execute("DELETE FROM log"))
        assert await db.read(lambda tx: tx.rows("SELECT x FROM log ORDER BY x")) == [(1,), (2,)]


def test_operator_mistakes_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        open_database_sync(tmp_path, service="svc", migrations=ITEMS)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        open_database_sync(junk, service="svc", migrations=ITEMS)
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        open_database_sync(
            "postgresql://nobody@127.0.0.1:1/test?connect_timeout=2",
            service="svc",
            migrations=ITEMS,
        )


def test_sqlite_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "svc.db"
    with open_database_sync(path, service="svc", migrations=ITEMS) as db:
        assert (path.stat().st_mode & 0o777) == 0o600
        assert db.read(lambda tx: tx.row("PRAGMA journal_mode")) == ("wal",)
        assert db.write(lambda tx: tx.row("PRAGMA synchronous")) == (2,)  # FULL
        assert db.read(lambda tx: tx.row("PRAGMA foreign_keys")) == (1,)


# -- the write batcher ------------------------------------------------------------------------


def insert_items(tx: Transaction, items: Sequence[tuple[int, str]]) -> None:
    tx.executemany("INSERT INTO items (k, v) VALUES (?, ?)", items)


async def test_batcher_commits_every_item_in_few_transactions(
    db_location: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_database(db_location, service="svc", migrations=ITEMS) as db:
        async with open_write_batcher(db, insert_items, max_items=8, max_delay=1.0) as batcher:
            committed: list[int] = []

            async def submit(k: int) -> None:
                await batcher.submit((k, f"v{k}"))
                committed.append(k)

            async with trio.open_nursery() as nursery:
                for k in range(50):
                    nursery.start_soon(submit, k)
        assert sorted(committed) == list(range(50))
        assert await db.read(all_items) == [(k, f"v{k}") for k in range(50)]
        stats = batcher.statistics()
        # Every submitter waited past the first item: full batches of 8, then 2.
        assert (stats.commits, stats.items, stats.failed, stats.split_batches) == (7, 50, 0, 0)
        assert db.statistics().calls_by_kind["batch"] == 7


async def test_batcher_reports_per_item_errors(
    db_location: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_database(db_location, service="svc", migrations=ITEMS) as db:
        await db.write(put(5, "already there"))
        outcomes: dict[int, str] = {}
        async with open_write_batcher(db, insert_items, max_items=100, max_delay=1.0) as batcher:

            async def submit(k: int) -> None:
                try:
                    await batcher.submit((k, "new"))
                except StoreConflict:
                    outcomes[k] = "conflict"
                else:
                    outcomes[k] = "committed"

            async with trio.open_nursery() as nursery:
                for k in range(10):
                    nursery.start_soon(submit, k)
        assert outcomes == {k: "conflict" if k == 5 else "committed" for k in range(10)}
        rows = await db.read(all_items)
        assert rows == [(k, "already there" if k == 5 else "new") for k in range(10)]
        stats = batcher.statistics()
        assert (stats.split_batches, stats.items, stats.failed) == (1, 9, 1)


async def test_batcher_never_retries_a_batch_that_lost_its_connection(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    attempts: list[list[int]] = []

    def write(tx: Transaction, items: Sequence[int]) -> None:
        attempts.append(list(items))
        raise StoreUnavailable("PostgreSQL connection lost during batch; retry")

    async with open_database(tmp_path / "x.db", service="svc", migrations=ITEMS) as db:
        errors: list[StoreError] = []
        async with open_write_batcher(db, write, max_items=10, max_delay=1.0) as batcher:

            async def submit(item: int) -> None:
                try:
                    await batcher.submit(item)
                except StoreUnavailable as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                for item in range(3):
                    nursery.start_soon(submit, item)
    assert [sorted(a) for a in attempts] == [[0, 1, 2]]  # one try, no split
    assert len(errors) == 3
    with pytest.raises(StoreError, match="closed"):
        await batcher.submit(4)


# -- the trio loop keeps serving while a call blocks ------------------------------------------


async def test_the_loop_serves_while_a_store_call_blocks(db_location: str) -> None:
    pings = 20
    entered, release = threading.Event(), threading.Event()

    def slow_write(tx: Transaction) -> list[tuple[Any, ...]]:
        put(1, "slow")(tx)
        entered.set()
        if not release.wait(SIGNAL_TIMEOUT):
            raise AssertionError("the test never released the store call")
        return all_items(tx)

    async with open_database(db_location, service="svc", migrations=ITEMS) as db:
        results: list[list[tuple[Any, ...]]] = []

        async def call() -> None:
            results.append(await db.write(slow_write))

        async with trio.open_nursery() as nursery, open_node() as a, open_node() as b:
            nursery.start_soon(call)
            assert await trio.to_thread.run_sync(entered.wait, SIGNAL_TIMEOUT)
            for _ in range(pings):  # the loop answers DPP while the call is blocked
                await a.ping(b.local_address)
            # So do reads: they need neither the loop nor the writer.
            assert await db.read(all_items) == []
            assert results == [] and db.statistics().in_flight == 1
            release.set()
        assert results == [[(1, "slow")]]
        assert a.statistics().endpoint.datagrams_received >= pings
        assert b.statistics().endpoint.datagrams_received >= pings


# -- PostgreSQL: connections killed in the middle of work --------------------------------------


def terminate_backends(admin_url: str, service: str) -> int:
    """Kill every session of ``service``'s store (as an administrator would,
    or a server restart); how many there were."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
            " FROM pg_stat_activity WHERE application_name = %s",
            (f"dofpy-{service}",),
        ).fetchone()
    assert row is not None
    return int(row[0])


PAIRS = [
    Migration(
        1,
        "pairs",
        "CREATE TABLE pairs (k INTEGER NOT NULL, part INTEGER NOT NULL, PRIMARY KEY (k, part));",
    )
]


async def test_postgres_survives_killed_connections(
    postgres_url: str, postgres_admin_url: str
) -> None:
    service = service_name()
    writers = 120
    in_transaction, killed = threading.Event(), threading.Event()
    outcomes: dict[int, str] = {}

    def write_pair(k: int, hostage: bool) -> Callable[[Transaction], None]:
        # Two rows per transaction: a half-applied write would leave one.
        def write(tx: Transaction) -> None:
            tx.execute("INSERT INTO pairs VALUES (?, 0)", (k,))
            if hostage:  # holds its transaction open until the kill
                in_transaction.set()
                if not killed.wait(SIGNAL_TIMEOUT):
                    raise AssertionError("the backends were never killed")
            tx.execute("INSERT INTO pairs VALUES (?, 1)", (k,))

        return write

    def kill() -> int:
        if not in_transaction.wait(SIGNAL_TIMEOUT):
            raise AssertionError("the hostage write never started")
        try:
            return terminate_backends(postgres_admin_url, service)
        finally:
            killed.set()

    async with open_database(postgres_url, service=service, migrations=PAIRS, pool_size=4) as db:

        async def writer(k: int) -> None:
            try:
                await db.write(write_pair(k, hostage=k == 0))
            except StoreUnavailable as exc:
                assert "connection lost" in str(exc) and "retry" in str(exc)
                outcomes[k] = "unavailable"
            else:  # anything else fails the test
                outcomes[k] = "committed"

        async with trio.open_nursery() as nursery:
            for k in range(writers):
                nursery.start_soon(writer, k)
            assert await trio.to_thread.run_sync(kill) >= 1

        assert len(outcomes) == writers
        assert outcomes[0] == "unavailable"  # in flight when its connection died
        # Later writes succeed: the pool replaced the dead connections.
        for k in range(writers, writers + 10):
            await db.write(write_pair(k, hostage=False))
        rows = await db.read(lambda tx: tx.rows("SELECT k, COUNT(*) FROM pairs GROUP BY k"))
        stats = db.statistics()

    parts = dict(rows)
    for k, outcome in outcomes.items():
        if outcome == "committed":
            assert parts.get(k) == 2, f"write {k} was reported committed but is not all there"
        else:  # failed: entirely applied (it broke while committing) or not at all
            assert parts.get(k, 0) in (0, 2), f"write {k} is half-applied"
    assert all(parts.get(k) == 2 for k in range(writers, writers + 10))
    failed = sum(outcome == "unavailable" for outcome in outcomes.values())
    assert stats.unavailable == failed and stats.errors == failed
    assert stats.reconnects >= 1


async def test_postgres_store_serves_again_after_every_connection_died(
    postgres_url: str, postgres_admin_url: str
) -> None:
    # All idle connections dead at once (a server restart looks like this):
    # the next call finds them broken at BEGIN and moves on; none fails.
    service = service_name()
    async with open_database(
        postgres_url, service=service, migrations=PAIRS, pool_size=3, min_connections=3
    ) as db:
        await db.write(lambda tx: tx.execute("INSERT INTO pairs VALUES (1, 0)"))
        assert await trio.to_thread.run_sync(terminate_backends, postgres_admin_url, service) >= 1
        assert await db.read(lambda tx: tx.rows("SELECT k FROM pairs")) == [(1,)]
        await db.write(lambda tx: tx.execute("INSERT INTO pairs VALUES (2, 0)"))
        stats = db.statistics()
    assert stats.errors == 0 and stats.reconnects >= 1


@pytest.fixture
def login_role(postgres_admin_url: str, postgres_schema: str) -> Iterator[str]:
    """A role of this test alone that may log in and use the test schema."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    role = f"{postgres_schema}_login"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        except psycopg.errors.InsufficientPrivilege as exc:
            pytest.skip(f"the test user may not create roles: {exc}")
        conn.execute(
            sql.SQL("GRANT ALL ON SCHEMA {} TO {}").format(
                sql.Identifier(postgres_schema), sql.Identifier(role)
            )
        )
    yield role
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_postgres_outage_fails_clearly_then_heals(
    postgres_admin_url: str, postgres_schema: str, login_role: str
) -> None:
    # An outage of this store alone (the server is shared): its role may no
    # longer log in and its sessions are killed. Calls wait acquire_timeout
    # for a connection, fail with StoreUnavailable, and succeed again once
    # the role may log in: the pool kept reconnecting.
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    service = service_name()
    url = with_options(
        postgres_admin_url.replace("://postgres@", f"://{login_role}@").replace(
            "://root@", f"://{login_role}@"
        ),
        search_path=postgres_schema,
    )

    def set_login(allowed: bool) -> None:
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} " + ("LOGIN" if allowed else "NOLOGIN")).format(
                    sql.Identifier(login_role)
                )
            )

    with open_database_sync(
        url,
        service=service,
        migrations=PAIRS,
        acquire_timeout=1.0,
        reconnect_timeout=4.0,
    ) as db:
        db.write(lambda tx: tx.execute("INSERT INTO pairs VALUES (1, 0)"))
        set_login(False)
        assert terminate_backends(postgres_admin_url, service) >= 1
        with pytest.raises(StoreUnavailable, match=r"no PostgreSQL connection within 1\.0 s"):
            db.write(lambda tx: tx.execute("INSERT INTO pairs VALUES (2, 0)"))
        set_login(True)
        for _ in range(30):  # bounded: each try waits at most acquire_timeout
            try:
                db.write(lambda tx: tx.execute("INSERT INTO pairs VALUES (3, 0)"))
                break
            except StoreUnavailable:
                continue
        else:
            pytest.fail("the store did not reconnect after the outage")
        assert db.read(lambda tx: tx.rows("SELECT k FROM pairs ORDER BY k")) == [(1,), (3,)]
        assert db.statistics().unavailable >= 1
