"""The Version service's tables, on SQLite and on PostgreSQL (``db_location``
runs each test on both): idempotent reports with first/last seen and history,
the deny list, every filter against its meaning, keyset pages stable while
reports keep arriving, batches through the write batcher, and the query plans
(indexes, never a scan of the table)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
import trio

from dofpy.wire.oid import OID
from dofpy_services.store import Transaction
from dofpy_services.version.interface import ImageKind, QueryFilter, VersionCount
from dofpy_services.version.page import decode_device_page_untrusted
from dofpy_services.version.store import (
    HISTOGRAM_SQL,
    PendingReport,
    count_sql,
    open_async_version_store,
    open_version_store,
    query_sql,
    write_reports,
)
from tests.services.version_helpers import FILTERS, device, fleet, matches, report


def test_reports_are_idempotent_and_changes_make_history(db_location: str) -> None:
    with open_version_store(db_location) as store:
        first = store.report(device(1), report(version="1.0", sequence=10), 100.0)
        again = store.report(device(1), report(version="1.0", sequence=10, free_storage=5), 150.0)
        upgraded = store.report(device(1), report(version="1.1", sequence=11), 200.0)
        booted = store.report(device(1), report(version="1.1", sequence=11, boot_count=2), 250.0)
        stored, history = store.show(device(1))
        assert store.show(device(2)) == (None, [])
    assert (first.changed, first.previous) == (True, None)
    assert (again.changed, again.previous) == (False, ("1.0", 10))
    assert (upgraded.changed, upgraded.previous) == (True, ("1.0", 10))
    assert booted.changed
    assert stored is not None
    assert (stored.first_seen, stored.last_seen, stored.changed_at) == (100.0, 250.0, 250.0)
    assert (stored.version, stored.sequence, stored.boot.boot_count) == ("1.1", 11, 2)
    assert [(h.at, h.version, h.boot.boot_count) for h in history] == [
        (100.0, "1.0", 1),
        (200.0, "1.1", 1),
        (250.0, "1.1", 2),
    ]


def test_a_denied_identity_is_refused_and_nothing_of_it_written(db_location: str) -> None:
    with open_version_store(db_location) as store:
        store.deny(device(1), "stolen", 50.0)
        refused = store.report(device(1), report(), 100.0)
        other = store.report(device(2), report(), 100.0)
        assert store.show(device(1)) == (None, [])
        assert [(i, r) for i, r, _ in store.denied()] == [(device(1), "stolen")]
        assert store.allow(device(1)) and not store.allow(device(1))
        accepted = store.report(device(1), report(), 200.0)
        assert store.show(device(1))[0] is not None
    assert refused.denied and not refused.changed
    assert not other.denied and other.changed
    assert not accepted.denied and accepted.changed


@pytest.mark.parametrize("page_size", [1, 7, 128])
def test_every_filter_pages_through_exactly_what_it_means(db_location: str, page_size: int) -> None:
    with open_version_store(db_location) as store:
        reported = fleet(store)
        for query in FILTERS:
            expected = sorted(
                (i for i, (sent, seen) in reported.items() if matches(query, sent, seen, i)),
                key=OID.encode,
            )
            streamed = [d.identity for d in store.stream(query, page_size)]
            assert streamed == expected, query
            assert store.count(query) == len(expected), query
        assert expected  # the last filter matches some devices: the test is not vacuous


@pytest.mark.parametrize("read", [1, 5, 60])
def test_rows_pages_read_as_many_devices_as_asked_and_still_miss_none(
    db_location: str, read: int
) -> None:
    """``read`` below ``limit`` (the service's guess of what fits a page):
    each page holds at most ``read`` devices, says more while it read that
    many, and the pages together are every device once, in order."""
    with open_version_store(db_location) as store:
        reported = fleet(store)
        expected = sorted(reported, key=OID.encode)
        streamed: list[bytes] = []
        after, more = b"", True
        while more:
            page, more, after, count = store.rows(QueryFilter(), after, 50, read=read)
            assert count <= min(read, 50)
            streamed.extend(decode_device_page_untrusted(page).keys)
            assert len(streamed) <= len(expected)  # bounded: ends or fails
        assert streamed == [identity.encode() for identity in expected]


def test_histogram_and_classes(db_location: str) -> None:
    with open_version_store(db_location) as store:
        fleet(store)
        assert store.classes() == ["gateway", "sensor"]
        assert store.histogram("sensor") == [
            VersionCount("1.0", 10, 10),
            VersionCount("1.1", 11, 10),
            VersionCount("2.0", 20, 10),
        ]
        assert store.histogram("none") == []


def test_pages_stay_stable_while_reports_keep_arriving(db_location: str) -> None:
    """Keyset pages in identity order: devices that match throughout are each
    listed exactly once although others arrive, change and are re-reported
    between the pages."""
    with open_version_store(db_location) as store:
        for n in range(0, 200, 2):
            store.report(device(n), report(version="1.0"), 100.0)
        query = QueryFilter(device_class="sensor", not_version="2.0")
        listed: list[OID] = []
        after, more, arrivals = b"", True, 0
        while more:
            page, more = store.page(query, after, 9)
            listed.extend(d.identity for d in page)
            if page:
                after = page[-1].identity.encode()
            # Between pages: new devices before and after the cursor, and
            # re-reports of listed and unlisted devices.
            for n in (arrivals * 2 + 1, 399 - arrivals * 2):
                store.report(device(n), report(version="1.0"), 200.0)
            store.report(device(arrivals * 4 % 200), report(version="1.0"), 300.0)
            arrivals += 1
    assert arrivals > 5  # several pages, with reports between them
    old = [device(n) for n in range(0, 200, 2)]
    assert len(listed) == len(set(listed))  # nothing repeated
    assert set(old) <= set(listed)  # nothing that matched throughout missed


def test_a_batch_with_one_device_twice_records_both_changes(db_location: str) -> None:
    with open_version_store(db_location) as store:
        batch = [
            PendingReport(device(1), report(version="1.0", sequence=10), 100.0),
            PendingReport(device(2), report(version="1.0", sequence=10), 100.0),
            PendingReport(device(1), report(version="1.1", sequence=11), 101.0),
        ]
        store.database.write(lambda tx: write_reports(tx, batch))
        stored, history = store.show(device(1))
    assert [p.changed for p in batch] == [True, True, True]
    assert batch[2].previous == ("1.0", 10)
    assert stored is not None and (stored.version, stored.first_seen) == ("1.1", 100.0)
    assert [h.version for h in history] == ["1.0", "1.1"]


async def test_reports_from_many_tasks_commit_in_batches(db_location: str) -> None:
    async with open_async_version_store(db_location, batch_items=32, batch_delay=0.01) as store:
        async with trio.open_nursery() as nursery:
            for n in range(100):
                nursery.start_soon(store.report, device(n), report(), 100.0)
        batches = store.batcher.statistics()
        assert await store.count(QueryFilter()) == 100
    assert batches.items == 100
    assert batches.commits < 100  # gathered: fewer transactions than reports


# -- query plans -------------------------------------------------------------------


def _narrowed_by_an_index(query: QueryFilter) -> bool:
    return bool(
        query.device_class
        or query.identities
        or query.last_seen_before is not None
        or query.last_seen_after is not None
        or query.accepted is False
        or query.image_kind is ImageKind.REPROGRAM
    )


def _every_sql(filters: Sequence[QueryFilter] = FILTERS) -> list[tuple[str, list[object]]]:
    """Every page (first and later), every count a class or an index of its
    own narrows (others read a whole covering index: store.py says so), the
    histogram."""
    statements = [query_sql(query, b"", 128) for query in filters]
    statements += [query_sql(query, device(5).encode(), 128) for query in filters]
    statements += [count_sql(query) for query in filters if _narrowed_by_an_index(query)]
    statements.append((HISTOGRAM_SQL, ["sensor"]))
    return statements


# A partial index holds exactly the devices its condition selects: reading all
# of it reads only matches.
_PARTIAL = (
    "SCAN devices USING INDEX devices_unaccepted",
    "SCAN devices USING INDEX devices_reprogram",
)


def test_sqlite_serves_every_query_from_an_index(tmp_path: Path) -> None:
    path = tmp_path / "version.db"
    with open_version_store(path) as store:
        fleet(store)
    connection = sqlite3.connect(path)
    # Analysed, as a long-running registry is (PRAGMA optimize): the planner
    # then weighs the indexes by their statistics.
    connection.execute("ANALYZE")
    try:
        for sql, params in _every_sql():
            plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            on_devices = [step for step in plan if " devices " in f"{step} "]
            assert on_devices, (sql, plan)
            # SEARCH: a range of an index; SCAN would read the whole table.
            assert all(
                step.startswith("SEARCH devices USING") or step.startswith(_PARTIAL)
                for step in on_devices
            ), (sql, plan)
            assert not any("TEMP B-TREE" in step for step in plan), (sql, plan)  # no sort
    finally:
        connection.close()


def _writer(chunk: list[PendingReport]) -> Callable[[Transaction], None]:
    return lambda tx: write_reports(tx, chunk)


def _plan_nodes(plan: dict[str, object]) -> list[dict[str, object]]:
    nodes = [plan]
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]
        nodes.extend(_plan_nodes(child))
    return nodes


def test_postgres_serves_every_query_from_an_index(postgres_url: str) -> None:
    """On a table large enough that PostgreSQL's planner weighs a sequential
    scan against the indexes (and analysed), each query reads an index."""
    with open_version_store(postgres_url) as store:
        batch = [
            PendingReport(
                device(n),
                report(
                    f"class-{n % 10}",
                    ["1.0", "1.1", "2.0"][n % 3],
                    10 + n % 3,
                    accepted=n % 97 != 0,
                ),
                100.0 + n,
            )
            for n in range(20_000)
        ]
        for start in range(0, len(batch), 1000):
            chunk = batch[start : start + 1000]
            store.database.write(_writer(chunk))
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("ANALYZE devices")
        # The same filters, their times as selective in 20,000 devices as in 60.
        filters = [
            replace(
                query,
                last_seen_after=None if query.last_seen_after is None else 20_000.0,
                last_seen_before=None if query.last_seen_before is None else 200.0,
            )
            for query in FILTERS
        ]
        for sql, fleet_params in _every_sql(filters):
            renamed = {"sensor": "class-1", "gateway": "class-3"}
            params = [renamed.get(p, p) if isinstance(p, str) else p for p in fleet_params]
            text = sql.replace("?", "%s")
            (row,) = connection.execute(f"EXPLAIN (FORMAT JSON) {text}", params).fetchall()
            plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
            nodes = _plan_nodes(plan[0]["Plan"])
            scans = [n for n in nodes if n.get("Relation Name") == "devices"]
            assert scans, (sql, nodes)
            kinds = {n["Node Type"] for n in scans}
            assert kinds <= {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, (sql, kinds)


def test_records_reads_many_identities_at_once(db_location: str) -> None:
    """The batched read (the Update daemon's observations): every known
    identity's latest record, the same as ``show``'s, across several
    statements' worth of identities, and no entry for an unknown one."""
    with open_version_store(db_location) as store:
        batch = [
            PendingReport(device(n), report(version=f"1.{n % 3}"), 100.0 + n) for n in range(1203)
        ]
        store.database.write(_writer(batch))
        store.report(device(7), report(version="2.0", sequence=20), 5000.0)
        wanted = [device(n) for n in range(1203)] + [device(5000), device(5001)]
        found = store.records(reversed(wanted))
        shown = [store.show(device(n))[0] for n in (0, 7, 600, 1202)]
        nothing = store.records([])
    assert set(found) == {device(n) for n in range(1203)}
    assert [found[device(n)] for n in (0, 7, 600, 1202)] == shown
    assert found[device(7)].version == "2.0" and found[device(7)].last_seen == 5000.0
    assert found[device(1202)].version == "1.2"
    assert nothing == {}
