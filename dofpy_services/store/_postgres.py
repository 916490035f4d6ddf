"""The PostgreSQL backend (psycopg 3 and ``psycopg_pool``): the scale-out
store that any number of service processes share.

Tables live in the first schema of the connection's ``search_path`` (pick one
with ``?options=-csearch_path%3Dname`` in the URL). Migrations run in one
transaction under an advisory lock, so processes starting together apply them
once.

Connections come from a :class:`psycopg_pool.ConnectionPool`, which replaces
a broken one in the background, reconnecting with exponential back-off and
jitter (1 s, doubling), starting over every ``reconnect_timeout`` so that no
wait between attempts grows beyond it. A connection that broke while idle
(server restart, ``pg_terminate_backend``) fails at BEGIN, before anything of
the call ran, and the call moves to another. A call whose connection breaks
after BEGIN fails with :class:`~dofpy_services.store.StoreUnavailable` and is
never retried: a write that broke while committing may have committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from typing import TypeVar

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from dofpy_services.store._base import (
    MIGRATIONS_TABLE,
    MIGRATIONS_TABLE_SQL,
    Backend,
    Dialect,
    Migration,
    Row,
    Transaction,
    apply_migrations,
)
from dofpy_services.store._errors import (
    StoreConflict,
    StoreError,
    StoreRefused,
    StoreUnavailable,
)

__all__ = ["PostgresBackend"]

T = TypeVar("T")

# pg_advisory_xact_lock key that serialises migrations ("dofpy-mi" in ASCII).
_MIGRATION_LOCK = 0x646F6670792D6D69


def describe(url: str) -> str:
    """Where ``url`` points, for messages: never its password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "PostgreSQL (unparsable URL)"
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    return f"PostgreSQL at {host}:{port}/{params.get('dbname', '')}"


def _translate(exc: psycopg.Error, conn: psycopg.Connection[Row], kind: str) -> StoreError | None:
    """The StoreError ``exc`` means, or ``None`` for a programming error."""
    if conn.broken or conn.closed:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreUnavailable(f"PostgreSQL connection lost during {kind}; retry ({detail})")
    if isinstance(exc, pg_errors.UniqueViolation):
        return StoreConflict(str(exc).strip())
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return StoreRefused(str(exc).strip())
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):  # a write inside ``read``
        return StoreError(f"{str(exc).strip()} during {kind}")
    if isinstance(exc, psycopg.OperationalError):  # statement timeout, out of disk, ...
        return StoreUnavailable(f"PostgreSQL failed during {kind}: {str(exc).strip()}")
    return None


class _PostgresTransaction:
    """A :class:`~dofpy_services.store.Transaction` on one pooled connection."""

    __slots__ = ("_conn", "_kind")

    def __init__(self, conn: psycopg.Connection[Row], kind: str) -> None:
        self._conn = conn
        self._kind = kind

    @property
    def dialect(self) -> Dialect:
        return "postgresql"

    def _cursor(
        self, sql: str, params: Sequence[object], binary: bool = False
    ) -> psycopg.Cursor[Row]:
        try:
            # Without parameters psycopg leaves ``%`` alone (and allows scripts).
            return self._conn.execute(sql.replace("?", "%s"), params or None, binary=binary)
        except psycopg.Error as exc:
            raise _translate(exc, self._conn, self._kind) or exc from None

    def rows(self, sql: str, params: Sequence[object] = (), *, binary: bool = False) -> list[Row]:
        cursor = self._cursor(sql, params, binary)
        try:
            return cursor.fetchall() if cursor.description is not None else []
        except psycopg.Error as exc:
            raise _translate(exc, self._conn, self._kind) or exc from None

    def row(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return self._cursor(sql, params).rowcount

    def executemany(self, sql: str, params: Iterable[Sequence[object]]) -> None:
        try:
            with self._conn.cursor() as cursor:
                cursor.executemany(sql.replace("?", "%s"), params)
        except psycopg.Error as exc:
            raise _translate(exc, self._conn, self._kind) or exc from None


class PostgresBackend(Backend):
    """The database at ``url`` (a libpq URL), through a pool of
    ``min_connections`` to ``pool_size`` connections."""

    dialect: Dialect = "postgresql"

    def __init__(
        self,
        url: str,
        service: str,
        migrations: Sequence[Migration],
        *,
        pool_size: int = 4,
        min_connections: int = 1,
        connect_timeout: float = 10.0,
        acquire_timeout: float = 10.0,
        reconnect_timeout: float = 30.0,
    ) -> None:
        self.where = describe(url)
        self._acquire_timeout = acquire_timeout
        self._pool_size = pool_size
        # Sessions show up in pg_stat_activity as dofpy-<service> unless the URL names them.
        settings: dict[str, object] = {
            "autocommit": True,
            "fallback_application_name": f"dofpy-{service}",
            "connect_timeout": max(1, round(connect_timeout)),
        }
        self._migrate(url, settings, service, migrations)
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Row]] = (
            psycopg_pool.ConnectionPool(
                url,
                kwargs=settings,
                min_size=min(min_connections, pool_size),
                max_size=pool_size,
                open=False,
                timeout=acquire_timeout,
                reconnect_timeout=reconnect_timeout,
                name=f"dofpy-{service}",
            )
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            raise StoreError(
                f"cannot connect to {self.where}: no connection within {connect_timeout} s"
            ) from None

    def _migrate(
        self,
        url: str,
        settings: dict[str, object],
        service: str,
        migrations: Sequence[Migration],
    ) -> None:
        """Bring ``service``'s tables up to date on a connection of its own
        (whose failure to connect is the clearest error an operator gets)."""
        try:
            conn = psycopg.connect(url, **settings)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {str(exc).strip()}") from None
        with conn:
            tx = _PostgresTransaction(conn, "migrations")

            def run_script(script: str) -> None:
                tx.execute(script)

            try:
                with conn.transaction():
                    tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
                    # Checked first: CREATE ... IF NOT EXISTS needs the CREATE
                    # privilege even when the table exists, and a service role
                    # need not have it.
                    exists = tx.row("SELECT to_regclass(?)", (MIGRATIONS_TABLE,))
                    if exists is None or exists[0] is None:
                        tx.execute(MIGRATIONS_TABLE_SQL)
                    apply_migrations(tx, run_script, service, migrations, self.where, time.time())
            except psycopg.Error as exc:
                raise StoreError(
                    f"cannot set up the {service} tables in {self.where}: {str(exc).strip()}"
                ) from None

    def run(self, fn: Callable[[Transaction], T], *, write: bool, kind: str) -> T:
        # Reads see one snapshot and cannot write; writes keep READ COMMITTED
        # and lock what they change (SELECT ... FOR UPDATE).
        begin = "BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        # A connection that broke while idle in the pool fails at BEGIN, before
        # anything of the call ran: then, and only then, another is tried. The
        # pool replaces each broken one in the background.
        for _ in range(self._pool_size + 1):
            try:
                with self._pool.connection(timeout=self._acquire_timeout) as conn:
                    try:
                        conn.execute(begin)
                    except psycopg.Error as exc:
                        if conn.broken or conn.closed:
                            continue
                        raise _translate(exc, conn, kind) or exc from None
                    return self._in_transaction(conn, fn, kind)
            except psycopg_pool.PoolTimeout:
                raise StoreUnavailable(
                    f"no PostgreSQL connection within {self._acquire_timeout} s during {kind}"
                    f" ({self.where} unreachable?); retry"
                ) from None
            except psycopg_pool.PoolClosed:
                raise StoreError(f"the store on {self.where} is closed") from None
        raise StoreUnavailable(f"every PostgreSQL connection was broken during {kind}; retry")

    @staticmethod
    def _in_transaction(
        conn: psycopg.Connection[Row], fn: Callable[[Transaction], T], kind: str
    ) -> T:
        """``fn`` inside the transaction just begun on ``conn``, then COMMIT
        (or ROLLBACK when it raises)."""
        tx = _PostgresTransaction(conn, kind)
        try:
            result = fn(tx)
            if conn.info.transaction_status == TransactionStatus.INERROR:
                # PostgreSQL would answer COMMIT with a silent ROLLBACK.
                raise StoreError(
                    f"a statement failed during {kind} and its error was caught inside the"
                    " call: PostgreSQL rolled the whole transaction back"
                )
            tx.execute("COMMIT")
        except BaseException:
            if not conn.closed:
                with suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            raise
        return result

    def reconnects(self) -> int:
        stats = self._pool.get_stats()
        return stats.get("returns_bad", 0) + stats.get("connections_lost", 0)

    def close(self) -> None:
        self._pool.close()
