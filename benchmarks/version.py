"""The Version service at fleet scale: a registry of 1,000,000 devices on
SQLite and on PostgreSQL, the service's figures beside the database's own.

``python -m benchmarks.version [--devices N] [--seconds S] [--backend sqlite|postgres]``
(also part of ``python -m benchmarks.run``). For each backend:

- the registry is bulk-loaded (not through the service: setting up a million
  rows is not what is measured), indexed and analysed;
- **check-ins per second**: devices (one process of load: ``--load-devices``
  identities, each reporting for itself over its own secure session) report
  to one real ``dofpy version serve`` process, and on PostgreSQL to two
  sharing the database; beside it, the same SQL the service's batches run
  (``write_reports``: deny check, device read, upsert), issued directly
  through the driver in batches of the size the service formed, and one
  check-in per transaction;
- **query latency p50/p99 per kind** (one client over OAP, lock-step, random
  cursors) beside the same SQL run directly through the driver;
- **time to stream the full "not running V" result** of one class through
  the service (pages over OAP) beside ``sqlite3``/``psql`` running the one
  SQL statement, rows to /dev/null; and the daemon's RSS before and after.

Only same-run ratios mean anything: the machine is shared (two cores here,
shared by the load, the daemons and the database). Targets: the service keeps
at least 50% of the direct database's rate.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from benchmarks.summary import Summary
from dofpy.credentials import load_credentials, write_credentials
from dofpy.errors import DofError
from dofpy.oap.core import OapConfig
from dofpy.oap.errors import OapError
from dofpy.trio import open_node
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy_services.authenticator.service import AUTHENTICATOR, AuthenticatorConfig
from dofpy_services.cli import main as dofpy_main
from dofpy_services.daemon.lifecycle import run_daemon
from dofpy_services.version import (
    VERSION_CHANGES,
    VERSION_QUERY,
    VERSION_REPORT,
    BootState,
    ImageKind,
    QueryFilter,
    ReportNotStored,
    VersionClient,
    VersionReport,
    open_version_store,
)
from dofpy_services.version.store import (
    _DEVICE_COLUMNS,
    _SCHEMA,
    HISTOGRAM_SQL,
    PendingReport,
    count_sql,
    query_sql,
    write_reports,
)

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 8
TARGET_CLASS = "class-3"
TARGET_VERSION = "2.0"  # the version being rolled out: "not running V" is most of a class
VERSIONS = (("1.0", 10, 0.3), ("1.1", 11, 0.5), ("2.0", 20, 0.2))
NOW = 1_800_000_000.0
STALE_BEFORE = NOW - 30 * 86400  # 1% of devices last seen more than 30 days ago
WAIT = 30.0


def _note(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def identity(number: int) -> OID:
    return OID(3, b"device-%07d@fleet.example.org" % number)


# -- bulk load --------------------------------------------------------------------


def _fleet_rows(count: int, seed: int = 1) -> Iterator[tuple[Any, ...]]:
    """Rows of ``devices`` for ``count`` devices (identity order), seeded."""
    rng = random.Random(seed)
    for n in range(count):
        draw = rng.random()
        cumulative = 0.0
        version, sequence = VERSIONS[-1][:2]
        for name, number, share in VERSIONS:
            cumulative += share
            if draw < cumulative:
                version, sequence = name, number
                break
        stale = rng.random() < 0.01
        last_seen = NOW - (40 * 86400 + rng.random() * 86400 if stale else rng.random() * 86400)
        accepted = 0 if rng.random() < 0.005 else 1
        yield (
            identity(n).encode(),
            f"class-{n % CLASSES}",
            version,
            sequence,
            bytes([sequence]) * 32,
            n % 2,
            "normal",
            accepted,
            1 + n % 5,
            1 << 20,
            last_seen,
            NOW - 365 * 86400,
            last_seen,
            NOW - 100 * 86400,
        )


def _index_statements() -> list[str]:
    return [s.strip() for s in _SCHEMA.split(";") if s.strip().startswith("CREATE INDEX")]


def _index_names() -> list[str]:
    return [s.split()[2] for s in _index_statements()]


def load_sqlite(path: Path, count: int) -> None:
    with open_version_store(path):  # the schema, by the service's migrations
        pass
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("BEGIN")
        for name in _index_names():
            connection.execute(f"DROP INDEX {name}")
        marks = ", ".join("?" * 14)
        connection.executemany(
            f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES ({marks})", _fleet_rows(count)
        )
        connection.executemany(
            "INSERT INTO classes (device_class, first_seen) VALUES (?, ?)",
            [(f"class-{c}", NOW) for c in range(CLASSES)],
        )
        for statement in _index_statements():
            connection.execute(statement)
        connection.execute("COMMIT")
        connection.execute("ANALYZE")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def registry_bytes(backend: str, db: str) -> int:
    """What the ``devices`` table and its indexes take on disk."""
    if backend == "sqlite":
        return os.path.getsize(db)  # after the load's checkpoint: the file is the registry
    import psycopg  # noqa: PLC0415

    with psycopg.connect(db) as connection:
        row = connection.execute("SELECT pg_total_relation_size('devices')").fetchone()
    return int(row[0]) if row else 0


def load_postgres(url: str, count: int) -> None:
    import psycopg  # noqa: PLC0415 (the postgres extra)

    with open_version_store(url):
        pass
    with psycopg.connect(url) as connection:
        for name in _index_names():
            connection.execute(f"DROP INDEX {name}")
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY devices ({_DEVICE_COLUMNS}) FROM STDIN") as copy,
        ):
            for row in _fleet_rows(count):
                copy.write_row(row)
        for c in range(CLASSES):
            connection.execute(
                "INSERT INTO classes (device_class, first_seen) VALUES (%s, %s)",
                (f"class-{c}", NOW),
            )
        for statement in _index_statements():
            connection.execute(statement)
        connection.commit()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE devices")


# -- the domain and the daemons ---------------------------------------------------------

REPORTING = PermissionSet((BindingPermission(Action.parse("x"), OID(0), VERSION_REPORT.iid),))
QUERYING = PermissionSet((BindingPermission(Action.parse("x"), OID(0), VERSION_QUERY.iid),))
SERVICE_ID = "version@example.org"


def _cli(*argv: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        status = dofpy_main(list(argv))
    if status != 0:
        raise RuntimeError(f"dofpy {' '.join(argv)} failed")


def _device_name(number: int) -> str:
    return identity(number).data.decode()


def enrol(directory: Path, devices: int) -> str:
    """A domain in ``directory``: the Authenticator, the service, a client and
    ``devices`` devices (the registry's first identities), with credentials
    files ``as.cred``, ``version.cred``, ``client.cred``, ``device-N.cred``."""
    db = str(directory / "as.db")
    node = ["--db", db, "--domain", "example.org"]
    _cli("authenticator", "init-domain", "--db", db, "example.org")
    names = {"as": "as@example.org", "version": SERVICE_ID, "client": "client@example.org"}
    names |= {f"device-{n}": _device_name(n) for n in range(devices)}
    for short, name in names.items():
        out = str(directory / f"{short}.cred")
        _cli("authenticator", "add-node", *node, name, "--credentials-out", out)
    for interface in (VERSION_REPORT, VERSION_QUERY, VERSION_CHANGES):
        grant = ["--actions", "p", "--interface", str(interface.iid)]
        _cli("authenticator", "grant", *node, SERVICE_ID, *grant)
    query = ["--actions", "x", "--interface", str(VERSION_QUERY.iid)]
    _cli("authenticator", "grant", *node, "client@example.org", *query)
    for n in range(devices):
        grant = ["--actions", "x", "--interface", str(VERSION_REPORT.iid)]
        _cli("authenticator", "grant", *node, _device_name(n), *grant)
    return db


def _credentials(directory: Path, name: str, authenticator: tuple[str, int]) -> Path:
    target = directory / f"{name}-here.cred"
    target.unlink(missing_ok=True)
    write_credentials(
        target, load_credentials(directory / f"{name}.cred").with_authenticator(authenticator)
    )
    return target


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    address: tuple[str, int]

    def rss(self) -> int:
        """Resident memory in bytes (Linux /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu(self) -> float:
        """CPU seconds (user + system) used so far (Linux /proc)."""
        return process_cpu(self.process.pid)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used (Linux /proc)."""
    # The command name (field 2) may hold spaces: count fields after its ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuShares:
    """Each process's CPU over one interval, as a share of one core: whether
    the load generator (this process) or the service saturates."""

    def __init__(self, daemons: Sequence[Daemon]) -> None:
        self._daemons = daemons
        self._start = self._sample()

    def _sample(self) -> list[float]:
        return [time.perf_counter(), time.process_time(), *(d.cpu() for d in self._daemons)]

    def stop(self) -> str:
        end = self._sample()
        elapsed = end[0] - self._start[0]
        shares = [(b - a) / elapsed for a, b in zip(self._start[1:], end[1:], strict=True)]
        load, *services = shares
        return f"load generator {load:4.0%}, " + ", ".join(
            f"daemon {n + 1} {share:4.0%}" for n, share in enumerate(services)
        )


@contextlib.contextmanager
def daemons(
    directory: Path, db: str, authenticator: tuple[str, int], count: int
) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    cred = _credentials(directory, "version", authenticator)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    try:
        for n in range(count):
            ready = directory / f"ready-{n}.json"
            ready.unlink(missing_ok=True)
            config = directory / f"version-{n}.toml"
            config.write_text(
                f'listen = "127.0.0.1:0"\ndb = "{db}"\ncredentials = "{cred}"\n'
                f'ready_file = "{ready}"\nlog_level = "warning"\n'
            )
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dofpy_services.cli",
                    "version",
                    "serve",
                    "--config",
                    str(config),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(600):
                if ready.exists():
                    break
                if process.poll() is not None:
                    raise RuntimeError(f"the version daemon exited ({process.returncode})")
                time.sleep(0.05)
            else:
                raise RuntimeError("the version daemon did not get ready")
            host, _, port = json.loads(ready.read_text())["udp"].rpartition(":")
            started.append(Daemon(process, (host, int(port))))
        yield started
    finally:
        for daemon in started:
            daemon.process.send_signal(signal.SIGTERM)
        for daemon in started:
            try:
                daemon.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait()


# -- measurements ---------------------------------------------------------------------


@dataclass
class Figures:
    backend: str
    lines: list[tuple[str, str, str]] = field(default_factory=list)
    """(what, service, direct-and-ratio) rows."""
    checks: list[tuple[str, float, float]] = field(default_factory=list)
    """(what, ratio, floor)."""
    plans: list[str] = field(default_factory=list)
    """How the database reads each kind of page."""
    headline: list[tuple[str, float, str, str, float, bool]] = field(default_factory=list)
    """(figure, service, unit, direct's name, direct, higher is better) for the summary."""


def _check_in(sequence: int) -> VersionReport:
    version, number = ("1.1", 11)
    return VersionReport(
        TARGET_CLASS,
        version,
        number,
        bytes([number]) * 32,
        BootState(0, ImageKind.NORMAL, True, 1),
        (1 << 20) + sequence % 7,
        NOW,
    )


async def check_ins(
    directory: Path,
    authenticator: tuple[str, int],
    services: Sequence[tuple[str, int]],
    devices: int,
    seconds: float,
    watched: Sequence[Daemon] = (),
) -> tuple[float, int, str]:
    """Check-ins acknowledged per second by ``services`` (devices spread over
    them, each in lock-step: a report, its answer, the next), after every
    device's session is up; how many were refused or lost; and the CPU shares
    of the load (this process) and of the ``watched`` daemons while measuring."""
    done = 0
    failed = 0
    measuring = trio.Event()
    stop = trio.Event()
    ready = 0
    # Sessions are set up a few at a time (not measured): hundreds of
    # handshakes at once are a flood the service's half-open limit refuses.
    setting_up = trio.Semaphore(16)

    async def device(n: int) -> None:
        nonlocal done, failed, ready
        credentials = load_credentials(_credentials(directory, f"device-{n}", authenticator))
        config = OapConfig(node=credentials.node_config(REPORTING))
        async with open_node(("127.0.0.1", 0), config) as node:
            client = VersionClient(
                node, services[n % len(services)], identity=OID(3, SERVICE_ID.encode())
            )
            async with setting_up:
                await client.report(_check_in(0))  # the session, first
            ready += 1
            sequence = 0
            while not stop.is_set():
                sequence += 1
                try:
                    await client.report(_check_in(sequence), attempts=1)
                except (DofError, OapError, ReportNotStored):
                    failed += measuring.is_set()
                    continue
                done += measuring.is_set()

    async with trio.open_nursery() as nursery:
        for n in range(devices):
            nursery.start_soon(device, n)
        with trio.fail_after(120):
            while ready < devices:
                await trio.sleep(0.1)
        await trio.sleep(1.0)  # warm
        measuring.set()
        start = time.perf_counter()
        cpu = CpuShares(watched)
        await trio.sleep(seconds)
        elapsed = time.perf_counter() - start
        count = done
        shares = cpu.stop()
        stop.set()
    return count / elapsed, failed, shares


def direct_check_ins(
    open_connection: Callable[[], Any], dialect: str, batch: int, total: int
) -> float:
    """The service's check-in SQL (``write_reports``) run directly through the
    driver, ``batch`` check-ins per transaction; check-ins per second."""
    from dofpy_services.store._postgres import _PostgresTransaction  # noqa: PLC0415
    from dofpy_services.store._sqlite import _SqliteTransaction  # noqa: PLC0415

    connection = open_connection()
    tx: Any
    if dialect == "sqlite":
        tx = _SqliteTransaction(connection, "bench", "direct")
    else:
        tx = _PostgresTransaction(connection, "direct")
    done = 0
    sequence = 0
    start = time.perf_counter()
    while done < total:
        items = []
        for _ in range(batch):
            sequence += 1
            items.append(PendingReport(identity(sequence % 256), _check_in(sequence), NOW))
        tx.execute("BEGIN IMMEDIATE" if dialect == "sqlite" else "BEGIN")
        write_reports(tx, items)
        tx.execute("COMMIT")
        done += batch
    elapsed = time.perf_counter() - start
    connection.close()
    return done / elapsed


def _kinds() -> list[tuple[str, QueryFilter]]:
    return [
        ("class", QueryFilter(device_class=TARGET_CLASS)),
        ("running V", QueryFilter(device_class=TARGET_CLASS, version=TARGET_VERSION)),
        ("not running V", QueryFilter(device_class=TARGET_CLASS, not_version=TARGET_VERSION)),
        (
            "sequence range",
            QueryFilter(device_class=TARGET_CLASS, min_sequence=11, max_sequence=19),
        ),
        ("last seen before", QueryFilter(device_class=TARGET_CLASS, last_seen_before=STALE_BEFORE)),
        ("unaccepted", QueryFilter(accepted=False)),
        ("identities (100)", QueryFilter(identities=tuple(identity(n * 997) for n in range(100)))),
        (
            "combined",
            QueryFilter(
                device_class=TARGET_CLASS,
                not_version=TARGET_VERSION,
                accepted=True,
                last_seen_after=NOW - 3600,
            ),
        ),
    ]


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99


async def service_latencies(
    directory: Path,
    authenticator: tuple[str, int],
    service: tuple[str, int],
    registry: int,
    rounds: int,
) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """p50/p99 of each query kind's page of 128 by the ``rows`` method (what
    the client streams with) and, from the same cursors in turn, by the
    ``query`` method (typed records, as the service first answered pages)."""
    rng = random.Random(7)
    credentials = load_credentials(_credentials(directory, "client", authenticator))
    config = OapConfig(node=credentials.node_config(QUERYING))
    found: dict[str, tuple[float, float]] = {}
    by_records: dict[str, tuple[float, float]] = {}
    async with open_node(("127.0.0.1", 0), config) as node:
        client = VersionClient(node, service, identity=OID(3, SERVICE_ID.encode()))
        await client.count(QueryFilter(device_class="none"))  # the session, first
        for name, query in _kinds():
            samples = []
            record_samples = []
            for _ in range(rounds):
                after = identity(rng.randrange(registry)).encode()
                start = time.perf_counter()
                await client.rows(query, after, 128)
                samples.append(time.perf_counter() - start)
                start = time.perf_counter()
                await client.page(query, after, 128)
                record_samples.append(time.perf_counter() - start)
            found[name] = _percentiles(samples)
            by_records[name] = _percentiles(record_samples)
        for name, call in (
            (
                "count (class, not V)",
                lambda: client.count(
                    QueryFilter(device_class=TARGET_CLASS, not_version=TARGET_VERSION)
                ),
            ),
            ("histogram (class)", lambda: client.histogram(TARGET_CLASS)),
        ):
            samples = []
            for _ in range(max(3, rounds // 10)):
                start = time.perf_counter()
                await call()
                samples.append(time.perf_counter() - start)
            found[name] = _percentiles(samples)
    return found, by_records


def direct_latencies(
    run_sql: Callable[[str, list[object]], list[Any]], registry: int, rounds: int
) -> dict[str, tuple[float, float]]:
    rng = random.Random(7)
    found: dict[str, tuple[float, float]] = {}
    for name, query in _kinds():
        samples = []
        for _ in range(rounds):
            sql, params = query_sql(query, identity(rng.randrange(registry)).encode(), 128)
            start = time.perf_counter()
            run_sql(sql, params)
            samples.append(time.perf_counter() - start)
        found[name] = _percentiles(samples)
    statements: dict[str, tuple[str, list[object]]] = {
        "count (class, not V)": count_sql(
            QueryFilter(device_class=TARGET_CLASS, not_version=TARGET_VERSION)
        ),
        "histogram (class)": (HISTOGRAM_SQL, [TARGET_CLASS]),
    }
    for name, (statement, values) in statements.items():
        samples = []
        for _ in range(max(3, rounds // 10)):
            start = time.perf_counter()
            run_sql(statement, values)
            samples.append(time.perf_counter() - start)
        found[name] = _percentiles(samples)
    return found


@dataclass
class Stream:
    """One stream of the "not running V" devices through the service."""

    rows: int
    seconds: float
    cpu: str


async def service_stream(
    directory: Path, authenticator: tuple[str, int], service: Daemon, *, mode: str = "devices"
) -> Stream:
    """Every "not running V" device: as a record by the client's ``devices``
    (``rows`` pages of up to 512); ``mode="pages"``: the same pages, checked,
    their devices counted but not made records (what a client that reads the
    columns costs); ``mode="records"``: as a record by pages of 128 of the
    ``query`` method (as the client first streamed)."""
    credentials = load_credentials(_credentials(directory, "client", authenticator))
    config = OapConfig(node=credentials.node_config(QUERYING))
    async with open_node(("127.0.0.1", 0), config) as node:
        client = VersionClient(node, service.address, identity=OID(3, SERVICE_ID.encode()))
        await client.count(QueryFilter(device_class="none"))
        rows = 0
        start = time.perf_counter()
        cpu = CpuShares([service])
        query = QueryFilter(device_class=TARGET_CLASS, not_version=TARGET_VERSION)
        if mode == "records":
            after = b""
            while True:
                devices, more = await client.page(query, after, 128)
                rows += len(devices)
                if not more or not devices:
                    break
                after = devices[-1].identity.encode()
        elif mode == "pages":
            async for page in client.pages(query):
                rows += len(page)
        else:
            async for _ in client.devices(query):
                rows += 1
        return Stream(rows, time.perf_counter() - start, cpu.stop())


STREAMS = 5
"""Streams of "not running V" measured, through the service and directly:
the fastest of each is the figure (the least disturbed), the median is
printed beside it (how much the machine's other work moved it)."""

STREAM_SQL = (
    f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_class = '{TARGET_CLASS}'"
    f" AND version <> '{TARGET_VERSION}' ORDER BY identity"
)


def plans(backend: str, run_sql: Callable[[str, list[object]], list[Any]]) -> list[str]:
    """How the database reads each page query (on the analysed registry)."""
    found = []
    for name, query in _kinds():
        sql, params = query_sql(query, identity(500_000).encode(), 128)
        if backend == "sqlite":
            steps = [str(row[3]) for row in run_sql(f"EXPLAIN QUERY PLAN {sql}", params)]
        else:
            (row,) = run_sql(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
            steps = []
            pending = [plan[0]["Plan"]]
            while pending:
                node = pending.pop()
                if node.get("Relation Name") == "devices":
                    steps.append(f"{node['Node Type']} {node.get('Index Name', '')}".strip())
                pending.extend(node.get("Plans", []))
        found.append(f"{name}: {'; '.join(steps)}")
    return found


def direct_stream(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def driver_stream(connect: Callable[[], Any], sql: str, **options: object) -> tuple[int, float]:
    """The stream's SQL run by the Python driver the service uses (sqlite3,
    psycopg), each row fetched and dropped: how long the driver alone takes
    to hand the result to Python, the floor under any service written in
    it (the faster of two). ``options``: the driver's, as the service reads
    (psycopg: ``binary=True``)."""
    best = float("inf")
    rows = 0
    connection = connect()
    try:
        for _ in range(2):
            start = time.perf_counter()
            rows = sum(1 for _ in connection.execute(sql, **options))
            best = min(best, time.perf_counter() - start)
    finally:
        connection.close()
    return rows, best


# -- one backend ------------------------------------------------------------------------


# The query kinds the summary table shows (every kind is in the section's detail).
_HEADLINE_QUERIES = ("not running V", "combined", "histogram (class)")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


async def measure(
    backend: str,
    db: str,
    directory: Path,
    registry: int,
    seconds: float,
    rounds: int,
    load_devices: int,
) -> Figures:
    figures = Figures(backend)
    size = registry_bytes(backend, db)
    figures.lines.append(
        (
            "registry on disk (devices + indexes)",
            f"{size / 2**20:8.0f} MiB",
            f"{size / registry:6.0f} bytes per device",
        )
    )
    auth_db = enrol(directory, load_devices)
    settings = AuthenticatorConfig(
        listen=("127.0.0.1", 0),
        db=auth_db,
        credentials=str(directory / "as.cred"),
        rate_limit=0,
    )
    never: trio.MemoryReceiveChannel[int]
    stop_send, never = trio.open_memory_channel[int](1)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(
            lambda task_status: run_daemon(
                AUTHENTICATOR, settings, signals=never, task_status=task_status
            )
        )
        host, _, port = addresses["udp"].rpartition(":")
        authenticator = (host, int(port))
        counts = [1, 2] if backend == "postgres" else [1]
        rates: dict[int, float] = {}
        cpu_shares: dict[int, str] = {}
        for count in counts:
            with daemons(directory, db, authenticator, count) as running:
                _note(f"{backend}: check-ins with {load_devices} devices, {count} daemon(s)")
                rates[count], failed, cpu_shares[count] = await check_ins(
                    directory,
                    authenticator,
                    [d.address for d in running],
                    load_devices,
                    seconds,
                    running,
                )
                if count == 1:
                    _note(f"{backend}: query latencies")
                    service, by_records = await service_latencies(
                        directory, authenticator, running[0].address, registry, rounds
                    )
                    _note(f"{backend}: streaming 'not running V'")
                    rss_before = running[0].rss()
                    # The fastest of STREAMS, as for sqlite3/psql below: the first
                    # read of the registry after a pause may find its pages
                    # evicted from the OS cache (seen here: sqlite3 0.46 s
                    # once, then 0.29 s), whoever reads it.
                    streams = [
                        await service_stream(directory, authenticator, running[0])
                        for _ in range(STREAMS)
                    ]
                    streamed = min(streams, key=lambda stream: stream.seconds)
                    stream_median = statistics.median(stream.seconds for stream in streams)
                    rss_after = running[0].rss()
                    _note(f"{backend}: streaming 'not running V' by the query method")
                    before = await service_stream(
                        directory, authenticator, running[0], mode="records"
                    )
                    columns = await service_stream(
                        directory, authenticator, running[0], mode="pages"
                    )
                    rows, stream_seconds, stream_cpu = (
                        streamed.rows,
                        streamed.seconds,
                        streamed.cpu,
                    )
        await stop_send.send(signal.SIGTERM)
    # The database alone, the same SQL, in this process (no service running).
    if backend == "sqlite":

        def connect() -> Any:
            connection = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA synchronous = FULL")
            return connection

        reader = sqlite3.connect(db)

        def run_sql(sql: str, params: list[object]) -> list[Any]:
            return reader.execute(sql, params).fetchall()

        stream_command = ["sqlite3", db, STREAM_SQL]
    else:
        import psycopg  # noqa: PLC0415

        def connect() -> Any:
            return psycopg.connect(db, autocommit=True)

        pg = psycopg.connect(db, autocommit=True)

        def run_sql(sql: str, params: list[object]) -> list[Any]:
            return pg.execute(sql.replace("?", "%s"), params).fetchall()

        # libpq reads the URL's options (the schema's search_path) as we do.
        stream_command = ["psql", "-X", "-q", "-A", "-t", "-c", STREAM_SQL, db]
    _note(f"{backend}: the same SQL directly")
    # The stream first: the registry as the service streamed it (the direct
    # check-ins below rewrite some devices).
    direct_streams = [direct_stream(stream_command) for _ in range(STREAMS)]
    direct_stream_seconds = min(direct_streams)
    direct_median = statistics.median(direct_streams)
    driver = "sqlite3 module" if backend == "sqlite" else "psycopg (binary)"
    # In the format the service reads its pages in (binary on PostgreSQL).
    options: dict[str, object] = {} if backend == "sqlite" else {"binary": True}
    driver_rows, driver_seconds = driver_stream(connect, STREAM_SQL, **options)
    per_batch = direct_check_ins(
        connect, "sqlite" if backend == "sqlite" else "postgresql", 64, 20_000
    )
    single = direct_check_ins(connect, "sqlite" if backend == "sqlite" else "postgresql", 1, 2_000)
    direct = direct_latencies(run_sql, registry, rounds)
    figures.plans = plans(backend, run_sql)

    for count, rate in rates.items():
        label = f"check-ins/s, {count} daemon{'s' if count > 1 else ''}"
        figures.lines.append(
            (
                label,
                f"{rate:10.1f}",
                f"direct batched (64) {per_batch:8.0f} ({rate / per_batch:5.1%}); "
                f"one per transaction {single:7.0f} ({rate / single:5.0%})",
            )
        )
        figures.lines.append((f"  CPU while checking in, {count} daemon(s)", "", cpu_shares[count]))
        figures.checks.append(
            (f"{backend} {label} vs direct, one per transaction", rate / single, 0.5)
        )
        figures.checks.append((f"{backend} {label} vs direct, batched", rate / per_batch, 0.5))
        figures.headline.append(
            (f"{backend}: {label}", rate, "check-ins/s", "same SQL, batches of 64", per_batch, True)
        )
    if failed:
        figures.lines.append(("check-ins not acknowledged", str(failed), ""))
    for name, (p50, p99) in service.items():
        d50, d99 = direct[name]
        if name in _HEADLINE_QUERIES:
            figures.headline.append(
                (
                    f"{backend}: query {name}, page p50",
                    p50 * 1e3,
                    "ms",
                    "same SQL",
                    d50 * 1e3,
                    False,
                )
            )
        figures.lines.append(
            (
                f"query {name} p50/p99",
                f"{_ms(p50)} {_ms(p99)}",
                f"direct {_ms(d50)} {_ms(d99)}  (direct/service p50 {d50 / p50:5.1%})",
            )
        )
        if name in by_records:
            r50, r99 = by_records[name]
            figures.lines.append(
                (
                    "  the same page by the query method (records)",
                    f"{_ms(r50)} {_ms(r99)}",
                    f"(direct/service p50 {d50 / r50:5.1%})",
                )
            )
    rate = rows / stream_seconds
    direct_rate = rows / direct_stream_seconds
    figures.lines.append(
        (
            f"stream 'not running V' ({rows} rows)",
            f"{stream_seconds:8.2f} s",
            f"{stream_command[0]} {direct_stream_seconds:6.2f} s"
            f"  ({rate / direct_rate:5.1%} of its rate)",
        )
    )
    figures.lines.append(
        (
            f"  the median of {STREAMS} streams",
            f"{stream_median:8.2f} s",
            f"{stream_command[0]} {direct_median:6.2f} s"
            f"  ({direct_median / stream_median:5.1%} of its rate)",
        )
    )
    figures.lines.append(("  CPU while streaming (the fastest)", "", stream_cpu))
    figures.lines.append(
        (
            f"  the same SQL by {driver} alone",
            f"{driver_seconds:8.2f} s",
            f"{driver_rows} rows in Python ({driver_rows / driver_seconds / direct_rate:5.1%}"
            f" of {stream_command[0]}'s rate; the service at"
            f" {rate * driver_seconds / driver_rows:5.1%} of the driver's)",
        )
    )
    figures.lines.append(
        (
            "  the same by query-method pages of 128 records",
            f"{before.seconds:8.2f} s",
            f"({before.rows / before.seconds / direct_rate:5.1%} of {stream_command[0]}'s rate)",
        )
    )
    figures.lines.append(("  CPU while streaming so", "", before.cpu))
    figures.lines.append(
        (
            "  the same rows pages, no records made",
            f"{columns.seconds:8.2f} s",
            f"({columns.rows / columns.seconds / direct_rate:5.1%} of {stream_command[0]}'s rate)",
        )
    )
    figures.headline.append(
        (
            f"{backend}: stream 'not running V', {rows} devices",
            rate,
            "devices/s",
            stream_command[0],
            direct_rate,
            True,
        )
    )
    figures.checks.append(
        (f"{backend} stream rows/s vs {stream_command[0]}", rate / direct_rate, 0.5)
    )
    figures.lines.append(
        (
            "daemon RSS before/after the streams",
            f"{rss_before / 2**20:6.1f} MiB",
            f"{rss_after / 2**20:6.1f} MiB",
        )
    )
    return figures


def run_backend(
    backend: str, registry: int, seconds: float, rounds: int, load_devices: int
) -> Figures | str:
    directory = Path(tempfile.mkdtemp(prefix=f"dofpy-version-bench-{backend}-"))
    try:
        if backend == "sqlite":
            db = str(directory / "version.db")
            _note(f"sqlite: bulk-loading {registry} devices")
            start = time.perf_counter()
            load_sqlite(Path(db), registry)
            _note(f"sqlite: loaded in {time.perf_counter() - start:.1f} s")
            return trio.run(
                measure, backend, db, directory, registry, seconds, rounds, load_devices
            )
        from dofpy.testing.postgres import (  # noqa: PLC0415
            create_schema,
            drop_schema,
            find_admin_url,
            with_options,
        )

        admin, why = find_admin_url()
        if admin is None:
            return f"postgres: skipped ({why})"
        schema = create_schema(admin)
        try:
            # random_page_cost 1.0, for the service and psql alike (both take
            # the URL's options): the registry is read from memory here, where
            # a random page costs what a sequential one does. With the default
            # (4.0) the planner reads a class's page by the primary key's
            # index, filtering out the other classes' devices (4,288 rows
            # removed for a page of 475, 1.1-1.9 ms), not by devices_class
            # (0.45 ms): docs/operations.md, "PostgreSQL settings".
            db = with_options(admin, search_path=schema, random_page_cost="1.0")
            _note(f"postgres: bulk-loading {registry} devices")
            start = time.perf_counter()
            load_postgres(db, registry)
            _note(f"postgres: loaded in {time.perf_counter() - start:.1f} s")
            return trio.run(
                measure, backend, db, directory, registry, seconds, rounds, load_devices
            )
        finally:
            drop_schema(admin, schema)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def report(results: Sequence[Figures | str], registry: int) -> str:
    out = [f"Version service: a registry of {registry:,} devices (service | direct database)"]
    checks: list[tuple[str, float, float]] = []
    for figures in results:
        if isinstance(figures, str):
            out.append(f"  {figures}")
            continue
        out.append(f"  {figures.backend}:")
        for what, service, direct in figures.lines:
            out.append(f"    {what:40} {service:>22}   {direct}")
        out.append("    query plans (a page after the 500,000th device):")
        out.extend(f"      {plan}" for plan in figures.plans)
        checks += figures.checks
    out.append("  targets (service >= 50% of the direct database's rate):")
    for what, ratio, floor in checks:
        out.append(f"    {'met' if ratio >= floor else 'NOT MET':8} {what}: {ratio:.1%}")
    return "\n".join(out)


def run(
    quick: bool = False,
    backends: Sequence[str] = ("sqlite", "postgres"),
    summary: Summary | None = None,
) -> str:
    registry = 100_000 if quick else 1_000_000
    results = [
        run_backend(b, registry, 5.0 if quick else 20.0, 20 if quick else 200, 32 if quick else 64)
        for b in backends
    ]
    if summary is not None:
        for figures in results:
            if isinstance(figures, Figures):
                for figure, value, unit, peer, peer_value, higher in figures.headline:
                    summary.add(
                        f"Version, {registry:,} devices, {figure}",
                        value,
                        unit,
                        peer,
                        peer_value,
                        higher_is_better=higher,
                    )
    return report(results, registry)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000, help="registry size")
    parser.add_argument("--seconds", type=float, default=20.0, help="check-ins measured for")
    parser.add_argument("--rounds", type=int, default=200, help="queries per kind")
    parser.add_argument("--load-devices", type=int, default=64, help="reporting devices")
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgres"))
    args = parser.parse_args(argv)
    results = [
        run_backend(b, args.devices, args.seconds, args.rounds, args.load_devices)
        for b in args.backend or ("sqlite", "postgres")
    ]
    print(report(results, args.devices))
    return 0


if __name__ == "__main__":
    sys.exit(main())
