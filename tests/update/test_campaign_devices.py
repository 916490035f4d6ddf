"""The device interface on the campaign store (what ``dofpy update serve``
answers devices), with explicit ``now``: assignments only for devices the
engine notified, authorisation only when the install may start (running
campaign, inside the device's local maintenance window; those authorised
before a pause finish), stages moving the row forward once, accepted boots,
and signed install reports checked against the enrolled report key (and
the image bytes they report counted once)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from dofpy_services.store import SyncDatabase, open_database_sync
from dofpy_services.update import campaign_store as cs
from dofpy_services.update import device_keys as dk
from dofpy_services.update.campaign import Window, in_window
from dofpy_services.update.campaign_devices import CampaignDevices, window_bounds
from dofpy_services.update.daemon import NotifiedElsewhere, observe_versions
from dofpy_services.update.device_interface import (
    InstallOutcome,
    InstallReport,
    Stage,
    sign_install_report,
)
from dofpy_services.update.device_provider import NotNow, Refused
from dofpy_services.update.engine import (
    AHEAD,
    HELD_AHEAD,
    ActionKind,
    Command,
    DeviceEvent,
    DeviceRow,
    EventKind,
)
from dofpy_services.update.reports import build_report
from dofpy_services.update.tracking import DeviceState
from dofpy_services.update.tracking import Stage as FailedStage
from dofpy_services.update.worker import CampaignWorker
from dofpy_services.version import store as version_store
from dofpy_services.version.store import SyncVersionStore, open_version_store
from tests.image.signing_fixtures import NOW
from tests.services.version_helpers import device, report
from tests.update.campaign_fixtures import (
    ROOT,
    SERVICE_KEY,
    RecordingTransaction,
    assert_log_consistent,
    full_approvals,
    make_spec,
    opened,
)
from tests.update.test_campaign_rules import windows

IMAGE = hashlib.sha256(b"the new image").digest()
KEYS = {n: ed25519.Ed25519PrivateKey.from_private_bytes(bytes([n + 1]) * 32) for n in range(4)}
WINDOW = Window.parse("02:00-04:00")
MIDNIGHT = NOW - NOW % 86_400  # a UTC midnight before the campaign starts


def _public(n: int) -> bytes:
    return KEYS[n].public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SyncDatabase]:
    with opened(str(tmp_path / "campaigns.db")) as database:
        yield database


def _setup(db: SyncDatabase, **changes: object) -> tuple[CampaignWorker, CampaignDevices]:
    settings: dict[str, object] = {"canary_share": 1.0, "image_sequence": 20, "image_digest": IMAGE}
    spec = make_spec(**{**settings, **changes})
    worker = CampaignWorker(db, SERVICE_KEY, "update-1", lease=30.0)
    worker.create(spec, now=NOW, actor="operator")
    for signed in full_approvals(spec.terms):
        worker.approve(spec.name, signed, ROOT, now=NOW, actor="operator")
    worker.start(
        spec.name, ROOT, lambda _s: [(str(device(n)), 0) for n in range(3)], now=NOW, actor="op"
    )
    for n in range(3):
        db.write(lambda tx, n=n: dk.enrol_key(tx, str(device(n)), _public(n), now=NOW))
    return worker, CampaignDevices(worker, retry_after=5.0)


def _row(worker: CampaignWorker, n: int) -> DeviceRow:
    row = worker.db.read(lambda tx: cs.find_device(tx, "spring", str(device(n))))
    assert row is not None
    return row


def _state(worker: CampaignWorker, n: int) -> DeviceState:
    row = worker.db.read(lambda tx: cs.find_device(tx, "spring", str(device(n))))
    assert row is not None
    return row.state


def _signed(n: int, outcome: InstallOutcome, **fields: object) -> tuple[bytes, bytes]:
    values: dict[str, object] = {
        "device": device(n), "campaign": "spring", "intended_digest": IMAGE,
        "intended_version": "2.0", "running_digest": IMAGE, "running_version": "2.0",
        "outcome": outcome, "at": float(NOW + 100),
    }  # fmt: skip
    signer = KEYS[int(str(fields.pop("key", n)))]
    values.update(fields)
    return sign_install_report(signer, InstallReport(**values))  # type: ignore[arg-type]


def test_assignment_only_once_the_engine_notified_the_device(db: SyncDatabase) -> None:
    worker, devices = _setup(db)
    assert devices.poll(device(0), NOW) == []  # scheduled: not its turn yet
    with pytest.raises(NotNow):
        devices.authorise(device(0), "spring", bytes(range(32)), NOW)
    worker.step(NOW + 1)
    (assignment,) = devices.poll(device(0), NOW + 2)
    assert (assignment.campaign, assignment.manifest_digest) == ("spring", bytes(range(32)))
    assert (assignment.version, assignment.sequence) == ("2.0", 20)
    assert devices.poll(device(7), NOW + 2) == []  # not in any campaign
    with pytest.raises(Refused, match="not in campaign"):
        devices.authorise(device(7), "spring", bytes(range(32)), NOW + 2)


def test_authorised_only_inside_the_devices_window(db: SyncDatabase) -> None:
    worker, devices = _setup(db, windows=(WINDOW,))
    worker.step(NOW + 1)
    day = MIDNIGHT + 86_400  # after NOW: the next midnight
    before = day + 3600  # 01:00 UTC: outside 02:00-04:00
    with pytest.raises(NotNow) as waited:
        devices.authorise(device(0), "spring", bytes(range(32)), before)
    assert waited.value.retry_after == pytest.approx(3600)
    assert _state(worker, 0) is DeviceState.NOTIFIED
    (assignment,) = devices.poll(device(0), before)
    assert (assignment.window_start, assignment.window_end) == (day + 7200, day + 4 * 3600)
    with pytest.raises(Refused, match="manifest"):
        devices.authorise(device(0), "spring", b"\x01" * 32, day + 7300)
    granted = devices.authorise(device(0), "spring", bytes(range(32)), day + 7300)
    assert granted.not_after <= day + 4 * 3600
    assert _state(worker, 0) is DeviceState.AUTHORISED


def test_window_bounds_wrap_past_midnight() -> None:
    spec = make_spec(windows=(Window.parse("22:00-04:00"),))
    day = MIDNIGHT + 86_400
    assert window_bounds(spec, day + 3600, 0) == (day - 7200, day + 4 * 3600)
    assert window_bounds(spec, day + 5 * 3600, 0) == (day + 22 * 3600, day + 28 * 3600)
    # A device two hours east of UTC: its 22:00 is 20:00 UTC.
    assert window_bounds(spec, day + 5 * 3600, 7200)[0] == day + 20 * 3600


@given(
    st.lists(windows, min_size=1, max_size=3),
    st.floats(NOW, NOW + 10 * 86_400),
    st.integers(-50_000, 50_000),
)
def test_the_window_bounds_are_the_window_the_device_is_in_or_the_next(
    chosen: list[Window], now: float, offset: int
) -> None:
    spec = make_spec(windows=tuple(chosen), terms={"deadline": NOW + 100 * 86_400})
    opens, closes = window_bounds(spec, now, offset)
    assert opens < closes
    assert in_window(spec.windows, max(opens, now), offset)
    if in_window(spec.windows, now, offset):
        assert opens <= now < closes
    else:
        assert now < opens < now + 86_400


def test_pause_holds_new_authorisations_and_lets_authorised_devices_finish(
    db: SyncDatabase,
) -> None:
    worker, devices = _setup(db)
    worker.step(NOW + 1)
    devices.authorise(device(0), "spring", bytes(range(32)), NOW + 2)
    worker.command("spring", Command.PAUSE, now=NOW + 3, actor="operator")
    with pytest.raises(NotNow):
        devices.authorise(device(1), "spring", bytes(range(32)), NOW + 4)
    devices.authorise(device(0), "spring", bytes(range(32)), NOW + 4)  # finishing
    devices.progress(device(0), "spring", Stage.TRANSFERRING.value, "", NOW + 5)
    assert _state(worker, 0) is DeviceState.TRANSFERRING
    worker.command("spring", Command.RESUME, now=NOW + 6, actor="operator")
    devices.authorise(device(1), "spring", bytes(range(32)), NOW + 7)
    assert _state(worker, 1) is DeviceState.AUTHORISED
    worker.command("spring", Command.CANCEL, now=NOW + 8, actor="operator")
    worker.step(NOW + 9)
    for n in (0, 1, 2):
        assert _state(worker, n) is DeviceState.CANCELLED
        assert devices.poll(device(n), NOW + 10) == []
        with pytest.raises(Refused):
            devices.authorise(device(n), "spring", bytes(range(32)), NOW + 10)


def test_stages_move_the_row_forward_once_and_a_failure_names_its_stage(
    db: SyncDatabase,
) -> None:
    worker, devices = _setup(db)
    worker.step(NOW + 1)
    devices.authorise(device(0), "spring", bytes(range(32)), NOW + 2)
    for stage in (Stage.AUTHORISED, Stage.REPROGRAM_MODE, Stage.TRANSFERRING, Stage.INSTALLING):
        devices.progress(device(0), "spring", stage.value, "", NOW + 3)
    devices.progress(device(0), "spring", Stage.TRANSFERRING.value, "", NOW + 4)  # stale
    assert _state(worker, 0) is DeviceState.INSTALLING
    assert not devices.accept_booted(device(0), "spring", "normal", b"\x09" * 32, NOW + 5)
    assert devices.accept_booted(device(0), "spring", "reprogram", b"\x09" * 32, NOW + 5)
    assert devices.accept_booted(device(0), "spring", "normal", IMAGE, NOW + 5)
    assert _state(worker, 0) is DeviceState.NORMAL_MODE  # not succeeded: the Version service says
    devices.authorise(device(1), "spring", bytes(range(32)), NOW + 2)
    devices.progress(device(1), "spring", Stage.TRANSFERRING.value, "storage broken", NOW + 6)
    row = worker.db.read(lambda tx: cs.find_device(tx, "spring", str(device(1))))
    assert row is not None
    assert (row.state, row.stage, row.reason) == (
        DeviceState.FAILED,
        FailedStage.TRANSFER,
        "storage broken",
    )
    with pytest.raises(Refused, match="no such stage"):
        devices.progress(device(0), "spring", "dancing", "", NOW + 7)


def test_install_reports_verify_against_the_enrolled_key(db: SyncDatabase) -> None:
    worker, devices = _setup(db)
    worker.step(NOW + 1)
    devices.authorise(device(0), "spring", bytes(range(32)), NOW + 2)
    devices.progress(device(0), "spring", Stage.INSTALLING.value, "", NOW + 3)
    data, signature = _signed(0, InstallOutcome.SUCCEEDED)
    with pytest.raises(Refused, match="not the device's"):
        devices.install_report(device(1), data, signature, NOW + 4)  # another's key
    forged = _signed(1, InstallOutcome.FAILED, key=0)
    with pytest.raises(Refused, match="not the device's"):
        devices.install_report(device(1), *forged, NOW + 4)
    with pytest.raises(Refused, match="no report key"):
        devices.install_report(device(3), *_signed(3, InstallOutcome.FAILED), NOW + 4)
    devices.install_report(device(0), data, signature, NOW + 4)
    devices.install_report(device(0), data, signature, NOW + 5)  # repeated: kept once
    assert _state(worker, 0) is DeviceState.INSTALLING  # success only from the Version service
    devices.authorise(device(1), "spring", bytes(range(32)), NOW + 2)
    failed = _signed(
        1, InstallOutcome.FAILED, failed_stage=Stage.NORMAL_MODE, reason="health check failed",
        running_version="r1",
    )  # fmt: skip
    devices.install_report(device(1), *failed, NOW + 6)
    row = worker.db.read(lambda tx: cs.find_device(tx, "spring", str(device(1))))
    assert row is not None
    assert (row.state, row.stage, row.reason) == (
        DeviceState.FAILED,
        FailedStage.BOOT,
        "health check failed",
    )
    kept = worker.db.read(lambda tx: dk.install_reports(tx, "spring"))
    assert [d for d, _, _ in kept] == [str(device(0)), str(device(1))]


def _bytes_served(worker: CampaignWorker, n: int) -> int:
    row = worker.db.read(lambda tx: cs.find_device(tx, "spring", str(device(n))))
    assert row is not None
    return row.bytes_served


def test_install_reports_record_the_image_bytes_the_device_fetched_once(
    db: SyncDatabase,
) -> None:
    worker, devices = _setup(db)
    worker.step(NOW + 1)
    for n in (0, 1):
        devices.authorise(device(n), "spring", bytes(range(32)), NOW + 2)
        devices.progress(device(n), "spring", Stage.INSTALLING.value, "", NOW + 3)
    success = _signed(0, InstallOutcome.SUCCEEDED, bytes_fetched=70_000)
    devices.install_report(device(0), *success, NOW + 4)
    devices.install_report(device(0), *success, NOW + 5)  # repeated: not counted twice
    again = _signed(0, InstallOutcome.SUCCEEDED, bytes_fetched=70_000, at=float(NOW + 6))
    devices.install_report(device(0), *again, NOW + 6)  # re-signed after a lost answer
    assert (_state(worker, 0), _bytes_served(worker, 0)) == (DeviceState.INSTALLING, 70_000)
    failed = _signed(
        1, InstallOutcome.FAILED, failed_stage=Stage.TRANSFERRING, reason="disk full",
        bytes_fetched=30_000,
    )  # fmt: skip
    devices.install_report(device(1), *failed, NOW + 7)
    assert (_state(worker, 1), _bytes_served(worker, 1)) == (DeviceState.FAILED, 30_000)
    # Settled, a later report (its retry fetched more) still raises it.
    more = _signed(1, InstallOutcome.FAILED, failed_stage=Stage.TRANSFERRING,
                   reason="disk full", bytes_fetched=45_000, at=float(NOW + 8))  # fmt: skip
    devices.install_report(device(1), *more, NOW + 8)
    assert (_state(worker, 1), _bytes_served(worker, 1)) == (DeviceState.FAILED, 45_000)
    records = worker.db.read(lambda tx: cs.tracking_records(tx, "spring"))
    assert build_report("spring", records).bytes_served == 115_000


def test_an_old_version_seen_before_the_install_is_no_revert(
    db: SyncDatabase, tmp_path: Path
) -> None:
    worker, devices = _setup(db)
    with open_version_store(str(tmp_path / "version.db")) as store:
        store.report(device(0), report("meter", "1.0", 10), float(NOW))
    versions = SyncVersionStore(
        open_database_sync(
            str(tmp_path / "version.db"),
            service=version_store.SERVICE,
            migrations=version_store.MIGRATIONS,
        )
    )
    worker.step(NOW + 1)
    devices.authorise(device(0), "spring", bytes(range(32)), NOW + 2)
    devices.progress(device(0), "spring", Stage.INSTALLING.value, "", NOW + 3)
    observe_versions(worker, versions, NOW + 4)
    assert _state(worker, 0) is DeviceState.INSTALLING  # rebooting into the new image
    versions.report(device(0), report("meter", "1.0", 10), float(NOW + 5))
    observe_versions(worker, versions, NOW + 6)
    assert _state(worker, 0) is DeviceState.FAILED  # reported the old one since: reverted
    versions.close()


def test_an_observation_that_changes_nothing_writes_nothing(
    db: SyncDatabase, tmp_path: Path
) -> None:
    """Observed each step, a notified device seen on the version already
    recorded is left alone (no write, no lease taken); the observations
    written are counted."""
    worker, _ = _setup(db)
    with open_version_store(str(tmp_path / "version.db")) as store:
        for n in (0, 1):  # device 2 is unknown to the registry
            store.report(device(n), report("meter", "1.0", 10), float(NOW))
    versions = SyncVersionStore(
        open_database_sync(
            str(tmp_path / "version.db"),
            service=version_store.SERVICE,
            migrations=version_store.MIGRATIONS,
        )
    )

    def leases() -> list[tuple[object, ...]]:
        return worker.db.read(
            lambda tx: [
                tuple(r)
                for r in tx.rows(
                    "SELECT device, actual_version, lease_owner, lease_expires, revision"
                    " FROM campaign_devices ORDER BY device"
                )
            ]
        )

    worker.step(NOW + 1)
    assert {_state(worker, n) for n in range(3)} == {DeviceState.NOTIFIED}
    assert observe_versions(worker, versions, NOW + 2) == 2  # their versions recorded
    recorded = leases()
    assert [r[1] for r in recorded] == ["1.0", "1.0", ""]
    assert observe_versions(worker, versions, NOW + 100) == 0
    assert leases() == recorded
    versions.close()


def test_device_enrol_registers_the_report_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
        NoEncryption,
        PrivateFormat,
    )

    from dofpy_services.cli import main  # noqa: PLC0415

    public = tmp_path / "sensor.pub"
    public.write_bytes(
        KEYS[0].public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    private = tmp_path / "other.pem"
    private.write_bytes(KEYS[1].private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    location = str(tmp_path / "campaigns.db")
    enrol = ["update", "device", "enrol", "--db", location, "--report-key"]
    assert main([*enrol, str(public), str(device(0))]) == 0
    assert main([*enrol, str(private), str(device(1))]) == 0  # the public half is kept
    (tmp_path / "junk.pem").write_text("not a key")
    assert main([*enrol, str(tmp_path / "junk.pem"), str(device(2))]) != 0
    with opened(location) as db:
        assert db.read(lambda tx: dk.device_key(tx, str(device(0)))) == _public(0)
        assert db.read(lambda tx: dk.device_key(tx, str(device(1)))) == _public(1)
        assert db.read(lambda tx: dk.device_key(tx, str(device(2)))) is None


def test_stop_lets_authorised_devices_finish_and_starts_no_other(db: SyncDatabase) -> None:
    worker, devices = _setup(db, canary_share=0.34)  # waves of 2 and 1
    worker.step(NOW + 1)
    notified = [n for n in range(3) if _state(worker, n) is DeviceState.NOTIFIED]
    waiting = [n for n in range(3) if _state(worker, n) is DeviceState.SCHEDULED]
    assert (len(notified), len(waiting)) == (2, 1)
    first, second = notified
    devices.authorise(device(first), "spring", bytes(range(32)), NOW + 2)
    worker.command("spring", Command.STOP, now=NOW + 3, actor="operator")
    worker.step(NOW + 4)
    assert _state(worker, waiting[0]) is DeviceState.CANCELLED  # never started
    assert devices.poll(device(waiting[0]), NOW + 5) == []
    # Notified but not authorised: it had not begun, so it is stopped at once
    # (cancelled, recorded so) rather than told "not now" until it times out.
    assert _state(worker, second) is DeviceState.CANCELLED
    with pytest.raises(Refused):
        devices.authorise(device(second), "spring", bytes(range(32)), NOW + 5)
    devices.authorise(device(first), "spring", bytes(range(32)), NOW + 5)  # finishing
    devices.progress(device(first), "spring", Stage.INSTALLING.value, "", NOW + 6)
    assert _state(worker, first) is DeviceState.INSTALLING


def test_a_device_talking_to_another_process_takes_its_lease_there(
    db_location: str, tmp_path: Path
) -> None:
    """Two processes on one store: update-1's step notifies the devices and
    holds their leases (for 30 s from the claim; before observations stopped
    writing when nothing changed, they renewed them at every step); device 0
    talks to update-2 only. update-2 takes the lease at the device's first
    report and drives it at once (before: NotNow while update-1 held it);
    update-1's observations leave it alone from then on, and an observation
    never takes a lease another holds."""
    with open_version_store(str(tmp_path / "version.db")) as store:
        for n in range(3):
            store.report(device(n), report("meter", "1.0", 10), float(NOW))
    versions = SyncVersionStore(
        open_database_sync(
            str(tmp_path / "version.db"),
            service=version_store.SERVICE,
            migrations=version_store.MIGRATIONS,
        )
    )
    with opened(db_location) as db:
        notifier, _ = _setup(db)
        other = CampaignWorker(db, SERVICE_KEY, "update-2", lease=30.0)
        devices = CampaignDevices(other, retry_after=5.0)
        notifier.step(NOW + 1)  # all three notified, leased to update-1 until NOW + 31
        observe_versions(notifier, versions, NOW + 2)
        observed = DeviceEvent(EventKind.OBSERVED, version="1.0", accepted=True)
        assert other.handle("spring", str(device(1)), observed, now=NOW + 5) is None
        (assignment,) = devices.poll(device(0), NOW + 5)
        granted = devices.authorise(device(0), "spring", assignment.manifest_digest, NOW + 6)
        assert granted.campaign == "spring"
        devices.progress(device(0), "spring", Stage.REPROGRAM_MODE.value, "", NOW + 7)
        observe_versions(notifier, versions, NOW + 8)
        notifier.step(NOW + 8)
        devices.progress(device(0), "spring", Stage.TRANSFERRING.value, "", NOW + 9)

        def leases(tx: Any) -> dict[str, str]:
            rows = tx.rows("SELECT device, lease_owner FROM campaign_devices ORDER BY device")
            return {r[0]: r[1] for r in rows}

        def writers(tx: Any) -> list[tuple[str, str]]:
            rows = tx.rows(
                "SELECT state, writer FROM campaign_transitions WHERE device = ? ORDER BY revision",
                (str(device(0)),),
            )
            return [(r[0], r[1]) for r in rows]

        assert db.read(leases) == {
            str(device(0)): "update-2",
            str(device(1)): "update-1",
            str(device(2)): "update-1",
        }
        assert db.read(writers) == [
            ("scheduled", "update-1"),
            ("notified", "update-1"),
            ("authorised", "update-2"),
            ("reprogram-mode", "update-2"),
            ("transferring", "update-2"),
        ]
        assert_log_consistent(db, "spring")
    versions.close()


def test_a_device_downloading_ahead_is_held_until_its_window_and_by_a_pause_or_stop(
    db: SyncDatabase,
) -> None:
    """An A/B device downloads and verifies before its window, unauthorised:
    held (not timed out, though the window opens hours after its silence
    timeout) until the window opens, then authorised; it has not begun to
    install, so a pause holds it and a stop cancels it, as a NOTIFIED
    device, while one authorised finishes."""
    worker, devices = _setup(db, windows=(WINDOW,))
    worker.step(NOW + 1)
    opens = MIDNIGHT + 86_400 + 7200  # 02:00 UTC the next day: 18 hours on
    for n in (0, 1):
        devices.progress(device(n), "spring", Stage.TRANSFERRING.value, "", NOW + 2)
        assert _row(worker, n).reason == AHEAD
        devices.progress(device(n), "spring", Stage.VERIFYING.value, "", NOW + 3)
        row = _row(worker, n)
        assert (row.state, row.reason, row.due) == (DeviceState.VERIFYING, HELD_AHEAD, opens)
        with pytest.raises(NotNow) as waited:
            devices.authorise(device(n), "spring", bytes(range(32)), NOW + 4)
        assert waited.value.retry_after == pytest.approx(opens - NOW - 4)
    now = NOW + 4.0
    while now < opens:  # the worker steps on; a poll is a check-in
        worker.step(now)
        devices.poll(device(0), now)
        now += 600.0
    assert _row(worker, 0).state is DeviceState.VERIFYING  # held, not timed out
    worker.step(opens + 1)
    assert _row(worker, 0).reason == AHEAD  # its window opened: still unauthorised
    worker.command("spring", Command.PAUSE, now=opens + 2, actor="operator")
    with pytest.raises(NotNow):
        devices.authorise(device(0), "spring", bytes(range(32)), opens + 3)
    worker.command("spring", Command.RESUME, now=opens + 4, actor="operator")
    granted = devices.authorise(device(0), "spring", bytes(range(32)), opens + 5)
    assert granted.not_after > opens + 5
    assert (_row(worker, 0).state, _row(worker, 0).reason) == (DeviceState.VERIFYING, "")
    worker.command("spring", Command.STOP, now=opens + 6, actor="operator")
    worker.step(opens + 7)
    assert _row(worker, 1).state is DeviceState.CANCELLED  # downloaded, never authorised
    devices.authorise(device(0), "spring", bytes(range(32)), opens + 8)  # finishing
    devices.progress(device(0), "spring", Stage.INSTALLING.value, "", opens + 9)
    assert _state(worker, 0) is DeviceState.INSTALLING


def test_a_device_told_to_wait_for_its_window_does_not_time_out_meanwhile(
    db: SyncDatabase,
) -> None:
    """Notified 18 hours before its window (the seed's layout asks before it
    downloads): told NotNow until the window opens, it is silent only from
    then, not timed out after the campaign's 900 s silence timeout."""
    worker, devices = _setup(db, windows=(WINDOW,), failure_threshold=1.0)
    worker.step(NOW + 1)
    opens = MIDNIGHT + 86_400 + 7200
    for n in (0, 1):
        with pytest.raises(NotNow) as waited:
            devices.authorise(device(n), "spring", bytes(range(32)), NOW + 2)
        assert waited.value.retry_after == pytest.approx(opens - NOW - 2)
        assert _row(worker, n).due == opens + 900.0
    for now in (NOW + 1000, opens - 1):
        worker.step(now)
        assert _state(worker, 0) is _state(worker, 1) is DeviceState.NOTIFIED
    assert _state(worker, 2) is DeviceState.TIMED_OUT  # never asked: silent
    devices.authorise(device(0), "spring", bytes(range(32)), opens)
    assert _state(worker, 0) is DeviceState.AUTHORISED


def test_a_process_pushes_devices_another_process_notified(db_location: str) -> None:
    """With two processes on one store, update-1's step notifies the devices;
    update-2 (the process they watch at) reads those notifications at its
    next step as NOTIFY actions, each once, and never its own: before, only
    the notifying process pushed, so a device watching elsewhere waited for
    its next poll."""
    with opened(db_location) as db:
        notifier, _ = _setup(db)
        other = CampaignWorker(db, SERVICE_KEY, "update-2", lease=30.0)
        mine = NotifiedElsewhere("update-1", float(NOW))
        theirs = NotifiedElsewhere("update-2", float(NOW))
        assert theirs.read(other) == []
        notifier.step(NOW + 1)  # all three notified by update-1
        read = theirs.read(other)
        assert sorted((a.kind, a.device, a.campaign) for a in read) == [
            (ActionKind.NOTIFY, str(device(n)), "spring") for n in range(3)
        ]
        assert theirs.read(other) == []  # each notification once
        assert mine.read(notifier) == []  # a process's own are pushed by its step


def test_the_latest_notifications_are_read_from_their_index_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "campaigns.db"
    with opened(str(path)) as db:
        notifier, _ = _setup(db)
        notifier.step(NOW + 1)
    recording = RecordingTransaction()

    cs.notified_elsewhere(recording, "update-2", float(NOW))  # type: ignore[arg-type]
    ((sql, params),) = recording.statements
    connection = sqlite3.connect(path)
    try:
        for analyse in ("", "ANALYZE"):
            connection.execute(analyse)
            plan = [r[3] for r in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            assert plan == [
                "SEARCH campaign_transitions USING INDEX campaign_transitions_notified (at>?)"
            ], plan
    finally:
        connection.close()
