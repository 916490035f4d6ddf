"""Group commit: :class:`WriteBatcher` gathers many small writes into few
transactions, so a service that writes a line per request (an audit log)
pays one commit per batch instead of one per line."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

from dofpy_services.store._base import Transaction
from dofpy_services.store._database import Database
from dofpy_services.store._errors import StoreError, StoreUnavailable

__all__ = ["BatcherStatistics", "WriteBatcher", "open_write_batcher"]

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class BatcherStatistics:
    """What a :class:`WriteBatcher` has done so far."""

    # Transactions that committed a batch (or a lone item after a failed batch).
    commits: int
    # Items committed.
    items: int
    # Items that failed (their submitters got the error).
    failed: int
    # Batches that failed for a reason other than the connection and were
    # therefore retried one item per transaction to find the bad items.
    split_batches: int


class _Pending(Generic[Item]):
    __slots__ = ("done", "error", "item")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = trio.Event()
        self.error: BaseException | None = None


class WriteBatcher(Generic[Item]):
    """Writes submitted items with ``write(tx, items)``: up to ``max_items`` per
    transaction, gathered for at most ``max_delay`` seconds after the first,
    the next batch gathering while one commits. Made by
    :func:`open_write_batcher`.

    If a batch fails because the connection was lost (StoreUnavailable), every
    item of it gets that error: the batch may have committed, so it is not
    retried. If it fails otherwise (it was rolled back), each item is written
    again alone, so that one bad item fails only its own submitter."""

    def __init__(
        self,
        database: Database,
        write: Callable[[Transaction, Sequence[Item]], None],
        send: trio.MemorySendChannel[_Pending[Item]],
        *,
        max_items: int,
        max_delay: float,
        kind: str,
    ) -> None:
        self._database = database
        self._write = write
        self._send = send
        self._max_items = max_items
        self._max_delay = max_delay
        self._kind = kind
        self._commits = self._items = self._failed = self._split = 0

    async def submit(self, item: Item) -> None:
        """Write ``item``; returns once the transaction holding it committed, or
        raises its error. Waits while ``max_pending`` items are queued. A
        submitter cancelled while it waits does not withdraw the item: it may
        still commit."""
        pending = _Pending(item)
        try:
            await self._send.send(pending)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StoreError("the write batcher is closed") from None
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error

    def statistics(self) -> BatcherStatistics:
        """Counters so far."""
        return BatcherStatistics(self._commits, self._items, self._failed, self._split)

    async def _run(self, receive: trio.MemoryReceiveChannel[_Pending[Item]]) -> None:
        try:
            while True:
                try:
                    batch = [await receive.receive()]
                except trio.EndOfChannel:
                    return
                await self._gather(receive, batch)
                await self._commit(batch)
        finally:
            # Stopped (cancelled, or a bug): nobody will write what is queued.
            with receive:
                while True:
                    try:
                        left = receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    self._fail(left, StoreError("the write batcher stopped before writing this"))

    async def _gather(
        self, receive: trio.MemoryReceiveChannel[_Pending[Item]], batch: list[_Pending[Item]]
    ) -> None:
        while len(batch) < self._max_items:  # what is queued already
            try:
                batch.append(receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        with trio.move_on_after(self._max_delay):
            while len(batch) < self._max_items:
                try:
                    batch.append(await receive.receive())
                except trio.EndOfChannel:
                    return

    async def _commit(self, batch: list[_Pending[Item]]) -> None:
        try:
            await self._database.write(
                lambda tx: self._write(tx, [p.item for p in batch]), kind=self._kind
            )
        except StoreUnavailable as exc:
            for pending in batch:
                self._fail(pending, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            self._split += 1
            for pending in batch:
                await self._commit([pending])
            return
        self._commits += 1
        self._items += len(batch)
        for pending in batch:
            pending.done.set()

    def _fail(self, pending: _Pending[Item], error: BaseException) -> None:
        self._failed += 1
        pending.error = error
        pending.done.set()


@asynccontextmanager
async def open_write_batcher(
    database: Database,
    write: Callable[[Transaction, Sequence[Item]], None],
    *,
    max_items: int = 64,
    max_delay: float = 0.005,
    max_pending: int = 1024,
    kind: str = "batch",
) -> AsyncIterator[WriteBatcher[Item]]:
    """``async with open_write_batcher(db, write) as batcher:`` -- a
    :class:`WriteBatcher` whose writer task runs for the block; leaving it
    writes what was submitted, then stops."""
    if max_items < 1 or max_pending < 1 or max_delay < 0:
        raise ValueError("max_items and max_pending must be positive, max_delay not negative")
    send, receive = trio.open_memory_channel[_Pending[Item]](max_pending)
    batcher = WriteBatcher(
        database, write, send, max_items=max_items, max_delay=max_delay, kind=kind
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher._run, receive)
        try:
            yield batcher
        finally:
            await send.aclose()
