"""Nothing in the transfer core grows with the transfers it finished.

- A provider serving transfer after transfer (and its requestor) keeps no
  table that grows with them: finished receivers are forgotten (the last
  ``finished_kept`` excepted), senders are forgotten when their requestor is
  done, and the deadline heap holds the running transfers only.
- The work of ``get_timer`` does not grow with the finished transfers: it is
  counted in heap entries visited, not timed.
- A finished transfer's event carries its final statistics, and the core's
  totals still count the forgotten transfers.
- The deadline heap itself: earliest, due keys, replaced and removed
  deadlines, bounded stale entries.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dofpy.testing import LinkConditions, Network
from dofpy.testing.transfer import (
    PROVIDER,
    REQUESTOR,
    SequentialTransfers,
    make_object,
    run_to_event,
)
from dofpy.transfer.core import TransferCompleted, TransferConfig, TransferCore, TransferFailed
from dofpy.transfer.deadlines import DeadlineHeap
from dofpy.transfer.receiver import FetchState
from dofpy.transfer.store import MemoryStore


def _timer_visits(core: TransferCore) -> int:
    before = core._deadlines.visited
    core.get_timer()
    return core._deadlines.visited - before


def test_sequential_transfers_leave_the_tables_bounded() -> None:
    run = SequentialTransfers()
    run.run(50)
    sizes_after_50 = (
        len(run.requestor._finished),
        len(run.requestor._deadlines._heap),
        len(run.provider._senders),
    )
    run.run(250)
    provider, requestor = run.provider, run.requestor
    assert run.completed == 300
    assert provider.statistics().fetches_received >= 300
    assert requestor._receivers == {} and requestor._by_object == {}
    assert len(requestor._finished) == TransferConfig().finished_kept
    assert len(requestor._deadlines) == 0 and len(requestor._deadlines._heap) == 0
    assert len(provider._senders) == 0 and provider._senders._by_object == {}
    assert provider._senders._per_peer == {}
    assert (
        len(requestor._finished),
        len(requestor._deadlines._heap),
        len(provider._senders),
    ) == sizes_after_50
    # The forgotten transfers still count in the core's totals.
    # (a block per leaf and the hash chunk, per transfer)
    assert run.blocks_received == 300 * (run.manifest.leaf_count + 1)
    assert requestor.statistics().blocks_received == run.blocks_received
    assert requestor.statistics().active_transfers == 0


def test_get_timer_work_does_not_grow_with_finished_transfers() -> None:
    run = SequentialTransfers()
    run.run(5)
    running = run.requestor.fetch(run.manifest, [PROVIDER], run.network.now, store=MemoryStore())
    visits_after_5 = _timer_visits(run.requestor)
    assert visits_after_5 >= 1  # the running transfer's deadline
    assert run.requestor.cancel(running, run.network.now)
    assert isinstance(run.requestor.next_event(), TransferFailed)
    run.run(200)
    run.requestor.fetch(run.manifest, [PROVIDER], run.network.now, store=MemoryStore())
    assert _timer_visits(run.requestor) == visits_after_5


def test_the_event_carries_the_final_statistics_and_the_transfer_is_forgotten() -> None:
    data = make_object(16 * 1024)
    provider = TransferCore()
    manifest = provider.publish(data)
    requestor = TransferCore(TransferConfig(finished_kept=0))
    network = Network(seed=4, default=LinkConditions(delay=0.01))
    network.add(provider, PROVIDER)
    network.add(requestor, REQUESTOR)
    transfer = requestor.fetch(manifest, [PROVIDER], network.now)
    network.wakeup(REQUESTOR)
    event = run_to_event(network, requestor)
    assert isinstance(event, TransferCompleted) and event.transfer_id == transfer
    assert event.statistics.state is FetchState.COMPLETE
    assert event.statistics.bytes_verified == len(data)
    assert event.statistics.blocks_received == requestor.statistics().blocks_received > 0
    assert transfer not in requestor._receivers and transfer not in requestor._finished
    assert requestor.cancel(transfer, network.now) is False  # ended: nothing to cancel


def test_the_last_finished_transfers_stay_inspectable() -> None:
    run = SequentialTransfers()
    run.run(20)
    kept = TransferConfig().finished_kept
    assert sorted(run.requestor._finished) == list(range(21 - kept, 21))
    stats = run.requestor.transfer_statistics(20, run.network.now)
    assert stats.state is FetchState.COMPLETE
    assert run.requestor.receiver(20).done


# -- the deadline heap -------------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.integers(0, 9), st.none() | st.floats(0, 100, allow_nan=False)),
        max_size=200,
    ),
    st.floats(0, 100, allow_nan=False),
)
def test_deadline_heap_agrees_with_a_plain_table(
    operations: list[tuple[int, float | None]], now: float
) -> None:
    heap: DeadlineHeap[int] = DeadlineHeap()
    table: dict[int, float] = {}
    for key, when in operations:
        heap.set(key, when)
        if when is None:
            table.pop(key, None)
        else:
            table[key] = when
        assert heap.earliest() == (min(table.values()) if table else None)
        assert len(heap) == len(table)
        assert len(heap._heap) <= 2 * len(table) + 17  # stale entries stay bounded
    due = heap.pop_due(now)
    expected = sorted((when, key) for key, when in table.items() if when <= now)
    assert sorted(due) == sorted(key for _, key in expected)
    assert [table[key] for key in due] == sorted(table[key] for key in due)
    for key in due:
        assert key not in heap
    rest = [when for key, when in table.items() if when > now]
    assert heap.earliest() == (min(rest) if rest else None)
