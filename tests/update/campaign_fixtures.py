"""A campaign's spec, its approvals and a simulated fleet, for the engine tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dofpy.image import Party
from dofpy_services.store import SyncDatabase, open_database_sync
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.approvals import ApprovalPolicy, CampaignTerms, sign_approval
from dofpy_services.update.campaign import CampaignSpec, CampaignState, RetryPolicy
from dofpy_services.update.tracking import TERMINAL_STATES, TrackingRecord
from dofpy_services.update.worker import CampaignWorker
from tests.image.signing_fixtures import DAY, NOW, Keys, ed25519_key, make_root
from tests.update.campaign_sim import Fleet, SimDevice

KEYS = Keys.make()
ROOT = make_root(KEYS)
SERVICE_KEY_SEED = 42
SERVICE_KEY = ed25519_key(SERVICE_KEY_SEED)
IMAGE_SIZE = 1_000_000
POLICY = ApprovalPolicy({Party.MANUFACTURER: 2, Party.OPERATOR: 1})


def make_spec(**changes: Any) -> CampaignSpec:
    terms = CampaignTerms(
        name="spring",
        manifest_digest=bytes(range(32)),
        population={"class": "meter", "not-version": "2.0"},
        policy=POLICY,
        start=NOW,
        deadline=NOW + 2 * DAY,
    )
    terms = dataclasses.replace(terms, **changes.pop("terms", {}))
    spec = CampaignSpec(
        terms=terms,
        intended_version="2.0",
        image_size=IMAGE_SIZE,
        canary_share=0.2,
        growth=2.0,
        success_threshold=0.8,
        failure_threshold=0.5,
        retry=RetryPolicy(
            max_attempts=3, base=30.0, cap=300.0, retryable=frozenset({"transfer-interrupted"})
        ),
        silence_timeout=900.0,
    )
    return dataclasses.replace(spec, **changes)


def full_approvals(terms: CampaignTerms) -> list[bytes]:
    return [
        sign_approval(terms, KEYS.m1, Party.MANUFACTURER, now=NOW),
        sign_approval(terms, KEYS.m2, Party.MANUFACTURER, now=NOW),
        sign_approval(terms, KEYS.op, Party.OPERATOR, now=NOW),
    ]


def make_fleet(
    spec: CampaignSpec, behaviours: dict[str, str] | None = None, count: int = 20, **device: Any
) -> Fleet:
    behaviours = behaviours or {}
    devices = {}
    for number in range(count):
        name = f"dev-{number:03d}"
        devices[name] = SimDevice(name, behaviour=behaviours.get(name, "normal"), **device)
    return Fleet(spec.name, spec.intended_version, spec.image_size, devices, now=float(NOW))


@contextmanager
def opened(location: str) -> Iterator[SyncDatabase]:
    with open_database_sync(location, service=cs.SERVICE, migrations=cs.MIGRATIONS) as db:
        yield db


def start(
    worker: CampaignWorker, spec: CampaignSpec, fleet: Fleet, offsets: dict[str, int] | None = None
) -> int:
    offsets = offsets or {}
    worker.create(spec, now=fleet.now, actor="operator")
    for signed in full_approvals(spec.terms):
        worker.approve(spec.name, signed, ROOT, now=fleet.now, actor="operator")
    return worker.start(
        spec.name,
        ROOT,
        lambda _spec: [(d, offsets.get(d, 0)) for d in fleet.devices],
        now=fleet.now,
        actor="operator",
    )


def campaign_state(db: SyncDatabase, name: str) -> CampaignState:
    return db.read(lambda tx: cs.load_campaign(tx, name)).state


def run_until_settled(
    worker: CampaignWorker, fleet: Fleet, *, dt: float = 10.0, max_ticks: int = 3000
) -> int:
    """Tick until the campaign is final (or halted and quiet); the ticks run."""
    for tick in range(max_ticks):
        fleet.tick(worker, dt)
        state = campaign_state(worker.db, fleet.campaign)
        final = state in (CampaignState.COMPLETED, CampaignState.STOPPED, CampaignState.CANCELLED)
        devices = worker.db.read(lambda tx: cs.load_devices(tx, fleet.campaign))
        if final and all(r.state in TERMINAL_STATES for r in devices):
            return tick
        if state is CampaignState.HALTED and not in_progress(worker.db, fleet.campaign):
            return tick
    return max_ticks


def in_progress(db: SyncDatabase, name: str) -> list[str]:
    """Devices started and not yet settled."""
    from dofpy_services.update.engine import PROGRESS_ORDER  # noqa: PLC0415

    return [
        r.device for r in db.read(lambda tx: cs.load_devices(tx, name)) if r.state in PROGRESS_ORDER
    ]


def records(db: SyncDatabase, name: str) -> dict[str, TrackingRecord]:
    return {r.device: r for r in db.read(lambda tx: cs.tracking_records(tx, name))}


def assert_log_consistent(db: SyncDatabase, name: str) -> None:
    """Every device's log: one transition per revision, none twice, the
    row's state its last; what reports read matches the rows."""
    for row in db.read(lambda tx: cs.load_devices(tx, name)):
        revisions = db.read(
            lambda tx, d=row.device: [
                r[0]
                for r in tx.rows(
                    "SELECT revision FROM campaign_transitions WHERE campaign = ? AND device = ?"
                    " ORDER BY revision",
                    (name, d),
                )
            ]
        )
        assert revisions == list(range(row.revision + 1)), (row.device, revisions)
    for device, record in records(db, name).items():
        assert record.transitions, device
    assert_counts_match(db, name)


def grouped_counts(db: SyncDatabase, name: str) -> dict[tuple[int, str], int]:
    """Each (wave, state)'s devices counted from the rows themselves."""
    return db.read(
        lambda tx: {
            (int(r[0]), r[1]): int(r[2])
            for r in tx.rows(
                "SELECT wave, state, COUNT(*) FROM campaign_devices WHERE campaign = ?"
                " GROUP BY wave, state",
                (name,),
            )
        }
    )


def assert_counts_match(db: SyncDatabase, name: str) -> None:
    """The kept wave counts (totals and changes not folded yet) are the
    rows' own, before and after folding."""
    waves = db.read(lambda tx: cs.load_campaign(tx, name)).waves
    expected = grouped_counts(db, name)
    for fold in (False, True):
        if fold:
            db.write(lambda tx: cs.fold_wave_counts(tx, name))
        counts = db.read(lambda tx: cs.wave_counts(tx, name, waves))
        kept = {
            (wave, state.value): count
            for wave, counted in enumerate(counts)
            for state, count in counted.by_state.items()
        }
        assert kept == expected, (fold, kept, expected)
        assert [c.size for c in counts] == [
            sum(n for (w, _), n in expected.items() if w == wave) for wave in range(waves)
        ]


def assert_matches_fleet(db: SyncDatabase, fleet: Fleet) -> None:
    """The record against each device's own state: SUCCEEDED exactly for the
    devices running the new version accepted; the actual version what the
    device runs (once it reported after the update)."""
    from dofpy_services.update.tracking import DeviceState  # noqa: PLC0415

    for device, record in records(db, fleet.campaign).items():
        own = fleet.devices[device]
        running_new = own.version == fleet.new_version and own.accepted
        assert (record.state is DeviceState.SUCCEEDED) == running_new, (device, record.state, own)
        if own.phase == "done":
            assert record.actual_version == own.version, (
                device,
                record.actual_version,
                own.version,
            )


class RecordingTransaction:
    """A stand-in transaction that records the reads a store function makes
    and answers none, so that a test can ask the database itself how it
    would plan them (``EXPLAIN``). Writes are taken and dropped: with no row
    read there is nothing they would change."""

    def __init__(self, dialect: str = "sqlite") -> None:
        self.dialect = dialect
        self.statements: list[tuple[str, tuple[object, ...]]] = []

    def rows(
        self, sql: str, params: Sequence[object] = (), *, binary: bool = False
    ) -> list[object]:
        self.statements.append((sql, tuple(params)))
        return []

    def executemany(self, sql: str, params: object) -> None:
        del sql, params  # dropped: see the class's docstring
