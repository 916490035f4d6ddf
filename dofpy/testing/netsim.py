"""A seeded, sans-IO network simulator for protocol cores.

It connects any number of :class:`~dofpy._core.DatagramCore` objects by
address, on a virtual clock, through links that lose, duplicate, reorder,
corrupt, delay and rate-limit datagrams. Every random choice comes from one
``random.Random(seed)``, and ties are broken by insertion order, so the same
seed, cores and calls give the same trace, datagram for datagram: a failure
found under 5 % loss replays exactly.

It is the in-memory, trio-less way to test the protocol cores::

    network = Network(seed=1, default=LinkConditions(loss=0.05, delay=0.02))
    network.add(server_core, ("10.0.0.1", 3567))
    network.add(client_core, ("10.0.0.2", 40000))
    client_core.start_request(...)  # application code calls into a core...
    assert network.run_until(lambda: client_core.done, max_time=30.0)

A run advances virtual time to the next delivery or core deadline, delivers
the datagram (or fires the timer), collects what that core now wants to send,
and routes it through the link's conditions. ``run_until`` first collects from
every core, since application code may have called into any of them.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import StrEnum

from dofpy._core import Address, DatagramCore
from dofpy.errors import BadPacket

__all__ = [
    "LinkConditions",
    "LinkStatistics",
    "Network",
    "NetworkStatistics",
    "TraceEvent",
    "TraceKind",
]


@dataclass(frozen=True, slots=True)
class LinkConditions:
    """What one direction of a link does to the datagrams sent over it.

    Probabilities are per datagram and independent: ``loss`` drops it;
    ``duplicate`` delivers a second copy (each copy is delayed, reordered and
    corrupted independently); ``corrupt`` flips ``corrupt_bits`` distinct bits;
    ``reorder`` holds it back an extra ``reorder_delay`` seconds so that later
    datagrams overtake it. Each copy takes ``delay`` plus a uniform
    ``[0, jitter]`` seconds. With ``rate`` (bytes per second), datagrams are
    serialised one after another, and with ``queue_bytes`` as well, a datagram
    that would find more than that many bytes queued ahead of it is dropped
    (tail drop). Datagrams longer than ``mtu`` are dropped.
    """

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.010
    corrupt: float = 0.0
    corrupt_bits: int = 1
    delay: float = 0.0
    jitter: float = 0.0
    rate: float | None = None
    queue_bytes: int | None = None
    mtu: int | None = None

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], not {value}")
        for name in ("reorder_delay", "delay", "jitter"):
            value = getattr(self, name)
            if not 0.0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value}")
        if self.corrupt_bits < 1:
            raise ValueError(f"corrupt_bits must be at least 1, not {self.corrupt_bits}")
        if self.rate is not None and not 0.0 < self.rate < math.inf:
            raise ValueError(f"rate must be a positive number of bytes/s, not {self.rate}")
        if self.queue_bytes is not None:
            if self.rate is None:
                raise ValueError("queue_bytes needs a rate")
            if self.queue_bytes < 0:
                raise ValueError(f"queue_bytes must be >= 0, not {self.queue_bytes}")
        if self.mtu is not None and self.mtu < 1:
            raise ValueError(f"mtu must be at least 1, not {self.mtu}")


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """Counters of one direction of a link (``src`` to ``dst``)."""

    sent: int = 0
    """Datagrams the source core sent (or that were injected) on this link."""
    bytes_sent: int = 0
    lost: int = 0
    oversize: int = 0
    """Dropped for exceeding the link's MTU."""
    queue_dropped: int = 0
    """Dropped because the rate-limited link's queue was full."""
    duplicated: int = 0
    """Extra copies made."""
    reordered: int = 0
    """Copies held back by ``reorder_delay``."""
    corrupted: int = 0
    """Copies with flipped bits."""
    delivered: int = 0
    """Copies handed to the destination core."""
    bytes_delivered: int = 0
    undeliverable: int = 0
    """Copies that arrived where no core was (never added, or removed)."""
    rejected: int = 0
    """Delivered copies the destination core rejected by raising ``BadPacket``."""


@dataclass(frozen=True, slots=True)
class NetworkStatistics:
    """Counters of the whole network."""

    now: float
    steps: int
    timers_fired: int
    datagrams_in_flight: int


class TraceKind(StrEnum):
    """What happened, in a :class:`TraceEvent`."""

    SEND = "send"
    LOST = "lost"
    OVERSIZE = "oversize"
    QUEUE_DROP = "queue_drop"
    DUPLICATE = "duplicate"
    CORRUPT = "corrupt"
    DELIVER = "deliver"
    UNDELIVERABLE = "undeliverable"
    REJECTED = "rejected"
    TIMER = "timer"


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One thing that happened at virtual time ``time``.

    For ``TIMER``, ``src`` and ``dst`` are both the core's address and ``data``
    is empty. For ``CORRUPT``, ``data`` is the corrupted copy.
    """

    time: float
    kind: TraceKind
    src: Address
    dst: Address
    data: bytes


@dataclass(slots=True)
class _Node:
    core: DatagramCore
    address: Address
    timer_token: int = 0
    armed: float | None = None


@dataclass(slots=True)
class _Link:
    conditions: LinkConditions
    busy_until: float = -math.inf
    counts: dict[str, int] = field(
        default_factory=lambda: {f.name: 0 for f in fields(LinkStatistics)}
    )


_Delivery = tuple[float, int, Address, Address, bytes]
_Timer = tuple[float, int, _Node, int]


class Network:
    """Cores connected by simulated links, on a virtual clock starting at ``start_time``.

    Links not configured with :meth:`set_link` or :meth:`set_direction` behave
    as ``default``. With ``trace``, the last ``trace_limit`` events are kept
    (see :attr:`trace`).
    """

    def __init__(
        self,
        seed: int,
        *,
        default: LinkConditions = LinkConditions(),  # frozen: safe to share
        start_time: float = 0.0,
        trace: bool = False,
        trace_limit: int = 100_000,
    ) -> None:
        if trace_limit < 1:
            raise ValueError(f"trace_limit must be at least 1, not {trace_limit}")
        self._random = random.Random(seed)
        self._default = default
        self._now = start_time
        self._nodes: dict[Address, _Node] = {}
        self._links: dict[tuple[Address, Address], _Link] = {}
        self._deliveries: list[_Delivery] = []
        self._timers: list[_Timer] = []
        self._sequence = 0
        self._steps = 0
        self._timers_fired = 0
        self._trace: deque[TraceEvent] | None = deque(maxlen=trace_limit) if trace else None

    # ------------------------------------------------------------ topology

    @property
    def now(self) -> float:
        """The virtual time."""
        return self._now

    @property
    def trace(self) -> tuple[TraceEvent, ...]:
        """The recorded events, oldest first (empty unless made with ``trace=True``)."""
        return () if self._trace is None else tuple(self._trace)

    def add(self, core: DatagramCore, address: Address) -> None:
        """Attach ``core`` at ``address`` and send what it already has to send."""
        if address in self._nodes:
            raise ValueError(f"address {address!r} is already in use")
        node = _Node(core, address)
        self._nodes[address] = node
        self._flush(node)

    def remove(self, address: Address) -> DatagramCore:
        """Detach the core at ``address`` (a crash or power cut); datagrams to it are lost.

        Its pending timers are forgotten. A new core may be added at the address.
        """
        node = self._nodes.pop(address, None)
        if node is None:
            raise KeyError(address)
        node.timer_token += 1
        return node.core

    def core(self, address: Address) -> DatagramCore:
        """The core at ``address``."""
        return self._nodes[address].core

    def set_link(
        self,
        a: Address,
        b: Address,
        conditions: LinkConditions,
        backward: LinkConditions | None = None,
    ) -> None:
        """Set the link between ``a`` and ``b``: ``conditions`` from ``a`` to ``b``,
        ``backward`` (default: the same) from ``b`` to ``a``."""
        self.set_direction(a, b, conditions)
        self.set_direction(b, a, conditions if backward is None else backward)

    def set_direction(self, src: Address, dst: Address, conditions: LinkConditions) -> None:
        """Set the conditions of datagrams from ``src`` to ``dst`` only."""
        link = self._links.get((src, dst))
        if link is None:
            self._links[(src, dst)] = _Link(conditions)
        else:
            link.conditions = conditions

    def link_conditions(self, src: Address, dst: Address) -> LinkConditions:
        """The conditions datagrams from ``src`` to ``dst`` meet."""
        link = self._links.get((src, dst))
        return self._default if link is None else link.conditions

    def link_statistics(self, src: Address, dst: Address) -> LinkStatistics:
        """Counters of datagrams from ``src`` to ``dst`` (zeros for an unused link)."""
        link = self._links.get((src, dst))
        return LinkStatistics() if link is None else LinkStatistics(**link.counts)

    def total_statistics(self) -> LinkStatistics:
        """Counters summed over every link."""
        totals = {f.name: 0 for f in fields(LinkStatistics)}
        for link in self._links.values():
            for name, value in link.counts.items():
                totals[name] += value
        return LinkStatistics(**totals)

    def statistics(self) -> NetworkStatistics:
        """Counters of the whole network."""
        return NetworkStatistics(
            now=self._now,
            steps=self._steps,
            timers_fired=self._timers_fired,
            datagrams_in_flight=len(self._deliveries),
        )

    # ------------------------------------------------------------- driving

    def wakeup(self, address: Address) -> None:
        """Collect what the core at ``address`` now has to send, and its new deadline.

        Call it after application code called into that core, before
        :meth:`step`; :meth:`run_until` does it for every core by itself.
        """
        self._flush(self._nodes[address])

    def inject(self, data: bytes, src: Address, dst: Address) -> None:
        """Send ``data`` from ``src`` to ``dst`` as if a core at ``src`` had sent it
        now (``src`` need not be a core: a spoofer, a replayed capture)."""
        self._route(bytes(data), src, dst)

    def step(self) -> bool:
        """Advance to the next delivery or deadline and handle it.

        Returns ``False`` (and does nothing) when nothing is scheduled.
        Deliveries due at the same time as a deadline go first.
        """
        due = self._next_time()
        if due is None:
            return False
        self._handle_next(due)
        return True

    def run_until(
        self,
        predicate: Callable[[], bool] | None = None,
        *,
        max_time: float = math.inf,
        max_steps: int = 1_000_000,
    ) -> bool:
        """Step until ``predicate()`` is true, at most ``max_time`` virtual seconds
        from now and ``max_steps`` steps.

        Without a predicate, runs until nothing is scheduled. Returns whether the
        predicate became true (or, without one, whether the network went idle).
        When the time limit comes first, the clock stops exactly at it.
        """
        if max_time < 0 or max_steps < 0:
            raise ValueError("max_time and max_steps must not be negative")
        deadline = self._now + max_time
        for node in list(self._nodes.values()):
            self._flush(node)
        for _ in range(max_steps):
            if predicate is not None and predicate():
                return True
            due = self._next_time()
            if due is None:
                return predicate is None
            if due > deadline:
                self._now = deadline
                return False
            self._handle_next(due)
        return predicate is not None and predicate()

    # ----------------------------------------------------------- internals

    def _next_time(self) -> float | None:
        timers = self._timers
        while timers and not self._timer_is_live(timers[0]):
            heapq.heappop(timers)
        candidates = []
        if self._deliveries:
            candidates.append(self._deliveries[0][0])
        if timers:
            candidates.append(max(timers[0][0], self._now))
        return min(candidates, default=None)

    def _timer_is_live(self, entry: _Timer) -> bool:
        _, _, node, token = entry
        return self._nodes.get(node.address) is node and node.timer_token == token

    def _handle_next(self, due: float) -> None:
        self._now = max(self._now, due)
        self._steps += 1
        if self._deliveries and self._deliveries[0][0] <= due:
            _, _, src, dst, data = heapq.heappop(self._deliveries)
            self._deliver(src, dst, data)
            return
        _, _, node, _ = heapq.heappop(self._timers)
        node.armed = None
        node.timer_token += 1
        self._timers_fired += 1
        self._record(TraceKind.TIMER, node.address, node.address, b"")
        node.core.handle_timer(self._now)
        self._flush(node)

    def _deliver(self, src: Address, dst: Address, data: bytes) -> None:
        counts = self._link(src, dst).counts
        node = self._nodes.get(dst)
        if node is None:
            counts["undeliverable"] += 1
            self._record(TraceKind.UNDELIVERABLE, src, dst, data)
            return
        counts["delivered"] += 1
        counts["bytes_delivered"] += len(data)
        self._record(TraceKind.DELIVER, src, dst, data)
        try:
            node.core.receive_datagram(data, src, self._now)
        except BadPacket:
            counts["rejected"] += 1
            self._record(TraceKind.REJECTED, src, dst, data)
        self._flush(node)

    def _flush(self, node: _Node) -> None:
        for data, dst in node.core.datagrams_to_send(self._now):
            self._route(data, node.address, dst)
        deadline = node.core.get_timer()
        if deadline != node.armed:
            node.armed = deadline
            node.timer_token += 1
            if deadline is not None:
                self._sequence += 1
                heapq.heappush(self._timers, (deadline, self._sequence, node, node.timer_token))

    def _link(self, src: Address, dst: Address) -> _Link:
        link = self._links.get((src, dst))
        if link is None:
            link = self._links[(src, dst)] = _Link(self._default)
        return link

    def _route(self, data: bytes, src: Address, dst: Address) -> None:
        link = self._link(src, dst)
        conditions, counts, chance = link.conditions, link.counts, self._random.random
        counts["sent"] += 1
        counts["bytes_sent"] += len(data)
        self._record(TraceKind.SEND, src, dst, data)
        if conditions.mtu is not None and len(data) > conditions.mtu:
            counts["oversize"] += 1
            self._record(TraceKind.OVERSIZE, src, dst, data)
            return
        if conditions.loss and chance() < conditions.loss:
            counts["lost"] += 1
            self._record(TraceKind.LOST, src, dst, data)
            return
        departure = self._now
        if conditions.rate is not None:
            start = max(self._now, link.busy_until)
            queued = (start - self._now) * conditions.rate
            if conditions.queue_bytes is not None and queued + len(data) > conditions.queue_bytes:
                counts["queue_dropped"] += 1
                self._record(TraceKind.QUEUE_DROP, src, dst, data)
                return
            departure = link.busy_until = start + len(data) / conditions.rate
        copies = 1
        if conditions.duplicate and chance() < conditions.duplicate:
            copies = 2
            counts["duplicated"] += 1
            self._record(TraceKind.DUPLICATE, src, dst, data)
        for _ in range(copies):
            copy = data
            if conditions.corrupt and data and chance() < conditions.corrupt:
                copy = self._flip_bits(data, conditions.corrupt_bits)
                counts["corrupted"] += 1
                self._record(TraceKind.CORRUPT, src, dst, copy)
            arrival = departure + conditions.delay
            if conditions.jitter:
                arrival += self._random.uniform(0.0, conditions.jitter)
            if conditions.reorder and chance() < conditions.reorder:
                arrival += conditions.reorder_delay
                counts["reordered"] += 1
            self._sequence += 1
            heapq.heappush(self._deliveries, (arrival, self._sequence, src, dst, copy))

    def _flip_bits(self, data: bytes, bits: int) -> bytes:
        flipped = bytearray(data)
        for position in self._random.sample(range(len(data) * 8), min(bits, len(data) * 8)):
            flipped[position >> 3] ^= 0x80 >> (position & 7)
        return bytes(flipped)

    def _record(self, kind: TraceKind, src: Address, dst: Address, data: bytes) -> None:
        if self._trace is not None:
            self._trace.append(TraceEvent(self._now, kind, src, dst, data))
