"""``should_wait`` counts only as far as it needs to (it runs for every block
that arrives), and says what counting everything says."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dofpy.transfer.fetch_plan import should_wait
from dofpy.transfer.rangeset import RangeSet

_ranges = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 40)), max_size=6).map(
    lambda pairs: RangeSet((start, start + length) for start, length in pairs)
)


@given(
    free=st.integers(1, 70),  # the receiver asks only with room in its window
    window=st.integers(1, 256),
    per_block=st.integers(1, 8),
    roots=_ranges,
    chunks=_ranges,
    leaves=_ranges,
)
def test_should_wait_is_the_quarter_window_rule(
    free: int, window: int, per_block: int, roots: RangeSet, chunks: RangeSet, leaves: RangeSet
) -> None:
    # Wait for a quarter of the window unless everything left fits in what is free.
    blocks_left = roots.count() + chunks.count() + -(-leaves.count() // per_block)
    expected = free < max(1, window // 4) and blocks_left > free
    assert should_wait(free, window, per_block, roots, chunks, leaves) is expected


def test_should_wait_for_plenty_of_leaves_and_asks_for_the_last_few() -> None:
    plenty, few = RangeSet([(0, 1000)]), RangeSet([(0, 3)])
    assert should_wait(2, 64, 1, RangeSet(), RangeSet(), plenty)
    assert not should_wait(3, 64, 1, RangeSet(), RangeSet(), few)
    assert not should_wait(16, 64, 1, RangeSet(), RangeSet(), plenty)  # a quarter is free
