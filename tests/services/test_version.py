"""The Version service over OAP in secure sessions on 127.0.0.1 (one
in-process domain): reports under the session's identity only, refusals
(a revoked identity, a denied one, a report in the clear), NotStored and the
device's retries, permission checks by interface, pages streamed while
reports keep arriving, and subscriptions to a class's changes; on SQLite and
on PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from dofpy.errors import DofError
from dofpy.oap.core import OapConfig
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.testing.domain import LocalDomain
from dofpy.testing.secure import DOMAIN_OID, open_secure_node
from dofpy.trio import DofNode, open_node
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy_services.store import StoreUnavailable
from dofpy_services.version import (
    VERSION_CHANGES,
    VERSION_OBJECT,
    VERSION_QUERY,
    VERSION_REPORT,
    QueryFilter,
    ReportNotStored,
    VersionClient,
    VersionReport,
    provider_permissions,
)
from dofpy_services.version.daemon import ChangeFeed, PagePrefetch, QueryProvider, ReportProvider
from dofpy_services.version.store import AsyncVersionStore, PendingReport, open_async_version_store
from tests.services.test_daemon_runner import WAIT
from tests.services.version_helpers import device, report

SERVICE_ID = OID(3, b"version@example.org")
CLIENT_ID = OID(3, b"update@example.org")
NOBODY_ID = OID(3, b"intruder@example.org")


def allowed(actions: str, *interfaces: Any) -> PermissionSet:
    return PermissionSet(
        tuple(BindingPermission(Action.parse(actions), OID(0), i.iid) for i in interfaces)
    )


def domain() -> LocalDomain:
    local = LocalDomain(DOMAIN_OID, rng=random.Random(11).randbytes)
    local.enrol(SERVICE_ID, provider_permissions())
    local.enrol(
        CLIENT_ID,
        PermissionSet(
            allowed("x", VERSION_QUERY).permissions + allowed("rs", VERSION_CHANGES).permissions
        ),
    )
    for n in range(4):
        local.enrol(device(n), allowed("x", VERSION_REPORT))
    # Enrolled, but granted only what a device is: it may report, not query.
    local.enrol(NOBODY_ID, allowed("x", VERSION_REPORT))
    return local


@dataclass
class Running:
    domain: LocalDomain
    node: DofNode
    store: AsyncVersionStore
    reports: ReportProvider
    prefetch: PagePrefetch
    queries: QueryProvider
    batches: list[int]
    """The size of each batch of reports committed, as the provider learnt it."""

    @asynccontextmanager
    async def client(self, identity: OID) -> AsyncIterator[VersionClient]:
        async with open_secure_node(self.domain, identity) as node:
            yield VersionClient(node, self.node.local_address, identity=SERVICE_ID)


@asynccontextmanager
async def serving(
    location: str, local: LocalDomain | None = None, *, wrap: Any = None, max_pending: int = 4096
) -> AsyncIterator[Running]:
    """The service's providers on a secure node (what the daemon's attach
    does, without the runner)."""
    local = local or domain()
    async with (
        open_async_version_store(location, batch_delay=0.001) as store,
        open_secure_node(local, SERVICE_ID) as node,
        trio.open_nursery() as nursery,
    ):
        feed = ChangeFeed(16, node)
        prefetch = PagePrefetch(store, nursery)
        used = wrap(store) if wrap is not None else store
        batches: list[int] = []
        reports = ReportProvider(
            used,
            feed,
            lambda: 1000.0,
            retry_after=0.5,
            max_pending=max_pending,
            on_batch=batches.append,
        )
        queries = QueryProvider(store, feed, prefetch)
        node.provide(VERSION_OBJECT, VERSION_REPORT, reports)
        node.provide(VERSION_OBJECT, VERSION_QUERY, queries)
        yield Running(local, node, store, reports, prefetch, queries, batches)
        nursery.cancel_scope.cancel()  # pages prefetched and never asked for


@pytest.fixture
def location(db_location: str) -> str:
    """Each test once on SQLite, once on PostgreSQL (tests/services/conftest.py)."""
    return db_location


async def test_a_device_reports_for_itself_and_a_client_reads_it(location: str) -> None:
    async with (
        serving(location) as service,
        service.client(device(1)) as one,
        service.client(device(2)) as two,
        service.client(CLIENT_ID) as client,
    ):
        with trio.fail_after(WAIT):
            assert await one.report(report(version="1.0", sequence=10)) is True
            assert await one.report(report(version="1.0", sequence=10)) is False  # idempotent
            assert await two.report(report("gateway", "3.0", 30)) is True
            assert await one.report(report(version="1.1", sequence=11)) is True
            devices = [d async for d in client.devices(QueryFilter())]
            stored, history = await client.show(device(1))
            missing = await client.show(device(3))
            histogram = await client.histogram("sensor")
            classes = await client.classes()
            count = await client.count(QueryFilter(device_class="gateway"))
    # Each report is stored under the identity of the session it came through.
    assert [(d.identity, d.device_class, d.version) for d in devices] == [
        (device(1), "sensor", "1.1"),
        (device(2), "gateway", "3.0"),
    ]
    assert stored is not None and [h.version for h in history] == ["1.0", "1.1"]
    assert missing == (None, ())
    assert [(b.version, b.devices) for b in histogram] == [("1.1", 1)]
    assert classes == ("gateway", "sensor") and count == 1


async def test_a_client_without_the_permission_gets_an_oap_exception(location: str) -> None:
    async with (
        serving(location) as service,
        service.client(NOBODY_ID) as nobody,
        service.client(CLIENT_ID) as client,
    ):
        with trio.fail_after(WAIT):
            await nobody.report(report())  # what it may do
            with pytest.raises(OapError) as query:
                await nobody.page(QueryFilter())
            with pytest.raises(OapError) as watch:
                await nobody.watch("sensor")
            # Nor may a client report: it is no device.
            with pytest.raises(OapError) as reported:
                await client.report(report())
            assert await client.count(QueryFilter()) == 1
    for refused in (query, watch, reported):
        assert refused.value.error_code is OapErrorCode.PERMISSION_DENIED


async def test_a_revoked_identity_cannot_report(location: str) -> None:
    """Revoked at the Authenticator: no session can be established, so no
    report arrives. Denied at the Version service: reports are refused."""
    local = domain()
    async with serving(location, local) as service:
        local.revoke(device(1))
        async with service.client(device(1)) as revoked:
            with (
                trio.fail_after(WAIT),
                pytest.raises(DofError, match="rejected the secure session"),
            ):
                await revoked.report(report(), attempts=1)
        await trio.to_thread.run_sync(service.store.sync.deny, device(2), "stolen", 1.0)
        async with service.client(device(2)) as denied, service.client(CLIENT_ID) as client:
            with trio.fail_after(WAIT):
                with pytest.raises(ProviderException) as refused:
                    await denied.report(report())
                assert await client.count(QueryFilter()) == 0
    assert refused.value.definition.name == "Refused"
    assert refused.value.values == ("this identity is denied",)
    assert service.reports.refusals.counts == {"denied": 1}


async def test_a_report_in_the_clear_names_no_one_and_is_refused(location: str) -> None:
    async with (
        open_async_version_store(location) as store,
        open_node(("127.0.0.1", 0)) as provider,
        open_node(("127.0.0.1", 0), OapConfig()) as device_node,
    ):
        provider.provide(VERSION_OBJECT, VERSION_REPORT, ReportProvider(store, None, lambda: 1.0))
        with trio.fail_after(WAIT), pytest.raises(ProviderException) as refused:
            await VersionClient(device_node, provider.local_address).report(report())
        assert await store.count(QueryFilter()) == 0
    assert refused.value.definition.name == "Refused"


class Unavailable:
    """A store whose first ``failures`` reports fail as a lost connection does."""

    def __init__(self, inner: AsyncVersionStore, failures: int) -> None:
        self._inner = inner
        self.failures = failures

    async def report(self, identity: OID, sent: VersionReport, now: float) -> PendingReport:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("connection lost")
        return await self._inner.report(identity, sent, now)


async def test_a_report_not_stored_is_answered_not_stored_never_acknowledged(
    location: str,
) -> None:
    async with (
        serving(location, wrap=lambda store: Unavailable(store, 1)) as service,
        service.client(device(1)) as one,
        service.client(CLIENT_ID) as client,
    ):
        with trio.fail_after(WAIT):
            with pytest.raises(ReportNotStored):
                await one.report(report(), attempts=1)
            assert await client.count(QueryFilter()) == 0
            assert await one.report(report(), attempts=1) is True
            assert await client.count(QueryFilter()) == 1
    assert service.reports.refusals.counts == {"store": 1}


class Held:
    """A store whose reports wait until ``release`` is set."""

    def __init__(self, inner: AsyncVersionStore) -> None:
        self._inner = inner
        self.waiting = trio.Event()
        self.release = trio.Event()

    async def report(self, identity: OID, sent: VersionReport, now: float) -> PendingReport:
        self.waiting.set()
        await self.release.wait()
        return await self._inner.report(identity, sent, now)


async def test_reports_beyond_max_pending_are_not_stored_at_once(location: str) -> None:
    held: list[Held] = []

    def wrap(store: AsyncVersionStore) -> Held:
        held.append(Held(store))
        return held[0]

    async with (
        serving(location, wrap=wrap, max_pending=1) as service,
        service.client(device(1)) as one,
        service.client(device(2)) as two,
    ):
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one.report, report())
                await held[0].waiting.wait()  # the first holds the only place
                with pytest.raises(ReportNotStored, match=r"NotStored\(0\.5,\)"):
                    await two.report(report(), attempts=1)
                held[0].release.set()
            assert await service.store.count(QueryFilter()) == 1
    assert service.reports.refusals.counts == {"busy": 1}


class ScriptedNode:
    """A node whose invoke answers from a script (for the retry policy alone)."""

    def __init__(self, answers: Sequence[Any]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def invoke(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return (answer,)


async def test_a_device_retries_until_acknowledged_with_back_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    not_stored = ProviderException(VERSION_REPORT.exception("NotStored"), [2.0])
    busy = OapError(OapErrorCode.BUSY, "busy")
    node = ScriptedNode([not_stored, busy, TimeoutError(), True])
    client = VersionClient(node, ("127.0.0.1", 1))  # type: ignore[arg-type]
    start = trio.current_time()
    assert await client.report(report(), rng=random.Random(1)) is True
    waited = trio.current_time() - start
    assert node.calls == 4
    assert waited >= 2.0 * 0.5  # at least half of the service's retry_after, jittered
    refused = ProviderException(VERSION_REPORT.exception("Refused"), ["denied"])
    with pytest.raises(ProviderException):
        await VersionClient(ScriptedNode([refused]), ("127.0.0.1", 1)).report(report())  # type: ignore[arg-type]
    with pytest.raises(ReportNotStored):
        await VersionClient(ScriptedNode([busy] * 3), ("127.0.0.1", 1)).report(  # type: ignore[arg-type]
            report(), attempts=3
        )


async def test_pages_streamed_over_oap_while_reports_keep_arriving(location: str) -> None:
    async with serving(location) as service, service.client(CLIENT_ID) as client:
        for n in range(10, 100):
            await service.store.report(device(n), report(), 1.0)
        listed: list[OID] = []
        arrived = 0
        with trio.fail_after(WAIT):
            async for found in client.devices(QueryFilter(device_class="sensor"), page_size=8):
                listed.append(found.identity)
                if len(listed) % 8 == 0:  # between pages: newcomers and re-reports
                    await service.store.report(device(200 + arrived), report(), 2.0)
                    await service.store.report(device(5 + arrived % 5), report(), 2.0)
                    await service.store.report(device(10 + arrived), report(version="9"), 2.0)
                    arrived += 1
    assert arrived >= 10
    # Each page after the first was read ahead, before the reports between pages.
    assert service.prefetch.used >= 10
    assert len(listed) == len(set(listed))
    assert {device(n) for n in range(10, 100)} <= set(listed)


async def test_subscribers_learn_a_class_s_changes(location: str) -> None:
    async with (
        serving(location) as service,
        service.client(device(1)) as sensor,
        service.client(device(2)) as gateway,
        service.client(CLIENT_ID) as client,
    ):
        with trio.fail_after(WAIT):
            await sensor.report(report(version="1.0", sequence=10))
            async with client.changes("sensor") as changes:
                await gateway.report(report("gateway", "5.0", 50))  # another class
                await sensor.report(report(version="1.0", sequence=10))  # no change
                await sensor.report(report(version="1.1", sequence=11, accepted=False))
                await sensor.report(report(version="1.1", sequence=11, accepted=True))
                first = await changes.__anext__()
                second = await changes.__anext__()
    assert (first.identity, first.version, first.boot.accepted) == (device(1), "1.1", False)
    assert (first.previous_version, first.previous_sequence) == ("1.0", 10)
    assert (second.version, second.boot.accepted) == ("1.1", True)


async def test_batches_and_pages_are_counted(location: str) -> None:
    async with (
        serving(location) as service,
        service.client(device(1)) as one,
        service.client(device(2)) as two,
        service.client(CLIENT_ID) as client,
    ):
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:  # at once: one batch, or two
                nursery.start_soon(one.report, report(version="1.0"))
                nursery.start_soon(two.report, report(version="1.1"))
            await one.report(report(version="1.2"))
            for n in range(10, 30):
                await service.store.report(device(n), report(), 1.0)  # not through the provider
            streamed = [d async for d in client.devices(QueryFilter(), page_size=8)]
            records, _ = await client.page(QueryFilter(device_class="sensor"), b"", 5)
    # Each committed batch of the provider's reports counted once, by its size.
    assert sum(service.batches) == 3 and service.batches[-1] == 1
    counts = service.queries.counts
    # 22 devices by pages of 8: 8, 8, 6; and one query page of 5.
    assert len(streamed) == 22 and len(records) == 5
    assert counts.pages == {"rows": 3, "query": 1}
    assert counts.devices == {"rows": 22, "query": 5}
    # The second and third pages were read ahead (used unless a second passed).
    assert counts.prefetched.get("rows", 0) == service.prefetch.used
    assert service.prefetch.statistics().started == 2
