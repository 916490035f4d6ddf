"""Sets of non-negative integers kept as sorted, disjoint half-open ranges.

The transfer tracks blocks by ranges, never by a timer or an object per
block: which leaves are verified, wanted, queued at a provider. A range set of
a million consecutive blocks is one ``(start, end)`` pair.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

__all__ = ["RangeSet"]


class RangeSet:
    """A mutable set of ints stored as sorted disjoint ``[start, end)`` ranges."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    # -- queries -------------------------------------------------------------------

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __len__(self) -> int:
        """The number of ranges (not of integers: see :meth:`count`)."""
        return len(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return self._starts == other._starts and self._ends == other._ends

    def __hash__(self) -> int:  # mutable: not hashable
        raise TypeError("RangeSet is mutable and not hashable")

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value < self._ends[i]

    def count(self) -> int:
        """How many integers the set holds."""
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def covers(self, start: int, end: int) -> bool:
        """True when every integer of ``[start, end)`` is in the set."""
        if start >= end:
            return True
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def first(self) -> int | None:
        """The smallest integer in the set, or ``None``."""
        return self._starts[0] if self._starts else None

    def count_up_to(self, limit: int) -> int:
        """``min(self.count(), limit)``, without counting past ``limit``."""
        total = 0
        for start, end in zip(self._starts, self._ends, strict=True):
            total += end - start
            if total >= limit:
                return limit
        return total

    def copy(self) -> RangeSet:
        result = RangeSet()
        result._starts = list(self._starts)
        result._ends = list(self._ends)
        return result

    # -- updates -------------------------------------------------------------------

    def add(self, start: int, end: int) -> None:
        """Add ``[start, end)`` (merging with touching or overlapping ranges)."""
        if start < 0 or end < start:
            raise ValueError(f"bad range [{start}, {end})")
        if start == end:
            return
        lo = bisect_left(self._ends, start)
        hi = bisect_right(self._starts, end)
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def discard(self, start: int, end: int) -> None:
        """Remove ``[start, end)``."""
        if start >= end or not self._starts:
            return
        lo = bisect_right(self._ends, start)
        hi = bisect_left(self._starts, end)
        if lo >= hi:
            return
        new_starts: list[int] = []
        new_ends: list[int] = []
        if self._starts[lo] < start:
            new_starts.append(self._starts[lo])
            new_ends.append(start)
        if self._ends[hi - 1] > end:
            new_starts.append(end)
            new_ends.append(self._ends[hi - 1])
        self._starts[lo:hi] = new_starts
        self._ends[lo:hi] = new_ends

    def update(self, other: RangeSet) -> None:
        """Add every range of ``other``."""
        for start, end in other:
            self.add(start, end)

    def difference_update(self, other: RangeSet) -> None:
        """Remove every range of ``other``."""
        for start, end in other:
            self.discard(start, end)

    def pop_pieces(self, align: int, pieces: int) -> tuple[int, int] | None:
        """Remove and return ``[start, stop)``: from the smallest integer, at most
        ``pieces`` pieces of the range holding it cut at multiples of ``align``
        (the first piece ends at the first multiple above ``start``); ``None``
        when the set is empty. One call instead of a discard per piece."""
        starts = self._starts
        if not starts or pieces < 1 or align < 1:
            return None
        start, end = starts[0], self._ends[0]
        stop = (start // align + pieces) * align
        if stop >= end:
            del starts[0]
            del self._ends[0]
            return start, end
        starts[0] = stop
        return start, stop

    def take(self, limit: int) -> RangeSet:
        """Remove and return the lowest ``limit`` integers (fewer if the set is smaller)."""
        taken = RangeSet()
        while limit > 0 and self._starts:
            start, end = self._starts[0], self._ends[0]
            stop = min(end, start + limit)
            taken._starts.append(start)
            taken._ends.append(stop)
            limit -= stop - start
            if stop == end:
                del self._starts[0]
                del self._ends[0]
            else:
                self._starts[0] = stop
        return taken
