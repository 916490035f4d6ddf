"""A deadline heap: the earliest of many keyed deadlines without scanning them.

Each key has at most one deadline; :meth:`DeadlineHeap.set` replaces it (the
old heap entry is left in place and skipped when it surfaces: a lazy delete),
so setting is O(log n) and :meth:`DeadlineHeap.earliest` is amortised O(log n)
however many keys there are. Stale entries are bounded: when they outnumber
the live ones the heap is rebuilt from the live deadlines.

``visited`` counts the heap entries looked at, so that a test can check the
work per call without timing anything.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["DeadlineHeap"]

K = TypeVar("K", bound=Hashable)


class DeadlineHeap(Generic[K]):
    """Keyed deadlines (seconds, the caller's clock), earliest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._live: dict[K, tuple[float, int]] = {}
        self._next = 0  # insertion counter: ties keep their order, keys are never compared
        self.visited = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def set(self, key: K, when: float | None) -> None:
        """``key``'s deadline is now ``when`` (``None``: it has none)."""
        current = self._live.get(key)
        if when is None:
            if current is not None:
                del self._live[key]
            return
        if current is not None and current[0] == when:
            return
        entry = self._next
        self._next += 1
        self._live[key] = (when, entry)
        heapq.heappush(self._heap, (when, entry, key))
        if len(self._heap) > 2 * len(self._live) + 16:
            self._rebuild()

    def discard(self, key: K) -> None:
        self.set(key, None)

    def earliest(self) -> float | None:
        """The earliest deadline, or ``None`` when no key has one."""
        heap, live = self._heap, self._live
        while heap:
            when, entry, key = heap[0]
            self.visited += 1
            if live.get(key) == (when, entry):
                return when
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[K]:
        """Remove and return the keys whose deadline is at or before ``now``,
        earliest first."""
        heap, live = self._heap, self._live
        due: list[K] = []
        while heap and heap[0][0] <= now:
            when, entry, key = heapq.heappop(heap)
            self.visited += 1
            if live.get(key) == (when, entry):
                del live[key]
                due.append(key)
        return due

    def _rebuild(self) -> None:
        self._heap = [(when, entry, key) for key, (when, entry) in self._live.items()]
        heapq.heapify(self._heap)
