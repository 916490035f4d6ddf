"""The seeded network simulator, with toy cores written here.

Rates are checked statistically on bounded samples with fixed seeds, so the
tests are deterministic; the bounds are 5 standard deviations wide, so a
change of the random stream (not of behaviour) keeps them passing.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy._core import Address
from dofpy.errors import BadPacket
from dofpy.testing import LinkConditions, LinkStatistics, Network, TraceKind

A: Address = ("10.0.0.1", 3567)
B: Address = ("10.0.0.2", 40000)
C: Address = ("10.0.0.3", 40000)


class Sink:
    """Records (arrival time, data, source); rejects b"bad" with BadPacket."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, bytes, Address]] = []

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if data == b"bad":
            raise BadPacket("rejected")
        self.arrivals.append((now, data, addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        raise AssertionError("no timer")


class Echo(Sink):
    def __init__(self) -> None:
        super().__init__()
        self._out: list[tuple[bytes, Address]] = []

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        super().receive_datagram(data, addr, now)
        self._out.append((data, addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out


class RetryClient:
    """Sends requests 0..count-1 to ``server``, each resent every ``rto`` seconds
    until its exact echo comes back (corrupted echoes do not match)."""

    def __init__(self, server: Address, count: int, rto: float = 0.5) -> None:
        self.server = server
        self.rto = rto
        self.outstanding = {b"request %d" % i: 0.0 for i in range(count)}
        self.completed: list[bytes] = []
        self.sends = 0
        self.due = list(self.outstanding)

    @property
    def done(self) -> bool:
        return not self.outstanding

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if self.outstanding.pop(data, None) is not None:
            self.completed.append(data)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = [(data, self.server) for data in self.due if data in self.outstanding]
        self.due = []
        for data, _ in out:
            self.outstanding[data] = now + self.rto
            self.sends += 1
        return out

    def get_timer(self) -> float | None:
        return min(self.outstanding.values(), default=None)

    def handle_timer(self, now: float) -> None:
        self.due = [data for data, due in self.outstanding.items() if due <= now]


def within(observed: int, trials: int, probability: float, sigmas: float = 5.0) -> bool:
    spread = sigmas * math.sqrt(trials * probability * (1 - probability))
    return abs(observed - trials * probability) <= spread


LOSSY = LinkConditions(loss=0.2, duplicate=0.1, reorder=0.1, corrupt=0.1, delay=0.01, jitter=0.02)


def lossy_run(seed: int) -> tuple[Network, RetryClient]:
    network = Network(seed, default=LOSSY, trace=True)
    client = RetryClient(A, 30)
    network.add(Echo(), A)
    network.add(client, B)
    assert network.run_until(lambda: client.done, max_time=120.0)
    return network, client


def test_requests_complete_over_a_lossy_link() -> None:
    network, client = lossy_run(seed=7)
    assert sorted(client.completed) == sorted(b"request %d" % i for i in range(30))
    forward = network.link_statistics(B, A)
    assert forward.sent == client.sends > 30
    assert forward.lost > 0 and forward.duplicated > 0 and forward.corrupted > 0
    assert network.now < 120.0


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    first, _ = lossy_run(seed=7)
    again, _ = lossy_run(seed=7)
    other, _ = lossy_run(seed=8)
    assert first.trace == again.trace
    assert first.now == again.now
    assert first.statistics() == again.statistics()
    assert first.trace != other.trace
    assert len(first.trace) > 100


def test_loss_duplication_and_corruption_rates_are_as_configured() -> None:
    trials = 20_000
    conditions = LinkConditions(loss=0.1, duplicate=0.05, corrupt=0.2, corrupt_bits=3)
    network = Network(3, default=conditions)
    sink = Sink()
    network.add(sink, B)
    payload = bytes(range(64))
    for _ in range(trials):
        network.inject(payload, A, B)
    assert network.run_until()
    stats = network.link_statistics(A, B)
    assert stats.sent == trials
    assert within(stats.lost, trials, 0.1)
    kept = trials - stats.lost
    assert within(stats.duplicated, kept, 0.05)
    copies = kept + stats.duplicated
    assert stats.delivered == len(sink.arrivals) == copies
    assert within(stats.corrupted, copies, 0.2)
    flipped = [
        sum(bin(x ^ y).count("1") for x, y in zip(data, payload, strict=True))
        for _, data, _ in sink.arrivals
    ]
    assert flipped.count(3) == stats.corrupted
    assert flipped.count(0) == copies - stats.corrupted


def test_delay_jitter_and_reordering() -> None:
    trials = 5_000
    conditions = LinkConditions(delay=0.05, jitter=0.01, reorder=0.1, reorder_delay=0.5)
    network = Network(11, default=conditions)
    sink = Sink()
    network.add(sink, B)
    for index in range(trials):
        network.inject(index.to_bytes(2, "big"), A, B)
        network.run_until(max_time=0.001)  # one datagram per virtual millisecond
    network.run_until()
    stats = network.link_statistics(A, B)
    assert within(stats.reordered, trials, 0.1)
    late = 0
    for arrival, data, source in sink.arrivals:
        assert source == A
        transit = arrival - int.from_bytes(data, "big") * 0.001
        assert 0.05 - 1e-9 <= transit <= 0.56 + 1e-9
        late += transit > 0.06 + 1e-9
    assert late == stats.reordered
    order = [int.from_bytes(data, "big") for _, data, _ in sink.arrivals]
    assert order != sorted(order)


def test_rate_limit_serialises_and_tail_drops() -> None:
    network = Network(0, default=LinkConditions(rate=10_000.0, queue_bytes=3_000, delay=0.1))
    sink = Sink()
    network.add(sink, B)
    for _ in range(6):
        network.inject(b"x" * 1000, A, B)
    network.run_until()
    # 1000 bytes at 10 kB/s take 0.1 s each; at most 3000 bytes may wait.
    assert [round(t, 9) for t, _, _ in sink.arrivals] == [0.2, 0.3, 0.4]
    assert network.link_statistics(A, B).queue_dropped == 3


def test_mtu_drops_oversize_datagrams() -> None:
    network = Network(0, default=LinkConditions(mtu=100))
    sink = Sink()
    network.add(sink, B)
    network.inject(b"y" * 101, A, B)
    network.inject(b"y" * 100, A, B)
    network.run_until()
    assert [data for _, data, _ in sink.arrivals] == [b"y" * 100]
    assert network.link_statistics(A, B).oversize == 1


def test_links_are_per_direction() -> None:
    network = Network(5)
    network.set_link(A, B, LinkConditions(loss=1.0), backward=LinkConditions(delay=1.0))
    network.set_direction(A, C, LinkConditions(delay=2.0))
    sinks = {address: Sink() for address in (A, B, C)}
    for address, sink in sinks.items():
        network.add(sink, address)
    network.inject(b"a->b", A, B)
    network.inject(b"b->a", B, A)
    network.inject(b"a->c", A, C)
    network.inject(b"c->a", C, A)
    network.run_until()
    assert sinks[B].arrivals == []
    assert sinks[A].arrivals == [(0.0, b"c->a", C), (1.0, b"b->a", B)]
    assert sinks[C].arrivals == [(2.0, b"a->c", A)]
    assert network.link_statistics(A, B).lost == 1
    assert network.link_statistics(B, A).lost == 0
    assert network.link_conditions(C, A) == LinkConditions()
    assert network.link_statistics(B, C) == LinkStatistics()


def test_timers_fire_at_their_deadlines_and_removal_forgets_them() -> None:
    network = Network(0, trace=True)
    client = RetryClient(A, 1, rto=0.25)  # nobody at A: every send is undeliverable
    network.add(client, B)
    assert not network.run_until(lambda: client.done, max_time=1.0)
    assert network.now == 1.0
    timer_times = [event.time for event in network.trace if event.kind is TraceKind.TIMER]
    assert timer_times == [0.25, 0.5, 0.75, 1.0]
    assert client.sends == 5
    assert network.link_statistics(B, A).undeliverable == 5
    network.remove(B)
    assert network.run_until()  # idle: the removed core's timer is gone
    assert network.statistics().timers_fired == 4
    with pytest.raises(KeyError):
        network.remove(B)


def test_rejected_datagrams_are_counted() -> None:
    network = Network(0)
    sink = Sink()
    network.add(sink, B)
    network.inject(b"bad", A, B)
    network.inject(b"good", A, B)
    network.run_until()
    assert network.link_statistics(A, B).rejected == 1
    assert [data for _, data, _ in sink.arrivals] == [b"good"]


def test_run_until_is_bounded_by_steps() -> None:
    network = Network(0)
    network.add(Echo(), A)
    network.add(Echo(), B)
    network.inject(b"ping-pong forever", A, B)
    assert not network.run_until(max_steps=100)
    assert network.statistics().steps == 100
    assert network.statistics().datagrams_in_flight == 1


def test_step_and_wakeup_drive_a_core_by_hand() -> None:
    network = Network(0, default=LinkConditions(delay=0.5))
    echo = Echo()
    client = RetryClient(A, 1, rto=10.0)
    network.add(echo, A)
    network.add(client, B)  # add collects the first request
    assert network.statistics().datagrams_in_flight == 1
    assert network.step()  # request arrives at A, echo sent
    assert network.now == 0.5
    assert network.step()  # echo arrives at B
    assert client.done and network.now == 1.0
    assert not network.step()
    client.outstanding[b"again"] = 0.0
    client.due = [b"again"]  # as the application would
    network.wakeup(B)
    assert network.statistics().datagrams_in_flight == 1


def test_bad_configuration_is_refused() -> None:
    for options in (
        {"loss": -0.1},
        {"duplicate": 1.5},
        {"delay": -1.0},
        {"jitter": math.inf},
        {"corrupt_bits": 0},
        {"rate": 0.0},
        {"queue_bytes": 10},
        {"mtu": 0},
    ):
        with pytest.raises(ValueError):
            LinkConditions(**options)
    with pytest.raises(ValueError):
        Network(0, trace_limit=0)
    network = Network(0)
    network.add(Sink(), A)
    with pytest.raises(ValueError):
        network.add(Sink(), A)
    with pytest.raises(ValueError):
        network.run_until(max_time=-1.0)


probability = st.floats(0.0, 1.0)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    loss=probability,
    duplicate=probability,
    corrupt=probability,
    reorder=probability,
    count=st.integers(0, 200),
)
def test_every_datagram_is_accounted_for(
    seed: int, loss: float, duplicate: float, corrupt: float, reorder: float, count: int
) -> None:
    conditions = LinkConditions(
        loss=loss, duplicate=duplicate, corrupt=corrupt, reorder=reorder, jitter=0.01
    )

    def run() -> tuple[object, ...]:
        network = Network(seed, default=conditions, trace=True)
        network.add(Sink(), B)
        for index in range(count):
            network.inject(index.to_bytes(2, "big"), A, B)
        assert network.run_until()
        return network.trace, network.link_statistics(A, B)

    trace, stats = run()
    assert (trace, stats) == run()
    assert isinstance(stats, LinkStatistics)
    assert stats.sent == count
    assert stats.delivered == count - stats.lost + stats.duplicated
