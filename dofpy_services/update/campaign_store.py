"""The Update service's campaign store on the store layer (SQLite or PostgreSQL).

Tables: ``campaigns`` (the spec as JSON, state, current wave, the
start bucket, a revision), ``campaign_approvals`` (the signed
approvals submitted), ``campaign_devices`` (the per-device tracking row,
intended and actual version apart, and its lease), ``campaign_transitions``
(every transition, once: its primary key is the device's revision),
``campaign_wave_counts`` and ``campaign_count_changes`` (each wave's devices
by state, below) and ``update_audit`` (the signed, hash-chained audit trail,
one row per entry).

**Wave counts.** The campaign step reads each wave's devices by state every
step; a GROUP BY over the campaign's rows would cost a million-device
campaign a million rows a step. Instead every state change appends, in the
transaction that writes it, one row to ``campaign_count_changes`` (keyed like
its transition: written once) naming the state left and the state entered;
:func:`fold_wave_counts` (each campaign step) moves those rows into the
per-(wave, state) totals of ``campaign_wave_counts`` (deleting them as it
adds them, in one transaction), and :func:`wave_counts` reads the totals plus
the changes not folded yet in one statement: exact whenever it is read, and
as cheap as the changes since the last step. Changes are only ever inserted
(the hot totals are written by the folder alone, in a fixed order), so two
processes changing devices at once never wait on, nor deadlock over, a
shared counter row.

**Idempotent transitions.** A change is written only if the row still has
the revision it was decided from and the writer holds the device's lease
(``UPDATE ... WHERE revision = ? AND lease_owner = ?``); the transition row
takes the new revision as its key, so a transition can be neither lost (it
commits with the row) nor logged twice (the key), whichever process wrote it.

**Leases.** :func:`claim_devices` takes up to ``limit`` unsettled devices
whose lease is free, expired or the caller's, and leases them until ``now +
lease``: on PostgreSQL with ``SELECT ... FOR UPDATE SKIP LOCKED`` (two
processes claiming at once take different devices); on SQLite the write
transaction (``BEGIN IMMEDIATE``) is the lock (one machine). A killed
process's devices are free for the others once its leases expire. A
device's own report takes its lease from whichever process holds it
(:func:`load_device` with ``take``): a device talks to one process, which
must be able to drive it however often another renews the lease.

**Audit.** Every campaign decision (create, approve, start or refusal, pause,
resume, stop, cancel, a wave advanced, a halt, completion) is an audit entry
appended in the same transaction as the change it records: its sequence is
the primary key, so two processes appending at once cannot fork the chain
(one retries). :func:`audit_trail` returns what
:func:`~dofpy_services.update.audit.verify_trail` checks.

Every function here takes a :class:`~dofpy_services.store.Transaction`: the
caller runs it through ``db.write``/``db.read`` (a worker thread under trio,
never the event loop).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dofpy.image.cose import SigningKey
from dofpy_services.store import Migration, Row, StoreConflict, Transaction
from dofpy_services.update.audit import GENESIS, AuditEntry, entry_hash, sign_entry
from dofpy_services.update.campaign import CampaignSpec, CampaignState
from dofpy_services.update.device_keys import DEVICE_KEYS_MIGRATION
from dofpy_services.update.engine import (
    CampaignRow,
    DeviceChange,
    DeviceRow,
    WaveCounts,
    start_tokens,
)
from dofpy_services.update.tracking import (
    TERMINAL_STATES,
    DeviceState,
    Stage,
    TrackingRecord,
    Transition,
)

__all__ = [
    "MIGRATIONS",
    "SERVICE",
    "StaleRow",
    "add_approval",
    "append_audit",
    "apply_change",
    "audit_trail",
    "campaign_names",
    "claim_devices",
    "create_campaign",
    "device_campaigns",
    "devices_in_states",
    "find_device",
    "fold_wave_counts",
    "load_campaign",
    "load_device",
    "load_devices",
    "notified_elsewhere",
    "populate",
    "set_campaign_state",
    "take_start_token",
    "tracking_records",
    "wave_counts",
]

SERVICE = "update-campaigns"

_SCHEMA = """
CREATE TABLE campaigns (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    wave INTEGER NOT NULL,
    waves INTEGER NOT NULL,
    reason TEXT NOT NULL,
    revision BIGINT NOT NULL,
    start_tokens DOUBLE PRECISION NOT NULL,
    start_tokens_at DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE campaign_approvals (
    campaign TEXT NOT NULL REFERENCES campaigns (name),
    seq INTEGER NOT NULL,
    signed BLOB NOT NULL,
    PRIMARY KEY (campaign, seq)
);
CREATE TABLE campaign_devices (
    campaign TEXT NOT NULL REFERENCES campaigns (name),
    device TEXT NOT NULL,
    wave INTEGER NOT NULL,
    intended_version TEXT NOT NULL,
    actual_version TEXT NOT NULL,
    state TEXT NOT NULL,
    stage TEXT,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    due DOUBLE PRECISION NOT NULL,
    utc_offset INTEGER NOT NULL,
    bytes_served BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (campaign, device)
);
CREATE INDEX campaign_devices_due ON campaign_devices (campaign, due);
CREATE TABLE campaign_transitions (
    campaign TEXT NOT NULL,
    device TEXT NOT NULL,
    revision BIGINT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL,
    stage TEXT,
    reason TEXT NOT NULL,
    writer TEXT NOT NULL,
    PRIMARY KEY (campaign, device, revision)
);
CREATE TABLE update_audit (
    seq BIGINT PRIMARY KEY,
    signed BLOB NOT NULL
);
"""

# The totals start from the rows already there (a store created before this
# migration): the migration runs in one transaction, so they are exact.
_STEP_SCHEMA = """
CREATE INDEX campaign_devices_state ON campaign_devices (campaign, state, device);
CREATE INDEX campaign_devices_unsettled ON campaign_devices (campaign, wave, due, device)
    WHERE state NOT IN ('cancelled', 'failed', 'rolled-back', 'succeeded', 'timed-out');
DROP INDEX campaign_devices_due;
CREATE INDEX campaign_devices_device ON campaign_devices (device);
CREATE TABLE campaign_wave_counts (
    campaign TEXT NOT NULL,
    wave INTEGER NOT NULL,
    state TEXT NOT NULL,
    devices BIGINT NOT NULL,
    PRIMARY KEY (campaign, wave, state)
);
CREATE TABLE campaign_count_changes (
    campaign TEXT NOT NULL,
    device TEXT NOT NULL,
    revision BIGINT NOT NULL,
    wave INTEGER NOT NULL,
    left_state TEXT NOT NULL,
    entered_state TEXT NOT NULL,
    PRIMARY KEY (campaign, device, revision)
);
INSERT INTO campaign_wave_counts (campaign, wave, state, devices)
    SELECT campaign, wave, state, COUNT(*) FROM campaign_devices GROUP BY campaign, wave, state;
"""

# The devices another process notified lately: read by every process at its
# step, so that it pushes the ones watching at it (a range of the latest
# notifications, not the log).
_NOTIFIED_SCHEMA = """
CREATE INDEX campaign_transitions_notified ON campaign_transitions (at)
    WHERE state = 'notified';
"""

MIGRATIONS = (
    Migration(
        1,
        "campaigns, approvals, per-device tracking with leases, transitions, audit trail",
        _SCHEMA,
        _SCHEMA.replace("BLOB", "BYTEA").replace("TEXT NOT NULL", 'TEXT COLLATE "C" NOT NULL'),
    ),
    DEVICE_KEYS_MIGRATION,
    Migration(
        3,
        "indexes of a step's reads and of a device's campaigns; per-wave counts",
        _STEP_SCHEMA,
        _STEP_SCHEMA.replace("TEXT NOT NULL", 'TEXT COLLATE "C" NOT NULL'),
    ),
    Migration(4, "an index of the latest notifications", _NOTIFIED_SCHEMA),
)

_UNSETTLED = "state NOT IN ('cancelled', 'failed', 'rolled-back', 'succeeded', 'timed-out')"
"""The condition of the unsettled devices' partial index, spelled as the
index spells it (literals: only then may the planners use the index)."""
assert _UNSETTLED.count("'") == 2 * len(TERMINAL_STATES) and all(
    f"'{s.value}'" in _UNSETTLED for s in TERMINAL_STATES
)
_DEVICE_COLUMN_NAMES = (
    "device",
    "wave",
    "state",
    "revision",
    "attempts",
    "due",
    "utc_offset",
    "actual_version",
    "bytes_served",
    "stage",
    "reason",
)
_DEVICE_COLUMNS = ", ".join(_DEVICE_COLUMN_NAMES)
_ADD_COUNT = (
    "INSERT INTO campaign_wave_counts (campaign, wave, state, devices) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (campaign, wave, state)"
    " DO UPDATE SET devices = campaign_wave_counts.devices + excluded.devices"
)


class StaleRow(Exception):
    """The row changed (or its lease moved) since it was read: decide again."""


def _lock(tx: Transaction) -> str:
    return " FOR UPDATE" if tx.dialect == "postgresql" else ""


def _indexed_by(tx: Transaction, index: str) -> str:
    """SQLite told which index a step's read takes: without STAT4 its
    statistics (once analysed) count a state's rows as the average state's,
    and ten states' worth looks like the whole table. (PostgreSQL's planner
    keeps the values' frequencies.)"""
    return f" INDEXED BY {index}" if tx.dialect == "sqlite" else ""


# -- audit ------------------------------------------------------------------------------


def append_audit(
    tx: Transaction,
    key: SigningKey,
    *,
    now: float,
    actor: str,
    action: str,
    payload: Mapping[str, Any] | None = None,
    approval: bytes | None = None,
) -> AuditEntry:
    """Append one signed entry after the trail's head, in ``tx``. Two writers
    at once: the second's insert conflicts (``StoreConflict``) and its whole
    transaction is retried by the caller."""
    last = tx.row("SELECT seq, signed FROM update_audit ORDER BY seq DESC LIMIT 1")
    sequence, previous = (0, GENESIS) if last is None else (int(last[0]) + 1, entry_hash(last[1]))
    entry = AuditEntry(sequence, previous, int(now), actor, action, dict(payload or {}), approval)
    tx.execute(
        "INSERT INTO update_audit (seq, signed) VALUES (?, ?)", (sequence, sign_entry(entry, key))
    )
    return entry


def audit_trail(tx: Transaction) -> list[bytes]:
    """The whole trail, in order: what ``verify_trail`` takes."""
    return [bytes(r[0]) for r in tx.rows("SELECT signed FROM update_audit ORDER BY seq")]


# -- campaigns --------------------------------------------------------------------------


def _campaign(row: Row) -> CampaignRow:
    spec = CampaignSpec.from_json(json.loads(row[0]))
    return CampaignRow(spec, CampaignState(row[1]), int(row[2]), int(row[3]), int(row[4]), row[5])


def create_campaign(
    tx: Transaction, spec: CampaignSpec, key: SigningKey, *, now: float, actor: str
) -> None:
    """Store a new campaign (``StoreConflict``: the name is taken)."""
    tx.execute(
        "INSERT INTO campaigns (name, spec, state, wave, waves, reason, revision,"
        " start_tokens, start_tokens_at, created_at) VALUES (?, ?, ?, 0, 0, '', 0, 1, ?, ?)",
        (spec.name, json.dumps(spec.to_json()), CampaignState.CREATED.value, now, now),
    )
    append_audit(
        tx,
        key,
        now=now,
        actor=actor,
        action="create",
        payload={
            "campaign": spec.name,
            "terms": spec.terms.digest,
            "spec": json.dumps(spec.to_json()),
        },
    )


def load_campaign(tx: Transaction, name: str, *, lock: bool = False) -> CampaignRow:
    """The campaign ``name``; ``KeyError`` if there is none. ``lock``: held
    until ``tx`` ends (PostgreSQL; SQLite's write transaction holds it anyway)."""
    row = tx.row(
        "SELECT spec, state, wave, waves, revision, reason FROM campaigns WHERE name = ?"
        + (_lock(tx) if lock else ""),
        (name,),
    )
    if row is None:
        raise KeyError(name)
    return _campaign(row)


def campaign_names(tx: Transaction, states: Iterable[CampaignState] | None = None) -> list[str]:
    rows = tx.rows("SELECT name, state FROM campaigns ORDER BY name")
    wanted = None if states is None else {s.value for s in states}
    return [r[0] for r in rows if wanted is None or r[1] in wanted]


def set_campaign_state(
    tx: Transaction,
    campaign: CampaignRow,
    state: CampaignState,
    wave: int,
    reason: str,
    key: SigningKey,
    *,
    now: float,
    actor: str,
    action: str,
    waves: int | None = None,
) -> CampaignRow:
    """Move ``campaign`` (as read, at its revision) to ``state``/``wave``, and
    audit it; :class:`StaleRow` if another writer moved it first."""
    total = campaign.waves if waves is None else waves
    changed = tx.execute(
        "UPDATE campaigns SET state = ?, wave = ?, waves = ?, reason = ?, revision = revision + 1"
        " WHERE name = ? AND revision = ?",
        (state.value, wave, total, reason, campaign.spec.name, campaign.revision),
    )
    if changed != 1:
        raise StaleRow(campaign.spec.name)
    append_audit(
        tx,
        key,
        now=now,
        actor=actor,
        action=action,
        payload={
            "campaign": campaign.spec.name,
            "from": campaign.state.value,
            "to": state.value,
            "wave": wave,
            "reason": reason,
        },
    )
    return CampaignRow(campaign.spec, state, wave, total, campaign.revision + 1, reason)


def add_approval(
    tx: Transaction, name: str, signed: bytes, key: SigningKey, *, now: float, actor: str
) -> int:
    """Keep a submitted approval (checked when the campaign starts) and audit
    it with the party's signed bytes carried; how many are kept now."""
    row = tx.row("SELECT COUNT(*) FROM campaign_approvals WHERE campaign = ?", (name,))
    seq = 0 if row is None else int(row[0])
    tx.execute(
        "INSERT INTO campaign_approvals (campaign, seq, signed) VALUES (?, ?, ?)",
        (name, seq, signed),
    )
    append_audit(
        tx, key, now=now, actor=actor, action="approve", payload={"campaign": name}, approval=signed
    )
    return seq + 1


def approvals(tx: Transaction, name: str) -> list[bytes]:
    return [
        bytes(r[0])
        for r in tx.rows(
            "SELECT signed FROM campaign_approvals WHERE campaign = ? ORDER BY seq", (name,)
        )
    ]


def populate(
    tx: Transaction,
    spec: CampaignSpec,
    waves: Sequence[Sequence[tuple[str, int]]],
    *,
    now: float,
    owner: str,
) -> None:
    """Insert the resolved population: ``waves[i]`` lists (device, utc
    offset); each device's log starts with its SCHEDULED transition."""
    tx.executemany(
        "INSERT INTO campaign_devices (campaign, device, wave, intended_version, actual_version,"
        " state, stage, reason, attempts, due, utc_offset, bytes_served, revision, lease_owner,"
        " lease_expires) VALUES (?, ?, ?, ?, '', ?, NULL, '', 0, 0, ?, 0, 0, NULL, 0)",
        [
            (spec.name, device, number, spec.intended_version, DeviceState.SCHEDULED.value, offset)
            for number, members in enumerate(waves)
            for device, offset in members
        ],
    )
    tx.executemany(
        "INSERT INTO campaign_transitions (campaign, device, revision, at, state, stage,"
        " reason, writer) VALUES (?, ?, 0, ?, ?, NULL, '', ?)",
        [
            (spec.name, device, now, DeviceState.SCHEDULED.value, owner)
            for members in waves
            for device, _ in members
        ],
    )
    # Counted from the rows just inserted (duplicates would have failed
    # their primary key above).
    tx.executemany(
        _ADD_COUNT,
        [
            (spec.name, number, DeviceState.SCHEDULED.value, len(members))
            for number, members in enumerate(waves)
            if members
        ],
    )


def take_start_token(tx: Transaction, campaign: CampaignRow, now: float) -> bool:
    """Take one start token (the bucket paces both the devices-per-minute and
    the bytes/s cap) if the bucket has one and the campaign still runs (the
    row is locked for the rest of ``tx``: processes starting devices take
    turns, and a pause committed meanwhile is seen)."""
    row = tx.row(
        "SELECT start_tokens, start_tokens_at, state FROM campaigns WHERE name = ?" + _lock(tx),
        (campaign.spec.name,),
    )
    assert row is not None
    if row[2] != CampaignState.RUNNING.value:
        return False  # paused, stopped or halted since the step read it
    tokens, at = start_tokens(campaign.spec, float(row[0]), float(row[1]), now)
    if tokens < 1.0 - 1e-9:
        tx.execute(
            "UPDATE campaigns SET start_tokens = ?, start_tokens_at = ? WHERE name = ?",
            (tokens, max(at, float(row[1])), campaign.spec.name),
        )
        return False
    tx.execute(
        "UPDATE campaigns SET start_tokens = ?, start_tokens_at = ? WHERE name = ?",
        (tokens - 1.0, max(at, float(row[1])), campaign.spec.name),
    )
    return True


# -- devices ----------------------------------------------------------------------------


def _device(row: Row) -> DeviceRow:
    return DeviceRow(
        device=row[0],
        wave=int(row[1]),
        state=DeviceState(row[2]),
        revision=int(row[3]),
        attempts=int(row[4]),
        due=float(row[5]),
        utc_offset=int(row[6]),
        actual_version=row[7],
        bytes_served=int(row[8]),
        stage=None if row[9] is None else Stage(row[9]),
        reason=row[10],
    )


def claim_devices(
    tx: Transaction,
    campaign: str,
    owner: str,
    *,
    now: float,
    lease: float,
    limit: int,
    max_wave: int,
    every: bool = False,
) -> list[DeviceRow]:
    """Lease up to ``limit`` unsettled devices of ``campaign`` in waves up to
    ``max_wave`` that need attention now (due: to start, to time out, a
    window opening; ``every``: all of them, to cancel) to ``owner`` until
    ``now + lease`` (those it holds already renewed), soonest due first.
    Devices another process holds an unexpired lease on are left to it."""
    skip = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgresql" else ""
    # One wave at a time, each a range of the unsettled devices' index in
    # due order that stops after ``limit`` (a single ``wave <= ?`` read would
    # pass every waiting device of the later waves, all due at 0: the whole
    # population, early on); the soonest ``limit`` of them all are leased.
    due = "" if every else " AND due <= ?"
    unsettled = _indexed_by(tx, "campaign_devices_unsettled")
    found: list[Row] = []
    for wave in range(max_wave + 1):
        found += tx.rows(
            f"SELECT {_DEVICE_COLUMNS} FROM campaign_devices{unsettled}"
            " WHERE campaign = ? AND wave = ?"
            f" AND {_UNSETTLED}{due}"
            " AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires < ?)"
            f" ORDER BY due, device LIMIT ?{skip}",
            (campaign, wave, *(() if every else (now,)), owner, now, limit),
        )
    rows = sorted(found, key=lambda r: (float(r[5]), r[0]))[:limit]
    tx.executemany(
        "UPDATE campaign_devices SET lease_owner = ?, lease_expires = ?"
        " WHERE campaign = ? AND device = ?",
        [(owner, now + lease, campaign, r[0]) for r in rows],
    )
    return [_device(r) for r in rows]


def load_device(
    tx: Transaction,
    campaign: str,
    device: str,
    owner: str,
    *,
    now: float,
    lease: float,
    take: bool = False,
) -> DeviceRow | None:
    """The device's row, leased to ``owner`` (locked for ``tx`` on
    PostgreSQL); ``None`` if it is not in the campaign or another process
    holds an unexpired lease on it. ``take``: the lease moves to ``owner``
    whoever holds it (the device itself reports to ``owner``: the process a
    device talks to drives it). Taking it is safe under any holder: the
    holder's next write fails its lease check (:class:`StaleRow`) and its
    next read sees the lease gone."""
    row = tx.row(
        f"SELECT {_DEVICE_COLUMNS}, lease_owner, lease_expires FROM campaign_devices"
        " WHERE campaign = ? AND device = ?" + _lock(tx),
        (campaign, device),
    )
    if row is None:
        return None
    holder, expires = row[11], float(row[12])
    if holder is not None and holder != owner and expires >= now and not take:
        return None
    tx.execute(
        "UPDATE campaign_devices SET lease_owner = ?, lease_expires = ?"
        " WHERE campaign = ? AND device = ?",
        (owner, now + lease, campaign, device),
    )
    return _device(row)


def find_device(tx: Transaction, campaign: str, device: str) -> DeviceRow | None:
    """The device's row in ``campaign`` as it is (no lease taken: a read)."""
    row = tx.row(
        f"SELECT {_DEVICE_COLUMNS} FROM campaign_devices WHERE campaign = ? AND device = ?",
        (campaign, device),
    )
    return None if row is None else _device(row)


def device_campaigns(tx: Transaction, device: str) -> list[tuple[str, DeviceState]]:
    """Every campaign ``device`` is in, with its state there, oldest first."""
    rows = tx.rows(
        "SELECT d.campaign, d.state FROM campaign_devices d JOIN campaigns c ON c.name ="
        " d.campaign WHERE d.device = ? ORDER BY c.created_at, d.campaign",
        (device,),
    )
    return [(r[0], DeviceState(r[1])) for r in rows]


def apply_change(
    tx: Transaction,
    campaign: str,
    row: DeviceRow,
    change: DeviceChange,
    owner: str,
    *,
    now: float,
) -> DeviceRow:
    """Write ``change`` to the device read as ``row``, and log its transition
    (when the state changes) under the new revision; :class:`StaleRow` if
    the row moved on or ``owner`` lost its lease."""
    state = row.state if change.state is None else change.state
    revision = row.revision + (change.state is not None)
    changed = tx.execute(
        "UPDATE campaign_devices SET state = ?, stage = ?, reason = ?, attempts = ?, due = ?,"
        " actual_version = ?, bytes_served = ?, revision = ?"
        " WHERE campaign = ? AND device = ? AND revision = ? AND lease_owner = ?",
        (
            state.value,
            None if change.stage is None else change.stage.value,
            change.reason,
            change.attempts,
            change.due,
            change.actual_version,
            change.bytes_served,
            revision,
            campaign,
            row.device,
            row.revision,
            owner,
        ),
    )
    if changed != 1:
        raise StaleRow(row.device)
    if change.state is not None:
        try:
            tx.execute(
                "INSERT INTO campaign_transitions (campaign, device, revision, at, state, stage,"
                " reason, writer) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    campaign,
                    row.device,
                    revision,
                    now,
                    state.value,
                    None if change.stage is None else change.stage.value,
                    change.reason,
                    owner,
                ),
            )
        except StoreConflict:
            raise StaleRow(row.device) from None
        if state is not row.state:
            # The row was at row.revision, so in row.state (a state changes
            # only with the revision): the wave's counts move by this row.
            tx.execute(
                "INSERT INTO campaign_count_changes (campaign, device, revision, wave,"
                " left_state, entered_state) VALUES (?, ?, ?, ?, ?, ?)",
                (campaign, row.device, revision, row.wave, row.state.value, state.value),
            )
    return DeviceRow(
        row.device,
        row.wave,
        state,
        revision,
        change.attempts,
        change.due,
        row.utc_offset,
        change.actual_version,
        change.bytes_served,
        change.stage,
        change.reason,
    )


def notified_elsewhere(tx: Transaction, owner: str, since: float) -> list[tuple[str, str, float]]:
    """(campaign, device, at) of each notification written after ``since`` by
    a process other than ``owner``, oldest first: a range of the partial
    index of notifications, so a step pays for the notifications since the
    last, not for the log."""
    rows = tx.rows(
        "SELECT campaign, device, at FROM campaign_transitions"
        " WHERE state = 'notified' AND at > ? AND writer <> ? ORDER BY at",
        (since, owner),
    )
    return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]


def load_devices(tx: Transaction, campaign: str) -> list[DeviceRow]:
    return [
        _device(r)
        for r in tx.rows(
            f"SELECT {_DEVICE_COLUMNS} FROM campaign_devices WHERE campaign = ? ORDER BY device",
            (campaign,),
        )
    ]


def devices_in_states(
    tx: Transaction, campaign: str, states: Iterable[DeviceState]
) -> list[tuple[DeviceRow, float]]:
    """The devices of ``campaign`` in one of ``states``, by name, each with
    when it entered its state (its transition at the row's revision): read
    from the (campaign, state) index, so it costs the devices in those
    states, not the campaign's."""
    wanted = sorted(s.value for s in states)
    if not wanted:
        return []
    columns = ", ".join(f"d.{c}" for c in _DEVICE_COLUMN_NAMES)
    rows = tx.rows(
        f"SELECT {columns}, t.at FROM campaign_devices d{_indexed_by(tx, 'campaign_devices_state')}"
        " LEFT JOIN campaign_transitions t"
        " ON t.campaign = d.campaign AND t.device = d.device AND t.revision = d.revision"
        f" WHERE d.campaign = ? AND d.state IN ({', '.join('?' * len(wanted))})",
        (campaign, *wanted),
    )
    # Sorted here, not by the query: asked for the device order, SQLite's
    # planner reads the primary key's whole range to avoid a sort of the few
    # rows the state index gives.
    rows.sort(key=lambda r: str(r[0]))
    return [(_device(r), 0.0 if r[11] is None else float(r[11])) for r in rows]


def fold_wave_counts(tx: Transaction, campaign: str) -> int:
    """Move ``campaign``'s state changes logged since the last fold into its
    per-wave totals (the changes deleted as they are added, in ``tx``); how
    many it folded. Changes committed meanwhile by others wait for the next
    fold; two folding at once fold each change once (the second's delete
    finds the first's rows gone)."""
    folded = tx.rows(
        "DELETE FROM campaign_count_changes WHERE campaign = ?"
        " RETURNING wave, left_state, entered_state",
        (campaign,),
    )
    deltas: dict[tuple[int, str], int] = {}
    for wave, left, entered in folded:
        deltas[(int(wave), left)] = deltas.get((int(wave), left), 0) - 1
        deltas[(int(wave), entered)] = deltas.get((int(wave), entered), 0) + 1
    # In key order: two folders lock the totals in the same order.
    tx.executemany(
        _ADD_COUNT,
        [(campaign, w, state, delta) for (w, state), delta in sorted(deltas.items()) if delta],
    )
    return len(folded)


def wave_counts(tx: Transaction, campaign: str, waves: int) -> list[WaveCounts]:
    """Each wave's size and devices by state: the folded totals plus the
    changes not folded yet, read in one statement (one snapshot)."""
    by_wave: list[dict[DeviceState, int]] = [{} for _ in range(waves)]
    for wave, state, count in tx.rows(
        "SELECT wave, state, SUM(devices) FROM ("
        " SELECT wave, state, devices FROM campaign_wave_counts WHERE campaign = ?"
        " UNION ALL SELECT wave, left_state, -1 FROM campaign_count_changes WHERE campaign = ?"
        " UNION ALL SELECT wave, entered_state, 1 FROM campaign_count_changes WHERE campaign = ?"
        ") AS counted GROUP BY wave, state",
        (campaign, campaign, campaign),
    ):
        if int(count):
            by_wave[int(wave)][DeviceState(state)] = int(count)
    return [WaveCounts(sum(c.values()), c) for c in by_wave]


def tracking_records(tx: Transaction, campaign: str) -> list[TrackingRecord]:
    """Every device's tracking record (state log included): what reports read."""
    spec = load_campaign(tx, campaign).spec
    logs: dict[str, list[Transition]] = {}
    for device, at, state, stage, reason in tx.rows(
        "SELECT device, at, state, stage, reason FROM campaign_transitions WHERE campaign = ?"
        " ORDER BY device, revision",
        (campaign,),
    ):
        logs.setdefault(device, []).append(
            Transition(
                float(at), DeviceState(state), None if stage is None else Stage(stage), reason
            )
        )
    records = []
    for row in load_devices(tx, campaign):
        records.append(
            TrackingRecord(
                row.device,
                row.wave,
                spec.intended_version,
                row.actual_version,
                tuple(logs.get(row.device, ())),
                row.attempts,
                row.bytes_served,
            )
        )
    return records
