"""``TransferCore``: the block transfer plugged into an :class:`~dofpy.oap.core.OapCore`.

It is a :class:`~dofpy._core.DatagramCore` (delegating to the OAP core), and
takes every OAP command on ``TRANSFER_IID`` through ``OapCore.intercept``.
Provider side (:mod:`dofpy.transfer.provider_side`): objects published or
served from a :class:`BlockStore` through a :class:`BlockCache`, one
:class:`BlockSender` per (requestor, object), paced, under a provider-wide
rate cap, plaintext requestors served only once their address is validated.
Requestor side: one :class:`Receiver` per object being fetched. Relay: an
object registered with :meth:`TransferCore.relay` is fetched from upstream
(once, on the first downstream demand) into this core's store while its
verified leaves are served downstream as they arrive. When that upstream
transfer fails, it is started again after a capped exponential back-off with
jitter (from the core's ``rng``), beginning with the next upstream provider,
for as long as requestors wait downstream.

Messages are sent with ``node.send_command(peer, AppId.OAP, payload, now,
expect_response=False)``: OAP Signal and (here) Invoke get no response; the
transfer recovers losses itself.
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from dataclasses import dataclass, replace

from dofpy._core import Address
from dofpy.errors import BadPacket, ClosedResourceError, LocalProtocolError
from dofpy.oap.core import OapCore
from dofpy.transfer.cache import BlockCache
from dofpy.transfer.deadlines import DeadlineHeap
from dofpy.transfer.events import (
    ServedStatistics,
    TransferCompleted,
    TransferConfig,
    TransferEvent,
    TransferFailed,
    TransferStatistics,
)
from dofpy.transfer.manifest import Manifest, ObjectHashes
from dofpy.transfer.messages import (
    TRANSFER_IID,
    BlockHeadCache,
    FetchRequest,
    RetryMessage,
    TransferMessage,
    decode_transfer_command_untrusted,
    decode_transfer_untrusted,
    read_block_untrusted,
)
from dofpy.transfer.provider_side import MAX_SERVED_PEERS, ProviderSide
from dofpy.transfer.receiver import LocalLeaves, Receiver, ReceiverConfig, ReceiverStatistics
from dofpy.transfer.sender import SendState
from dofpy.transfer.source import ServedObject
from dofpy.transfer.store import BlockStore, MemoryStore
from dofpy.transfer.tokens import AddressTokens
from dofpy.wire.oap import Binding, CommandHead, OapPdu
from dofpy.wire.oid import OID

__all__ = [
    "ServedStatistics",
    "TransferCompleted",
    "TransferConfig",
    "TransferCore",
    "TransferEvent",
    "TransferFailed",
    "TransferStatistics",
]


_RECEIVER_TOTALS = (
    "retransmissions",
    "timeouts",
    "verification_failures",
    "duplicates",
    "blocks_received",
    "unsolicited",
    "slow_providers",
)


@dataclass(slots=True)
class _Relayed:
    """An object this core relays: its upstream providers and, after its
    upstream transfer failed, how many times in a row and when to retry."""

    manifest: Manifest
    upstream: list[Address]
    failures: int = 0
    retry_at: float | None = None


class TransferCore:
    """Block transfer provider, requestor and relay over one OAP core."""

    def __init__(
        self,
        config: TransferConfig | None = None,
        *,
        store: BlockStore | None = None,
        oap: OapCore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or TransferConfig()
        # Relay back-off jitter; seed it (or pass one) for a reproducible run.
        self._rng = rng if rng is not None else random.Random()
        self.oap = oap or OapCore(self.config.oap)
        self._secure = self.oap.node.config.security is not None
        self._fast_paths = self.oap.node.config.fast_paths
        self.oap.intercept(
            TRANSFER_IID, self._on_command, raw=self._on_raw_command, on_denied=self._on_denied
        )
        self.store: BlockStore = store if store is not None else MemoryStore()
        self.cache = BlockCache(self.store, self.config.cache_bytes)
        self._relayable: dict[bytes, _Relayed] = {}
        self._retrying: dict[bytes, _Relayed] = {}  # those with a retry due
        self._relay_transfers: dict[bytes, int] = {}
        # Running transfers only: a finished one moves to ``_finished`` (the
        # last ``finished_kept``) and its counters into ``_finished_totals``,
        # so a core serving transfers for months does not grow.
        self._receivers: dict[int, Receiver] = {}
        self._finished: OrderedDict[int, Receiver] = OrderedDict()
        self._finished_totals = dict.fromkeys(_RECEIVER_TOTALS, 0)
        self._by_object: dict[bytes, int] = {}
        # Receiver deadlines (by transfer id) and relay retries (by object id).
        self._deadlines: DeadlineHeap[int | bytes] = DeadlineHeap()
        # Transfers called into since their deadline and Fetches were last taken.
        self._touched: set[int] = set()
        # Running transfers whose deadline may have moved since it was last put
        # in the heap: read again when the deadlines are next asked for
        # (get_timer, handle_timer), once per batch of datagrams the driver
        # hands in instead of once per block. A receiver's deadline depends on
        # its state only, and only calls into this core change that state.
        self._moved: set[int] = set()
        self._next_transfer = 1
        self._events: deque[TransferEvent] = deque()
        self._counts = dict.fromkeys(
            (
                "fetches_received",
                "refusals_sent",
                "bad_messages",
                "unmatched_messages",
                "blocks_sent",
                "bytes_sent",
                "retries_sent",
                "unvalidated_fetches",
                "retries_received",
                "relay_retries",
            ),
            0,
        )
        # Requestor side: the address token each provider last sent us.
        self._held_tokens: dict[Address, bytes] = {}
        self._heads = BlockHeadCache()
        self._provider = ProviderSide(
            self.config,
            self.oap.node,
            self.cache,
            self._counts,
            relayable=self._relayable.__contains__,
            start_relay=self._start_relay,
        )
        # The provider side's tables (the same objects, never replaced).
        self._sources = self._provider.sources
        self._senders = self._provider.senders

    @property
    def _tokens(self) -> AddressTokens:
        """The provider side's address tokens (tests replace them with keyed ones)."""
        return self._provider.tokens

    @_tokens.setter
    def _tokens(self, tokens: AddressTokens) -> None:
        self._provider.tokens = tokens

    # -- DatagramCore ----------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.oap.receive_datagram(data, addr, now)
        self._after(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        if self._provider.active:
            self._provider.pump(now)
        return self.oap.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        # Called after every batch of datagrams: no lists, one comparison per part.
        if self._moved:
            self._refresh_deadlines()
        provider = self._provider
        deadline = self.oap.get_timer()
        for timer in (
            provider.next_sweep,
            self._deadlines.earliest(),
            provider.paced_until() if provider.active else None,
        ):
            if timer is not None and (deadline is None or timer < deadline):
                deadline = timer
        return deadline

    def handle_timer(self, now: float) -> None:
        if self._moved:
            # Before the OAP core runs (it may call into receivers): the heap then
            # holds what each receiver's deadline was after its last call.
            self._refresh_deadlines()
        self.oap.handle_timer(now)
        due = self._deadlines.pop_due(now)
        for key in due:
            if isinstance(key, int):
                receiver = self._receivers.get(key)
                if receiver is not None:
                    receiver.handle_timer(now)
                    self._touched.add(key)
        if self._provider.next_sweep is not None and now >= self._provider.next_sweep:
            self._provider.sweep(now)
        for key in due:
            if isinstance(key, bytes):
                relayed = self._retrying.pop(key)
                self._retry_relay(key, relayed, now)
        self._after(now)

    # -- application API ----------------------------------------------------------------------

    def next_event(self) -> TransferEvent | None:
        return self._events.popleft() if self._events else None

    def publish(self, data: bytes, leaf_size: int = 1024) -> Manifest:
        """Hash ``data``, store it and serve it; returns its manifest."""
        hashes = ObjectHashes.build(data, leaf_size)
        manifest = hashes.manifest
        self.store.open(manifest)
        self.store.write_verified(manifest.object_id, 0, bytes(data))
        self.serve(hashes)
        return manifest

    def serve(self, hashes: ObjectHashes) -> None:
        """Serve an object whose leaves are (being) verified in the store."""
        manifest = hashes.manifest
        verified = self.store.open(manifest)
        self._sources[manifest.object_id] = ServedObject(manifest, self.cache, verified, hashes)

    def relay(self, manifest: Manifest, upstream: list[Address]) -> None:
        """Offer ``manifest``'s object downstream, fetched from ``upstream`` on first demand."""
        if not upstream:
            raise LocalProtocolError("a relay needs at least one upstream provider")
        self._relayable[manifest.object_id] = _Relayed(manifest, list(upstream))

    def fetch(
        self,
        manifest: Manifest,
        providers: list[Address],
        now: float,
        *,
        store: BlockStore | None = None,
        config: ReceiverConfig | None = None,
        local: LocalLeaves | None = None,
    ) -> int:
        """Start fetching ``manifest``'s object; returns the transfer id.

        Leaves already verified in the store are not fetched again (resume);
        leaves ``local`` holds (by leaf hash, verified) are copied from it
        instead of fetched (adaptive transfer).
        """
        if manifest.object_id in self._by_object:
            raise LocalProtocolError("this object is already being fetched here")
        return self._start_fetch(manifest, providers, now, store, config, local)[0]

    def _start_fetch(
        self,
        manifest: Manifest,
        providers: list[Address],
        now: float,
        store: BlockStore | None = None,
        config: ReceiverConfig | None = None,
        local: LocalLeaves | None = None,
    ) -> tuple[int, Receiver]:
        receiver = Receiver(
            manifest,
            providers,
            store if store is not None else self.store,
            now,
            config or self.config.receiver,
            secure=self._secure,
            local=local,
        )
        transfer_id = self._next_transfer
        self._next_transfer += 1
        self._receivers[transfer_id] = receiver
        self._by_object[manifest.object_id] = transfer_id
        self._touched.add(transfer_id)
        self._after(now)
        return transfer_id, receiver

    def cancel(self, transfer_id: int, now: float) -> bool:
        """Stop a transfer still running: it ends with :class:`TransferFailed`
        (``ClosedResourceError``) and its provider is told to forget it. False
        when it had already ended."""
        receiver = self._receivers.get(transfer_id)
        if receiver is None:
            if 0 < transfer_id < self._next_transfer:
                return False  # finished (and maybe forgotten)
            raise KeyError(transfer_id)
        receiver.cancel(now, ClosedResourceError("the transfer was cancelled"))
        self._touched.add(transfer_id)
        self._after(now)
        return True

    def receiver(self, transfer_id: int) -> Receiver:
        """The requestor state of a running transfer or of one of the last
        ``finished_kept`` finished ones (``KeyError`` for any other)."""
        found = self._receivers.get(transfer_id)
        return found if found is not None else self._finished[transfer_id]

    def transfer_statistics(self, transfer_id: int, now: float) -> ReceiverStatistics:
        """RTT, window, rate, retransmissions... of a running transfer or of
        one of the last ``finished_kept`` finished ones (a finished
        transfer's event carries its final statistics in any case)."""
        return self.receiver(transfer_id).statistics(now)

    def served(self, peer: Address) -> ServedStatistics:
        """What this core has served ``peer`` (zeros for a peer it never served)."""
        return self._provider.served(peer)

    def relay_transfer(self, object_id: bytes) -> int | None:
        """The id of the upstream transfer a relay started for ``object_id``."""
        return self._relay_transfers.get(object_id)

    def statistics(self) -> TransferStatistics:
        totals = dict(self._finished_totals)
        for receiver in self._receivers.values():
            stats = receiver.statistics(0.0)
            for name in totals:
                totals[name] += getattr(stats, name)
        return TransferStatistics(
            **totals,
            units_dropped=self._senders.dropped_closed
            + sum(s.dropped_units for s in self._senders.values()),
            active_senders=sum(s.state is SendState.SENDING for s in self._senders.values()),
            open_senders=len(self._senders),
            active_transfers=len(self._receivers),
            cache=self.cache.statistics(),
            **self._counts,
        )

    # -- internals ------------------------------------------------------------------------------

    def _send(self, peer: Address, message: FetchRequest, now: float) -> None:
        if self._held_tokens:
            token = self._held_tokens.get(peer)
            if token is not None:
                message = replace(message, token=token)
        self._provider.send(peer, message, now)

    def _on_command(
        self, peer: Address, identity: OID | None, op: int | None, pdu: OapPdu, now: float
    ) -> None:
        try:
            message = decode_transfer_untrusted(pdu)
        except BadPacket:
            self._counts["bad_messages"] += 1
            return
        self._on_message(peer, identity, message, now)

    def _on_raw_command(
        self,
        peer: Address,
        identity: OID | None,
        op: int | None,
        head: CommandHead,
        payload: bytes,
        now: float,
    ) -> None:
        object_id = self._heads.object_id(head)
        if object_id is not None:
            fields = read_block_untrusted(payload, head.end)
            if fields is not None:
                # A canonical Block: straight to its receiver, no message object.
                transfer_id = self._by_object.get(object_id)
                if transfer_id is None:
                    self._counts["unmatched_messages"] += 1
                    return
                receiver = self._receivers[transfer_id]
                _sequence, leaf, data, fetch_seq, hold_us = fields  # (faster than field reads)
                receiver.receive_block(peer, identity, leaf, data, fetch_seq, hold_us, now)
                self._touched.add(transfer_id)
                if self._relay_transfers:
                    self._relay_progress(object_id, transfer_id, receiver, now)
                return
        try:
            message = decode_transfer_command_untrusted(head, payload)
        except BadPacket:
            self._counts["bad_messages"] += 1
            return
        self._on_message(peer, identity, message, now)

    def _on_denied(self, peer: Address, op: int | None, binding: Binding, now: float) -> None:
        self._provider.on_denied(peer, binding, now)

    def _on_message(
        self, peer: Address, identity: OID | None, message: TransferMessage, now: float
    ) -> None:
        if isinstance(message, FetchRequest):
            self._provider.on_fetch(peer, message, now)
            return
        if isinstance(message, RetryMessage):
            self._on_retry(peer, identity, message, now)
            return
        transfer_id = self._by_object.get(message.object_id)
        if transfer_id is None:
            self._counts["unmatched_messages"] += 1
            return
        receiver = self._receivers[transfer_id]
        receiver.receive(peer, message, now, identity)
        self._touched.add(transfer_id)
        self._relay_progress(message.object_id, transfer_id, receiver, now)

    def _relay_progress(
        self, object_id: bytes, transfer_id: int, receiver: Receiver, now: float
    ) -> None:
        """If ``transfer_id`` fetches an object this core relays, serve what it
        verified to the requestors waiting downstream."""
        source = self._sources.get(object_id)
        if source is not None and self._relay_transfers.get(object_id) == transfer_id:
            if source.hashes is None and receiver.hashes_known():
                source.hashes = ObjectHashes(receiver.manifest, receiver.leaf_hashes())
            self._provider.object_available(object_id, now)

    def _on_retry(
        self, peer: Address, identity: OID | None, message: RetryMessage, now: float
    ) -> None:
        """A provider we fetch from wants its address token in our Fetches:
        keep it (for every Fetch to that provider) and ask again now for what
        that provider did not serve. A Retry repeating the token we hold
        answers a Fetch sent before we had it: already asked again."""
        self._counts["retries_received"] += 1
        transfer_id = self._by_object.get(message.object_id)
        receiver = None if transfer_id is None else self._receivers[transfer_id]
        if receiver is None or peer not in receiver.providers:
            self._counts["unmatched_messages"] += 1
            return
        if receiver.secure and identity is None:
            # A secure provider validates addresses with its handshake cookie
            # and never sends a Retry: one in the clear is forged.
            self._counts["unmatched_messages"] += 1
            return
        if self._held_tokens.get(peer) == message.token:
            return
        self._held_tokens.pop(peer, None)
        if len(self._held_tokens) >= MAX_SERVED_PEERS:
            del self._held_tokens[next(iter(self._held_tokens))]
        self._held_tokens[peer] = message.token
        receiver.on_retry(peer, now)
        assert transfer_id is not None
        self._touched.add(transfer_id)

    def _start_relay(self, object_id: bytes, now: float) -> ServedObject:
        relayed = self._relayable[object_id]
        transfer_id, receiver = self._start_fetch(relayed.manifest, relayed.upstream, now)
        self._relay_transfers[object_id] = transfer_id
        source = ServedObject(relayed.manifest, self.cache, receiver.verified, None)
        self._sources[object_id] = source
        return source

    def _relay_failed(self, object_id: bytes, now: float) -> None:
        """The upstream transfer of a relayed object failed: retry it after a
        capped exponential back-off with jitter (equal jitter: the delay is
        drawn in the upper half, so that relays do not retry in step)."""
        relayed = self._relayable[object_id]
        relayed.failures += 1
        config = self.config
        delay = min(
            config.relay_retry_max,
            config.relay_retry_initial * 2.0 ** min(relayed.failures - 1, 62),
        )
        relayed.retry_at = now + delay * (0.5 + 0.5 * self._rng.random())
        self._retrying[object_id] = relayed
        self._deadlines.set(object_id, relayed.retry_at)

    def _retry_relay(self, object_id: bytes, relayed: _Relayed, now: float) -> None:
        """Start a failed upstream transfer again, from the next upstream
        provider on; or, when nobody waits downstream any more, forget it (the
        next downstream Fetch starts it afresh)."""
        relayed.retry_at = None
        if object_id in self._by_object:
            return  # already running again (fetched directly meanwhile)
        if not self._senders.of_object(object_id):
            self._sources.pop(object_id, None)
            self._relay_transfers.pop(object_id, None)
            relayed.failures = 0
            return
        self._counts["relay_retries"] += 1
        shift = relayed.failures % len(relayed.upstream)
        upstream = relayed.upstream[shift:] + relayed.upstream[:shift]
        if self._secure:
            # A Fetch is not held back for a session being set up: start the
            # handshakes now, so that the first one is not lost to a timeout.
            node = self.oap.node
            for peer in upstream:
                if node.peer_identity(peer) is None:
                    node.secure_session(peer, now)
        transfer_id, receiver = self._start_fetch(relayed.manifest, upstream, now)
        self._relay_transfers[object_id] = transfer_id
        self._sources[object_id].verified = receiver.verified

    def _after(self, now: float) -> None:
        """Send the Fetches of the transfers called into, refresh their
        deadlines, finish those that ended (in transfer id order, as they
        started), and serve what is queued."""
        touched = self._touched
        while touched:
            if len(touched) == 1:  # one transfer running: the usual case
                self._after_receiver(touched.pop(), now)
                continue
            # Finishing a relay's upstream transfer may start another one.
            for transfer_id in sorted(touched):
                touched.discard(transfer_id)
                self._after_receiver(transfer_id, now)
        if self._provider.active:
            self._provider.pump(now)

    def _after_receiver(self, transfer_id: int, now: float) -> None:
        receiver = self._receivers.get(transfer_id)
        if receiver is None:
            return
        if receiver.waiting_fetches:  # most blocks that arrive ask for nothing
            node, secure = self.oap.node, self._secure
            for peer, request in receiver.take_fetches():
                self._send(peer, request, now)
                if secure:
                    receiver.fetch_sent(peer, node.peer_identity(peer))
        if not receiver.done:
            self._moved.add(transfer_id)
            return
        self._forget_receiver(transfer_id, receiver)
        object_id = receiver.manifest.object_id
        if self._by_object.get(object_id) == transfer_id:
            del self._by_object[object_id]
        relayed = self._relay_transfers.get(object_id) == transfer_id
        statistics = receiver.statistics(now)
        if receiver.error is None:
            if relayed:
                self._relayable[object_id].failures = 0
            self._events.append(TransferCompleted(transfer_id, object_id, statistics))
        else:
            if relayed:
                self._relay_failed(object_id, now)
            self._events.append(TransferFailed(transfer_id, object_id, receiver.error, statistics))

    def _refresh_deadlines(self) -> None:
        """Put the current deadline of every transfer in ``_moved`` in the heap
        (in transfer id order, as :meth:`_after` would have)."""
        receivers, deadlines = self._receivers, self._deadlines
        for transfer_id in sorted(self._moved):
            receiver = receivers.get(transfer_id)
            if receiver is not None:
                deadlines.set(transfer_id, receiver.get_timer())
        self._moved.clear()

    def _forget_receiver(self, transfer_id: int, receiver: Receiver) -> None:
        """A finished transfer leaves the running table: its counters join the
        core's totals, and it is kept only among the last ``finished_kept``."""
        del self._receivers[transfer_id]
        self._moved.discard(transfer_id)
        self._deadlines.discard(transfer_id)
        stats = receiver.statistics(0.0)
        totals = self._finished_totals
        for name in _RECEIVER_TOTALS:
            totals[name] += getattr(stats, name)
        kept = self.config.finished_kept
        if kept:
            self._finished[transfer_id] = receiver
            while len(self._finished) > kept:
                self._finished.popitem(last=False)
