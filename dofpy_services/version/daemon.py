"""The Version service's OAP side: the providers of its three interfaces.

:class:`ReportProvider` serves ``report``: the device is the session's
authenticated identity (a report in the clear is refused; no field of the
report names a device), the report is written by the store's batcher and
answered only once its batch committed; a report that could not be committed
is answered ``NotStored`` (retry), never acknowledged. :class:`QueryProvider`
serves the queries a page at a time (with a :class:`PagePrefetch`, the next
``rows`` page of a stream is read while its client decodes the last one).
:class:`ChangeFeed` provides one
VERSION_CHANGES object per watched device class and tells its subscribers of
each version or boot-state change committed here.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from dofpy.errors import BadPacket
from dofpy.oap.core import IncomingRequest
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.trio import DofNode, Provider, current_request
from dofpy.wire.oid import OID, decode_oid_untrusted
from dofpy_services.daemon.service import ServiceContext
from dofpy_services.store import StoreError
from dofpy_services.version.interface import (
    MAX_PAGE,
    VERSION_CHANGES,
    VERSION_QUERY,
    VERSION_REPORT,
    DeviceChange,
    DeviceRecord,
    HistoryEntry,
    QueryFilter,
    VersionCount,
    VersionReport,
    changes_object,
)
from dofpy_services.version.page import MAX_PAGE_BYTES, MAX_ROWS
from dofpy_services.version.store import AsyncVersionStore, EncodedPage, PendingReport

__all__ = [
    "MAX_HISTORY",
    "ChangeFeed",
    "DrainingProvider",
    "PageCounts",
    "PagePrefetch",
    "PrefetchStatistics",
    "QueryProvider",
    "ReportProvider",
    "ReportRefusals",
]

logger = logging.getLogger("dofpy.version")

MAX_HISTORY = 100
"""History entries ``show`` returns at most (the latest)."""
_RECENT_CHANGES = 16  # what a Get of ``changes`` returns, per class


class ChangeFeed:
    """The VERSION_CHANGES objects of the watched device classes (at most
    ``max_classes``), and what their subscribers are told."""

    def __init__(self, max_classes: int, node: DofNode | None = None) -> None:
        self.node = node
        """The node providing the objects (set once it is open)."""
        self._max_classes = max_classes
        self._recent: dict[str, deque[DeviceChange]] = {}

    def watch(self, device_class: str) -> OID:
        """The object carrying ``device_class``'s changes, provided from now on."""
        oid = changes_object(device_class)
        if self.node is None:
            raise OapError(OapErrorCode.BUSY, "the service is starting")
        if device_class not in self._recent:
            if len(self._recent) >= self._max_classes:
                raise OapError(OapErrorCode.BUSY, f"{self._max_classes} classes watched already")
            self._recent[device_class] = deque(maxlen=_RECENT_CHANGES)
            self.node.provide(oid, VERSION_CHANGES, _ClassChanges(self._recent[device_class]))
        return oid

    def publish(self, device_class: str, change: DeviceChange) -> int:
        """Tell ``device_class``'s subscribers of ``change``; how many were told."""
        recent = self._recent.get(device_class)
        if recent is None or self.node is None or self.node.closed:
            return 0
        recent.append(change)
        return self.node.notify_change(
            changes_object(device_class), VERSION_CHANGES, "changes", (change,)
        )

    @property
    def watched(self) -> int:
        return len(self._recent)


class _ClassChanges(Provider):
    def __init__(self, recent: deque[DeviceChange]) -> None:
        self._recent = recent

    def get_changes(self) -> tuple[DeviceChange, ...]:
        return tuple(self._recent)


class ReportRefusals:
    """Counters of reports not acknowledged, by reason (for metrics and tests)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1


class PageCounts:
    """Counters of the pages served, by method (``query`` or ``rows``): pages,
    of them answered with a prefetched read, and devices (for metrics and
    tests; the service's subclass also times them)."""

    def __init__(self) -> None:
        self.pages: dict[str, int] = {}
        self.prefetched: dict[str, int] = {}
        self.devices: dict[str, int] = {}

    def add(self, method: str, devices: int, seconds: float, prefetched: bool) -> None:
        """One page of ``devices`` served by ``method`` in ``seconds`` (the
        store's read, or the wait for a prefetched one, and the encoding)."""
        self.pages[method] = self.pages.get(method, 0) + 1
        self.devices[method] = self.devices.get(method, 0) + devices
        if prefetched:
            self.prefetched[method] = self.prefetched.get(method, 0) + 1


def _change(pending: PendingReport) -> DeviceChange:
    report = pending.report
    previous = pending.previous
    return DeviceChange(
        identity=pending.identity,
        at=pending.now,
        version=report.version,
        sequence=report.sequence,
        image_digest=report.image_digest,
        boot=report.boot,
        previous_version=None if previous is None else previous[0],
        previous_sequence=None if previous is None else previous[1],
    )


class ReportProvider(Provider):
    """VERSION_REPORT's ``report``. ``clock()`` stamps first and last seen
    (the service's wall clock, not the device's); at most ``max_pending``
    reports wait for the store, more are answered ``NotStored`` at once."""

    def __init__(
        self,
        store: AsyncVersionStore,
        feed: ChangeFeed | None,
        clock: Callable[[], float],
        *,
        max_pending: int = 4096,
        retry_after: float = 1.0,
        refusals: ReportRefusals | None = None,
        on_report: Callable[[PendingReport], None] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self.feed = feed
        self._clock = clock
        self._max_pending = max_pending
        self._retry_after = retry_after
        self._pending = 0
        self.refusals = refusals if refusals is not None else ReportRefusals()
        self._on_report = on_report
        self._on_batch = on_batch

    def _refuse(self, reason: str, why: str) -> ProviderException:
        self.refusals.add(reason)
        return ProviderException(VERSION_REPORT.exception("Refused"), [why])

    def _not_stored(self, reason: str) -> ProviderException:
        self.refusals.add(reason)
        return ProviderException(VERSION_REPORT.exception("NotStored"), [self._retry_after])

    async def report(self, report: VersionReport) -> bool:
        identity = current_request().identity
        if identity is None:
            # Trust by identity: a report in the clear names no one.
            raise self._refuse("clear", "a report needs a secure session: it is its identity's")
        if self._pending >= self._max_pending:
            raise self._not_stored("busy")
        self._pending += 1
        try:
            pending = await self._store.report(identity, report, self._clock())
        except StoreError as exc:
            logger.warning("report from %s not stored: %s", identity, exc)
            raise self._not_stored("store") from None
        finally:
            self._pending -= 1
        if pending.batch and self._on_batch is not None:
            # Committed: the first report of each batch counts the batch.
            self._on_batch(pending.batch)
        if pending.denied:
            raise self._refuse("denied", "this identity is denied")
        if self._on_report is not None:
            self._on_report(pending)
        if pending.changed and self.feed is not None:
            self.feed.publish(report.device_class, _change(pending))
        return pending.changed


def _bad_query(reason: str) -> ProviderException:
    return ProviderException(VERSION_QUERY.exception("BadQuery"), [reason])


_PageKey = tuple[QueryFilter, bytes, int]


@dataclass(frozen=True, slots=True)
class PrefetchStatistics:
    """What a :class:`PagePrefetch` did so far (the daemon's metrics
    ``dofpy_version_prefetch_<name>_total``)."""

    # Reads of a next page started.
    started: int
    # Requests answered with a prefetched page (a hit).
    used: int
    # Of those, requests that waited for the read to finish.
    waited: int
    # Pages found, but read longer than max_age before the request.
    expired: int
    # Pages dropped unasked to hold at most max_pages.
    dropped: int
    # Reads that failed (the request read the page itself).
    failed: int


class _Prefetched:
    __slots__ = ("ahead", "done", "page", "started")

    def __init__(self, started: float, ahead: int) -> None:
        self.started = started
        self.ahead = ahead
        self.done = trio.Event()
        self.page: EncodedPage | None = None


class PageSizes:
    """How many devices of each recent stream's query to read for a page:
    as many as are expected to fit :data:`MAX_PAGE_BYTES`, from the bytes a
    device took in the query's last page (``max_queries`` queries kept).

    Why: a page of ``limit`` devices is often larger than a datagram (512 of
    the benchmark's devices are 64,555 bytes), so the last ones read are cut
    off and read again for the next page: some 7% of the database's work of
    a stream, and of the page's encoding, done twice. A guess too low makes a
    page a little less full, one too high cuts as before: either is a
    correct page."""

    _SLACK = 1.02  # read a little more than the estimate, so that a page is full

    def __init__(self, max_queries: int = 256) -> None:
        self._max_queries = max_queries
        self._per_device: OrderedDict[tuple[QueryFilter, int], float] = OrderedDict()

    def read_for(self, query: QueryFilter, limit: int) -> int:
        """Devices to read for a page of at most ``limit`` of ``query``."""
        per_device = self._per_device.get((query, limit))
        if per_device is None:
            return limit
        return max(1, min(limit, int(MAX_PAGE_BYTES * self._SLACK / per_device) + 1))

    def saw(self, query: QueryFilter, limit: int, page: EncodedPage) -> None:
        """Learn from ``page``, one of ``query``'s."""
        encoded, _, _, count = page
        if not count:
            return
        key = (query, limit)
        self._per_device[key] = len(encoded) / count
        self._per_device.move_to_end(key)
        while len(self._per_device) > self._max_queries:
            self._per_device.popitem(last=False)


class PagePrefetch:
    """The next ``rows`` pages of recent streams, read (in ``nursery``) as
    soon as the page before them is answered, so that the database works while
    the client decodes: up to ``ahead`` pages ahead of the last page answered
    (each read starts the next when it ends, the cursor being its last
    device), at most ``max_pages`` pages held (the oldest dropped), each used
    only within ``max_age`` seconds of its read, once.

    Why more than one page ahead: a client that sends its next request
    before it has decoded the last page (as :meth:`VersionClient.pages` does)
    asks for a page while the one after it is wanted soon; the database reads
    in one thread at a time, so a read that waited for the request would
    leave it idle meanwhile.

    A prefetched page is a read of the database a moment before the client
    asked: still a keyset page after the cursor, so a stream neither repeats
    nor misses a device that matches throughout."""

    def __init__(
        self,
        store: AsyncVersionStore,
        nursery: trio.Nursery,
        *,
        max_pages: int = 16,
        max_age: float = 1.0,
        ahead: int = 2,
        sizes: PageSizes | None = None,
    ) -> None:
        if ahead < 1:
            raise ValueError("ahead must be at least 1 (the next page)")
        self.sizes = sizes if sizes is not None else PageSizes()
        """How many devices a page read reads (shared with the provider)."""
        self._store = store
        self._nursery = nursery
        self._max_pages = max_pages
        self._max_age = max_age
        self._ahead = ahead
        self._pages: OrderedDict[_PageKey, _Prefetched] = OrderedDict()
        self._reading = 0
        self.used = 0
        """Requests answered with a prefetched page (for tests and metrics)."""
        self._started = self._waited = self._expired = self._dropped = self._failed = 0

    def statistics(self) -> PrefetchStatistics:
        return PrefetchStatistics(
            self._started, self.used, self._waited, self._expired, self._dropped, self._failed
        )

    def start(self, key: _PageKey, ahead: int | None = None) -> None:
        """Read the page ``key`` names and, once read, the pages after it up
        to ``ahead`` pages in all (default: the ``ahead`` given at
        construction), unless it is being read already (then only its reach
        grows) or ``max_pages`` reads are (pages dropped unused may still
        be): a client asking for pages it then does not follow costs at most
        ``ahead`` reads more."""
        reach = self._ahead if ahead is None else ahead
        entry = self._pages.get(key)
        if entry is not None:
            if reach > entry.ahead:
                entry.ahead = reach
                if entry.done.is_set():
                    self._follow(key, entry)
            return
        if self._reading >= self._max_pages:
            return
        while len(self._pages) >= self._max_pages:
            self._pages.popitem(last=False)
            self._dropped += 1
        entry = self._pages[key] = _Prefetched(trio.current_time(), reach)
        self._reading += 1
        self._started += 1
        self._nursery.start_soon(self._read, key, entry)

    async def _read(self, key: _PageKey, entry: _Prefetched) -> None:
        try:
            query, after, limit = key
            entry.page = await self._store.rows(
                query, after, limit, read=self.sizes.read_for(query, limit)
            )
            self.sizes.saw(query, limit, entry.page)
        except Exception as exc:  # the request reads it itself, and sees the error
            self._failed += 1
            logger.debug("page prefetch failed: %s", exc)
        finally:
            self._reading -= 1
            entry.done.set()
        if self._pages.get(key) is entry:  # not taken nor dropped meanwhile
            self._follow(key, entry)

    def _follow(self, key: _PageKey, entry: _Prefetched) -> None:
        """Start the page after ``entry``'s (read), when it reaches further."""
        if entry.page is None or entry.ahead <= 1:
            return
        _, more, last, _ = entry.page
        if more:
            query, _, limit = key
            self.start((query, last, limit), entry.ahead - 1)

    async def take(self, key: _PageKey) -> EncodedPage | None:
        """The page ``key`` names, if it was prefetched and is recent enough."""
        entry = self._pages.pop(key, None)
        if entry is None:
            return None
        waited = not entry.done.is_set()
        await entry.done.wait()
        if entry.page is None:
            return None
        if trio.current_time() - entry.started > self._max_age:
            self._expired += 1
            return None
        self.used += 1
        self._waited += waited
        return entry.page


class QueryProvider(Provider):
    """VERSION_QUERY: pages, counts, histograms, a device's history, watches."""

    def __init__(
        self,
        store: AsyncVersionStore,
        feed: ChangeFeed | None,
        prefetch: PagePrefetch | None = None,
        *,
        counts: PageCounts | None = None,
    ) -> None:
        self._store = store
        self._feed = feed
        self._prefetch = prefetch
        self._sizes = prefetch.sizes if prefetch is not None else PageSizes()
        self.counts = counts if counts is not None else PageCounts()

    async def query(
        self, query: QueryFilter, after: bytes, limit: int
    ) -> tuple[tuple[DeviceRecord, ...], bool]:
        if not 1 <= limit <= MAX_PAGE:
            raise _bad_query(f"limit must be 1..{MAX_PAGE}")
        if len(after) > 128:
            raise _bad_query("after: not an encoded identity")
        start = time.perf_counter()
        devices, more = await self._store.page(query, after, limit)
        self.counts.add("query", len(devices), time.perf_counter() - start, False)
        return tuple(devices), more

    async def rows(self, query: QueryFilter, after: bytes, limit: int) -> tuple[bytes, bool]:
        if not 1 <= limit <= MAX_ROWS:
            raise _bad_query(f"limit must be 1..{MAX_ROWS}")
        if len(after) > 128:
            raise _bad_query("after: not an encoded identity")
        key = (query, after, limit)
        start = time.perf_counter()
        found = await self._prefetch.take(key) if self._prefetch is not None else None
        prefetched = found is not None
        if found is None:
            found = await self._store.rows(
                query, after, limit, read=self._sizes.read_for(query, limit)
            )
            self._sizes.saw(query, limit, found)
        page, more, last, devices = found
        self.counts.add("rows", devices, time.perf_counter() - start, prefetched)
        if more and self._prefetch is not None:
            self._prefetch.start((query, last, limit))
        return page, more

    async def count(self, query: QueryFilter) -> int:
        return await self._store.count(query)

    async def histogram(self, device_class: str) -> tuple[VersionCount, ...]:
        if not device_class:
            raise _bad_query("a histogram is of one device class")
        return tuple(await self._store.histogram(device_class))

    async def show(
        self, identity: bytes, history_limit: int
    ) -> tuple[tuple[DeviceRecord, ...], tuple[HistoryEntry, ...]]:
        try:
            oid = decode_oid_untrusted(identity)
        except BadPacket as exc:
            raise _bad_query(f"identity: {exc}") from None
        limit = max(0, min(history_limit, MAX_HISTORY))
        device, history = await self._store.show(oid, limit)
        return (() if device is None else (device,)), tuple(history)

    def watch(self, device_class: str) -> bytes:
        if self._feed is None:
            raise OapError(OapErrorCode.NOT_SUPPORTED, "changes are not published here")
        try:
            return self._feed.watch(device_class).encode()
        except ValueError as exc:
            raise _bad_query(str(exc)) from None

    async def classes(self) -> list[str]:
        return await self._store.classes()


class DrainingProvider(Provider):
    """``inner`` refusing new requests (BUSY) once the daemon drains, and
    counted in flight until then (what the runner's own wrapper does for the
    service's first interface)."""

    def __init__(self, inner: Provider, context: ServiceContext) -> None:
        self._inner = inner
        self._context = context

    def missing_handlers(self, interface: Any) -> list[str]:
        return self._inner.missing_handlers(interface)

    async def handle(self, request: IncomingRequest) -> Sequence[Any]:
        if self._context.draining:
            raise OapError(OapErrorCode.BUSY, "the daemon is shutting down")
        with self._context.in_flight.track():
            return await self._inner.handle(request)
