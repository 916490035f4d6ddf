"""The Version service's tables on the store layer (SQLite or PostgreSQL).

``devices`` holds one row per device (its latest report, first and last
seen); ``history`` one row per version or boot-state change; ``classes`` the
device classes seen; ``denied`` the identities whose reports are refused.

Every query is served from an index: a page of ``query`` is one range read in
identity order (the keyset cursor: ``identity > after``) on the index its
filter names — ``(device_class, identity)``, ``(device_class, version,
identity)``, the partial indexes of devices running an unaccepted or a
Reprogram image, or the primary key — stopping after ``limit`` matches, so a
page costs the same on the first page and the thousandth and nothing is held
beyond it. (A filter whose only narrowing is on a column without an index of
its own — a sequence range or last seen without a class — reads the primary
key's range until the page is full: cheap when many devices match, a long
read when few do; give the class.) Counts and histograms read only an index:
of the class, of last seen, or a partial one; a count with no class over
another column reads a whole covering index. Identities
never change, so paging in their order while reports arrive neither misses
nor repeats a device. ``tests/services/test_version_store.py`` shows the
query plans.

Reports are written in batches (:func:`write_reports`, through
:func:`~dofpy_services.store.open_write_batcher`): one transaction reads the
batch's devices and deny entries, upserts the devices and appends the
changes to the history.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import cast

from dofpy.wire.oid import OID, decode_oid_untrusted
from dofpy_services.store import (
    Database,
    Migration,
    Row,
    StoreStatistics,
    SyncDatabase,
    Transaction,
    WriteBatcher,
    open_database,
    open_database_sync,
    open_write_batcher,
)
from dofpy_services.version.interface import (
    MAX_PAGE,
    BootState,
    DeviceRecord,
    HistoryEntry,
    ImageKind,
    QueryFilter,
    VersionCount,
    VersionReport,
)
from dofpy_services.version.page import MAX_ROWS, fit_device_page

__all__ = [
    "MIGRATIONS",
    "SERVICE",
    "AsyncVersionStore",
    "EncodedPage",
    "PendingReport",
    "SyncVersionStore",
    "open_async_version_store",
    "open_version_store",
    "query_sql",
    "write_reports",
]

SERVICE = "version"

_SCHEMA = """
CREATE TABLE devices (
    identity BLOB PRIMARY KEY,
    device_class TEXT NOT NULL,
    version TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    image_digest BLOB NOT NULL,
    slot INTEGER NOT NULL,
    image_kind TEXT NOT NULL,
    accepted INTEGER NOT NULL,
    boot_count BIGINT NOT NULL,
    free_storage BIGINT NOT NULL,
    device_clock DOUBLE PRECISION NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    changed_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX devices_class ON devices (device_class, identity);
CREATE INDEX devices_class_version ON devices (device_class, version, identity);
CREATE INDEX devices_class_sequence ON devices (device_class, sequence, version);
CREATE INDEX devices_last_seen ON devices (last_seen);
CREATE INDEX devices_unaccepted ON devices (identity) WHERE accepted = 0;
CREATE INDEX devices_reprogram ON devices (identity) WHERE image_kind = 'reprogram';
CREATE TABLE history (
    id {serial},
    identity BLOB NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    device_class TEXT NOT NULL,
    version TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    image_digest BLOB NOT NULL,
    slot INTEGER NOT NULL,
    image_kind TEXT NOT NULL,
    accepted INTEGER NOT NULL,
    boot_count BIGINT NOT NULL
);
CREATE INDEX history_device ON history (identity, id);
CREATE TABLE classes (
    device_class TEXT PRIMARY KEY,
    first_seen DOUBLE PRECISION NOT NULL
);
CREATE TABLE denied (
    identity BLOB PRIMARY KEY,
    reason TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
"""

MIGRATIONS = (
    Migration(
        1,
        "devices, history, classes, denied",
        _SCHEMA.format(serial="INTEGER PRIMARY KEY"),
        # BYTEA compares bytewise like SQLite's BLOB; the class and version
        # texts compare in the C collation, the same order on both.
        _SCHEMA.format(serial="BIGSERIAL PRIMARY KEY")
        .replace("BLOB", "BYTEA")
        .replace("TEXT NOT NULL", 'TEXT COLLATE "C" NOT NULL')
        .replace("device_class TEXT PRIMARY KEY", 'device_class TEXT COLLATE "C" PRIMARY KEY'),
    ),
)

_STATE_COLUMNS = (
    "device_class, version, sequence, image_digest, slot, image_kind, accepted, boot_count"
)
_DEVICE_COLUMNS = (
    f"identity, {_STATE_COLUMNS}, free_storage, device_clock, first_seen, last_seen, changed_at"
)

_UPSERT = (
    f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (identity) DO UPDATE SET"
    " device_class = excluded.device_class, version = excluded.version,"
    " sequence = excluded.sequence, image_digest = excluded.image_digest,"
    " slot = excluded.slot, image_kind = excluded.image_kind, accepted = excluded.accepted,"
    " boot_count = excluded.boot_count, free_storage = excluded.free_storage,"
    " device_clock = excluded.device_clock, last_seen = excluded.last_seen,"
    " changed_at = excluded.changed_at"
)
_INSERT_HISTORY = (
    f"INSERT INTO history (identity, at, {_STATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# The state a report sets and the history records: a change of any of it is a change.
State = tuple[str, str, int, bytes, int, str, int, int]


def _state(report: VersionReport) -> State:
    boot = report.boot
    return (
        report.device_class,
        report.version,
        report.sequence,
        report.image_digest,
        boot.slot,
        boot.image_kind.value,
        int(boot.accepted),
        boot.boot_count,
    )


def _boot(slot: int, kind: str, accepted: int, boot_count: int) -> BootState:
    return BootState(slot, ImageKind(kind), bool(accepted), boot_count)


@dataclass(slots=True)
class PendingReport:
    """One report on its way into the database, and what writing it found
    (set by :func:`write_reports` inside the transaction that commits it)."""

    identity: OID
    report: VersionReport
    now: float
    denied: bool = False
    changed: bool = False
    previous: tuple[str, int] | None = None
    """(version, sequence) stored before, when the device was known."""
    batch: int = 0
    """The number of reports of the transaction that wrote it, on the first
    report of that transaction only (0 on the others): once the transaction
    committed, each batch is counted once (the batch-size metric)."""
    key: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.key = self.identity.encode()


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def write_reports(tx: Transaction, pending: Sequence[PendingReport]) -> None:
    """Write one batch of reports in ``tx``: denied identities refused, each
    device's row upserted (first seen kept), changes appended to the history.
    Sets each item's outcome; a batch retried item by item sets them again."""
    keys = sorted({p.key for p in pending})
    marks = _placeholders(len(keys))
    denied = {
        bytes(r[0])
        for r in tx.rows(f"SELECT identity FROM denied WHERE identity IN ({marks})", keys)
    }
    # Locked on PostgreSQL, so that two instances writing one device's reports
    # record its changes once each; SQLite's BEGIN IMMEDIATE already excludes.
    lock = " ORDER BY identity FOR UPDATE" if tx.dialect == "postgresql" else ""
    stored: dict[bytes, tuple[State, float, float]] = {}
    for row in tx.rows(
        f"SELECT identity, {_STATE_COLUMNS}, first_seen, changed_at FROM devices"
        f" WHERE identity IN ({marks}){lock}",
        keys,
    ):
        state: State = (
            row[1],
            row[2],
            int(row[3]),
            bytes(row[4]),
            int(row[5]),
            row[6],
            int(row[7]),
            int(row[8]),
        )
        stored[bytes(row[0])] = (state, float(row[9]), float(row[10]))
    upserts: list[tuple[object, ...]] = []
    history: list[tuple[object, ...]] = []
    new_classes: set[str] = set()
    for index, item in enumerate(pending):
        item.batch = 0 if index else len(pending)
        item.denied = item.key in denied
        item.changed = False
        item.previous = None
        if item.denied:
            continue
        state = _state(item.report)
        before = stored.get(item.key)
        if before is None:
            first_seen, changed_at = item.now, item.now
            item.changed = True
            new_classes.add(state[0])
        else:
            item.previous = (before[0][1], before[0][2])
            first_seen, changed_at = before[1], before[2]
            if before[0] != state:
                item.changed, changed_at = True, item.now
                if before[0][0] != state[0]:
                    new_classes.add(state[0])
        stored[item.key] = (state, first_seen, changed_at)
        report = item.report
        upserts.append(
            (
                item.key,
                *state,
                report.free_storage,
                report.device_clock,
                first_seen,
                item.now,
                changed_at,
            )
        )
        if item.changed:
            history.append((item.key, item.now, *state))
    if upserts:
        # In identity order (stable: one device's reports keep theirs), so
        # that two processes writing overlapping batches lock rows in the
        # same order and never deadlock.
        upserts.sort(key=lambda row: cast(bytes, row[0]))
        tx.executemany(_UPSERT, upserts)
    if history:
        tx.executemany(_INSERT_HISTORY, history)
    for device_class in sorted(new_classes):
        tx.execute(
            "INSERT INTO classes (device_class, first_seen) VALUES (?, ?)"
            " ON CONFLICT (device_class) DO NOTHING",
            (device_class, min(p.now for p in pending)),
        )


def _filter_clauses(query: QueryFilter, *, paged: bool = False) -> tuple[list[str], list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    # A page is read in identity order. A range of sequence or last seen
    # could also be read from its own index, but then every page would sort
    # all the range's devices (SQLite's planner picks that once the table is
    # analysed): ``+column`` keeps such terms off the indexes, so the page is
    # read from the class's (or the primary key's) index in identity order.
    ranged = "+" if paged else ""
    if query.device_class is not None:
        clauses.append("device_class = ?")
        params.append(query.device_class)
    if query.version is not None:
        clauses.append("version = ?")
        params.append(query.version)
    if query.not_version is not None:
        clauses.append("version <> ?")
        params.append(query.not_version)
    if query.min_sequence is not None:
        clauses.append(f"{ranged}sequence >= ?")
        params.append(query.min_sequence)
    if query.max_sequence is not None:
        clauses.append(f"{ranged}sequence <= ?")
        params.append(query.max_sequence)
    if query.last_seen_before is not None:
        clauses.append(f"{ranged}last_seen < ?")
        params.append(query.last_seen_before)
    if query.last_seen_after is not None:
        clauses.append(f"{ranged}last_seen >= ?")
        params.append(query.last_seen_after)
    if query.accepted is not None:
        # A literal, not a parameter: only then may the planner use the
        # partial index of devices running an unaccepted image.
        clauses.append(f"accepted = {int(query.accepted)}")
    if query.image_kind is not None:
        # A literal for the same reason (the values are the enum's, not the peer's).
        clauses.append(f"image_kind = '{ImageKind(query.image_kind).value}'")
    if query.identities:
        clauses.append(f"identity IN ({_placeholders(len(query.identities))})")
        params.extend(identity.encode() for identity in query.identities)
    return clauses, params


def query_sql(query: QueryFilter, after: bytes, limit: int) -> tuple[str, list[object]]:
    """The SQL of one page of ``query`` and its parameters (for the store,
    the plan tests and the benchmark's direct runs alike)."""
    clauses, params = _filter_clauses(query, paged=True)
    where = " AND ".join(["identity > ?", *clauses])
    sql = f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE {where} ORDER BY identity LIMIT ?"
    return sql, [after, *params, limit]


def count_sql(query: QueryFilter) -> tuple[str, list[object]]:
    """The SQL counting the devices ``query`` matches."""
    clauses, params = _filter_clauses(query)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return f"SELECT COUNT(*) FROM devices{where}", params


HISTOGRAM_SQL = (
    "SELECT version, sequence, COUNT(*) FROM devices WHERE device_class = ?"
    " GROUP BY sequence, version ORDER BY sequence, version"
)


def device_record(row: Row) -> DeviceRecord:
    """A ``devices`` row (``_DEVICE_COLUMNS`` order) as a record."""
    return DeviceRecord(
        identity=decode_oid_untrusted(bytes(row[0])),
        device_class=row[1],
        version=row[2],
        sequence=int(row[3]),
        image_digest=bytes(row[4]),
        boot=_boot(int(row[5]), row[6], int(row[7]), int(row[8])),
        free_storage=int(row[9]),
        device_clock=float(row[10]),
        first_seen=float(row[11]),
        last_seen=float(row[12]),
        changed_at=float(row[13]),
    )


def _page(
    tx: Transaction, query: QueryFilter, after: bytes, limit: int
) -> tuple[list[DeviceRecord], bool]:
    # The ``query`` method allows MAX_PAGE (its records must fit a datagram);
    # read here directly (the CLI's --db), a page may be as large as ``rows``'.
    if not 1 <= limit <= MAX_ROWS:
        raise ValueError(f"a page holds 1..{MAX_ROWS} devices, not {limit}")
    sql, params = query_sql(query, after, limit)
    rows = tx.rows(sql, params, binary=True)
    return [device_record(row) for row in rows], len(rows) == limit


EncodedPage = tuple[bytes, bool, bytes, int]
"""What a ``rows`` read gives: the encoded page, whether more may follow, the
next page's cursor (the last device's encoded identity) and how many devices
the page holds."""


def _rows(
    tx: Transaction, query: QueryFilter, after: bytes, limit: int, read: int | None = None
) -> EncodedPage:
    if not 1 <= limit <= MAX_ROWS:
        raise ValueError(f"a page holds 1..{MAX_ROWS} devices, not {limit}")
    read = limit if read is None else max(1, min(read, limit))
    sql, params = query_sql(query, after, read)
    rows = tx.rows(sql, params, binary=True)  # every column bytea, text, integer or float
    page, count = fit_device_page(rows)
    more = len(rows) == read or count < len(rows)
    return page, more, bytes(rows[count - 1][0]) if count else after, count


def _count(tx: Transaction, query: QueryFilter) -> int:
    sql, params = count_sql(query)
    row = tx.row(sql, params)
    return 0 if row is None else int(row[0])


def _histogram(tx: Transaction, device_class: str) -> list[VersionCount]:
    return [
        VersionCount(row[0], int(row[1]), int(row[2]))
        for row in tx.rows(HISTOGRAM_SQL, (device_class,))
    ]


def _classes(tx: Transaction) -> list[str]:
    return [row[0] for row in tx.rows("SELECT device_class FROM classes ORDER BY device_class")]


def _show(
    tx: Transaction, identity: OID, history_limit: int
) -> tuple[DeviceRecord | None, list[HistoryEntry]]:
    key = identity.encode()
    row = tx.row(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE identity = ?", (key,))
    if row is None:
        return None, []
    # The latest ``history_limit`` changes, oldest first.
    entries = tx.rows(
        f"SELECT at, {_STATE_COLUMNS} FROM history WHERE identity = ? ORDER BY id DESC LIMIT ?",
        (key, history_limit),
    )
    history = [
        HistoryEntry(
            float(e[0]),
            e[1],
            e[2],
            int(e[3]),
            bytes(e[4]),
            _boot(int(e[5]), e[6], int(e[7]), int(e[8])),
        )
        for e in reversed(entries)
    ]
    return device_record(row), history


_RECORDS_CHUNK = 500  # identities per statement: under every SQLite's parameter limit


def _records(tx: Transaction, identities: Iterable[OID]) -> dict[OID, DeviceRecord]:
    by_key = {identity.encode(): identity for identity in identities}
    keys = sorted(by_key)
    found: dict[OID, DeviceRecord] = {}
    for start in range(0, len(keys), _RECORDS_CHUNK):
        chunk = keys[start : start + _RECORDS_CHUNK]
        for row in tx.rows(
            f"SELECT {_DEVICE_COLUMNS} FROM devices"
            f" WHERE identity IN ({_placeholders(len(chunk))})",
            chunk,
        ):
            found[by_key[bytes(row[0])]] = device_record(row)
    return found


def _deny(tx: Transaction, identity: OID, reason: str, now: float) -> None:
    tx.execute(
        "INSERT INTO denied (identity, reason, at) VALUES (?, ?, ?)"
        " ON CONFLICT (identity) DO UPDATE SET reason = excluded.reason, at = excluded.at",
        (identity.encode(), reason, now),
    )


def _allow(tx: Transaction, identity: OID) -> bool:
    return tx.execute("DELETE FROM denied WHERE identity = ?", (identity.encode(),)) > 0


def _denied(tx: Transaction) -> list[tuple[OID, str, float]]:
    return [
        (decode_oid_untrusted(bytes(r[0])), r[1], float(r[2]))
        for r in tx.rows("SELECT identity, reason, at FROM denied ORDER BY identity")
    ]


class SyncVersionStore:
    """The Version tables, blocking: for the CLI, tests and the benchmark."""

    def __init__(self, database: SyncDatabase) -> None:
        self.database = database

    @property
    def dialect(self) -> str:
        return self.database.dialect

    def report(self, identity: OID, report: VersionReport, now: float) -> PendingReport:
        """Write one report (its own transaction); what writing it found."""
        pending = PendingReport(identity, report, now)
        self.database.write(lambda tx: write_reports(tx, [pending]), kind="report")
        return pending

    def page(
        self, query: QueryFilter, after: bytes = b"", limit: int = MAX_PAGE
    ) -> tuple[list[DeviceRecord], bool]:
        return self.database.read(lambda tx: _page(tx, query, after, limit), kind="query")

    def rows(
        self,
        query: QueryFilter,
        after: bytes = b"",
        limit: int = MAX_ROWS,
        *,
        read: int | None = None,
    ) -> EncodedPage:
        """One page as the ``rows`` method answers it (an encoded
        :mod:`~dofpy_services.version.page`), whether more may follow, the
        next page's cursor (the last device's encoded identity) and how many
        devices it holds. ``read``: how many of the ``limit`` devices to read
        from the database (default all): as many as are expected to fit the
        page's bytes, so that no read row is only cut off again."""
        return self.database.read(lambda tx: _rows(tx, query, after, limit, read), kind="rows")

    def stream(self, query: QueryFilter, page_size: int = MAX_PAGE) -> Iterator[DeviceRecord]:
        """Every device ``query`` matches, a page at a time."""
        after = b""
        while True:
            devices, more = self.page(query, after, page_size)
            yield from devices
            if not more or not devices:
                return
            after = devices[-1].identity.encode()

    def count(self, query: QueryFilter) -> int:
        return self.database.read(lambda tx: _count(tx, query), kind="count")

    def histogram(self, device_class: str) -> list[VersionCount]:
        return self.database.read(lambda tx: _histogram(tx, device_class), kind="histogram")

    def classes(self) -> list[str]:
        return self.database.read(_classes, kind="classes")

    def show(
        self, identity: OID, history_limit: int = 100
    ) -> tuple[DeviceRecord | None, list[HistoryEntry]]:
        return self.database.read(lambda tx: _show(tx, identity, history_limit), kind="show")

    def records(self, identities: Iterable[OID]) -> dict[OID, DeviceRecord]:
        """The latest record of each of ``identities`` the registry knows
        (the others are absent), in one read: primary-key lookups, a few
        hundred identities a statement."""
        wanted = tuple(identities)  # read again whole if the read is retried
        return self.database.read(lambda tx: _records(tx, wanted), kind="records")

    def deny(self, identity: OID, reason: str, now: float) -> None:
        self.database.write(lambda tx: _deny(tx, identity, reason, now), kind="deny")

    def allow(self, identity: OID) -> bool:
        return self.database.write(lambda tx: _allow(tx, identity), kind="allow")

    def denied(self) -> list[tuple[OID, str, float]]:
        return self.database.read(_denied, kind="denied")

    def statistics(self) -> StoreStatistics:
        return self.database.statistics()

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> SyncVersionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def open_version_store(
    location: str | os.PathLike[str], *, pool_size: int = 4
) -> Iterator[SyncVersionStore]:
    """The Version tables at ``location`` (a SQLite path or a ``postgresql://``
    URL), migrated; blocking calls."""
    database = open_database_sync(
        location, service=SERVICE, migrations=MIGRATIONS, pool_size=pool_size
    )
    with SyncVersionStore(database) as store:
        yield store


class AsyncVersionStore:
    """The Version tables from trio: reads in worker threads, reports through
    a write batcher (acknowledged only once their batch committed)."""

    def __init__(self, database: Database, batcher: WriteBatcher[PendingReport]) -> None:
        self.database = database
        self.batcher = batcher
        self.sync = SyncVersionStore(database.sync)

    async def report(self, identity: OID, report: VersionReport, now: float) -> PendingReport:
        """Write ``report`` in the next batch; returns once it committed, or
        raises the store's error (then nothing of it is acknowledged)."""
        pending = PendingReport(identity, report, now)
        await self.batcher.submit(pending)
        return pending

    async def page(
        self, query: QueryFilter, after: bytes, limit: int
    ) -> tuple[list[DeviceRecord], bool]:
        return await self.database.read(lambda tx: _page(tx, query, after, limit), kind="query")

    async def rows(
        self, query: QueryFilter, after: bytes, limit: int, *, read: int | None = None
    ) -> EncodedPage:
        return await self.database.read(
            lambda tx: _rows(tx, query, after, limit, read), kind="rows"
        )

    async def count(self, query: QueryFilter) -> int:
        return await self.database.read(lambda tx: _count(tx, query), kind="count")

    async def histogram(self, device_class: str) -> list[VersionCount]:
        return await self.database.read(lambda tx: _histogram(tx, device_class), kind="histogram")

    async def classes(self) -> list[str]:
        return await self.database.read(_classes, kind="classes")

    async def show(
        self, identity: OID, history_limit: int
    ) -> tuple[DeviceRecord | None, list[HistoryEntry]]:
        return await self.database.read(lambda tx: _show(tx, identity, history_limit), kind="show")

    def statistics(self) -> StoreStatistics:
        return self.database.statistics()


@asynccontextmanager
async def open_async_version_store(
    location: str | os.PathLike[str],
    *,
    pool_size: int = 4,
    batch_items: int = 256,
    batch_delay: float = 0.005,
    max_pending: int = 4096,
) -> AsyncIterator[AsyncVersionStore]:
    """``async with open_async_version_store(location) as store:`` -- the
    Version tables, migrated, with a write batcher of up to ``batch_items``
    reports per transaction gathered for at most ``batch_delay`` seconds."""
    async with (
        open_database(location, service=SERVICE, migrations=MIGRATIONS, pool_size=pool_size) as db,
        open_write_batcher(
            db,
            write_reports,
            max_items=batch_items,
            max_delay=batch_delay,
            max_pending=max_pending,
            kind="reports",
        ) as batcher,
    ):
        yield AsyncVersionStore(db, batcher)
