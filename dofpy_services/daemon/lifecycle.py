"""The one runner every daemon uses: :func:`run_daemon`.

Start: load the credentials file (refusing one others may read), open the
store, join the domain as a node (:func:`dofpy.trio.open_node` secured with
the credentials), provide the service's object (instrumented: every request
counted and timed) and the common daemon object (health, version), serve
metrics, then report ``ready`` (a log event with the bound addresses, and the
``ready_file``).

Stop: at the first SIGTERM or SIGINT the daemon drains — health ``draining``,
new requests refused, in-flight ones given up to ``drain_timeout`` — then
closes everything and returns 0. A second signal stops it at once and the
exit status is 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio
from prometheus_client import CollectorRegistry

from dofpy._version import __version__
from dofpy.credentials import load_credentials
from dofpy.oap.core import OapConfig
from dofpy.transfer.core import TransferConfig
from dofpy.trio import lone_exceptions_unwrapped, open_node, open_transfer_node
from dofpy_services.daemon.config import DaemonConfig, format_address
from dofpy_services.daemon.health import DAEMON_INTERFACE, DAEMON_OBJECT, DaemonProvider, Health
from dofpy_services.daemon.logs import log_event
from dofpy_services.daemon.metrics import RequestMetrics, StatisticsCollector, serve_metrics
from dofpy_services.daemon.service import InstrumentedProvider, Service, ServiceContext

__all__ = ["STOP_SIGNALS", "DaemonAddresses", "run_daemon", "version"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def version() -> str:
    """This dofpy's version (the package's own, installed or not)."""
    return __version__


class DaemonAddresses(dict[str, str]):
    """What a started daemon reports: ``udp`` and, with metrics, ``metrics``."""


@asynccontextmanager
async def _signals(signals: AsyncIterator[int] | None) -> AsyncIterator[AsyncIterator[int]]:
    if signals is not None:
        yield signals
        return
    with trio.open_signal_receiver(*STOP_SIGNALS) as received:
        yield received


def _write_ready_file(path: str, addresses: dict[str, str]) -> None:
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(json.dumps(addresses) + "\n", encoding="utf-8")
    os.replace(temporary, target)


async def run_daemon(
    service: Service[Any],
    config: DaemonConfig,
    *,
    signals: AsyncIterator[int] | None = None,
    task_status: trio.TaskStatus[DaemonAddresses] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run ``service`` with ``config`` until told to stop; returns the exit
    status (0 after a drain, 128 + signal number after a second signal).

    ``signals`` yields the stop signals' numbers (default: SIGTERM and SIGINT
    received by the process; tests pass a channel). Reports the bound
    addresses through ``task_status`` once ready. Errors at start (credentials,
    store) propagate: the CLI shows them as one line."""
    logger = logging.getLogger(f"dofpy.daemon.{service.name}")
    health = Health()
    registry = CollectorRegistry()
    statistics = StatisticsCollector()
    registry.register(statistics)
    request_metrics = RequestMetrics(registry, service.name)
    with lone_exceptions_unwrapped():
        exit_status = await _run_watched(
            service,
            config,
            signals,
            logger,
            health,
            registry,
            statistics,
            request_metrics,
            task_status,
        )
    health.set("stopped")
    log_event(logger, "stopped", status=exit_status)
    return exit_status


async def _run_watched(
    service: Service[Any],
    config: DaemonConfig,
    signals: AsyncIterator[int] | None,
    logger: logging.Logger,
    health: Health,
    registry: CollectorRegistry,
    statistics: StatisticsCollector,
    request_metrics: RequestMetrics,
    task_status: trio.TaskStatus[DaemonAddresses],
) -> int:
    """:func:`run_daemon`'s body: the daemon beside its signal watcher."""
    exit_status = 0
    async with _signals(signals) as received, trio.open_nursery() as watchers:
        stop = trio.Event()
        everything = trio.CancelScope()

        async def watch() -> None:
            nonlocal exit_status
            count = 0
            async for signum in received:
                count += 1
                try:
                    name = signal.Signals(signum).name
                except ValueError:
                    name = str(signum)
                if count == 1:
                    log_event(logger, "stopping", signal=name)
                    stop.set()
                else:
                    log_event(logger, "stopping-now", logging.WARNING, signal=name)
                    exit_status = 128 + signum
                    everything.cancel()
                    return

        watchers.start_soon(watch)
        with everything:
            await _run(
                service,
                config,
                logger,
                health,
                registry,
                statistics,
                request_metrics,
                stop,
                task_status,
            )
        watchers.cancel_scope.cancel()
    return exit_status


async def _run(
    service: Service[Any],
    config: DaemonConfig,
    logger: logging.Logger,
    health: Health,
    registry: CollectorRegistry,
    statistics: StatisticsCollector,
    request_metrics: RequestMetrics,
    stop: trio.Event,
    task_status: trio.TaskStatus[DaemonAddresses],
) -> None:
    credentials = None
    if config.credentials is not None:
        credentials = load_credentials(config.credentials)
    log_event(
        logger,
        "starting",
        version=version(),
        listen=format_address(config.listen),
        identity=None if credentials is None else credentials.identity,
        domain=None if credentials is None else credentials.domain,
    )
    async with AsyncExitStack() as stack:
        store = None
        if service.open_store is not None:
            store = await stack.enter_async_context(service.open_store(config))
            if service.store_statistics is not None:
                statistics.add_source("store", lambda: service.store_statistics(store))  # type: ignore[misc]
        context = ServiceContext(
            service=service,
            config=config,
            credentials=credentials,
            store=store,
            registry=registry,
            statistics=statistics,
            metrics=service.metrics(registry) if service.metrics is not None else None,
            health=health,
            logger=logger,
            store_limiter=trio.CapacityLimiter(service.store_threads),
        )
        nursery = await stack.enter_async_context(trio.open_nursery())
        addresses = DaemonAddresses()
        oap = OapConfig()
        if service.node_config is not None:
            oap = OapConfig(node=await service.node_config(context))
        elif credentials is not None:
            permissions = service.permissions(context) if service.permissions else None
            oap = OapConfig(node=credentials.node_config(permissions))
        if service.applications:
            applications = tuple(dict.fromkeys((*oap.node.applications, *service.applications)))
            oap = replace(oap, node=replace(oap.node, applications=applications))
        oap = replace(
            oap,
            node=replace(oap.node, duplicate_bytes=config.duplicate_bytes),
            max_incoming=config.max_requests_in_progress,
            max_incoming_per_peer=config.max_requests_per_peer,
            max_incoming_bytes=config.max_request_bytes,
        )
        if service.transfer_store is not None:
            transfer = await stack.enter_async_context(
                open_transfer_node(
                    config.listen,
                    TransferConfig(oap=oap),
                    store=service.transfer_store(context),
                    pcap_path=config.pcap,
                    keylog_path=config.keylog,
                    allow_plaintext=config.allow_plaintext,
                )
            )
            context.transfer, node = transfer, transfer.node
            statistics.add_source("transfer", transfer.statistics)
        else:
            node = await stack.enter_async_context(
                open_node(
                    config.listen,
                    oap,
                    pcap_path=config.pcap,
                    keylog_path=config.keylog,
                    allow_plaintext=config.allow_plaintext,
                )
            )
            statistics.add_source("node", node.statistics)
        context.node = node
        node.provide(
            DAEMON_OBJECT, DAEMON_INTERFACE, DaemonProvider(service.name, version(), health)
        )

        def tell_subscribers(state: str) -> None:
            if not node.closed:
                node.notify_change(DAEMON_OBJECT, DAEMON_INTERFACE, "health", state)

        health.on_change(tell_subscribers)
        if service.interface is not None and service.provider is not None:
            assert service.object_id is not None, "a service with an interface needs an object id"
            provider = InstrumentedProvider(service.provider(context), request_metrics, context)
            node.provide(service.object_id, service.interface, provider)
        if service.attach is not None:
            await service.attach(context, node, nursery)
        udp = node.local_address
        addresses["udp"] = format_address(udp)
        if config.metrics_listen is not None:
            bound = await nursery.start(serve_metrics, config.metrics_listen, registry, health)
            addresses["metrics"] = format_address(bound)
        if config.ready_file is not None:
            _write_ready_file(config.ready_file, dict(addresses))
        health.set("ready")
        log_event(logger, "ready", **dict(addresses))
        task_status.started(addresses)

        await stop.wait()
        context.draining = True
        health.set("draining")
        if context.node is not None and service.interface is not None and service.object_id:
            context.node.withdraw(service.object_id, service.interface)
        log_event(
            logger, "draining", in_flight=context.in_flight.count, timeout=config.drain_timeout
        )
        with trio.move_on_after(config.drain_timeout) as waited:
            await context.in_flight.wait_idle()
        if waited.cancelled_caught:
            log_event(logger, "drain-timeout", logging.WARNING, abandoned=context.in_flight.count)
        nursery.cancel_scope.cancel()
