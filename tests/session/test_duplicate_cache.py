"""The duplicate cache's bounds: entries, age, and the bytes of the answers it keeps."""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.session._dedup import PENDING, DuplicateCache
from dofpy.session.node import CommandReceived, Node, NodeConfig, ResponseReceived
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.wire.dpp import AppId

A = ("10.0.0.1", 3567)
B = ("10.0.0.2", 3567)


def _cache(max_bytes: int, entries: int = 100) -> DuplicateCache[bytes]:
    return DuplicateCache(entries, 60.0, max_bytes=max_bytes, weigh=len)


def _answer(cache: DuplicateCache[bytes], key: Hashable, size: int, now: float = 0.0) -> None:
    cache.begin(key, now)
    cache.add_response(key, b"x" * size, now)


def test_answers_past_the_byte_bound_drop_the_least_recently_used() -> None:
    cache = _cache(max_bytes=250)
    for key in range(3):
        _answer(cache, key, 100)
    # 300 bytes asked for, 250 allowed: the oldest answer goes, counted.
    assert cache.lookup(0, 1.0) is None
    assert cache.lookup(1, 1.0) == [b"x" * 100]
    assert cache.lookup(2, 1.0) == [b"x" * 100]
    assert cache.bytes == 200
    assert cache.evicted == 1


def test_a_command_still_being_handled_is_kept_when_bytes_are_shed() -> None:
    cache = _cache(max_bytes=150)
    cache.begin("pending", 0.0)
    _answer(cache, "a", 100)
    _answer(cache, "b", 100)
    # Dropping the pending entry would free nothing: it stays, so its copy is
    # still dropped rather than executed twice.
    assert cache.lookup("pending", 1.0) is PENDING
    assert cache.lookup("a", 1.0) is None
    assert cache.lookup("b", 1.0) == [b"x" * 100]


def test_an_answer_larger_than_the_bound_is_not_kept() -> None:
    cache = _cache(max_bytes=150)
    _answer(cache, "small", 50)
    _answer(cache, "huge", 200)
    assert cache.lookup("huge", 1.0) is None
    assert cache.lookup("small", 1.0) is None  # shed first, and not enough
    assert cache.bytes == 0
    assert cache.evicted == 2


def test_several_answers_to_one_command_weigh_together() -> None:
    cache = _cache(max_bytes=1000)
    cache.begin("k", 0.0)
    cache.add_response("k", b"a" * 300, 0.0)
    cache.add_response("k", b"b" * 200, 0.0)
    assert cache.bytes == 500
    cache.forget(lambda key: key == "k")
    assert cache.bytes == 0


def test_expired_and_replaced_entries_give_their_bytes_back() -> None:
    cache = _cache(max_bytes=10_000)
    _answer(cache, "old", 400, now=0.0)
    _answer(cache, "new", 100, now=30.0)
    assert cache.bytes == 500
    cache.lookup("anything", 61.0)  # "old" expired at 60
    assert cache.bytes == 100
    cache.begin("new", 62.0)  # the same key begun again: its old answer is gone
    assert cache.bytes == 0


def test_a_byte_bound_needs_a_weight() -> None:
    with pytest.raises(ValueError, match="needs weigh"):
        DuplicateCache(10, 60.0, max_bytes=100)
    with pytest.raises(ValueError, match="max_bytes"):
        DuplicateCache(10, 60.0, max_bytes=0, weigh=len)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["begin", "answer", "forget", "tick"]), st.integers(0, 9),
                  st.integers(0, 400)),
        max_size=60,
    )
)  # fmt: skip
def test_the_bytes_kept_never_exceed_the_bound_and_are_counted_exactly(
    steps: list[tuple[str, int, int]],
) -> None:
    cache = _cache(max_bytes=1000, entries=6)
    now = 0.0
    for op, key, size in steps:
        if op == "begin":
            cache.begin(key, now)
        elif op == "answer":
            cache.add_response(key, b"x" * size, now)
        elif op == "forget":
            cache.forget(lambda k, key=key: k == key)  # type: ignore[misc]
        else:
            now += size / 10
            cache.lookup(-1, now)
        kept = 0
        for k in range(10):
            seen = cache.lookup(k, now)
            if isinstance(seen, list):
                kept += sum(map(len, seen))
        assert cache.bytes == kept <= 1000
        assert len(cache) <= 6


def test_a_node_keeps_no_more_answer_bytes_than_its_bound_and_counts_what_it_shed() -> None:
    bound = 200_000
    network = Network(1, default=LinkConditions(delay=0.001))
    a, b = Node(), Node(NodeConfig(duplicate_bytes=bound))
    network.add(a, A)
    network.add(b, B)
    answered = 0
    earlier: list[object] = []
    for i in range(40):
        a.send_command(B, AppId.OAP, i.to_bytes(2, "big"), network.now)
        network.wakeup(A)

        def handled(want: int = i + 1) -> bool:
            nonlocal answered
            while (event := b.next_event()) is not None:
                if isinstance(event, CommandReceived):
                    # An answer the size of a full page (60,000 bytes).
                    b.send_response(event.peer, event.op_count, event.app_id, bytes(60_000),
                                    network.now)  # fmt: skip
                    network.wakeup(B)
                    answered += 1
            while (event := a.next_event()) is not None:
                earlier.append(event)
            return len(earlier) == want

        assert network.run_until(handled, max_time=5)
        assert b.statistics().duplicate_cache_bytes <= bound
    statistics = b.statistics()
    assert statistics.duplicate_cache_bytes == 3 * 60_000  # the last three fit
    assert statistics.duplicate_cache_evictions == 37
    # A recent command is still executed at most once: its answer lost, the
    # retransmitted copy is answered from the cache.
    assert answered == 40
    assert all(isinstance(event, ResponseReceived) for event in earlier)
    network.set_direction(B, A, LinkConditions(loss=1.0))
    request = a.send_command(B, AppId.OAP, b"last", network.now)
    network.wakeup(A)
    executed = 0

    def answered_and_retried() -> bool:
        nonlocal executed
        while (event := b.next_event()) is not None:
            assert isinstance(event, CommandReceived)
            executed += 1
            b.send_response(event.peer, event.op_count, event.app_id, bytes(60_000), network.now)
            network.wakeup(B)
        return b.statistics().duplicate_commands >= 1

    assert network.run_until(answered_and_retried, max_time=10)
    network.set_direction(B, A, LinkConditions(delay=0.001))
    got: list[object] = []

    def response() -> bool:
        assert b.next_event() is None  # never handed up again
        while (event := a.next_event()) is not None:
            got.append(event)
        return bool(got)

    assert network.run_until(response, max_time=10)
    assert got == [ResponseReceived(request, B, AppId.OAP, bytes(60_000))]
    assert executed == 1
    assert b.statistics().duplicate_responses_resent >= 1


def test_the_node_refuses_a_byte_bound_below_one_datagram() -> None:
    with pytest.raises(ValueError, match="duplicate_bytes must be at least max_datagram"):
        NodeConfig(duplicate_bytes=60_000)
    NodeConfig(duplicate_bytes=9000, max_datagram=9000)


def test_answers_are_shed_past_many_commands_still_being_handled() -> None:
    # 50,000 commands pending at the front of the cache (the oldest), then
    # 2,000 answers over a budget of 1,000 bytes: each answer sheds the one
    # before it, never a pending command. (Shedding goes through the answered
    # entries only, so it does not walk past the pending ones each time.)
    cache = _cache(max_bytes=1000, entries=100_000)
    for key in range(50_000):
        cache.begin(("pending", key), 0.0)
    for key in range(2_000):
        _answer(cache, ("answered", key), 600)
    assert cache.bytes == 600
    assert cache.evicted == 1_999
    assert len(cache) == 50_001
    assert cache.lookup(("pending", 0), 1.0) is PENDING
    assert cache.lookup(("pending", 49_999), 1.0) is PENDING
    assert cache.lookup(("answered", 1_999), 1.0) == [b"x" * 600]
