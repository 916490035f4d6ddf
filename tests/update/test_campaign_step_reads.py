"""What a daemon step reads of a campaign, on SQLite and PostgreSQL: the
devices in the states it watches (with when each entered its state), and
each wave's devices by state kept as totals plus changes (exactly the rows'
own after a seeded random run of changes, stale writes and folds, and after
the migration that introduced them on a store with rows already)."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dofpy_services.store import Transaction, open_database_sync
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.campaign import CampaignSpec, CampaignState
from dofpy_services.update.engine import DeviceChange, DeviceRow
from dofpy_services.update.tracking import DeviceState
from tests.image.signing_fixtures import NOW
from tests.update.campaign_fixtures import (
    SERVICE_KEY,
    RecordingTransaction,
    assert_counts_match,
    grouped_counts,
    make_spec,
    opened,
)

OWNER = "worker-a"


def _started(tx: Transaction, spec: CampaignSpec, waves: list[list[str]]) -> None:
    cs.create_campaign(tx, spec, SERVICE_KEY, now=NOW, actor="operator")
    cs.populate(tx, spec, [[(d, 0) for d in wave] for wave in waves], now=NOW, owner=OWNER)
    campaign = cs.load_campaign(tx, spec.name, lock=True)
    cs.set_campaign_state(
        tx,
        campaign,
        CampaignState.RUNNING,
        0,
        "started",
        SERVICE_KEY,
        now=NOW,
        actor="operator",
        action="start",
        waves=len(waves),
    )


def _move(
    tx: Transaction, name: str, device: str, state: DeviceState | None, now: float
) -> DeviceRow:
    row = cs.load_device(tx, name, device, OWNER, now=now, lease=60.0)
    assert row is not None
    change = DeviceChange(state, now + 100, row.attempts + 1, "1.0", row.bytes_served)
    return cs.apply_change(tx, name, row, change, OWNER, now=now)


def _waves(count: int, sizes: tuple[int, ...]) -> list[list[str]]:
    names = [f"dev-{n:03d}" for n in range(count)]
    waves, taken = [], 0
    for size in sizes:
        waves.append(names[taken : taken + size])
        taken += size
    return waves


def test_devices_in_states_reads_those_states_with_when_each_entered(db_location: str) -> None:
    spec = make_spec()
    with opened(db_location) as db:
        db.write(lambda tx: _started(tx, spec, _waves(6, (2, 4))))
        db.write(lambda tx: _move(tx, spec.name, "dev-001", DeviceState.NOTIFIED, NOW + 10))
        db.write(lambda tx: _move(tx, spec.name, "dev-003", DeviceState.NOTIFIED, NOW + 20))
        db.write(lambda tx: _move(tx, spec.name, "dev-003", DeviceState.AUTHORISED, NOW + 30))
        # A change of counters only keeps the state, and when it was entered.
        db.write(lambda tx: _move(tx, spec.name, "dev-003", None, NOW + 40))
        db.write(lambda tx: _move(tx, spec.name, "dev-004", DeviceState.NOTIFIED, NOW + 50))
        db.write(lambda tx: _move(tx, spec.name, "dev-004", DeviceState.TIMED_OUT, NOW + 60))
        watched = {DeviceState.NOTIFIED, DeviceState.AUTHORISED, DeviceState.TIMED_OUT}
        found = db.read(lambda tx: cs.devices_in_states(tx, spec.name, watched))
        failed = db.read(lambda tx: cs.devices_in_states(tx, spec.name, {DeviceState.TIMED_OUT}))
        scheduled = db.read(lambda tx: cs.devices_in_states(tx, spec.name, [DeviceState.SCHEDULED]))
        nothing = db.read(lambda tx: cs.devices_in_states(tx, spec.name, []))
        other = db.read(lambda tx: cs.devices_in_states(tx, "autumn", watched))
    assert [(row.device, row.state, entered) for row, entered in found] == [
        ("dev-001", DeviceState.NOTIFIED, NOW + 10),
        ("dev-003", DeviceState.AUTHORISED, NOW + 30),
        ("dev-004", DeviceState.TIMED_OUT, NOW + 60),
    ]
    assert found[1][0].attempts == 3  # the whole row, as stored
    assert [(row.device, entered) for row, entered in failed] == [("dev-004", NOW + 60)]
    assert [(row.device, entered) for row, entered in scheduled] == [
        ("dev-000", NOW),
        ("dev-002", NOW),
        ("dev-005", NOW),
    ]
    assert nothing == [] and other == []


def test_devices_in_states_reads_the_state_index_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "campaigns.db"
    spec = make_spec()
    with opened(str(path)) as db:
        db.write(lambda tx: _started(tx, spec, _waves(40, (10, 30))))
        recording = RecordingTransaction()
        cs.devices_in_states(recording, spec.name, {DeviceState.NOTIFIED})  # type: ignore[arg-type]
    ((sql, params),) = recording.statements
    connection = sqlite3.connect(path)
    try:
        # Before the planner has statistics (a new store) and after.
        for analyse in ("", "ANALYZE"):
            connection.execute(analyse)
            plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            assert len(plan) == 2, plan  # the rows and the log, no sort, no other scan
            assert plan[0].startswith("SEARCH d USING INDEX campaign_devices_state"), plan
            assert "INDEX sqlite_autoindex_campaign_transitions" in plan[1], plan
    finally:
        connection.close()


def test_wave_counts_stay_the_rows_own_through_a_random_run(db_location: str) -> None:
    """Seeded random changes (state changes, counter-only changes, stale
    writes rolled back with the rest of their transaction) with folds at
    random points: the kept counts always equal a GROUP BY of the rows."""
    spec = make_spec()
    rng = random.Random(14)
    states = list(DeviceState)
    with opened(db_location) as db:
        db.write(lambda tx: _started(tx, spec, _waves(30, (3, 9, 18))))
        assert_counts_match(db, spec.name)
        names = [f"dev-{n:03d}" for n in range(30)]
        for step in range(120):
            now = NOW + step
            picked = rng.sample(names, rng.randint(1, 4))
            targets = [rng.choice([None, *states]) for _ in picked]
            stale = rng.random() < 0.2

            def changes(
                tx: Transaction,
                picked: list[str] = picked,
                targets: list[DeviceState | None] = targets,
                stale: bool = stale,
                now: float = now,
            ) -> None:
                for device, target in zip(picked, targets, strict=True):
                    row = _move(tx, spec.name, device, target, now)
                if stale:  # the last row written again from its old revision
                    old = DeviceRow(
                        row.device, row.wave, state=row.state, revision=row.revision - 1
                    )
                    change = DeviceChange(DeviceState.FAILED, now, 0, "", 0)
                    cs.apply_change(tx, spec.name, old, change, OWNER, now=now)

            before = grouped_counts(db, spec.name)
            if stale:
                with pytest.raises(cs.StaleRow):
                    db.write(changes)
                assert grouped_counts(db, spec.name) == before
            else:
                db.write(changes)
            if rng.random() < 0.3:
                db.write(lambda tx: cs.fold_wave_counts(tx, spec.name))
            if step % 10 == 0:
                assert_counts_match(db, spec.name)
        assert_counts_match(db, spec.name)
        # The fold left nothing to add up.
        assert db.write(lambda tx: cs.fold_wave_counts(tx, spec.name)) == 0


def test_the_migration_counts_the_rows_already_there(db_location: str) -> None:
    """A store created before the counts (schema 2) with a campaign under
    way: migrating it counts its rows."""
    spec = make_spec()
    with open_database_sync(db_location, service=cs.SERVICE, migrations=cs.MIGRATIONS[:2]) as db:

        def old_rows(tx: Transaction) -> None:
            tx.execute(
                "INSERT INTO campaigns (name, spec, state, wave, waves, reason, revision,"
                " start_tokens, start_tokens_at, created_at)"
                " VALUES (?, '{}', 'running', 0, 2, '', 1, 1, 0, 0)",
                (spec.name,),
            )
            for n in range(12):
                state = [DeviceState.SCHEDULED, DeviceState.NOTIFIED, DeviceState.SUCCEEDED][n % 3]
                tx.execute(
                    "INSERT INTO campaign_devices (campaign, device, wave, intended_version,"
                    " actual_version, state, stage, reason, attempts, due, utc_offset,"
                    " bytes_served, revision, lease_owner, lease_expires)"
                    " VALUES (?, ?, ?, '2.0', '', ?, NULL, '', 0, 0, 0, 0, 0, NULL, 0)",
                    (spec.name, f"dev-{n:03d}", n // 4 % 2, state.value),
                )

        db.write(old_rows)
    with opened(db_location) as db:
        counts = db.read(lambda tx: cs.wave_counts(tx, spec.name, 2))
        expected = grouped_counts(db, spec.name)
    assert sum(expected.values()) == 12
    assert {
        (wave, state.value): n
        for wave, counted in enumerate(counts)
        for state, n in counted.by_state.items()
    } == expected


def test_claim_takes_the_soonest_due_across_the_waves_up_to_the_current(
    db_location: str,
) -> None:
    spec = make_spec()
    with opened(db_location) as db:
        db.write(lambda tx: _started(tx, spec, _waves(9, (3, 3, 3))))
        # Notified with their silence deadlines (now + 100) at different times.
        for device, at in (("dev-000", 40), ("dev-001", 10), ("dev-003", 20), ("dev-004", 30)):
            db.write(
                lambda tx, d=device, at=at: _move(tx, spec.name, d, DeviceState.NOTIFIED, NOW + at)
            )
        db.write(lambda tx: _move(tx, spec.name, "dev-002", DeviceState.SUCCEEDED, NOW))
        db.write(lambda tx: _move(tx, spec.name, "dev-005", DeviceState.TIMED_OUT, NOW))

        def claim(now: float, limit: int, max_wave: int, every: bool = False) -> list[str]:
            rows = db.write(
                lambda tx: cs.claim_devices(
                    tx,
                    spec.name,
                    "worker-b",
                    now=now,
                    lease=1.0,
                    limit=limit,
                    max_wave=max_wave,
                    every=every,
                )
            )
            return [r.device for r in rows]

        due_by_125 = claim(NOW + 125, 2, 1)
        due_by_145 = claim(NOW + 1000, 9, 1)
        first_wave = claim(NOW + 2000, 9, 0)
        every = claim(NOW + 3000, 9, 2, every=True)
    # (Their own leases taken at NOW + at expired long before: free to claim.)
    assert due_by_125 == ["dev-001", "dev-003"]
    assert due_by_145 == ["dev-001", "dev-003", "dev-004", "dev-000"]
    assert first_wave == ["dev-001", "dev-000"]
    # Settled devices never; with ``every``, the later waves' waiting ones too.
    assert sorted(every) == [
        "dev-000",
        "dev-001",
        "dev-003",
        "dev-004",
        "dev-006",
        "dev-007",
        "dev-008",
    ]


def test_claim_reads_the_unsettled_index_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "campaigns.db"
    spec = make_spec()
    recording = RecordingTransaction()

    with opened(str(path)) as db:
        db.write(lambda tx: _started(tx, spec, _waves(40, (10, 30))))
    for every in (False, True):
        cs.claim_devices(
            recording,  # type: ignore[arg-type]
            spec.name,
            OWNER,
            now=NOW,
            lease=60.0,
            limit=5,
            max_wave=1,
            every=every,
        )
    assert len(recording.statements) == 4  # one per wave
    connection = sqlite3.connect(path)
    try:
        for analyse in ("", "ANALYZE"):
            connection.execute(analyse)
            for sql, params in recording.statements:
                plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
                assert len(plan) == 1, plan  # no sort
                assert "USING INDEX campaign_devices_unsettled" in plan[0], plan
    finally:
        connection.close()


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


def test_postgres_reads_the_step_indexes(postgres_url: str) -> None:
    """On a campaign large enough (and analysed) that PostgreSQL's planner
    weighs a sequential scan against the indexes, the watched states, each
    wave's claim and a device's campaigns (each poll) are read from their
    indexes."""
    spec = make_spec()
    with opened(postgres_url) as db:
        db.write(lambda tx: _started(tx, spec, _waves(20_000, (20, 19_980))))
        for n in range(10):
            db.write(
                lambda tx, n=n: _move(tx, spec.name, f"dev-{n:03d}", DeviceState.NOTIFIED, NOW)
            )
    recording: Any = RecordingTransaction("postgresql")
    cs.devices_in_states(recording, spec.name, {DeviceState.NOTIFIED, DeviceState.FAILED})
    cs.claim_devices(recording, spec.name, OWNER, now=NOW, lease=60.0, limit=5, max_wave=1)
    cs.device_campaigns(recording, "dev-007")
    expected = [
        "campaign_devices_state",
        "campaign_devices_unsettled",
        "campaign_devices_unsettled",
        "campaign_devices_device",
    ]
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("ANALYZE")
        for (sql, params), index in zip(recording.statements, expected, strict=True):
            text = sql.replace("?", "%s").replace(" FOR UPDATE SKIP LOCKED", "")
            (row,) = connection.execute(f"EXPLAIN (FORMAT JSON) {text}", params).fetchall()
            plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
            scans = [
                n
                for n in _plan_nodes(plan[0]["Plan"])
                if n.get("Relation Name") == "campaign_devices" or "Index Name" in n
            ]
            names = {n.get("Index Name") for n in scans}
            assert index in names, (sql, scans)
            assert all(n["Node Type"] != "Seq Scan" for n in scans), (sql, scans)


def test_a_devices_campaigns_are_read_from_its_index_on_sqlite(tmp_path: Path) -> None:
    """What each poll reads first: by the device's own index, not a scan of
    every campaign's rows."""
    path = tmp_path / "campaigns.db"
    spec = make_spec()
    with opened(str(path)) as db:
        db.write(lambda tx: _started(tx, spec, _waves(40, (10, 30))))
        assert db.read(lambda tx: cs.device_campaigns(tx, "dev-007")) == [
            (spec.name, DeviceState.SCHEDULED)
        ]
    recording = RecordingTransaction()

    cs.device_campaigns(recording, "dev-007")  # type: ignore[arg-type]
    ((sql, params),) = recording.statements
    connection = sqlite3.connect(path)
    try:
        for analyse in ("", "ANALYZE"):
            connection.execute(analyse)
            plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            # Its own index, or (analysed: few campaigns) each campaign's
            # primary key: either finds the device's rows, neither scans them.
            (on_devices,) = [step for step in plan if step.split()[1] == "d"]
            assert on_devices.startswith("SEARCH d USING INDEX"), plan
            assert "device=?" in on_devices, plan
    finally:
        connection.close()
