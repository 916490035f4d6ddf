"""The sliding replay window and the sender's packet counter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import LocalProtocolError
from dofpy.security.replay import (
    MAX_PACKET_NUMBER,
    PacketCounter,
    ReplayStatistics,
    ReplayWindow,
)


def test_each_number_is_accepted_once() -> None:
    window = ReplayWindow(64)
    assert window.highest is None
    assert window.accept(1)
    assert not window.accept(1)
    assert window.accept(2)
    assert not window.check(2)
    assert window.highest == 2
    assert window.statistics() == ReplayStatistics(accepted=2, replayed=1, too_old=0)


def test_reordered_but_new_numbers_are_accepted() -> None:
    window = ReplayWindow(64)
    for number in (10, 7, 9, 8, 3, 11):
        assert window.accept(number), number
    for number in (10, 7, 9, 8, 3, 11):
        assert not window.accept(number), number


def test_numbers_below_the_window_are_refused() -> None:
    window = ReplayWindow(16)
    assert window.accept(100)
    assert window.check(85)  # 100 - 15: the oldest the window remembers
    assert not window.check(84)
    assert not window.accept(84)
    assert not window.accept(0)
    assert window.accept(85)
    assert window.statistics().too_old == 2


def test_a_big_jump_forgets_everything_older() -> None:
    window = ReplayWindow(8)
    for number in range(1, 9):
        window.accept(number)
    assert window.accept(1000)
    assert window.check(999)
    assert not window.check(992)
    assert window.accept(0x3FFFFFFF)
    assert not window.check(0)


def test_check_records_nothing() -> None:
    window = ReplayWindow()
    assert window.check(5)
    assert window.check(5)
    assert window.highest is None
    assert window.size == 1024


@given(st.integers(1, 40), st.lists(st.integers(0, 120), max_size=120))
def test_matches_a_model(size: int, numbers: list[int]) -> None:
    window = ReplayWindow(size)
    seen: set[int] = set()
    highest = -1
    for number in numbers:
        expected = number not in seen and number > highest - size
        assert window.check(number) == expected
        assert window.accept(number) == expected
        if expected:
            seen.add(number)
            highest = max(highest, number)


@pytest.mark.parametrize("size", [0, -1, 1 << 17, True])
def test_window_size_is_bounded(size: int) -> None:
    with pytest.raises(ValueError):
        ReplayWindow(size)


@pytest.mark.parametrize("number", [-1, MAX_PACKET_NUMBER + 1, True])
def test_out_of_range_numbers_are_value_errors(number: int) -> None:
    with pytest.raises(ValueError):
        ReplayWindow().check(number)


def test_counter_counts_and_runs_out() -> None:
    counter = PacketCounter()
    assert [counter.next() for _ in range(3)] == [1, 2, 3]
    last = PacketCounter(MAX_PACKET_NUMBER)
    assert last.remaining == 1
    assert last.next() == MAX_PACKET_NUMBER
    assert last.remaining == 0
    with pytest.raises(LocalProtocolError, match="rekey"):
        last.next()
    with pytest.raises(ValueError):
        PacketCounter(-1)
