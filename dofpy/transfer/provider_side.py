"""The provider side of a :class:`~dofpy.transfer.core.TransferCore`.

Objects published or served from a :class:`BlockStore` through a
:class:`BlockCache`, one :class:`BlockSender` per (requestor, object), served
round robin, paced per transfer and under a provider-wide rate cap (on by
default). A plaintext requestor is served only once it proved that it
receives what is sent to its address (an address token,
:mod:`dofpy.transfer.tokens`: a Fetch without a valid one is answered with a
small Retry, nothing else), so a Fetch with a forged source amplifies nothing;
a secure session's address was validated by its handshake (the TEP cookie
round trip).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from dofpy._core import Address
from dofpy.session.node import Node
from dofpy.transfer.cache import BlockCache
from dofpy.transfer.events import ServedStatistics, TransferConfig
from dofpy.transfer.manifest import HASH_SIZE
from dofpy.transfer.messages import (
    OBJECT_OID_CLASS,
    FetchRequest,
    RefuseCode,
    RefusedMessage,
    RetryMessage,
    TransferMessage,
    encode_transfer,
)
from dofpy.transfer.pacing import ProviderRateCap, ServedCounters
from dofpy.transfer.sender import BlockSender, SendState
from dofpy.transfer.senders import SenderTable
from dofpy.transfer.source import ServedObject
from dofpy.transfer.tokens import AddressTokens
from dofpy.wire.dpp import AppId
from dofpy.wire.oap import Binding

__all__ = ["MAX_SERVED_PEERS", "ProviderSide"]

MAX_SERVED_PEERS = 4096  # per-peer serving counters kept (least recent dropped)
_AMPLIFICATION_LIMIT = 3  # bytes answered per byte received from an unvalidated address


class ProviderSide:
    """The objects a core serves, their senders, pacing and address validation.

    ``counts``: the core's counters (shared: its statistics report them);
    ``relayable`` and ``start_relay``: the core's relay, asked about an object
    not served here yet.
    """

    def __init__(
        self,
        config: TransferConfig,
        node: Node,
        cache: BlockCache,
        counts: dict[str, int],
        *,
        relayable: Callable[[bytes], bool],
        start_relay: Callable[[bytes, float], ServedObject],
    ) -> None:
        self.config = config
        self._node = node
        self.cache = cache
        self._counts = counts
        self._relayable = relayable
        self._start_relay = start_relay
        self._fast_paths = node.config.fast_paths
        self.sources: dict[bytes, ServedObject] = {}
        self.senders = SenderTable()
        self.active: deque[BlockSender] = deque()
        self.rate_cap = ProviderRateCap(config.provider_rate_cap, config.sender.burst_bytes)
        self.next_sweep: float | None = None
        self.tokens = AddressTokens(
            config.address_token_key, lifetime=config.address_token_lifetime
        )
        self._served = ServedCounters(MAX_SERVED_PEERS)

    def send(self, peer: Address, message: TransferMessage, now: float) -> None:
        self._node.send_command(
            peer, AppId.OAP, encode_transfer(message), now, expect_response=False
        )

    def on_denied(self, peer: Address, binding: Binding, now: float) -> None:
        """A command of ``peer`` was refused for want of permission: say so in
        the transfer's terms, so that its fetch fails now rather than after
        its timeouts."""
        oid = binding.object_id
        if oid.class_id != OBJECT_OID_CLASS or oid.attributes or len(oid.data) != HASH_SIZE:
            self._counts["bad_messages"] += 1
            return
        self._counts["refusals_sent"] += 1
        self.send(
            peer,
            RefusedMessage(
                oid.data, 0, RefuseCode.PERMISSION_DENIED, self.config.sender.max_block_size
            ),
            now,
        )

    def _refuse(self, peer: Address, request: FetchRequest, code: RefuseCode, now: float) -> None:
        self._counts["refusals_sent"] += 1
        self.send(
            peer,
            RefusedMessage(request.object_id, 0, code, self.config.sender.max_block_size),
            now,
        )

    def on_fetch(self, peer: Address, request: FetchRequest, now: float) -> None:
        self._counts["fetches_received"] += 1
        object_id = request.object_id
        source = self.sources.get(object_id)
        if source is None and not self._relayable(object_id):
            if not request.is_done:
                self._refuse(peer, request, RefuseCode.UNKNOWN_OBJECT, now)
            return
        if not self._validated(peer, request, now):
            return
        if source is None:
            source = self._start_relay(object_id, now)
        key = (peer, object_id)
        leaf_size = source.manifest.leaf_size
        if not request.is_done and (
            request.block_size % leaf_size or request.block_size > self.config.sender.max_block_size
        ):
            self._refuse(peer, request, RefuseCode.BLOCK_SIZE, now)
            return
        sender = self.senders.get(key)
        if sender is None or sender.state is SendState.CLOSED:
            if request.is_done:
                return
            if sender is None and (
                len(self.senders) >= self.config.max_senders
                or self.senders.of_peer(peer) >= self.config.max_senders_per_peer
            ):
                self._refuse(peer, request, RefuseCode.BUSY, now)
                return
            sender = BlockSender(peer, source, self.config.sender, now, fast_paths=self._fast_paths)
            self.senders.put(key, sender)
            if self.next_sweep is None:
                self.next_sweep = now + self.config.sender.idle_timeout / 4
        sender.on_fetch(request, now)
        if sender.state is SendState.CLOSED:
            self.senders.forget(key)
        else:
            self.activate(sender)

    def _validated(self, peer: Address, request: FetchRequest, now: float) -> bool:
        """Whether ``peer`` proved that it receives what is sent to its address.

        With a security configuration every Fetch that reaches the transfer
        came through a secure session (the permission check before it needs
        one), and a session is only made with an address that answered the
        handshake's cookie. A plaintext Fetch must carry an address token of
        ours; one without a valid token is answered with a Retry carrying one
        (smaller than the Fetch: nothing amplified) and no state is kept.
        """
        if self._node.config.security is not None:
            return True
        if request.token and self.tokens.check(peer, request.token, now):
            return True
        self._counts["unvalidated_fetches"] += 1
        if request.is_done:
            return False  # nothing to serve, nothing to answer
        retry = RetryMessage(request.object_id, 0, self.tokens.mint(peer, now))
        if len(encode_transfer(retry)) > _AMPLIFICATION_LIMIT * len(encode_transfer(request)):
            return False  # never more than 3x the bytes the unproved address sent
        self._counts["retries_sent"] += 1
        self.send(peer, retry, now)
        return False

    def activate(self, sender: BlockSender) -> None:
        if sender.state is SendState.SENDING and sender not in self.active:
            self.active.append(sender)

    def object_available(self, object_id: bytes, now: float) -> None:
        """More of ``object_id`` is verified here (a relay): wake its senders."""
        for sender in self.senders.of_object(object_id):
            sender.on_available(now)
            self.activate(sender)

    def sweep(self, now: float) -> None:
        idle = self.config.sender.idle_timeout
        self.senders.expire_idle(now, idle)
        self.active = deque(s for s in self.active if s.state is SendState.SENDING)
        self.next_sweep = now + idle / 4 if self.senders else None

    def paced_until(self) -> float | None:
        now = self.rate_cap.last_time
        earliest: float | None = None
        for sender in self.active:
            ready = sender.ready_at(now)
            if ready is not None and (earliest is None or ready < earliest):
                earliest = ready
        return self.rate_cap.not_before(earliest)

    def pump(self, now: float) -> None:
        active = self.active
        rate_cap = self.rate_cap
        capped = rate_cap.cap is not None  # uncapped, ready() is always True
        oap, sending = AppId.OAP, SendState.SENDING  # (read once: Enum members are slow to read)
        idle_turns = 0
        while active and idle_turns < len(active):
            if capped and not rate_cap.ready(now):
                return
            sender = active.popleft()
            hits_before = self.cache.hits
            found = sender.next_payload(now)
            if found is not None:
                idle_turns = 0
                payload, size = found
                self._served.count(sender.peer, size, self.cache.hits - hits_before)
                self._node.send_command(sender.peer, oap, payload, now, expect_response=False)
                self._counts["blocks_sent"] += 1
                self._counts["bytes_sent"] += size
                if capped:
                    rate_cap.spend(size)
                active.append(sender)
            elif sender.state is sending:
                idle_turns += 1
                active.append(sender)

    def served(self, peer: Address) -> ServedStatistics:
        """What this core has served ``peer`` (zeros for a peer it never served)."""
        return self._served.get(peer)
