"""The Version service on the daemon framework: its settings, store, providers
and ``dofpy version ...`` commands, declared once as :data:`VERSION`.

``dofpy version serve`` runs the registry; ``query`` streams devices matching
a filter (a page at a time: a million rows print without being held),
``stats`` prints a class's version histogram, ``show`` a device and its
history, ``report`` sends one report (for testing), ``deny``/``allow`` edit
the deny list. ``query``, ``stats`` and ``show`` read the database directly
with ``--db``, or ask a running service over OAP with ``--service HOST:PORT
--credentials FILE`` (as the Update service does).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dofpy.credentials import load_credentials, parse_address
from dofpy.oap.core import OapConfig
from dofpy.trio import DofNode, open_node
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy_services.daemon.cli import CliError, UsageError, add_format_flag
from dofpy_services.daemon.config import (
    DURATION,
    INT,
    TEXT,
    ConfigError,
    DaemonConfig,
    mask_url_password,
    option,
)
from dofpy_services.daemon.service import Command, Service, ServiceContext
from dofpy_services.version.client import VersionClient
from dofpy_services.version.daemon import (
    ChangeFeed,
    DrainingProvider,
    PageCounts,
    PagePrefetch,
    QueryProvider,
    ReportProvider,
    ReportRefusals,
)
from dofpy_services.version.interface import (
    VERSION_CHANGES,
    VERSION_OBJECT,
    VERSION_QUERY,
    VERSION_REPORT,
    BootState,
    DeviceRecord,
    HistoryEntry,
    ImageKind,
    QueryFilter,
    VersionReport,
)
from dofpy_services.version.page import MAX_ROWS
from dofpy_services.version.store import (
    AsyncVersionStore,
    PendingReport,
    open_async_version_store,
    open_version_store,
)

__all__ = [
    "VERSION",
    "VersionConfig",
    "VersionMetrics",
    "VersionState",
    "device_row",
    "provider_permissions",
]

_IDENTITY_CLASS = 3


def _identity(text: str) -> OID:
    text = text.strip()
    try:
        if text.startswith("["):
            return OID.from_text(text)
        return OID(_IDENTITY_CLASS, text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise UsageError(f"bad identity {text!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class VersionConfig(DaemonConfig):
    """The Version service's settings: the common ones and its own."""

    db: str = option(
        TEXT,
        "the registry's database: a SQLite file or a postgresql://user@host/dbname URL",
        mask=mask_url_password,
    )
    store_pool: int = option(
        INT, "database connections (and store calls at once) of this process", default=4
    )
    batch_items: int = option(INT, "reports committed in one transaction at most", default=256)
    batch_delay: float = option(
        DURATION, "seconds a batch gathers reports after its first at most", default=0.005
    )
    max_pending: int = option(
        INT, "reports waiting for the store at most; more are answered NotStored", default=4096
    )
    retry_after: float = option(
        DURATION,
        "seconds a device is told to wait before reporting again after NotStored",
        default=1.0,
    )
    max_watched_classes: int = option(
        INT, "device classes whose changes may be watched at once", default=1024
    )


def _check(config: VersionConfig) -> None:
    for name in ("store_pool", "batch_items", "max_pending", "max_watched_classes"):
        if getattr(config, name) < 1:
            raise ConfigError(f"key {name!r}: expected an integer >= 1")


def provider_permissions() -> PermissionSet:
    """What the service's node asks for: to provide its three interfaces."""
    return PermissionSet(
        tuple(
            BindingPermission(Action.PROVIDE, OID(0), interface.iid)
            for interface in (VERSION_REPORT, VERSION_QUERY, VERSION_CHANGES)
        )
    )


@dataclass(slots=True)
class VersionState:
    """What a running Version service keeps: its store and its change feed
    (the daemon's "store", opened before the node; the feed gets the node
    once it is open)."""

    store: AsyncVersionStore
    feed: ChangeFeed


@asynccontextmanager
async def _open_store(config: VersionConfig) -> AsyncIterator[VersionState]:
    async with open_async_version_store(
        config.db,
        pool_size=config.store_pool,
        batch_items=config.batch_items,
        batch_delay=config.batch_delay,
        max_pending=config.max_pending,
    ) as store:
        yield VersionState(store, ChangeFeed(config.max_watched_classes))


def _store_statistics(state: VersionState) -> dict[str, float]:
    stats = state.store.statistics()
    batches = state.store.batcher.statistics()
    return {
        "calls": stats.calls,
        "errors": stats.errors,
        "unavailable": stats.unavailable,
        "reconnects": stats.reconnects,
        "in_flight": stats.in_flight,
        "batch_commits": batches.commits,
        "batch_items": batches.items,
        "batch_failed": batches.failed,
    }


# Reports per committed transaction: 1 when reports come one at a time, up
# to batch_items (256 by default) under load.
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# A page costs the database well under a millisecond to tens of milliseconds.
_PAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class VersionMetrics:
    """The Version service's own metrics: reports by outcome, the sizes of the
    batches that committed them, pages served (by method; how many devices,
    how long each took, how many were prefetched) and classes watched. (The
    prefetch's own counters are ``dofpy_version_prefetch_*_total``, from
    :meth:`~dofpy_services.version.daemon.PagePrefetch.statistics`.)"""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reports = Counter(
            "dofpy_version_reports",
            "Reports acknowledged ('unchanged', 'changed'), refused ('denied', 'clear')"
            " or answered NotStored, to be sent again ('store', 'busy')",
            ("outcome",),
            registry=registry,
        )
        self.batch_size = Histogram(
            "dofpy_version_report_batch_size",
            "Reports per committed transaction",
            registry=registry,
            buckets=_BATCH_BUCKETS,
        )
        self.pages = Counter(
            "dofpy_version_pages",
            "Pages served by method ('query', 'rows') and source ('read', 'prefetched')",
            ("method", "source"),
            registry=registry,
        )
        self.page_devices = Counter(
            "dofpy_version_page_devices",
            "Devices served in pages, by method",
            ("method",),
            registry=registry,
        )
        self.page_duration = Histogram(
            "dofpy_version_page_duration_seconds",
            "Time to make a page (the database read, or the wait for a prefetched one,"
            " and the encoding), by method",
            ("method",),
            registry=registry,
            buckets=_PAGE_BUCKETS,
        )
        self.watched = Gauge(
            "dofpy_version_watched_classes",
            "Device classes whose changes are provided",
            registry=registry,
        )


class _CountingRefusals(ReportRefusals):
    def __init__(self, metrics: VersionMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def add(self, reason: str) -> None:
        super().add(reason)
        self._metrics.reports.labels(reason).inc()


class _CountingPages(PageCounts):
    def __init__(self, metrics: VersionMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def add(self, method: str, devices: int, seconds: float, prefetched: bool) -> None:
        super().add(method, devices, seconds, prefetched)
        self._metrics.pages.labels(method, "prefetched" if prefetched else "read").inc()
        self._metrics.page_devices.labels(method).inc(devices)
        self._metrics.page_duration.labels(method).observe(seconds)


def _report_provider(context: ServiceContext) -> ReportProvider:
    config: VersionConfig = context.config
    metrics: VersionMetrics = context.metrics
    state: VersionState = context.store

    def acknowledged(pending: PendingReport) -> None:
        metrics.reports.labels("changed" if pending.changed else "unchanged").inc()

    return ReportProvider(
        state.store,
        state.feed,
        time.time,
        max_pending=config.max_pending,
        retry_after=config.retry_after,
        refusals=_CountingRefusals(metrics),
        on_report=acknowledged,
        on_batch=metrics.batch_size.observe,
    )


async def _attach(context: ServiceContext, node: DofNode, nursery: trio.Nursery) -> None:
    metrics: VersionMetrics = context.metrics
    state: VersionState = context.store
    state.feed.node = node
    metrics.watched.set_function(lambda: state.feed.watched)
    prefetch = PagePrefetch(state.store, nursery)
    context.statistics.add_source("version_prefetch", prefetch.statistics)
    query = QueryProvider(state.store, state.feed, prefetch, counts=_CountingPages(metrics))
    node.provide(VERSION_OBJECT, VERSION_QUERY, DrainingProvider(query, context))


# -- commands --------------------------------------------------------------------------

_COLUMNS = (
    "identity",
    "class",
    "version",
    "sequence",
    "slot",
    "image_kind",
    "accepted",
    "boot_count",
    "free_storage",
    "first_seen",
    "last_seen",
    "image_digest",
)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def device_row(device: DeviceRecord) -> dict[str, Any]:
    """A device as the commands print it."""
    return {
        "identity": str(device.identity),
        "class": device.device_class,
        "version": device.version,
        "sequence": device.sequence,
        "slot": device.boot.slot,
        "image_kind": device.boot.image_kind.value,
        "accepted": device.boot.accepted,
        "boot_count": device.boot.boot_count,
        "free_storage": device.free_storage,
        "first_seen": _when(device.first_seen),
        "last_seen": _when(device.last_seen),
        "image_digest": device.image_digest.hex(),
    }


class _Printer:
    """Prints records one at a time (never holding them): a table whose
    columns are sized by the first rows, JSON lines' array, or CSV."""

    def __init__(self, fmt: str, columns: tuple[str, ...], out: Any = None) -> None:
        self._fmt = fmt
        self._columns = columns
        self._out = out if out is not None else sys.stdout
        self._count = 0
        self._widths: list[int] | None = None
        self._csv = csv.writer(self._out, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(columns)
        elif fmt == "json":
            self._out.write("[")

    def add(self, row: Mapping[str, Any]) -> None:
        if self._fmt == "json":
            self._out.write(("," if self._count else "") + "\n  " + json.dumps(dict(row)))
        elif self._csv is not None:
            self._csv.writerow([row[c] for c in self._columns])
        else:
            cells = [str(row[c]) for c in self._columns]
            if self._widths is None:
                self._widths = [
                    max(len(c), len(v)) for c, v in zip(self._columns, cells, strict=True)
                ]
                self._line(list(self._columns))
            self._line(cells)
        self._count += 1

    def _line(self, cells: list[str]) -> None:
        assert self._widths is not None
        self._out.write(
            "  ".join(v.ljust(w) for v, w in zip(cells, self._widths, strict=True)).rstrip() + "\n"
        )

    def close(self) -> None:
        if self._fmt == "json":
            self._out.write("\n]\n" if self._count else "]\n")
        elif self._fmt == "table" and self._count == 0:
            self._out.write("  ".join(self._columns) + "\n")


def _source_flags(sub: argparse.ArgumentParser) -> None:
    where = sub.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--db", help="read this database directly (SQLite file or postgresql:// URL)"
    )
    where.add_argument("--service", metavar="HOST:PORT", help="ask the running service over OAP")
    sub.add_argument("--credentials", help="this client's credentials file (with --service)")
    sub.add_argument(
        "--service-identity", help="the service's node identity: only it may answer (--service)"
    )


def _filter_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--class", dest="device_class", help="devices of this class")
    sub.add_argument("--version", help="running this version (display string)")
    sub.add_argument("--not-version", help="not running this version")
    sub.add_argument("--min-sequence", type=int, help="version sequence at least")
    sub.add_argument("--max-sequence", type=int, help="version sequence at most")
    sub.add_argument("--last-seen-before", type=float, metavar="T", help="POSIX seconds")
    sub.add_argument("--last-seen-after", type=float, metavar="T", help="POSIX seconds")
    accepted = sub.add_mutually_exclusive_group()
    accepted.add_argument(
        "--unaccepted", action="store_true", help="running an image not yet accepted"
    )
    accepted.add_argument("--accepted", action="store_true", help="running an accepted image")
    sub.add_argument("--image-kind", choices=[k.value for k in ImageKind])
    sub.add_argument("--identity", action="append", default=[], help="this device (repeatable)")


def _filter(args: argparse.Namespace) -> QueryFilter:
    accepted = True if args.accepted else False if args.unaccepted else None
    try:
        return QueryFilter(
            device_class=args.device_class,
            version=args.version,
            not_version=args.not_version,
            min_sequence=args.min_sequence,
            max_sequence=args.max_sequence,
            last_seen_before=args.last_seen_before,
            last_seen_after=args.last_seen_after,
            accepted=accepted,
            image_kind=None if args.image_kind is None else ImageKind(args.image_kind),
            identities=tuple(_identity(i) for i in args.identity),
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad filter: {exc}") from None


_QUERYING = PermissionSet((BindingPermission(Action.parse("x"), OID(0), VERSION_QUERY.iid),))
_REPORTING = PermissionSet((BindingPermission(Action.parse("x"), OID(0), VERSION_REPORT.iid),))


def _over_oap(
    args: argparse.Namespace,
    work: Callable[[VersionClient], Any],
    asks: PermissionSet = _QUERYING,
) -> Any:
    """Run ``work(client)`` against the service at ``--service``, asking
    for ``asks`` (no more than the command needs: the Authenticator refuses a
    session that asks for more than was granted)."""
    if not args.credentials:
        raise UsageError("--service needs --credentials (this client's credentials file)")
    credentials = load_credentials(args.credentials)
    peer = parse_address(args.service)
    identity = _identity(args.service_identity) if args.service_identity else None

    async def run() -> Any:
        config = OapConfig(node=credentials.node_config(asks))
        # Any local address: the service may be on another host.
        async with open_node(("0.0.0.0", 0), config) as node:  # noqa: S104
            return await work(VersionClient(node, peer, identity=identity))

    return trio.run(run)


def _query_flags(sub: argparse.ArgumentParser) -> None:
    _source_flags(sub)
    _filter_flags(sub)
    sub.add_argument("--count", action="store_true", help="print how many, not the devices")
    sub.add_argument(
        "--page-size", type=int, default=MAX_ROWS, help=f"devices per page (1..{MAX_ROWS})"
    )
    add_format_flag(sub)


def _query(args: argparse.Namespace) -> int:
    query = _filter(args)
    if not 1 <= args.page_size <= MAX_ROWS:
        raise UsageError(f"--page-size must be 1..{MAX_ROWS}")
    if args.count:
        if args.db:
            with open_version_store(args.db, pool_size=1) as store:
                count = store.count(query)
        else:
            count = _over_oap(args, lambda client: client.count(query))
        print(json.dumps({"devices": count}) if args.format == "json" else count)
        return 0
    printer = _Printer(args.format, _COLUMNS)
    if args.db:
        with open_version_store(args.db, pool_size=1) as store:
            for device in store.stream(query, args.page_size):
                printer.add(device_row(device))
    else:

        async def stream(client: VersionClient) -> None:
            async for device in client.devices(query, page_size=args.page_size):
                printer.add(device_row(device))

        _over_oap(args, stream)
    printer.close()
    return 0


def _stats_flags(sub: argparse.ArgumentParser) -> None:
    _source_flags(sub)
    sub.add_argument("--class", dest="device_class", help="this class only (default: every class)")
    add_format_flag(sub)


def _stats(args: argparse.Namespace) -> int:
    printer = _Printer(args.format, ("class", "version", "sequence", "devices"))

    def add(device_class: str, versions: Any) -> None:
        for bar in versions:
            printer.add(
                {
                    "class": device_class,
                    "version": bar.version,
                    "sequence": bar.sequence,
                    "devices": bar.devices,
                }
            )

    if args.db:
        with open_version_store(args.db, pool_size=1) as store:
            classes = [args.device_class] if args.device_class else store.classes()
            for device_class in classes:
                add(device_class, store.histogram(device_class))
    else:

        async def ask(client: VersionClient) -> None:
            classes = [args.device_class] if args.device_class else await client.classes()
            for device_class in classes:
                add(device_class, await client.histogram(device_class))

        _over_oap(args, ask)
    printer.close()
    return 0


def _show_flags(sub: argparse.ArgumentParser) -> None:
    _source_flags(sub)
    sub.add_argument("device", help="the device's identity (OID or name)")
    sub.add_argument("--history", type=int, default=100, help="changes shown at most (latest)")
    add_format_flag(sub, ("text", "json"), default="text")


def _history_row(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "at": _when(entry.at),
        "class": entry.device_class,
        "version": entry.version,
        "sequence": entry.sequence,
        "slot": entry.boot.slot,
        "image_kind": entry.boot.image_kind.value,
        "accepted": entry.boot.accepted,
        "boot_count": entry.boot.boot_count,
        "image_digest": entry.image_digest.hex(),
    }


def _show(args: argparse.Namespace) -> int:
    identity = _identity(args.device)
    if args.db:
        with open_version_store(args.db, pool_size=1) as store:
            device, history = store.show(identity, args.history)
    else:
        device, history = _over_oap(args, lambda client: client.show(identity, args.history))
    if device is None:
        raise CliError(f"no device {identity} in the registry")
    row = device_row(device)
    changes = [_history_row(entry) for entry in history]
    if args.format == "json":
        print(json.dumps({"device": row, "history": changes}, indent=2))
        return 0
    for key, value in row.items():
        print(f"{key:13} {value}")
    print("history:")
    for change in changes:
        print(
            f"  {change['at']}  {change['class']} {change['version']} (#{change['sequence']})"
            f"  slot {change['slot']} {change['image_kind']}"
            f" {'accepted' if change['accepted'] else 'UNACCEPTED'} boot {change['boot_count']}"
        )
    return 0


def _report_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--service", metavar="HOST:PORT", required=True)
    sub.add_argument("--credentials", required=True, help="the device's credentials file")
    sub.add_argument("--service-identity", help="the service's node identity")
    sub.add_argument("--class", dest="device_class", required=True)
    sub.add_argument("--version", required=True, help="display string")
    sub.add_argument("--sequence", type=int, required=True)
    sub.add_argument("--digest", default="", help="image digest, hex")
    sub.add_argument("--slot", type=int, default=0)
    sub.add_argument("--image-kind", choices=[k.value for k in ImageKind], default="normal")
    sub.add_argument("--unaccepted", action="store_true", help="the image is not yet accepted")
    sub.add_argument("--boot-count", type=int, default=1)
    sub.add_argument("--free-storage", type=int, default=0)


def _report(args: argparse.Namespace) -> int:
    try:
        report = VersionReport(
            device_class=args.device_class,
            version=args.version,
            sequence=args.sequence,
            image_digest=bytes.fromhex(args.digest),
            boot=BootState(
                args.slot, ImageKind(args.image_kind), not args.unaccepted, args.boot_count
            ),
            free_storage=args.free_storage,
            device_clock=time.time(),
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad report: {exc}") from None
    changed = _over_oap(args, lambda client: client.report(report), _REPORTING)
    print("reported: changed" if changed else "reported: unchanged")
    return 0


def _deny_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--db", required=True)
    sub.add_argument("device", help="the device's identity (OID or name)")
    sub.add_argument("--reason", default="denied by operator")


def _deny(args: argparse.Namespace) -> int:
    identity = _identity(args.device)
    with open_version_store(args.db, pool_size=1) as store:
        store.deny(identity, args.reason, time.time())
    print(f"denied {identity}: its reports are refused")
    return 0


def _allow_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--db", required=True)
    sub.add_argument("device", help="the device's identity (OID or name)")


def _allow(args: argparse.Namespace) -> int:
    identity = _identity(args.device)
    with open_version_store(args.db, pool_size=1) as store:
        removed = store.allow(identity)
    print(f"allowed {identity}" if removed else f"{identity} was not denied")
    return 0


_COMMANDS = (
    Command(
        "query",
        "stream the devices matching a filter (or --count them)",
        "dofpy version query --db version.db --class sensor --not-version 2.4.1 --format csv",
        _query_flags,
        _query,
    ),
    Command(
        "stats",
        "version histogram per class",
        "dofpy version stats --db version.db --class sensor",
        _stats_flags,
        _stats,
    ),
    Command(
        "show",
        "a device and the history of its versions",
        "dofpy version show --db version.db sensor-17@example.org",
        _show_flags,
        _show,
    ),
    Command(
        "report",
        "send one report as a device (for testing)",
        "dofpy version report --service 10.0.0.2:3567 --credentials dev.cred --class sensor "
        "--version 2.4.1 --sequence 241",
        _report_flags,
        _report,
    ),
    Command(
        "deny",
        "refuse an identity's reports from now on",
        "dofpy version deny --db version.db sensor-17@example.org --reason stolen",
        _deny_flags,
        _deny,
    ),
    Command(
        "allow",
        "take an identity off the deny list",
        "dofpy version allow --db version.db sensor-17@example.org",
        _allow_flags,
        _allow,
    ),
)


def _permissions(context: ServiceContext) -> PermissionSet:
    return provider_permissions()


VERSION: Service[VersionConfig] = Service(
    name="version",
    summary="the fleet registry: who runs what",
    config=VersionConfig,
    interface=VERSION_REPORT,
    object_id=VERSION_OBJECT,
    provider=_report_provider,
    open_store=_open_store,
    commands=_COMMANDS,
    metrics=VersionMetrics,
    store_statistics=_store_statistics,
    permissions=_permissions,
    attach=_attach,
    check=_check,
    store_threads=4,
    serve_example="dofpy version serve --config /etc/dofpy/version.toml",
)
