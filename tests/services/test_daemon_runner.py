"""The runner, in process: a small OAP service on real UDP and HTTP sockets
(127.0.0.1, port 0), its health read and watched over OAP, its metrics scraped
with urllib and parsed with prometheus_client, its drain at the first stop
signal and its immediate exit at the second; the Authenticator's TRP answered
while its store is slow, the loop still answering pings meanwhile."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from dofpy.credentials import parse_address
from dofpy.errors import LocalProtocolError
from dofpy.oap.errors import OapError
from dofpy.oap.interface import Interface, Method, Param, ValueType
from dofpy.security.authenticator import NodeRecord
from dofpy.transfer.store import MemoryStore
from dofpy.trio import Provider, open_node
from dofpy.wire.dpp import decode_frame_untrusted
from dofpy.wire.oid import OID
from dofpy.wire.trp import RequestSessionResponse, decode_trp_untrusted
from dofpy_services.authenticator.service import AUTHENTICATOR, AuthenticatorConfig
from dofpy_services.authenticator.store import (
    AsyncAuthenticatorStore,
    AuthenticatorStore,
    open_async_store,
    open_store,
)
from dofpy_services.daemon import DAEMON_INTERFACE, DAEMON_OBJECT, DaemonConfig, Service
from dofpy_services.daemon.lifecycle import run_daemon
from dofpy_services.daemon.service import ServiceContext
from tests.services.test_authenticator import CLIENT, enrol, exchange, request

ECHO = Interface.define(
    "[1:{01000E01}]",
    "Echo",
    [
        Method(1, "echo", (Param("text", ValueType.TEXT),), (Param("text", ValueType.TEXT),)),
        Method(2, "wait", (), (Param("done", ValueType.BOOL),)),
    ],
)
ECHO_OBJECT = OID(3, b"echo@example.org")
WAIT = 10  # seconds: the bound of every wait on a socket


class Echo(Provider):
    def __init__(self) -> None:
        self.gate = trio.Event()
        self.waiting = trio.Event()
        # One item per ``wait`` entered: the request is held in progress.
        self._entered, self.entered = trio.open_memory_channel[None](math.inf)

    def echo(self, text: str) -> str:
        return text

    async def wait(self) -> bool:
        self.waiting.set()
        self._entered.send_nowait(None)
        await self.gate.wait()
        return True


def echo_service(provider: Echo) -> Service[DaemonConfig]:
    def make(context: ServiceContext) -> Provider:
        return provider

    return Service(
        name="echo",
        summary="echoes text",
        config=DaemonConfig,
        interface=ECHO,
        object_id=ECHO_OBJECT,
        provider=make,
    )


def scrape(address: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=WAIT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class Daemon:
    """A daemon run in a nursery, with a channel standing for its signals."""

    def __init__(self) -> None:
        self.signals, self._receive = trio.open_memory_channel[int](4)
        self.status: int | None = None
        self.done = trio.Event()
        self.addresses: dict[str, str] = {}

    @property
    def udp(self) -> tuple[str, int]:
        return parse_address(self.addresses["udp"])

    async def run(self, service: Service[Any], config: DaemonConfig, *, task_status: Any) -> None:
        try:
            self.status = await run_daemon(
                service, config, signals=self._receive, task_status=task_status
            )
        finally:
            self.done.set()


@asynccontextmanager
async def running(service: Service[Any], config: DaemonConfig) -> AsyncIterator[Daemon]:
    daemon = Daemon()
    async with trio.open_nursery() as nursery:
        daemon.addresses = await nursery.start(daemon.run, service, config)
        yield daemon
        with trio.fail_after(WAIT):
            await daemon.done.wait()


def config(**settings: Any) -> DaemonConfig:
    return DaemonConfig(listen=("127.0.0.1", 0), metrics_listen=("127.0.0.1", 0), **settings)


async def test_health_over_oap_and_metrics_over_http() -> None:
    provider = Echo()
    async with running(echo_service(provider), config()) as daemon, open_node() as client:
        with trio.fail_after(WAIT):
            health = await client.get(daemon.udp, DAEMON_OBJECT, DAEMON_INTERFACE, "health")
            name = await client.get(daemon.udp, DAEMON_OBJECT, DAEMON_INTERFACE, "service")
            assert await client.invoke(daemon.udp, ECHO_OBJECT, ECHO, "echo", "hi") == ("hi",)
        status, text = await trio.to_thread.run_sync(
            scrape, daemon.addresses["metrics"], "/metrics"
        )
        ready = await trio.to_thread.run_sync(scrape, daemon.addresses["metrics"], "/readyz")
        missing = await trio.to_thread.run_sync(scrape, daemon.addresses["metrics"], "/nothing")
        await daemon.signals.send(15)
    assert daemon.status == 0
    assert (health, name) == ("ready", "echo")
    assert status == 200 and ready == (200, "ready") and missing[0] == 404
    values = samples(text)
    labels = frozenset(
        {("service", "echo"), ("kind", "invoke"), ("item", "echo"), ("outcome", "ok")}
    )
    assert values[("dofpy_service_requests_total", labels)] == 1
    assert values[("dofpy_service_request_duration_seconds_count", labels)] == 1
    # The node's own counters: at least the three requests above came in.
    assert values[("dofpy_endpoint_datagrams_received_total", frozenset())] >= 3
    assert ("dofpy_oap_permission_denied_total", frozenset()) in values
    assert ("dofpy_session_peers", frozenset()) in values
    # A level, not a count: the answers kept for the requests' retransmission.
    assert values[("dofpy_session_duplicate_cache_bytes", frozenset())] > 0


async def test_first_signal_drains_in_flight_requests() -> None:
    provider = Echo()
    async with (
        running(echo_service(provider), config()) as daemon,
        open_node() as client,
        client.subscribe(daemon.udp, DAEMON_OBJECT, DAEMON_INTERFACE, "health") as health,
        trio.open_nursery() as requests,
    ):
        answers: list[tuple[Any, ...]] = []

        async def slow() -> None:
            answers.append(await client.invoke(daemon.udp, ECHO_OBJECT, ECHO, "wait"))

        requests.start_soon(slow)
        with trio.fail_after(WAIT):
            await provider.waiting.wait()
            await daemon.signals.send(15)
            seen = []
            while "draining" not in seen and len(seen) < 5:
                seen.append((await health.receive()).values[0])
        assert "draining" in seen
        not_ready = await trio.to_thread.run_sync(scrape, daemon.addresses["metrics"], "/readyz")
        with trio.fail_after(WAIT), pytest.raises(OapError):
            await client.invoke(daemon.udp, ECHO_OBJECT, ECHO, "echo", "late")
        assert not daemon.done.is_set()  # still draining: the slow request holds it
        provider.gate.set()
    assert not_ready == (503, "draining")
    assert answers == [(True,)] and daemon.status == 0


async def test_second_signal_exits_at_once() -> None:
    provider = Echo()
    async with (
        running(echo_service(provider), config(drain_timeout=60.0)) as daemon,
        open_node() as client,
        trio.open_nursery() as requests,
    ):
        requests.start_soon(partial(_ignore_errors, client.invoke), daemon.udp, ECHO_OBJECT)
        with trio.fail_after(WAIT):
            await provider.waiting.wait()
            await daemon.signals.send(15)
            await daemon.signals.send(2)
            await daemon.done.wait()
        requests.cancel_scope.cancel()
    assert daemon.status == 130


async def test_drain_gives_up_after_its_timeout(autojump_clock: trio.abc.Clock) -> None:
    provider = Echo()
    async with (
        running(echo_service(provider), config(drain_timeout=2.0)) as daemon,
        open_node() as client,
        trio.open_nursery() as requests,
    ):
        requests.start_soon(partial(_ignore_errors, client.invoke), daemon.udp, ECHO_OBJECT)
        with trio.fail_after(10):  # virtual seconds: the drain waits 2 of them
            await provider.waiting.wait()
            await daemon.signals.send(15)
            await daemon.done.wait()
        requests.cancel_scope.cancel()
    assert daemon.status == 0


async def _ignore_errors(invoke: Callable[..., Awaitable[Any]], peer: Any, oid: OID) -> None:
    with contextlib.suppress(Exception):  # the daemon closes while it waits
        await invoke(peer, oid, ECHO, "wait")


class SlowStore:
    """A store whose node lookups wait until the test lets them go on."""

    def __init__(self, inner: AuthenticatorStore) -> None:
        self._inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def lookup(self, domain: OID, identity: OID) -> NodeRecord | None:
        self.entered.set()
        if not self.release.wait(WAIT):
            raise TimeoutError("the test never released the store")
        return self._inner.lookup(domain, identity)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SlowAsyncStore:
    """The daemon's store, its blocking lookups (the authenticator's, in worker
    threads) made slow by :class:`SlowStore`."""

    def __init__(self, inner: AsyncAuthenticatorStore) -> None:
        self._inner = inner
        self.sync = SlowStore(inner.sync)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_trp_store_calls_leave_the_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "as.db")
    enrol(db, capsys)
    slow: SlowStore | None = None

    @asynccontextmanager
    async def open_slow(config: AuthenticatorConfig) -> AsyncIterator[Any]:
        nonlocal slow
        async with open_async_store(config.db) as store:
            wrapped = SlowAsyncStore(store)
            slow = wrapped.sync
            yield wrapped

    service = dataclasses.replace(AUTHENTICATOR, open_store=open_slow)
    # Probed with TRP in the clear: an explicit choice.
    settings = AuthenticatorConfig(listen=("127.0.0.1", 0), db=db, sealed_only=False)
    answers: list[bytes] = []
    try:
        async with running(service, settings) as daemon, open_node() as client:
            async with trio.open_nursery() as nursery:

                async def ask() -> None:
                    answers.append(await exchange(daemon.udp, request(CLIENT), 5))

                nursery.start_soon(ask)
                assert slow is not None
                assert await trio.to_thread.run_sync(slow.entered.wait, WAIT)
                # The store is stuck in a worker thread; the loop still answers.
                with trio.fail_after(WAIT):
                    await client.ping(daemon.udp)
                assert answers == []
                slow.release.set()
            await daemon.signals.send(15)
    finally:
        if slow is not None:
            slow.release.set()
    _, packet = decode_frame_untrusted(answers[0])
    response = decode_trp_untrusted(packet.payload, is_response=True)
    assert isinstance(response, RequestSessionResponse) and daemon.status == 0


async def test_a_transfer_service_reports_transfer_statistics() -> None:
    provider = Echo()
    service = dataclasses.replace(
        echo_service(provider), transfer_store=lambda context: MemoryStore()
    )
    async with running(service, config()) as daemon, open_node() as client:
        with trio.fail_after(WAIT):
            assert await client.invoke(daemon.udp, ECHO_OBJECT, ECHO, "echo", "x") == ("x",)
        _, text = await trio.to_thread.run_sync(scrape, daemon.addresses["metrics"], "/metrics")
        await daemon.signals.send(15)
    values = samples(text)
    assert values[("dofpy_transfer_blocks_sent_total", frozenset())] == 0
    assert ("dofpy_transfer_cache_hits_total", frozenset()) in values
    assert values[("dofpy_endpoint_datagrams_received_total", frozenset())] >= 1
    assert daemon.status == 0


async def test_store_statistics_and_service_metrics_join_the_scrape() -> None:
    opened: list[str] = []

    @asynccontextmanager
    async def open_counting(config: DaemonConfig) -> AsyncIterator[dict[str, int]]:
        opened.append("open")
        yield {"connections": 3}
        opened.append("closed")

    def own_metrics(registry: Any) -> Any:
        from prometheus_client import Counter  # noqa: PLC0415

        return Counter("dofpy_echo_things", "things", registry=registry)

    service = dataclasses.replace(
        echo_service(Echo()),
        open_store=open_counting,
        store_statistics=dict,
        metrics=own_metrics,
    )
    async with running(service, config()) as daemon:
        _, text = await trio.to_thread.run_sync(scrape, daemon.addresses["metrics"], "/metrics")
        await daemon.signals.send(15)
    values = samples(text)
    assert values[("dofpy_store_connections", frozenset())] == 3
    assert values[("dofpy_echo_things_total", frozenset())] == 0
    assert opened == ["open", "closed"]


async def test_the_authenticator_serves_health_over_oap_beside_trp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One socket, one node: TRP answered, the daemon object readable over
    OAP, and the shared store layer's counters in the scrape."""
    db = str(tmp_path / "as.db")
    enrol(db, capsys)
    settings = AuthenticatorConfig(
        listen=("127.0.0.1", 0), metrics_listen=("127.0.0.1", 0), db=db, sealed_only=False
    )
    async with running(AUTHENTICATOR, settings) as daemon, open_node() as client:
        with trio.fail_after(WAIT):
            answer = await exchange(daemon.udp, request(CLIENT), 5)
            health = await client.get(daemon.udp, DAEMON_OBJECT, DAEMON_INTERFACE, "health")
            name = await client.get(daemon.udp, DAEMON_OBJECT, DAEMON_INTERFACE, "service")
        _, text = await trio.to_thread.run_sync(scrape, daemon.addresses["metrics"], "/metrics")
        await daemon.signals.send(15)
    _, packet = decode_frame_untrusted(answer)
    assert isinstance(decode_trp_untrusted(packet.payload, True), RequestSessionResponse)
    assert (health, name) == ("ready", "authenticator")
    values = samples(text)
    assert values[("dofpy_store_calls", frozenset())] >= 1
    assert values[("dofpy_authenticator_decisions_total", frozenset({("outcome", "granted")}))] == 1
    assert daemon.status == 0
    with open_store(db) as store:
        events = [entry.event for entry in store.audit_log()]
    assert events[-2:] == ["serve", "trp-granted"]


async def test_a_daemon_without_credentials_refuses_a_non_loopback_address_unless_allowed() -> None:
    """Serving the network in the clear is an explicit choice (``allow_plaintext``):
    without it the daemon refuses before it binds anything, naming the way out."""
    settings = DaemonConfig(listen=("0.0.0.0", 0))  # refused before binding
    with pytest.raises(LocalProtocolError, match="allow_plaintext"):
        await run_daemon(echo_service(Echo()), settings)
    # On loopback the same daemon needs no opt-in and serves.
    async with running(echo_service(Echo()), config()) as daemon, open_node() as client:
        with trio.fail_after(WAIT):
            assert await client.invoke(daemon.udp, ECHO_OBJECT, ECHO, "echo", "hi") == ("hi",)
        await daemon.signals.send(15)
    assert daemon.status == 0


async def test_the_request_limits_are_settings_of_the_daemon() -> None:
    provider = Echo()
    answers: list[tuple[Any, ...]] = []
    async with (
        running(echo_service(provider), config(max_requests_per_peer=2)) as daemon,
        open_node() as flooder,
        open_node() as other,
    ):

        async def wait() -> None:
            answers.append(await flooder.invoke(daemon.udp, ECHO_OBJECT, ECHO, "wait"))

        async with trio.open_nursery() as requests:
            with trio.fail_after(WAIT):
                requests.start_soon(wait)
                requests.start_soon(wait)
                for _ in range(2):
                    await provider.entered.receive()
                # Both held by the provider: the flooder's third is refused,
                # another requestor (in the clear: another address) still served.
                with pytest.raises(OapError, match="too many of your requests in progress"):
                    await flooder.invoke(daemon.udp, ECHO_OBJECT, ECHO, "echo", "more")
                assert await other.invoke(daemon.udp, ECHO_OBJECT, ECHO, "echo", "hi") == ("hi",)
                _, text = await trio.to_thread.run_sync(
                    scrape, daemon.addresses["metrics"], "/metrics"
                )
                assert samples(text)[("dofpy_oap_requests_in_progress", frozenset())] == 2
                assert samples(text)[("dofpy_oap_requests_busy_total", frozenset())] == 1
                provider.gate.set()
        assert answers == [(True,), (True,)]
        await daemon.signals.send(15)
