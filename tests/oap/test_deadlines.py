"""The OAP layer's deadline heap against a plain dict of deadlines (the scan
it replaces), over random schedules, cancels and timer runs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dofpy.oap.deadlines import DeadlineHeap

_keys = st.integers(0, 20)
_times = st.integers(0, 100).map(float)
_operations = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), _keys, _times),
        st.tuples(st.just("cancel"), _keys, st.just(0.0)),
        st.tuples(st.just("pop_due"), st.just(0), _times),
    ),
    max_size=300,
)


@given(_operations)
def test_the_heap_agrees_with_a_scan(operations: list[tuple[str, int, float]]) -> None:
    heap: DeadlineHeap[int] = DeadlineHeap()
    model: dict[int, float] = {}
    for name, key, when in operations:
        if name == "schedule":
            heap.schedule(key, when)
            model[key] = when
        elif name == "cancel":
            heap.cancel(key)
            model.pop(key, None)
        else:
            due = heap.pop_due(when)
            expected = sorted((t, k) for k, t in model.items() if t <= when)
            assert sorted(due) == sorted(k for _, k in expected)
            # Earliest first.
            assert [model[k] for k in due] == sorted(model[k] for k in due)
            for k in due:
                del model[k]
        assert heap.next_deadline() == (min(model.values()) if model else None)
        assert len(heap) == len(model)
        assert set(heap) == set(model)
        for k, when_due in model.items():
            assert k in heap and heap.deadline(k) == when_due
        # Stale entries never outnumber the live ones by more than the slack.
        assert len(heap._heap) <= 2 * len(model) + 65


def test_rescheduling_one_key_forever_keeps_the_heap_small() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    for step in range(10_000):
        heap.schedule("peer", 60.0 + step)
    assert len(heap._heap) <= 2 + 65
    assert heap.next_deadline() == 60.0 + 9_999
    assert heap.pop_due(1e9) == ["peer"]
    assert heap.next_deadline() is None
