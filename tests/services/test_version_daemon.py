"""The Version service as a real daemon: ``python -m dofpy_services.cli
version serve --config FILE`` on 127.0.0.1 port 0, joined to a domain whose
Authenticator (the runner, in process) keys every session; devices report
through their credentials files. Killed with SIGKILL while reports stream in
and restarted on the same database, on SQLite and on PostgreSQL, it has lost
no acknowledged report; the CLI then reads what was stored, directly and over
OAP."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from dofpy.credentials import load_credentials, write_credentials
from dofpy.errors import DofError
from dofpy.oap.core import OapConfig
from dofpy.oap.errors import OapError
from dofpy.trio import open_node
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy_services.authenticator.service import AUTHENTICATOR, AuthenticatorConfig
from dofpy_services.cli import main
from dofpy_services.version import (
    VERSION_CHANGES,
    VERSION_QUERY,
    VERSION_REPORT,
    ReportNotStored,
    VersionClient,
    open_version_store,
)
from tests.services.test_daemon_process import dofpy, wait_for_file
from tests.services.test_daemon_runner import WAIT, running, samples, scrape
from tests.services.version_helpers import report

DEVICES = 6
SERVICE = "version@example.org"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    status = main(list(argv))
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def enrol_domain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The domain: the Authenticator, the Version service, devices and a client,
    each with a credentials file and the grants its role needs."""
    db = str(tmp_path / "as.db")
    node = ["--db", db, "--domain", "example.org"]
    cli(capsys, "authenticator", "init-domain", "--db", db, "example.org")
    names = ["as", "version", "update", *(f"device-{n}" for n in range(DEVICES))]
    for name in names:
        cred = str(tmp_path / f"{name}.cred")
        cli(
            capsys,
            "authenticator",
            "add-node",
            *node,
            f"{name}@example.org",
            "--credentials-out",
            cred,
        )
    for interface in (VERSION_REPORT, VERSION_QUERY, VERSION_CHANGES):
        grant = ["--actions", "p", "--interface", str(interface.iid)]
        cli(capsys, "authenticator", "grant", *node, SERVICE, *grant)
    query = ["--actions", "x", "--interface", str(VERSION_QUERY.iid)]
    cli(capsys, "authenticator", "grant", *node, "update@example.org", *query)
    for n in range(DEVICES):
        grant = ["--actions", "x", "--interface", str(VERSION_REPORT.iid)]
        cli(capsys, "authenticator", "grant", *node, f"device-{n}@example.org", *grant)
    return db


def with_authenticator(tmp_path: Path, name: str, address: tuple[str, int]) -> Path:
    """``name``'s credentials file, naming the Authenticator at ``address``."""
    target = tmp_path / f"{name}-here.cred"
    target.unlink(missing_ok=True)
    write_credentials(
        target, load_credentials(tmp_path / f"{name}.cred").with_authenticator(address)
    )
    return target


@contextmanager
def version_daemon(
    tmp_path: Path, db: str, authenticator: tuple[str, int]
) -> Iterator[tuple[subprocess.Popen[str], tuple[str, int], str]]:
    """A ``dofpy version serve`` process: it, its UDP address, its metrics address."""
    ready = tmp_path / "ready.json"
    ready.unlink(missing_ok=True)
    cred = with_authenticator(tmp_path, "version", authenticator)
    config = tmp_path / "version.toml"
    config.write_text(
        f'listen = "127.0.0.1:0"\ndb = "{db}"\ncredentials = "{cred}"\n'
        f'ready_file = "{ready}"\nlog_format = "json"\nmetrics_listen = "127.0.0.1:0"\n'
    )
    process = dofpy(tmp_path, "version", "serve", "--config", str(config))
    try:
        addresses = wait_for_file(ready, process)
        host, _, port = addresses["udp"].rpartition(":")
        yield process, (host, int(port)), addresses["metrics"]
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=WAIT)


REPORTING = PermissionSet((BindingPermission(Action.parse("x"), OID(0), VERSION_REPORT.iid),))
"""What a device asks for in its sessions: to invoke ``report``."""


async def report_until_killed(
    tmp_path: Path,
    authenticator: tuple[str, int],
    service: tuple[str, int],
    process: subprocess.Popen[str],
) -> dict[OID, int]:
    """Each device reports ever newer sequences; once enough are
    acknowledged the daemon is killed (reports still in flight). The last
    sequence acknowledged per device."""
    acknowledged: dict[OID, int] = {}
    enough = trio.Event()
    total = 0

    async def device(n: int) -> None:
        nonlocal total
        credentials = load_credentials(with_authenticator(tmp_path, f"device-{n}", authenticator))
        config = OapConfig(node=credentials.node_config(REPORTING))
        async with open_node(("127.0.0.1", 0), config) as node:
            client = VersionClient(node, service, identity=OID(3, SERVICE.encode()))
            for sequence in range(1, 10_000):
                try:
                    await client.report(
                        report(version=f"v{sequence}", sequence=sequence), attempts=1
                    )
                except (DofError, OapError, ReportNotStored):
                    return  # the daemon is gone
                acknowledged[credentials.identity] = sequence
                total += 1
                if total >= 60:
                    enough.set()

    with trio.fail_after(4 * WAIT):
        async with trio.open_nursery() as nursery:
            for n in range(DEVICES):
                nursery.start_soon(device, n)
            await enough.wait()
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=WAIT)
            # Whatever was in flight now times out; nothing more is acknowledged.
            nursery.cancel_scope.cancel()
    return acknowledged


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_killed_daemon_loses_no_acknowledged_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str, request: pytest.FixtureRequest
) -> None:
    db = (
        str(tmp_path / "version.db")
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    auth_db = enrol_domain(tmp_path, capsys)
    settings = AuthenticatorConfig(
        listen=("127.0.0.1", 0), db=auth_db, credentials=str(tmp_path / "as.cred")
    )
    async with running(AUTHENTICATOR, settings) as authenticator:
        with version_daemon(tmp_path, db, authenticator.udp) as (process, service, _):
            acknowledged = await report_until_killed(tmp_path, authenticator.udp, service, process)
        assert process.returncode == -signal.SIGKILL
        with version_daemon(tmp_path, db, authenticator.udp) as (process, service, metrics_at):
            # Restarted on the same database: every acknowledged report is there.
            with open_version_store(db) as store:
                for identity, sequence in acknowledged.items():
                    stored, history = store.show(identity, 10_000)
                    assert stored is not None and stored.sequence >= sequence
                    assert [h.sequence for h in history][:sequence] == list(range(1, sequence + 1))
            # And it serves: a client reads the registry over OAP with the CLI.
            client = with_authenticator(tmp_path, "update", authenticator.udp)
            address = f"{service[0]}:{service[1]}"
            over_oap = [
                "--service",
                address,
                "--credentials",
                str(client),
                "--service-identity",
                SERVICE,
            ]
            out = await trio.to_thread.run_sync(
                lambda: cli(capsys, "version", "query", *over_oap, "--count", "--format", "json")
            )
            # A device reports with the CLI; a client shows it over OAP.
            device = with_authenticator(tmp_path, "device-0", authenticator.udp)
            as_device = ["--service", address, "--credentials", str(device)]
            reported = await trio.to_thread.run_sync(
                lambda: cli(
                    capsys,
                    "version",
                    "report",
                    *as_device,
                    "--class",
                    "sensor",
                    "--version",
                    "9.9",
                    "--sequence",
                    "99999",
                    "--unaccepted",
                )
            )
            shown = await trio.to_thread.run_sync(
                lambda: cli(
                    capsys,
                    "version",
                    "show",
                    *over_oap,
                    "device-0@example.org",
                    "--format",
                    "json",
                )
            )
            streamed = await trio.to_thread.run_sync(
                lambda: cli(
                    capsys,
                    "version",
                    "query",
                    *over_oap,
                    "--page-size",
                    "2",
                    "--format",
                    "csv",
                )
            )
            _, metrics = await trio.to_thread.run_sync(scrape, metrics_at, "/metrics")
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=WAIT)
        assert process.returncode == 0
        assert reported.strip() == "reported: changed"
        counted = samples(metrics)
        assert counted[("dofpy_version_reports_total", frozenset({("outcome", "changed")}))] == 1
        assert counted[("dofpy_version_watched_classes", frozenset())] == 0
        # This process committed the one report, alone in its batch.
        assert counted[("dofpy_version_report_batch_size_count", frozenset())] == 1
        assert counted[("dofpy_version_report_batch_size_sum", frozenset())] == 1
        # The stream: pages of 2, 2, 2 and an empty one; the three after the
        # first were read ahead (each used if asked within a second).
        assert len(streamed.splitlines()) == 1 + DEVICES
        rows = frozenset({("method", "rows")})
        pages = {
            source: counted.get(("dofpy_version_pages_total", rows | {("source", source)}), 0.0)
            for source in ("read", "prefetched")
        }
        assert sum(pages.values()) == 4
        assert counted[("dofpy_version_page_devices_total", rows)] == DEVICES
        assert counted[("dofpy_version_page_duration_seconds_count", rows)] == 4
        assert counted[("dofpy_version_prefetch_started_total", frozenset())] == 3
        used = counted[("dofpy_version_prefetch_used_total", frozenset())]
        assert used == pages["prefetched"]
        device_shown = json.loads(shown)["device"]
        assert (device_shown["version"], device_shown["accepted"]) == ("9.9", False)
        await authenticator.signals.send(signal.SIGTERM)
    assert len(acknowledged) == DEVICES and sum(acknowledged.values()) >= 60
    assert json.loads(out) == {"devices": DEVICES}
    direct = cli(capsys, "version", "query", "--db", db, "--count")
    assert direct.strip() == str(DEVICES)
