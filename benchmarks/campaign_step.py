"""One Update daemon step on a large campaign: ``worker.step`` (the campaign
step's wave counts, the devices claimed) and ``observe_versions`` (what the
Version registry says of the devices in flight), timed on a campaign of N
devices with a canary wave of ``--in-flight`` devices notified and waiting;
and a device's campaigns read (``device_campaigns``: what each poll reads
first).

``python -m benchmarks.campaign_step [--devices N] [--in-flight K]
[--backend sqlite|postgres|both] [--steps S]``. What it measures is how the
step's cost grows with the population while the devices in flight stay the
same: run it at 100,000 and 1,000,000 devices (and against an older dofpy
with ``PYTHONPATH`` pointing at it: the script uses only the store calls
every version has). Figures are the median of ``--steps`` steps, wall time
and this process's CPU time (on PostgreSQL the server's CPU is not in it).
For sizing: docs/operations.md, "Sizing the Update service"."""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from benchmarks.summary import Summary
from dofpy.image import Party
from dofpy.image.cose import SigningKey
from dofpy.wire.oid import OID
from dofpy_services.store import SyncDatabase, Transaction, open_database_sync
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.approvals import ApprovalPolicy, CampaignTerms
from dofpy_services.update.campaign import CampaignSpec, CampaignState
from dofpy_services.update.daemon import observe_versions
from dofpy_services.update.worker import CampaignWorker
from dofpy_services.version import store as version_store
from dofpy_services.version.interface import BootState, ImageKind, VersionReport
from dofpy_services.version.store import PendingReport, SyncVersionStore, write_reports

__all__ = ["StepFigures", "run"]

NOW = 1_800_000_000.0
DAY = 86_400
_LOAD_CHUNK = 5_000


@dataclass(frozen=True, slots=True)
class StepFigures:
    backend: str
    devices: int
    in_flight: int
    step_wall: float
    step_cpu: float
    observe_wall: float
    observe_cpu: float
    poll_lookup: float
    """Wall time of a device's campaigns read (what each poll reads first)."""
    load_seconds: float


def _identity(number: int) -> OID:
    return OID(3, f"dev-{number:07d}@step.bench.example".encode())


def _spec(devices: int, in_flight: int) -> CampaignSpec:
    terms = CampaignTerms(
        name="step-bench",
        manifest_digest=bytes(range(32)),
        population={"class": "meter", "not-version": "2.0"},
        policy=ApprovalPolicy({Party.OPERATOR: 1}),
        start=int(NOW),
        deadline=int(NOW) + 30 * DAY,
    )
    return CampaignSpec(
        terms=terms,
        intended_version="2.0",
        image_size=1_000_000,
        # The canary wave is the devices in flight: notified at the first
        # step, and none settles (their silence deadline is a day away).
        canary_share=in_flight / devices,
        growth=2.0,
        success_threshold=0.8,
        failure_threshold=0.5,
        silence_timeout=float(DAY),
        devices_per_minute=0.0,
    )


def _waves(spec: CampaignSpec, devices: int) -> list[list[tuple[str, int]]]:
    # In number order (assign_waves' digest order would cost a sort of the
    # population and change nothing measured here).
    waves, taken, size = [], 0, max(1, round(devices * spec.canary_share))
    while taken < devices:
        take = min(size, devices - taken)
        waves.append([(str(_identity(n)), 0) for n in range(taken, taken + take)])
        taken += take
        size = int(size * spec.growth)
    return waves


def _load_campaign(db: SyncDatabase, key: SigningKey, spec: CampaignSpec, devices: int) -> None:
    waves = _waves(spec, devices)

    def load(tx: Transaction) -> None:
        cs.create_campaign(tx, spec, key, now=NOW, actor="bench")
        cs.populate(tx, spec, waves, now=NOW, owner="bench")
        campaign = cs.load_campaign(tx, spec.name, lock=True)
        cs.set_campaign_state(
            tx,
            campaign,
            CampaignState.RUNNING,
            0,
            "benchmark",
            key,
            now=NOW,
            actor="bench",
            action="start",
            waves=len(waves),
        )

    db.write(load)


def _load_registry(versions: SyncVersionStore, devices: int) -> None:
    # Every device of the population known to the registry, on its old version.
    report = VersionReport(
        "meter", "1.0", 1, bytes(32), BootState(0, ImageKind.NORMAL, True, 1), 1 << 30, NOW
    )
    for start in range(0, devices, _LOAD_CHUNK):
        batch = [
            PendingReport(_identity(n), report, NOW - 60)
            for n in range(start, min(devices, start + _LOAD_CHUNK))
        ]
        versions.database.write(lambda tx, batch=batch: write_reports(tx, batch))


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(
    backend: str, campaigns: str, registry: str, devices: int, in_flight: int, steps: int
) -> StepFigures:
    key = SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32))
    spec = _spec(devices, in_flight)
    started = time.perf_counter()
    db = open_database_sync(campaigns, service=cs.SERVICE, migrations=cs.MIGRATIONS)
    versions = SyncVersionStore(
        open_database_sync(
            registry, service=version_store.SERVICE, migrations=version_store.MIGRATIONS
        )
    )
    try:
        _load_campaign(db, key, spec, devices)
        _load_registry(versions, devices)
        load_seconds = time.perf_counter() - started
        worker = CampaignWorker(db, key, "bench", lease=60.0, batch=in_flight)
        worker.step(NOW + 1)  # notifies the canary: the devices in flight
        row = db.read(
            lambda tx: tx.row("SELECT COUNT(*) FROM campaign_devices WHERE state = 'notified'")
        )
        notified = 0 if row is None else int(row[0])
        # The first observation records the version each notified device
        # runs (a write each); the steps timed are the steady state after it.
        observe_versions(worker, versions, NOW + 1)
        step_times, observe_times, lookups = [], [], []
        for number in range(steps):
            now = NOW + 2 + number
            step_times.append(_timed(lambda now=now: worker.step(now)))
            observe_times.append(_timed(lambda now=now: observe_versions(worker, versions, now)))
            polling = str(_identity(devices * number // steps))
            lookups.append(_timed(lambda d=polling: db.read(lambda tx: cs.device_campaigns(tx, d))))
    finally:
        versions.close()
        db.close()
    return StepFigures(
        backend,
        devices,
        notified,
        statistics.median(t[0] for t in step_times),
        statistics.median(t[1] for t in step_times),
        statistics.median(t[0] for t in observe_times),
        statistics.median(t[1] for t in observe_times),
        statistics.median(t[0] for t in lookups),
        load_seconds,
    )


@contextmanager
def _locations(backend: str) -> Iterator[tuple[str, str] | str]:
    """(campaign store, registry) for ``backend``, or why it is skipped."""
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="dofpy-bench-step-"))
        try:
            yield str(folder / "campaigns.db"), str(folder / "version.db")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    from dofpy.testing.postgres import (  # noqa: PLC0415
        create_schema,
        drop_schema,
        find_admin_url,
        with_options,
    )

    admin, why = find_admin_url()
    if admin is None:
        yield f"postgres: skipped ({why})"
        return
    schemas = [create_schema(admin), create_schema(admin)]
    try:
        yield tuple(with_options(admin, search_path=s) for s in schemas)  # type: ignore[misc]
    finally:
        for schema in schemas:
            drop_schema(admin, schema)


def run_backend(backend: str, devices: int, in_flight: int, steps: int) -> StepFigures | str:
    with _locations(backend) as where:
        if isinstance(where, str):
            return where
        campaigns, registry = where
        return measure(backend, campaigns, registry, devices, in_flight, steps)


def report(results: Sequence[StepFigures | str]) -> str:
    lines = ["Update daemon step (median; wall ms / this process's CPU ms)"]
    for result in results:
        if isinstance(result, str):
            lines.append(f"  {result}")
            continue
        label = f"{result.backend}, {result.devices:,} devices, {result.in_flight:,} in flight"
        lines.append(
            f"  {label:48} worker.step {result.step_wall * 1e3:9.1f} / {result.step_cpu * 1e3:9.1f}"
            f"   observe_versions {result.observe_wall * 1e3:9.1f}"
            f" / {result.observe_cpu * 1e3:9.1f}   a poll's campaigns read"
            f" {result.poll_lookup * 1e3:8.2f} ms   (built in {result.load_seconds:.0f} s)"
        )
    return "\n".join(lines)


def run(quick: bool, summary: Summary | None = None) -> str:
    devices = 20_000 if quick else 100_000
    results = [run_backend(b, devices, 1_000, 3 if quick else 5) for b in ("sqlite", "postgres")]
    if summary is not None:
        for result in results:
            if isinstance(result, StepFigures):
                summary.add(
                    f"Update step + observe, {result.backend}, {result.devices:,} devices",
                    (result.step_wall + result.observe_wall) * 1e3,
                    "ms",
                )
    return report(results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--in-flight", type=int, default=1_000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args(argv)
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    results = []
    for backend in backends:
        results.append(run_backend(backend, args.devices, args.in_flight, args.steps))
        print(report(results[-1:]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
