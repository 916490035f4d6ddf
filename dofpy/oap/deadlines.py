"""One deadline per key, kept in a heap: the next deadline in O(1), the due
keys in O(log n) each, instead of a scan of every record at every timer.

Rescheduling or cancelling a key leaves its old heap entry behind (a heap
cannot remove from its middle cheaply); such stale entries are recognised by
their token and skipped when they surface. So that they cannot pile up (a
peer re-subscribing in a loop reschedules one key many times within one
lease), the heap is rebuilt from the live deadlines when it holds more than
twice as many entries as there are keys (plus a small constant).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["DeadlineHeap"]

K = TypeVar("K", bound=Hashable)

_SLACK = 64  # stale entries always tolerated before a rebuild


class DeadlineHeap(Generic[K]):
    """Deadlines by key; each key has at most one live deadline."""

    __slots__ = ("_heap", "_live", "_tokens")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._live: dict[K, tuple[float, int]] = {}
        self._tokens = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def __iter__(self) -> Iterator[K]:
        """The keys with a deadline, in the order they were first scheduled."""
        return iter(self._live)

    def schedule(self, key: K, when: float) -> None:
        """Set (or move) the deadline of ``key`` to ``when``."""
        self._tokens += 1
        self._live[key] = (when, self._tokens)
        heapq.heappush(self._heap, (when, self._tokens, key))
        if len(self._heap) > 2 * len(self._live) + _SLACK:
            self._rebuild()

    def cancel(self, key: K) -> None:
        """Forget the deadline of ``key`` (if it has one)."""
        self._live.pop(key, None)
        if not self._live:
            self._heap.clear()

    def deadline(self, key: K) -> float | None:
        entry = self._live.get(key)
        return None if entry is None else entry[0]

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or ``None`` when there is none."""
        if not self._heap:
            return None  # asked after every datagram: most often empty
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[K]:
        """The keys whose deadline is at or before ``now``, earliest first
        (ties in the order they were scheduled); their deadlines are removed."""
        due: list[K] = []
        if not self._heap:
            return due
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return due
            _, _, key = heapq.heappop(self._heap)
            del self._live[key]
            due.append(key)

    def _drop_stale(self) -> None:
        heap, live = self._heap, self._live
        while heap:
            when, token, key = heap[0]
            if live.get(key) == (when, token):
                return
            heapq.heappop(heap)

    def _rebuild(self) -> None:
        self._heap = [(when, token, key) for key, (when, token) in self._live.items()]
        heapq.heapify(self._heap)
