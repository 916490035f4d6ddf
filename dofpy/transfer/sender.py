"""The provider side of one transfer (one requestor, one object): a sans-IO
state machine that queues what a Fetch asked for and paces it out.

Each Fetch appends a *batch* (its fetch seq, arrival time, wanted hash chunks
and leaves) to a bounded queue; a leaf asked for again is moved to the newest
batch (so the requestor's latest fetch seq is echoed). The queue holds at most
``max_queued_units`` units in at most ``max_queued_batches`` batches: a batch
left empty is dropped at once (never queued, never walked again), and at the
batch limit the two oldest are merged, so a requestor flooding a provider
with Fetches costs it a bounded amount of work and memory per Fetch. Batches are served
oldest first, each in ascending order, leaves cut into pieces of at most
``block_size`` bytes at block-size-aligned boundaries (the requestor cuts them
the same way). What is not yet available (a relay still fetching it from
upstream) waits, and is served as soon as :meth:`BlockSender.on_available` is
called. Pacing is a token bucket at the rate the requestor asked for, capped
by the provider's per-transfer cap; the provider-wide cap is the core's.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from dofpy._core import Address
from dofpy.errors import IllegalTransition
from dofpy.transfer.manifest import BARE_CHUNK_LEAVES, Manifest
from dofpy.transfer.messages import (
    MAX_SEQ,
    BlockEncoder,
    BlockMessage,
    FetchRequest,
    HashChunkMessage,
    RootChunkMessage,
    encode_transfer,
)
from dofpy.transfer.rangeset import RangeSet

__all__ = ["BlockSender", "BlockSource", "SendState", "SenderConfig", "message_size"]


_HashesMessage: TypeAlias = HashChunkMessage | RootChunkMessage
_Message: TypeAlias = BlockMessage | HashChunkMessage | RootChunkMessage


def message_size(message: _Message) -> int:
    """Payload bytes a message carries (what pacing and rate caps count)."""
    if isinstance(message, BlockMessage):
        return len(message.data)
    return len(message.hashes) if isinstance(message, HashChunkMessage) else len(message.roots)


class BlockSource(Protocol):
    """What a sender serves from: an object's hashes and verified leaves."""

    manifest: Manifest

    def has_hashes(self) -> bool:
        """Whether hash chunks (with proofs) can be served."""
        ...

    def chunk(self, chunk: int, chunk_leaves: int) -> tuple[bytes, list[bytes]]:
        """Hash chunk ``chunk`` of ``chunk_leaves`` hashes: concatenated hashes and proof."""
        ...

    def bare_chunk(self, chunk: int) -> bytes:
        """Bare chunk ``chunk``'s concatenated leaf hashes (compact hashes)."""
        ...

    def root_chunk(self, chunk: int) -> tuple[bytes, list[bytes]]:
        """Root chunk ``chunk``: concatenated subtree roots and proof (compact hashes)."""
        ...

    def has_leaves(self, start: int, end: int) -> bool:
        """Whether leaves ``[start, end)`` are verified here."""
        ...

    def read(self, start: int, end: int) -> bytes:
        """The bytes of leaves ``[start, end)``."""
        ...


class SendState(enum.Enum):
    """SENDING: something queued; IDLE: nothing queued (or only waiting for
    data); CLOSED: the requestor is done or went quiet."""

    SENDING = "sending"
    IDLE = "idle"
    CLOSED = "closed"


class _Input(enum.Enum):
    FETCH = "fetch"
    DRAINED = "drained"
    DONE = "done"
    EXPIRED = "expired"


_TRANSITIONS: dict[tuple[SendState, _Input], SendState] = {
    (SendState.IDLE, _Input.FETCH): SendState.SENDING,
    (SendState.SENDING, _Input.FETCH): SendState.SENDING,
    (SendState.SENDING, _Input.DRAINED): SendState.IDLE,
    (SendState.IDLE, _Input.DRAINED): SendState.IDLE,
    (SendState.IDLE, _Input.DONE): SendState.CLOSED,
    (SendState.SENDING, _Input.DONE): SendState.CLOSED,
    (SendState.IDLE, _Input.EXPIRED): SendState.CLOSED,
    (SendState.SENDING, _Input.EXPIRED): SendState.CLOSED,
}


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """Provider limits: largest block, queued leaves and Fetch batches per
    transfer, per-transfer rate cap (bytes/s, ``None`` = none), burst
    (bytes), idle expiry (s)."""

    max_block_size: int = 8192
    max_queued_units: int = 4096
    max_queued_batches: int = 64
    rate_cap: float | None = None
    burst_bytes: int = 64 * 1024
    idle_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_block_size < 1 or self.max_queued_units < 1 or self.burst_bytes < 1:
            raise ValueError("max_block_size, max_queued_units and burst_bytes must be >= 1")
        if self.max_queued_batches < 2:
            raise ValueError("max_queued_batches must be >= 2")
        if self.rate_cap is not None and self.rate_cap <= 0:
            raise ValueError("rate_cap must be > 0")
        if self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be > 0")


_CREDIT_SLACK = 1e-3

# Enum members the per-block path compares with, as module constants: on
# Python 3.11 reading a member off its Enum class goes through the metaclass's
# attribute hook, several times slower than reading a global.
_SENDING = SendState.SENDING


def _before(a: int, b: int) -> bool:
    """Serial-number order of 32-bit fetch seqs (RFC 1982)."""
    return a != b and ((b - a) & MAX_SEQ) < (1 << 31)


_Unit: TypeAlias = HashChunkMessage | RootChunkMessage | tuple[int, int, bytes, int, int]
"""A hash or root chunk, or a Block's ``(sequence, leaf, data, fetch seq, hold µs)``."""


@dataclass(slots=True)
class _Batch:
    fetch_seq: int
    arrived: float
    chunks: RangeSet
    leaves: RangeSet
    chunk_leaves: int  # hashes per chunk at the block size the Fetch asked for
    roots: RangeSet  # root chunks (compact hashes)
    compact: bool = False  # chunks are bare chunks (no proof)


class BlockSender:
    """Serves one requestor ``peer`` one object from ``source``."""

    def __init__(
        self,
        peer: Address,
        source: BlockSource,
        config: SenderConfig,
        now: float,
        *,
        fast_paths: bool = True,
    ) -> None:
        self.peer = peer
        self.source = source
        self.config = config
        self.state = SendState.IDLE
        self._batches: deque[_Batch] = deque()
        self._waiting = _Batch(
            0, now, RangeSet(), RangeSet(), source.manifest.chunk_leaves, RangeSet()
        )
        self._leaves_per_block = 1
        self._rate: float | None = config.rate_cap
        self._credit = float(config.burst_bytes)
        self._credit_time = now
        self._sequence = 0
        # Off (the node's fast_paths): Blocks built as messages and encoded by
        # the general encoder, the reference the BlockEncoder is compared with.
        self._encoder = BlockEncoder(source.manifest.object_id) if fast_paths else None
        self.last_heard = now
        self.sent_blocks = 0
        self.sent_bytes = 0
        self.dropped_units = 0
        self.batches_visited = 0
        """Queued batches walked by Fetches so far (the work a Fetch costs)."""
        self.batches_merged = 0

    # -- input -------------------------------------------------------------------------

    def on_fetch(self, request: FetchRequest, now: float) -> None:
        """Queue what ``request`` asks for (block size already checked by the core)."""
        self.last_heard = now
        if request.is_done:
            self._transition(_Input.DONE)
            self._batches.clear()
            return
        self._leaves_per_block = max(1, request.block_size // self.source.manifest.leaf_size)
        asked = float(request.rate) if request.rate else None
        cap = self.config.rate_cap
        self._rate = asked if cap is None else (cap if asked is None else min(asked, cap))
        manifest = self.source.manifest
        # Hash chunks are sized by the block size (docs/protocol.md, section 6);
        # a compact Fetch asks for bare chunks and root chunks, of fixed sizes.
        compact = request.compact
        if compact:
            chunk_leaves = BARE_CHUNK_LEAVES
            roots = RangeSet(request.root_chunks or ())
            roots.discard(manifest.root_chunk_count, 1 << 33)
        else:
            chunk_leaves = manifest.chunk_leaves_for(request.block_size)
            roots = RangeSet()
        chunks = RangeSet(request.hash_chunks)
        chunks.discard(manifest.chunk_count_for(chunk_leaves), 1 << 33)
        leaves = RangeSet(request.leaves)
        leaves.discard(manifest.leaf_count, 1 << 33)
        batches = self._batches
        for batch in (*batches, self._waiting):
            if batch.compact == compact:
                batch.chunks.difference_update(chunks)
            batch.roots.difference_update(roots)
            batch.leaves.difference_update(leaves)
        self.batches_visited += len(batches) + 1
        if any(not (batch.chunks or batch.leaves or batch.roots) for batch in batches):
            # What they asked for moved to this Fetch's batch.
            self._batches = batches = deque(b for b in batches if b.chunks or b.leaves or b.roots)
        budget = self.config.max_queued_units - self._queued_units()
        units = roots.count() + chunks.count() + leaves.count()
        if units > budget:
            self.dropped_units += units - max(budget, 0)
            roots = roots.take(max(budget, 0))
            chunks_kept = chunks.take(max(budget - roots.count(), 0))
            leaves = leaves.take(max(budget - roots.count() - chunks_kept.count(), 0))
            chunks = chunks_kept
        if chunks or leaves or roots:
            # Fetches may overtake each other on the way: serve in the requestor's
            # order (its loss detection assumes it), not in arrival order.
            if len(batches) >= self.config.max_queued_batches:
                self._merge_oldest()
            batch = _Batch(request.fetch_seq, now, chunks, leaves, chunk_leaves, roots, compact)
            position = len(batches)
            while position > 0 and _before(batch.fetch_seq, batches[position - 1].fetch_seq):
                position -= 1
            batches.insert(position, batch)
        self._transition(_Input.FETCH)

    def _merge_oldest(self) -> None:
        """Fold the oldest batch into the next one (served under its fetch seq):
        the requestor's RTT samples from them are lost, nothing it asked for."""
        oldest = self._batches.popleft()
        into = self._batches[0]
        into.leaves.update(oldest.leaves)
        into.roots.update(oldest.roots)
        if oldest.chunk_leaves == into.chunk_leaves and oldest.compact == into.compact:
            into.chunks.update(oldest.chunks)
        else:  # chunk numbers of another block size: the requestor asks again
            self.dropped_units += oldest.chunks.count()
        self.batches_merged += 1

    @property
    def queued_batches(self) -> int:
        """Fetch batches waiting to be served (at most ``max_queued_batches``)."""
        return len(self._batches)

    def _queued_units(self) -> int:
        return sum(
            b.roots.count() + b.chunks.count() + b.leaves.count()
            for b in (*self._batches, self._waiting)
        )

    def on_available(self, now: float) -> None:
        """More of the source became available: retry what was waiting."""
        waiting = self._waiting
        if waiting.chunks or waiting.leaves or waiting.roots:
            self._waiting = _Batch(
                waiting.fetch_seq,
                now,
                RangeSet(),
                RangeSet(),
                waiting.chunk_leaves,
                RangeSet(),
                waiting.compact,
            )
            self._batches.append(waiting)
            if self.state is SendState.IDLE:
                self._transition(_Input.FETCH)

    def expire(self) -> None:
        """The requestor went quiet: forget it."""
        self._batches.clear()
        self._transition(_Input.EXPIRED)

    # -- output ------------------------------------------------------------------------

    def ready_at(self, now: float) -> float | None:
        """When the next message may go (``None``: nothing to send)."""
        if self.state is not _SENDING:
            return None
        if self._credit >= -_CREDIT_SLACK or self._rate is None:
            return now
        return self._credit_time + (-self._credit) / self._rate

    def _refill(self, now: float) -> None:
        if self._rate is None:
            self._credit = float(self.config.burst_bytes)
        else:
            self._credit = min(
                float(self.config.burst_bytes),
                self._credit + (now - self._credit_time) * self._rate,
            )
        self._credit_time = now

    def next_message(self, now: float) -> _Message | None:
        """The next message to send now (paced), or ``None``."""
        unit = self._next(now)
        if unit is None or isinstance(unit, _HashesMessage):
            return unit
        return BlockMessage(self.source.manifest.object_id, *unit)

    def next_payload(self, now: float) -> tuple[bytes, int] | None:
        """The OAP payload of the next message to send now (paced) and the
        bytes of data it carries, or ``None``: :meth:`next_message`, encoded
        (a Block by this sender's :class:`BlockEncoder`, never built as a
        message; with ``fast_paths`` off, built and encoded in general)."""
        unit = self._next(now)
        if unit is None:
            return None
        if isinstance(unit, _HashesMessage):
            return encode_transfer(unit), message_size(unit)
        if self._encoder is None:
            message = BlockMessage(self.source.manifest.object_id, *unit)
            return encode_transfer(message), len(unit[2])
        return self._encoder.encode(*unit), len(unit[2])

    def _next(self, now: float) -> _Unit | None:
        if self.state is not _SENDING:
            return None
        self._refill(now)
        if self._credit < -_CREDIT_SLACK:  # the slack absorbs float rounding at ready_at()
            return None
        while self._batches:
            unit = self._from_batch(self._batches[0], now)
            if unit is not None:
                size = message_size(unit) if isinstance(unit, _HashesMessage) else len(unit[2])
                self._credit -= size
                self.sent_blocks += 1
                self.sent_bytes += size
                return unit
            self._batches.popleft()
        self._transition(_Input.DRAINED)
        return None

    def _seq(self) -> int:
        self._sequence = (self._sequence + 1) & 0xFFFF
        return self._sequence

    def _from_batch(self, batch: _Batch, now: float) -> _Unit | None:
        source = self.source
        hold = min(int((now - batch.arrived) * 1e6), MAX_SEQ)
        roots = batch.roots
        while roots:
            span = roots.pop_pieces(1, 1)
            assert span is not None
            chunk = span[0]
            if not source.has_hashes():
                self._wait(batch, chunk, chunk + 1, kind="roots")
                continue
            data, proof = source.root_chunk(chunk)
            return RootChunkMessage(
                source.manifest.object_id,
                self._seq(),
                chunk,
                data,
                tuple(proof),
                batch.fetch_seq,
                hold,
            )
        chunks = batch.chunks
        while chunks:
            span = chunks.pop_pieces(1, 1)
            assert span is not None
            chunk = span[0]
            if not source.has_hashes():
                self._wait(batch, chunk, chunk + 1, kind="chunks")
                continue
            if batch.compact:
                hashes, proof = source.bare_chunk(chunk), []
            else:
                hashes, proof = source.chunk(chunk, batch.chunk_leaves)
            return HashChunkMessage(
                source.manifest.object_id,
                self._seq(),
                chunk,
                hashes,
                tuple(proof),
                batch.fetch_seq,
                hold,
            )
        leaves = batch.leaves
        while leaves:
            span = leaves.pop_pieces(self._leaves_per_block, 1)
            assert span is not None
            first, stop = span
            if not source.has_leaves(first, stop):
                self._wait(batch, first, stop, kind="leaves")
                continue
            # Fields of a BlockMessage, in its ranges by construction (leaves
            # within the manifest, data from the source, fetch seq from a
            # checked Fetch, hold clamped).
            self._sequence = sequence = (self._sequence + 1) & 0xFFFF
            return sequence, first, source.read(first, stop), batch.fetch_seq, hold
        return None

    def _wait(self, batch: _Batch, start: int, end: int, *, kind: str) -> None:
        waiting = self._waiting
        waiting.fetch_seq = batch.fetch_seq
        if kind == "chunks" and (
            waiting.chunk_leaves != batch.chunk_leaves or waiting.compact != batch.compact
        ):
            # Chunks of another grid waiting: the requestor asks again for them.
            self.dropped_units += waiting.chunks.count()
            waiting.chunks = RangeSet()
        waiting.chunk_leaves = batch.chunk_leaves
        waiting.compact = batch.compact
        getattr(waiting, kind).add(start, end)

    def _transition(self, event: _Input) -> None:
        new = _TRANSITIONS.get((self.state, event))
        if new is None:
            raise IllegalTransition(f"sender: {event.value} in state {self.state.value}")
        self.state = new
