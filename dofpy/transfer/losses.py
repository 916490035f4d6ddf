"""The blocks a requestor asked for and has not received, and which of them
count as lost (RACK-style, :mod:`dofpy.transfer.receiver`).

Every requested block (a root or hash chunk, or a piece of leaves) gets an
*ordinal* in request order; the provider serves in that order. When a block
arrives, every block still outstanding with a lower ordinal must arrive
within a reordering window (``min_rtt / 4``, doubled after each spurious loss,
up to 16 times; half an RTT more for a block of an earlier Fetch, since
Fetches may overtake each other) or is declared lost. No timer per block: one
send-ordered queue and the *marks* of the arrivals that set deadlines.

Keys: a leaf piece by its first leaf (``>= 0``); chunks by negative keys the
receiver chooses.
"""

from __future__ import annotations

from collections import deque

from dofpy.transfer.fetch_state import Outstanding
from dofpy.transfer.rtt import RttEstimator

__all__ = ["OutstandingBlocks"]


class OutstandingBlocks:
    """The blocks asked for and not yet arrived, in request order."""

    __slots__ = (
        "_largest_arrived",
        "_marks",
        "_order",
        "next_ordinal",
        "records",
        "reorder_factor",
    )

    def __init__(self) -> None:
        self.records: dict[int, Outstanding] = {}
        self._order: deque[tuple[int, int]] = deque()
        self._marks: deque[tuple[int, float, int]] = deque()
        self.next_ordinal = 0
        self._largest_arrived = -1
        self.reorder_factor = 1

    def __len__(self) -> int:
        return len(self.records)

    def __bool__(self) -> bool:
        return bool(self.records)

    def add(self, key: int, fetch_seq: int, end: int) -> None:
        """Block ``key`` (ending at ``end``) asked for by Fetch ``fetch_seq``, next in order."""
        ordinal = self.next_ordinal
        self.records[key] = Outstanding(ordinal, fetch_seq, end)
        self._order.append((ordinal, key))
        self.next_ordinal = ordinal + 1

    def take(self, key: int, fetch_seq: int) -> Outstanding | None:
        """Block ``key`` arrived, answering Fetch ``fetch_seq``: its record, no
        longer outstanding (None when it was not). An arrival that was not
        outstanding, or answers an older Fetch, means it was declared lost too
        early (reordering): the reordering window widens."""
        record = self.records.get(key)
        if record is None or record.fetch_seq != fetch_seq:
            self.reorder_factor = min(self.reorder_factor * 2, 16)
        if record is not None:
            del self.records[key]
        return record

    def mark(self, record: Outstanding, now: float, rtt: RttEstimator) -> None:
        """``record``'s block arrived at ``now``: blocks asked for before it
        have a reordering window from now to arrive."""
        if record.ordinal > self._largest_arrived:
            self._largest_arrived = record.ordinal
            # The reordering window (written out here: this runs for every block).
            base = rtt.min_rtt if rtt.min_rtt is not None else rtt.config.initial_rto
            window = max(rtt.config.granularity, base / 4) * self.reorder_factor
            self._marks.append((record.ordinal, now + window, record.fetch_seq))

    @staticmethod
    def _deadline(mark: tuple[int, float, int], record: Outstanding, rtt: RttEstimator) -> float:
        """When ``record`` counts as lost given that a later-requested block arrived.

        Within one Fetch the provider sends in order, so only network reordering
        delays an earlier block: the reordering window. Fetches themselves may
        overtake each other on the way, so a block of an earlier Fetch gets half
        an RTT more."""
        if mark[2] == record.fetch_seq:
            return mark[1]
        srtt = rtt.srtt if rtt.srtt is not None else rtt.config.initial_rto
        return mark[1] + srtt / 2

    def _oldest(self) -> tuple[int, int, Outstanding] | None:
        """The oldest outstanding block: ordinal, key, record (dropping the
        queue entries of blocks that arrived or were asked for again)."""
        order, records = self._order, self.records
        while order:
            ordinal, key = order[0]
            record = records.get(key)
            if record is not None and record.ordinal == ordinal:
                return ordinal, key, record
            order.popleft()
        return None

    def detect_lost(self, now: float, rtt: RttEstimator) -> list[tuple[int, Outstanding]]:
        """Take out and return every outstanding block requested before one that
        arrived more than a reordering window ago, in request order."""
        lost: list[tuple[int, Outstanding]] = []
        marks, order, records = self._marks, self._order, self.records
        # _oldest and _deadline written out: this runs for every block.
        while order:
            ordinal, key = order[0]
            record = records.get(key)
            if record is None or record.ordinal != ordinal:
                order.popleft()  # arrived, or asked for again under a new ordinal
                continue
            while marks and marks[0][0] <= ordinal:
                marks.popleft()
            if not marks:
                break
            mark = marks[0]
            deadline = mark[1]
            if mark[2] != record.fetch_seq:
                deadline += (rtt.srtt if rtt.srtt is not None else rtt.config.initial_rto) / 2
            if deadline > now:
                break
            order.popleft()
            del records[key]
            lost.append((key, record))
        return lost

    def loss_deadline(self, rtt: RttEstimator) -> float | None:
        """When the oldest outstanding block will count as lost (if nothing comes)."""
        oldest = self._oldest()
        if oldest is None:
            return None
        ordinal, _, record = oldest
        for mark in self._marks:
            if mark[0] > ordinal:
                return self._deadline(mark, record, rtt)
        return None

    def pop_all(self) -> list[tuple[int, Outstanding]]:
        """Take out every outstanding block (all to be asked for again)."""
        taken = list(self.records.items())
        self.clear()
        return taken

    def clear(self) -> None:
        self.records.clear()
        self._order.clear()
        self._marks.clear()
