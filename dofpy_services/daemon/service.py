"""What a service declares: :class:`Service`, its :class:`Command` values, and
what the runner hands it at start (:class:`ServiceContext`).

A service is its OAP interface and object id, a provider factory, a store
opener, its CLI commands, its settings (a :class:`DaemonConfig` subclass) and
its metrics; :func:`dofpy_services.daemon.lifecycle.run_daemon` does the rest.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio
from prometheus_client import CollectorRegistry

from dofpy.credentials import NodeCredentials
from dofpy.oap.core import IncomingRequest
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.oap.interface import Interface
from dofpy.session.node import NodeConfig
from dofpy.transfer.store import BlockStore
from dofpy.trio import DofNode, Provider, TransferNode
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet
from dofpy_services.daemon.config import DaemonConfig
from dofpy_services.daemon.health import Health
from dofpy_services.daemon.metrics import RequestMetrics, StatisticsCollector

__all__ = [
    "Command",
    "InFlight",
    "InstrumentedProvider",
    "Service",
    "ServiceContext",
]

T = TypeVar("T")
ConfigT = TypeVar("ConfigT", bound=DaemonConfig)


@dataclass(frozen=True, slots=True)
class Command:
    """One ``dofpy <service> <name>`` command (``serve`` is the runner's)."""

    name: str
    help: str
    """One line: what the command does (shown in the service's ``--help``)."""
    example: str
    """A command line or two showing it in use (its ``--help`` epilog)."""
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    """Runs the command; returns the exit status. Raises
    :class:`~dofpy_services.daemon.cli.CliError` (or ``OSError``,
    ``ValueError``) for a request that was refused or failed (exit status 1),
    :class:`~dofpy_services.daemon.cli.UsageError` for a command line that
    makes no sense (2); either is shown as one line."""
    description: str = ""


class InFlight:
    """How many requests are being served, to let a drain wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = trio.Event()
        self._idle.set()

    def begin(self) -> None:
        if self.count == 0:
            self._idle = trio.Event()
        self.count += 1

    def end(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    @contextmanager
    def track(self) -> Iterator[None]:
        self.begin()
        try:
            yield
        finally:
            self.end()

    async def wait_idle(self) -> None:
        await self._idle.wait()


@dataclass(slots=True)
class ServiceContext:
    """What a running service is given: its settings, identity, store, metrics,
    health and logger, and the worker threads for blocking store calls."""

    service: Service[Any]
    config: Any
    """The service's :class:`DaemonConfig` subclass, validated."""
    credentials: NodeCredentials | None
    store: Any
    registry: CollectorRegistry
    statistics: StatisticsCollector
    metrics: Any
    """What ``Service.metrics(registry)`` returned: the service's own metrics."""
    health: Health
    logger: logging.Logger
    store_limiter: trio.CapacityLimiter
    in_flight: InFlight = field(default_factory=InFlight)
    node: DofNode | None = None
    transfer: TransferNode | None = None
    draining: bool = False

    async def in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker thread (a store call: never on the
        loop), at most ``store_limiter`` at once."""
        return await trio.to_thread.run_sync(function, *args, limiter=self.store_limiter)


@dataclass(frozen=True, slots=True)
class Service(Generic[ConfigT]):
    """A service, declared: everything the runner and the CLI need.

    A service that serves OAP gives ``interface``, ``object_id`` and
    ``provider``. One that also speaks another DPP application on its node
    (the Authenticator's TRP) names it in ``applications`` and registers its
    handler in ``attach``; ``node_config`` replaces the node's configuration
    built from the credentials file (the Authenticator keys its own sessions).
    """

    name: str
    summary: str
    config: type[ConfigT]
    interface: Interface | None = None
    object_id: OID | None = None
    provider: Callable[[ServiceContext], Provider] | None = None
    open_store: Callable[[ConfigT], AbstractAsyncContextManager[Any]] | None = None
    """An async context manager factory: the store, opened (and migrated)."""
    commands: Sequence[Command] = ()
    metrics: Callable[[CollectorRegistry], Any] | None = None
    store_statistics: Callable[[Any], Mapping[str, float]] | None = None
    """A store's counters and levels, read at each scrape (on the loop: cheap)."""
    permissions: Callable[[ServiceContext], PermissionSet] | None = None
    """What the daemon's node asks for in its sessions (default: none)."""
    applications: tuple[int, ...] = ()
    """DPP applications the node serves besides DSP, OAP and the common ones."""
    node_config: Callable[[ServiceContext], Awaitable[NodeConfig]] | None = None
    """The node's configuration (default: the credentials file's identity, asking
    for ``permissions``); the runner adds ``applications``."""
    attach: Callable[[ServiceContext, DofNode, trio.Nursery], Awaitable[None]] | None = None
    """Called once the node is open: register application handlers, start the
    service's tasks in the nursery (cancelled at the end of the drain)."""
    check: Callable[[ConfigT], None] | None = None
    """Checks across settings; raises ConfigError with one line."""
    serve_example: str = ""
    transfer_store: Callable[[ServiceContext], BlockStore] | None = None
    """For a service that serves blobs by the block transfer: its block store.
    The runner then opens a transfer node (``ServiceContext.transfer``) instead
    of a plain OAP node, and its transfer statistics join the metrics."""
    store_threads: int = 1
    """Worker threads for store calls (one: a SQLite connection serialises anyway)."""


class InstrumentedProvider(Provider):
    """``inner`` with every request counted, timed (by kind, item and outcome)
    and tracked in flight; refuses new requests (BUSY) once the daemon drains."""

    def __init__(self, inner: Provider, metrics: RequestMetrics, context: ServiceContext) -> None:
        self._inner = inner
        self._metrics = metrics
        self._context = context

    async def handle(self, request: IncomingRequest) -> Sequence[Any]:
        if self._context.draining:
            self._metrics.observe(request.kind.value, request.item.name, "refused", 0.0)
            raise OapError(OapErrorCode.BUSY, "the daemon is shutting down")
        start = time.perf_counter()
        outcome = "failed"
        with self._context.in_flight.track():
            try:
                values = await self._inner.handle(request)
                outcome = "ok"
                return values
            except ProviderException:
                outcome = "exception"
                raise
            except OapError:
                outcome = "error"
                raise
            finally:
                self._metrics.observe(
                    request.kind.value, request.item.name, outcome, time.perf_counter() - start
                )
