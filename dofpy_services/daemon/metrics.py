"""Prometheus metrics of a daemon, served from the trio loop itself.

:class:`StatisticsCollector` turns the statistics snapshots the core already
keeps (``DofNode.statistics()``, a transfer node's, the endpoint's, a store's)
into metric families at each scrape: every counter ``dofpy_<part>_<name>_total``,
every level (queue lengths, peers, sessions) a gauge. The snapshots are taken
when the collector runs, and the collector runs on the trio thread, because
:func:`serve_metrics` (a small bounded HTTP/1.1 server: ``GET /metrics``,
``/healthz``, ``/readyz``) is a trio task, not prometheus_client's server
thread: the core's statistics must only be read where the core runs.

:class:`RequestMetrics` counts and times every request a provider serves, by
kind, item and outcome (see :class:`InstrumentedProvider` in
:mod:`dofpy_services.daemon.service`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from dofpy._core import Address
from dofpy_services.daemon.health import Health

__all__ = [
    "RequestMetrics",
    "StatisticsCollector",
    "serve_metrics",
    "statistics_samples",
]

logger = logging.getLogger("dofpy.daemon.metrics")

# Fields of the core's statistics that are levels, not counts.
_GAUGES = frozenset(
    {
        "send_queue_length",
        "receive_buffer_requested",
        "receive_buffer_granted",
        "peers",
        "pending_commands",
        "duplicate_cache_bytes",
        "subscribers",
        "subscriptions",
        "requests_awaited",
        "requests_in_progress",
        "request_bytes_in_progress",
        "sessions",
        "half_open",
        "active_senders",
        "open_senders",
        "active_transfers",
        "bytes",
        "entries",
        "segmentation_offload",
        "receive_offload",
    }
)
# Nested statistics named for what they are, whichever snapshot holds them: a
# node's endpoint is ``endpoint``, its OAP core's node the ``session`` layer.
_PARTS = {
    "node_endpoint": "endpoint",
    "node_oap": "oap",
    "oap_node": "session",
    "session_security": "security",
    "transfer_endpoint": "endpoint",
    "transfer_oap": "oap",
    "transfer_transfer": "transfer",
}

_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def statistics_samples(snapshot: Any, part: str) -> Iterator[tuple[str, bool, float, str]]:
    """``(name, is_gauge, value, documentation)`` for every number in the
    statistics dataclass ``snapshot`` and the ones nested in it (text and
    absent values are skipped)."""
    for stat_field in dataclasses.fields(snapshot):
        value = getattr(snapshot, stat_field.name)
        name = f"{part}_{stat_field.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from statistics_samples(value, _PARTS.get(name, name))
        elif isinstance(value, bool | int | float):
            doc = (type(snapshot).__name__ + "." + stat_field.name).replace("_", " ")
            yield name, stat_field.name in _GAUGES, float(value), doc


class StatisticsCollector(Collector):
    """Metric families from statistics snapshots taken at each scrape.

    ``sources`` maps a part name (``node``, ``transfer``, ``store``) to a
    function returning its snapshot: a statistics dataclass, a mapping of name
    to number (a store's hook), or ``None`` while there is none yet."""

    def __init__(self, sources: Mapping[str, Callable[[], Any]] | None = None) -> None:
        self._sources: dict[str, Callable[[], Any]] = dict(sources or {})

    def add_source(self, part: str, snapshot: Callable[[], Any]) -> None:
        self._sources[part] = snapshot

    def collect(self) -> Iterable[Metric]:
        for part, snapshot in list(self._sources.items()):
            try:
                taken = snapshot()
            except Exception:  # a broken source must not break the whole scrape
                logger.exception("statistics source %s failed", part)
                continue
            if taken is None:
                continue
            if isinstance(taken, Mapping):
                samples: Iterable[tuple[str, bool, float, str]] = (
                    (f"{part}_{name}", True, float(value), f"{part} {name}")
                    for name, value in taken.items()
                )
            else:
                samples = statistics_samples(taken, part)
            for name, is_gauge, value, doc in samples:
                family: Metric
                if is_gauge:
                    family = GaugeMetricFamily(f"dofpy_{name}", doc, value=value)
                else:
                    family = CounterMetricFamily(f"dofpy_{name}", doc, value=value)
                yield family


class RequestMetrics:
    """Every OAP request a service serves, counted and timed by kind, item and
    outcome (``ok``, ``exception`` for a declared provider exception, ``error``
    for an OAP error, ``failed`` for a provider that raised anything else)."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.service = service
        self.requests = Counter(
            "dofpy_service_requests",
            "Requests served, by kind, item and outcome",
            ("service", "kind", "item", "outcome"),
            registry=registry,
        )
        self.duration = Histogram(
            "dofpy_service_request_duration_seconds",
            "Time to serve a request, by kind, item and outcome",
            ("service", "kind", "item", "outcome"),
            registry=registry,
            buckets=_REQUEST_BUCKETS,
        )

    def observe(self, kind: str, item: str, outcome: str, seconds: float) -> None:
        self.requests.labels(self.service, kind, item, outcome).inc()
        self.duration.labels(self.service, kind, item, outcome).observe(seconds)


_MAX_REQUEST_HEAD = 8192
_REQUEST_TIMEOUT = 10.0


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _answer(target: str, registry: CollectorRegistry, health: Health) -> bytes:
    path = target.partition("?")[0]
    if path == "/metrics":
        return _response("200 OK", generate_latest(registry), CONTENT_TYPE_LATEST)
    if path == "/healthz":
        # Alive: the loop answers. Unhealthy only once it has stopped serving.
        state = health.state
        return _response(
            "200 OK" if state != "stopped" else "503 Service Unavailable", state.encode()
        )
    if path == "/readyz":
        state = health.state
        return _response(
            "200 OK" if state == "ready" else "503 Service Unavailable", state.encode()
        )
    return _response("404 Not Found", b"not found: try /metrics, /healthz or /readyz\n")


async def _serve_connection(
    stream: trio.SocketStream, registry: CollectorRegistry, health: Health
) -> None:
    async with stream:
        head = b""
        with trio.move_on_after(_REQUEST_TIMEOUT):
            while b"\r\n\r\n" not in head and len(head) < _MAX_REQUEST_HEAD:
                chunk = await stream.receive_some(_MAX_REQUEST_HEAD)
                if not chunk:
                    break
                head += chunk
        if b"\r\n\r\n" not in head:
            return  # timed out, closed early or too long: nothing worth an answer
        request_line = head.partition(b"\r\n")[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            answer = _response("400 Bad Request", b"bad request\n")
        elif parts[0] not in ("GET", "HEAD"):
            answer = _response("405 Method Not Allowed", b"only GET\n")
        else:
            answer = _answer(parts[1], registry, health)
            if parts[0] == "HEAD":
                answer = answer.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        try:
            with trio.move_on_after(_REQUEST_TIMEOUT):
                await stream.send_all(answer)
        except trio.BrokenResourceError:
            pass


async def serve_metrics(
    listen: Address,
    registry: CollectorRegistry,
    health: Health,
    *,
    max_connections: int = 16,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` over HTTP/1.1 on TCP
    ``listen`` until cancelled; reports the bound address. One request per
    connection, heads up to 8 KiB, at most ``max_connections`` at once (more
    wait for the kernel's backlog)."""
    host, port = listen
    listeners = await trio.open_tcp_listeners(port, host=host)
    limit = trio.CapacityLimiter(max_connections)
    bound = listeners[0].socket.getsockname()
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, limit, registry, health, nursery)
        task_status.started((bound[0], bound[1]))


async def _accept_loop(
    listener: trio.SocketListener,
    limit: trio.CapacityLimiter,
    registry: CollectorRegistry,
    health: Health,
    nursery: trio.Nursery,
) -> None:
    async with listener:
        while True:
            borrower = object()  # the connection's task releases what this one took
            await limit.acquire_on_behalf_of(borrower)
            try:
                stream = await listener.accept()
            except BaseException:
                limit.release_on_behalf_of(borrower)
                raise
            nursery.start_soon(_serve_limited, stream, limit, borrower, registry, health)


async def _serve_limited(
    stream: trio.SocketStream,
    limit: trio.CapacityLimiter,
    borrower: object,
    registry: CollectorRegistry,
    health: Health,
) -> None:
    try:
        await _serve_connection(stream, registry, health)
    finally:
        limit.release_on_behalf_of(borrower)
