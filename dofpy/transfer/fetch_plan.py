"""What the requestor's next Fetch asks for (:mod:`dofpy.transfer.receiver`).

The requestor keeps range sets of what it still needs: root chunks (compact
hashes), hash chunks and leaves. A Fetch takes, in that order, as many blocks
as the congestion window has room for, each recorded as outstanding under its
key (:class:`~dofpy.transfer.losses.OutstandingBlocks`): leaves cut into
pieces of at most a block at block-aligned boundaries (the provider cuts them
the same way), at most ``MAX_FETCH_RANGES`` ranges of each kind.
"""

from __future__ import annotations

from typing import NamedTuple

from dofpy.transfer.losses import OutstandingBlocks
from dofpy.transfer.messages import MAX_FETCH_RANGES
from dofpy.transfer.rangeset import RangeSet

__all__ = ["ROOT_KEYS", "FetchPlan", "plan_fetch", "should_wait"]

ROOT_KEYS = -(1 << 40)
"""Outstanding keys: root chunk ``j`` is ``ROOT_KEYS - 1 - j``, hash chunk ``c``
is ``-1 - c`` (below 2**40 chunks), a leaf piece its first leaf."""


class FetchPlan(NamedTuple):
    """The ranges one Fetch asks for."""

    roots: tuple[tuple[int, int], ...]
    chunks: tuple[tuple[int, int], ...]
    leaves: tuple[tuple[int, int], ...]


def should_wait(
    free: int,
    window: int,
    per_block: int,
    need_roots: RangeSet,
    need_chunks: RangeSet,
    need_leaves: RangeSet,
) -> bool:
    """Whether to wait for a quarter of the window to be free before asking:
    unless everything left fits now (counted only as far as needed: this runs
    on every arrival)."""
    if free >= max(1, window // 4):
        return False
    # Leaves first: while many are left (most of a transfer) they alone decide.
    needed = -(-need_leaves.count_up_to((free + 1) * per_block) // per_block)
    if needed > free:
        return True
    needed += need_chunks.count_up_to(free + 1)
    if needed > free:
        return True
    return needed + need_roots.count_up_to(free + 1) > free


def _take_chunks(
    need: RangeSet, free: int, outstanding: OutstandingBlocks, seq: int, key_base: int
) -> tuple[list[tuple[int, int]], int]:
    spans: list[tuple[int, int]] = []
    while free > 0 and need and len(spans) < MAX_FETCH_RANGES:
        # The span that makes the last range allowed: one chunk only.
        span = need.pop_pieces(1, free if len(spans) < MAX_FETCH_RANGES - 1 else 1)
        assert span is not None
        start, stop = span
        spans.append(span)
        for chunk in range(start, stop):
            outstanding.add(key_base - 1 - chunk, seq, chunk + 1)
        free -= stop - start
    return spans, free


def plan_fetch(
    outstanding: OutstandingBlocks,
    seq: int,
    free: int,
    per_block: int,
    need_roots: RangeSet,
    need_chunks: RangeSet,
    need_leaves: RangeSet,
) -> FetchPlan:
    """Take up to ``free`` blocks from the need sets for Fetch ``seq`` and
    record them in ``outstanding``. Whole spans are taken from the need sets
    (one range operation each); every block in them still gets its ordinal
    and outstanding record."""
    roots, free = _take_chunks(need_roots, free, outstanding, seq, ROOT_KEYS)
    chunks, free = _take_chunks(need_chunks, free, outstanding, seq, 0)
    leaves: list[tuple[int, int]] = []
    while free > 0 and need_leaves:
        extends = bool(leaves) and leaves[-1][1] == need_leaves.first()
        if not extends and len(leaves) >= MAX_FETCH_RANGES:
            break
        span = need_leaves.pop_pieces(per_block, free)
        assert span is not None
        piece, span_end = span
        if extends:
            leaves[-1] = (leaves[-1][0], span_end)
        else:
            leaves.append(span)
        while piece < span_end:
            piece_end = min((piece // per_block + 1) * per_block, span_end)
            outstanding.add(piece, seq, piece_end)
            free -= 1
            piece = piece_end
    return FetchPlan(tuple(roots), tuple(chunks), tuple(leaves))
