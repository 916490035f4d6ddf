"""The requestor side of one transfer: a sans-IO state machine.

It pulls an object from a list of providers: first the leaf hashes (proved
against the manifest's Merkle root: :mod:`dofpy.transfer.proved_hashes`),
then the leaves (each checked against its proved hash before it is written to
the store). It runs the window and loss recovery:

* Loss detection: every requested block gets an ordinal in request order and
  is declared lost when a later one arrived more than a reordering window ago
  (fast retransmit of gaps, RACK-style: :mod:`dofpy.transfer.losses`). No
  timer per block: range sets of what is needed, one deadline per transfer.
  What a Fetch asks for: :mod:`dofpy.transfer.fetch_plan`.
* The retransmission timeout (``rtt.RttEstimator``: RFC 6298, back-off,
  cap) fires when nothing arrives for an RTO while blocks are outstanding:
  everything outstanding is asked for again. After ``max_timeouts`` timeouts
  in a row the next provider is tried; when every provider failed that way,
  the transfer fails with :class:`~dofpy.errors.BrokenResourceError`.
* A block that fails verification is dropped, counted and asked for again;
  after ``max_bad_blocks`` failures from one provider, the next provider is
  tried (when there is another).
* Only the provider asked is listened to (:mod:`dofpy.transfer.asked`);
  anything else is unsolicited, dropped unverified and counted per source
  (:meth:`Receiver.source`).
* A provider whose progress stays below ``min_rate`` bytes/s over
  ``rate_window`` seconds (a slow drip) is replaced by the next one; when
  none is left the transfer fails, saying so.
* Congestion control and pacing: :mod:`dofpy.transfer.congestion`.
* Adaptive transfer: with a :class:`LocalLeaves` source (the device's
  running image, say), every leaf whose hash has just been proved is first
  looked up there by that hash; bytes found are checked against the proved
  hash exactly as a fetched leaf is, written to the store and never asked
  for; a local copy that does not match is not written (the leaf is
  fetched). Such a transfer asks for *compact hashes*: subtree roots first,
  then bare chunks of 32 hashes without proofs, each checked against its
  proved root.

Memory: the window (at most ``max_window`` blocks outstanding), range sets,
and the object's leaf hashes (32 bytes per leaf).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque

from dofpy._core import Address
from dofpy.errors import (
    BrokenResourceError,
    DofError,
    IllegalTransition,
    LocalProtocolError,
    RemoteProtocolError,
)
from dofpy.transfer.asked import AskedProvider
from dofpy.transfer.congestion import CongestionController
from dofpy.transfer.fetch_plan import ROOT_KEYS, plan_fetch, should_wait
from dofpy.transfer.fetch_state import (
    FETCH_TRANSITIONS,
    FetchInput,
    FetchState,
    Outstanding,
    ReceiverConfig,
    ReceiverStatistics,
    SourceStatistics,
)
from dofpy.transfer.local_source import LocalLeaves, copy_local
from dofpy.transfer.losses import OutstandingBlocks
from dofpy.transfer.manifest import HASH_SIZE, Manifest, leaf_hash
from dofpy.transfer.messages import (
    MAX_SEQ,
    BlockMessage,
    FetchRequest,
    HashChunkMessage,
    RefuseCode,
    RefusedMessage,
    RootChunkMessage,
)
from dofpy.transfer.progress import ProgressFloor
from dofpy.transfer.proved_hashes import ChunkRefused, ProvedHashes
from dofpy.transfer.rangeset import RangeSet
from dofpy.transfer.rtt import RttEstimator
from dofpy.transfer.store import BlockStore
from dofpy.wire.oid import OID

__all__ = [
    "FetchState",
    "LocalLeaves",
    "Receiver",
    "ReceiverConfig",
    "ReceiverStatistics",
    "SourceStatistics",
]


# Enum members the per-block path compares with, as module constants: on
# Python 3.11 reading a member off its Enum class goes through the metaclass's
# attribute hook, several times slower than reading a global.
_BLOCKS = FetchState.BLOCKS
_FINISHED = (FetchState.COMPLETE, FetchState.FAILED)

_COUNTERS = (
    "blocks_received", "duplicates", "unrequested", "retransmissions", "timeouts",
    "verification_failures", "fetches_sent", "unsolicited", "slow_providers"
)  # fmt: skip
"""The receiver's counters (fields of :class:`ReceiverStatistics`)."""


class Receiver:
    """Fetches one object (``manifest``) from ``providers`` into ``store``.

    ``secure``: the node seals its traffic, so messages are taken only through
    a secure session with the provider asked (see :meth:`fetch_sent`).
    ``local``: leaves held locally, copied instead of fetched (adaptive
    transfer; :attr:`local_leaves` and :attr:`local_bytes` count them).
    """

    def __init__(
        self,
        manifest: Manifest,
        providers: list[Address],
        store: BlockStore,
        now: float,
        config: ReceiverConfig | None = None,
        *,
        secure: bool = False,
        local: LocalLeaves | None = None,
    ) -> None:
        if not providers:
            raise LocalProtocolError("a transfer needs at least one provider")
        self.local = local
        self.local_leaves = 0
        """Leaves copied from :attr:`local` (each verified like a fetched one)."""
        self.local_bytes = 0
        self.manifest = manifest
        self._leaf_count = manifest.leaf_count  # (a frozen manifest; read for every block)
        self.config = config or ReceiverConfig()
        self.providers = list(providers)
        self.store = store
        self.state = FetchState.HASHES
        self.error: DofError | None = None
        self._provider_index = 0
        self._failed_providers = 0
        self.secure = secure
        # The provider asked and the identity its Fetch went to (secure node;
        # None until known): the only source whose messages are taken.
        self._asked = AskedProvider(self.providers[0], secure=secure)
        # Progress of the provider asked in the current rate window.
        self._progress = ProgressFloor(self.config.min_rate, self.config.rate_window, now)
        self._leaves_per_block = max(1, self.config.block_size // manifest.leaf_size)
        self.rtt = RttEstimator(self.config.rtt)
        self.cc = CongestionController(self.config.congestion)
        self.verified = store.open(manifest)
        # Compact hashes (subtree roots first, then bare chunks) when leaves
        # are copied locally: the hashes are then most of what is fetched.
        self._proved = ProvedHashes(manifest, self._block_size(), compact=local is not None)
        self._hashes = self._proved.hashes  # (the same objects, never replaced)
        self._hashes_verified = self._proved.verified
        self._need_leaves = RangeSet()
        self._window = OutstandingBlocks()
        self._outstanding = self._window.records  # (the same dict, never replaced)
        self._fetch_seq = 0
        self._fetch_times: OrderedDict[int, float] = OrderedDict()
        self.waiting_fetches: deque[tuple[Address, FetchRequest]] = deque()
        """The Fetch requests to send, oldest first (:meth:`take_fetches` empties it)."""
        self._started = now
        self._finished: float | None = None
        self._last_activity = now
        self._timeouts_in_row = 0
        self._bad_from_provider = 0
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._fetch(now, force=True)

    # -- public --------------------------------------------------------------------

    @property
    def provider(self) -> Address:
        """The provider asked now."""
        return self.providers[self._provider_index]

    @property
    def done(self) -> bool:
        return self.state in _FINISHED

    @property
    def block_bytes(self) -> int:
        return self._leaves_per_block * self.manifest.leaf_size

    def take_fetches(self) -> list[tuple[Address, FetchRequest]]:
        """The Fetch requests to send now, with their destination."""
        out = list(self.waiting_fetches)
        self.waiting_fetches.clear()
        return out

    def fetch_sent(self, peer: Address, identity: OID | None) -> None:
        """A Fetch of this transfer went to ``peer`` through a secure session
        of ``identity`` (None: no session yet). Messages are then taken only
        through a session of that identity; when the Fetch went out before
        any session, the first session of the provider's address it arrives
        through binds it."""
        self._asked.fetch_sent(peer, identity)

    def source(self, peer: Address) -> SourceStatistics:
        """What ``peer`` sent this transfer that was refused (zeros if nothing)."""
        return self._asked.statistics(peer)

    def get_timer(self) -> float | None:
        if self.done:
            return None
        progress = self._progress.due
        if not self._outstanding:
            return progress
        deadline = self._last_activity + self.rtt.rto()
        loss = self._window.loss_deadline(self.rtt)
        if loss is not None and loss < deadline:
            deadline = loss
        return progress if progress is not None and progress < deadline else deadline

    def hashes_known(self) -> bool:
        """Whether every leaf hash is verified."""
        return self._proved.known()

    def leaf_hashes(self) -> bytes:
        """The verified leaf hashes (complete once :meth:`hashes_known`)."""
        return bytes(self._hashes)

    def statistics(self, now: float) -> ReceiverStatistics:
        elapsed = (self._finished if self._finished is not None else now) - self._started
        verified_bytes = sum(self.manifest.span_length(s, e) for s, e in self.verified)
        return ReceiverStatistics(
            state=self.state,
            bytes_verified=verified_bytes,
            window=self.cc.window,
            srtt=self.rtt.srtt,
            min_rtt=self.rtt.min_rtt,
            rto=self.rtt.rto(),
            rate=verified_bytes / elapsed if elapsed > 0 else 0.0,
            provider=self.provider,
            **self._counts,
        )

    def handle_timer(self, now: float) -> None:
        if self.done:
            return
        if self._progress.due is not None and now >= self._progress.due:
            self._check_progress(now)
            if self.done:
                return
        if not self._outstanding:
            return
        self._detect_losses(now)
        if now < self._last_activity + self.rtt.rto() or not self._outstanding:
            self._fetch(now, force=False)
            return
        self._counts["timeouts"] += 1
        self._timeouts_in_row += 1
        self.rtt.on_timeout()
        self.cc.on_timeout()
        self._requeue_all()
        if self._timeouts_in_row >= self.config.max_timeouts:
            self._next_provider(
                now,
                BrokenResourceError(
                    f"provider {self.provider[0]}:{self.provider[1]} sent nothing for "
                    f"{self._timeouts_in_row} retransmission timeouts"
                ),
            )
        if not self.done:
            self._fetch(now, force=True)

    def receive(
        self,
        peer: Address,
        message: BlockMessage | HashChunkMessage | RootChunkMessage | RefusedMessage,
        now: float,
        identity: OID | None = None,
    ) -> None:
        """A message for this transfer arrived from ``peer`` (through a secure
        session of ``identity``; None in the clear)."""
        if self.done:
            if not isinstance(message, RefusedMessage):
                self._counts["duplicates"] += 1
            return
        if not self._from_asked(peer, identity):
            return
        if isinstance(message, RefusedMessage):
            self._refused(peer, message, now)
        elif isinstance(message, HashChunkMessage):
            self._hash_chunk(message, now)
        elif isinstance(message, RootChunkMessage):
            self._root_chunk(message, now)
        else:
            self._block(message.leaf, message.data, message.fetch_seq, message.hold_us, now)
        if not self.done:
            self._fetch(now, force=False)

    def receive_block(
        self,
        peer: Address,
        identity: OID | None,
        leaf: int,
        data: bytes,
        fetch_seq: int,
        hold_us: int,
        now: float,
    ) -> None:
        """A Block for this transfer arrived: :meth:`receive` of
        ``BlockMessage(object, any sequence, leaf, data, fetch_seq, hold_us)``
        without building the message (fields in the ranges it accepts)."""
        if self.done:
            self._counts["duplicates"] += 1
            return
        asked = self._asked
        if not asked.is_known_session(peer, identity) and not self._from_asked(peer, identity):
            return
        self._block(leaf, data, fetch_seq, hold_us, now)
        if not self.done:
            self._fetch(now, force=False)

    def on_retry(self, peer: Address, now: float) -> None:
        """``peer`` served none of our Fetches so far: it wants proof of our
        address first (a Retry; the core now puts its token in every Fetch).
        When it is the provider asked now, ask again at once for everything
        outstanding (not lost: never sent, so not counted as retransmitted)."""
        if self.done or peer != self.provider:
            return
        retransmissions = self._counts["retransmissions"]
        self._requeue_all()
        self._counts["retransmissions"] = retransmissions
        self._fetch(now, force=True)

    # -- sources -------------------------------------------------------------------

    def _from_asked(self, peer: Address, identity: OID | None) -> bool:
        if self._asked.admits(peer, identity):
            return True
        self._counts["unsolicited"] += 1
        return False

    def _check_progress(self, now: float) -> None:
        """End of a rate window: replace the provider asked if it was too slow."""
        remaining = self.manifest.size - sum(
            self.manifest.span_length(s, e) for s, e in self.verified
        )
        slow = self._progress.end_window(now, remaining)
        if slow is None:
            return
        self._counts["slow_providers"] += 1
        provider = self.provider
        self._next_provider(
            now,
            BrokenResourceError(
                f"provider {provider[0]}:{provider[1]} {slow}, and no other provider is left"
            ),
        )
        if not self.done:
            self._fetch(now, force=True)

    # -- arrivals ------------------------------------------------------------------

    def _arrived(self, key: int, fetch_seq: int, hold_us: int, now: float) -> bool:
        """Bookkeeping for a verified arrival; True if it was outstanding."""
        self._last_activity = now
        self._timeouts_in_row = 0
        window = self._window
        record = window.take(key, fetch_seq)
        if record is None:
            self._counts["unrequested"] += 1
            return False
        self.cc.on_delivered(1)
        if record.fetch_seq == fetch_seq:
            sent = self._fetch_times.get(fetch_seq)
            if sent is not None:
                self.rtt.sample(now - sent - hold_us / 1e6)
        window.mark(record, now, self.rtt)
        self._detect_losses(now)
        return True

    def _detect_losses(self, now: float) -> None:
        """Ask again for every block :class:`OutstandingBlocks` declares lost."""
        lost = self._window.detect_lost(now, self.rtt)
        for key, record in lost:
            self._requeue(key, record)
        if lost:
            self._counts["retransmissions"] += len(lost)
            self.cc.on_lost(len(lost), now, self.rtt.srtt, self.rtt.min_rtt)

    def _requeue(self, key: int, record: Outstanding) -> None:
        if key <= ROOT_KEYS:
            self._proved.need_roots.add(ROOT_KEYS - key - 1, ROOT_KEYS - key)
        elif key < 0:
            self._proved.need_chunks.add(-1 - key, -key)
        else:
            self._need_leaves.add(key, record.end)

    def _requeue_all(self) -> None:
        taken = self._window.pop_all()
        self._counts["retransmissions"] += len(taken)
        for key, record in taken:
            self._requeue(key, record)

    def _bad(self, key: int, now: float) -> None:
        self._counts["verification_failures"] += 1
        self._bad_from_provider += 1
        self._asked.counts(self._asked.peer).bad_blocks += 1
        record = self._outstanding.pop(key, None)
        if record is not None:
            self._requeue(key, record)
            self._counts["retransmissions"] += 1
        if self._bad_from_provider >= self.config.max_bad_blocks and len(self.providers) > 1:
            self._next_provider(
                now, RemoteProtocolError("providers kept sending blocks that fail verification")
            )

    def _hash_chunk(self, message: HashChunkMessage, now: float) -> None:
        key = -1 - message.chunk
        taken = self._proved.take_chunk(message)
        if isinstance(taken, ChunkRefused):
            self._chunk_refused(key, taken, now)
            return
        start, end = taken
        self._counts["blocks_received"] += 1
        self._progress.delivered += len(message.hashes)
        wanted = RangeSet([(start, end)])
        wanted.difference_update(self.verified)
        if self.local is not None and wanted:
            self._copy_local(wanted)
        self._need_leaves.update(wanted)
        self._arrived(key, message.fetch_seq, message.hold_us, now)
        if self.hashes_known():
            self._transition(FetchInput.HASHES_DONE, now)
            self._check_complete(now)

    def _root_chunk(self, message: RootChunkMessage, now: float) -> None:
        """Subtree roots of a compact-hashes transfer: proved, they make their
        bare chunks verifiable, so those are asked for next."""
        key = ROOT_KEYS - 1 - message.chunk
        taken = self._proved.take_root_chunk(message)
        if isinstance(taken, ChunkRefused):
            self._chunk_refused(key, taken, now)
            return
        self._counts["blocks_received"] += 1
        self._progress.delivered += len(message.roots)
        self._arrived(key, message.fetch_seq, message.hold_us, now)

    def _chunk_refused(self, key: int, why: ChunkRefused, now: float) -> None:
        if why is ChunkRefused.BAD:
            self._bad(key, now)
        else:
            self._counts["duplicates" if why is ChunkRefused.DUPLICATE else "unrequested"] += 1

    def _block(self, first: int, data: bytes, fetch_seq: int, hold_us: int, now: float) -> None:
        manifest = self.manifest
        size = manifest.leaf_size
        length = len(data)
        count = -(-length // size)
        end = first + count
        if end > self._leaf_count or length != min(end * size, manifest.size) - first * size:
            self._bad(first, now)  # more (or other) data than the manifest declares
            return
        if self.verified.covers(first, end):
            self._counts["duplicates"] += 1
            return
        if not self._hashes_verified.covers(first, end):
            self._counts["unrequested"] += 1  # cannot verify yet: drop
            return
        hashes = self._hashes
        if count == 1:
            good = leaf_hash(data) == hashes[first * HASH_SIZE : end * HASH_SIZE]
        else:
            view = memoryview(data)
            good = all(
                leaf_hash(view[i * size : (i + 1) * size])
                == hashes[(first + i) * HASH_SIZE : (first + i + 1) * HASH_SIZE]
                for i in range(count)
            )
        if not good:
            self._bad(first, now)
            return
        self._counts["blocks_received"] += 1
        self._progress.delivered += length
        self.store.write_verified(manifest.object_id, first, data)
        self.verified.add(first, end)
        if self._need_leaves:
            self._need_leaves.discard(first, end)
        self._arrived(first, fetch_seq, hold_us, now)
        if self.state is _BLOCKS:
            self._check_complete(now)

    def _copy_local(self, wanted: RangeSet) -> None:
        assert self.local is not None
        leaves, size = copy_local(
            self.local, self.manifest, self._hashes, self.store, self.verified, wanted
        )
        self.local_leaves += leaves
        self.local_bytes += size

    def _refused(self, peer: Address, message: RefusedMessage, now: float) -> None:
        if message.code is RefuseCode.BLOCK_SIZE:
            leaves = message.max_block_size // self.manifest.leaf_size
            if 1 <= leaves < self._leaves_per_block:
                self._leaves_per_block = leaves
                self._requeue_all()
                self._regrid()
                self._fetch(now, force=True)
                return
        self._requeue_all()
        self._next_provider(
            now, RemoteProtocolError(f"provider {peer[0]}:{peer[1]} refused: {message.code.name}")
        )
        if not self.done:
            self._fetch(now, force=True)

    # -- state -----------------------------------------------------------------------

    def _transition(self, event: FetchInput, now: float) -> None:
        new = FETCH_TRANSITIONS.get((self.state, event))
        if new is None:
            raise IllegalTransition(f"transfer: {event.value} in state {self.state.value}")
        self.state = new
        if new in _FINISHED:
            self._finished = now
            self._window.clear()

    def _check_complete(self, now: float) -> None:
        manifest = self.manifest
        if self.state is not _BLOCKS or not self.verified.covers(0, self._leaf_count):
            return
        digest = hashlib.sha256()
        for offset in range(0, manifest.size, 1 << 20):
            digest.update(
                self.store.read(manifest.object_id, offset, min(1 << 20, manifest.size - offset))
            )
        if digest.digest() != manifest.object_id:
            self.error = RemoteProtocolError("object SHA-256 differs from the manifest")
            self._transition(FetchInput.GIVE_UP, now)
            return
        self._transition(FetchInput.LEAVES_DONE, now)
        self._tell_done(now)

    def _tell_done(self, now: float) -> None:
        """Tell the provider it may forget us (best effort: it also times out)."""
        request = FetchRequest(
            self.manifest.object_id, self._next_seq(now), self._block_size(), 0, 0
        )
        self.waiting_fetches.append((self.provider, request))
        self._counts["fetches_sent"] += 1

    def cancel(self, now: float, error: DofError) -> None:
        """Give the transfer up now (the application no longer wants it): it
        fails with ``error`` and the provider is told it may forget us."""
        if self.done:
            return
        self.error = error
        self._transition(FetchInput.GIVE_UP, now)
        self._tell_done(now)

    def _next_provider(self, now: float, error: DofError) -> None:
        self._failed_providers += 1
        self._timeouts_in_row = 0
        self._bad_from_provider = 0
        if self._failed_providers >= len(self.providers):
            self.error = error
            self._transition(FetchInput.GIVE_UP, now)
            return
        self._provider_index = (self._provider_index + 1) % len(self.providers)
        self._asked.ask(self.providers[self._provider_index])
        self._progress.restart(now)
        self._requeue_all()
        self._leaves_per_block = max(1, self.config.block_size // self.manifest.leaf_size)
        self._regrid()
        self.rtt = RttEstimator(self.config.rtt)
        self.cc = CongestionController(self.config.congestion)

    # -- requesting --------------------------------------------------------------------

    def _block_size(self) -> int:
        return self._leaves_per_block * self.manifest.leaf_size

    def _regrid(self) -> None:
        """Hash chunks sized for the block size now in use (nothing outstanding)."""
        self._proved.regrid(self._block_size())

    def _next_seq(self, now: float) -> int:
        self._fetch_seq = 0 if self._fetch_seq >= MAX_SEQ else self._fetch_seq + 1
        self._fetch_times[self._fetch_seq] = now
        while len(self._fetch_times) > 4 * self.cc.config.max_window:
            self._fetch_times.popitem(last=False)
        return self._fetch_seq

    def _fetch(self, now: float, *, force: bool) -> None:
        window = self.cc.window
        free = window - len(self._outstanding)
        need_chunks, need_leaves = self._proved.need_chunks, self._need_leaves
        need_roots = self._proved.need_roots
        if free <= 0 or not (need_leaves or need_chunks or need_roots):
            return
        per_block = self._leaves_per_block
        if not force and should_wait(free, window, per_block, need_roots, need_chunks, need_leaves):
            return
        was_idle = not self._outstanding
        seq = self._next_seq(now)
        plan = plan_fetch(self._window, seq, free, per_block, need_roots, need_chunks, need_leaves)
        rate = self.cc.pacing_rate(self.block_bytes, self.rtt.srtt)
        request = FetchRequest(
            self.manifest.object_id,
            seq,
            self._block_size(),
            0 if rate is None else max(1, int(rate)),
            min(window, 0xFFFF),
            plan.chunks,
            plan.leaves,
            root_chunks=plan.roots if self._proved.compact else None,
        )
        self.waiting_fetches.append((self.provider, request))
        self._counts["fetches_sent"] += 1
        if was_idle:
            self._last_activity = now
