"""The provider's senders: one :class:`~dofpy.transfer.sender.BlockSender` per
(requestor, object), indexed by object too (a relay wakes those of one object
without scanning the rest) and counted per requestor (its cap), and the
units dropped by the senders forgotten so far."""

from __future__ import annotations

from collections.abc import ItemsView, ValuesView

from dofpy._core import Address
from dofpy.transfer.sender import BlockSender

__all__ = ["SenderTable"]

SenderKey = tuple[Address, bytes]  # (requestor, object id)


class SenderTable:
    def __init__(self) -> None:
        self._senders: dict[SenderKey, BlockSender] = {}
        self._by_object: dict[bytes, dict[Address, BlockSender]] = {}
        self._per_peer: dict[Address, int] = {}
        self.dropped_closed = 0
        """Units queued by senders that were closed or expired (then forgotten)."""

    def __len__(self) -> int:
        return len(self._senders)

    def get(self, key: SenderKey) -> BlockSender | None:
        return self._senders.get(key)

    def items(self) -> ItemsView[SenderKey, BlockSender]:
        return self._senders.items()

    def values(self) -> ValuesView[BlockSender]:
        return self._senders.values()

    def of_object(self, object_id: bytes) -> list[BlockSender]:
        return list(self._by_object.get(object_id, {}).values())

    def of_peer(self, peer: Address) -> int:
        """How many senders serve ``peer``."""
        return self._per_peer.get(peer, 0)

    def put(self, key: SenderKey, sender: BlockSender) -> None:
        """Keep ``sender`` for ``key`` (replacing a closed one kept there)."""
        peer, object_id = key
        if key not in self._senders:
            self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        self._senders[key] = sender
        self._by_object.setdefault(object_id, {})[peer] = sender

    def forget(self, key: SenderKey) -> None:
        """Drop a closed or expired sender, counting the units it dropped."""
        sender = self._senders.pop(key)
        self.dropped_closed += sender.dropped_units
        peer, object_id = key
        of_object = self._by_object[object_id]
        del of_object[peer]
        if not of_object:
            del self._by_object[object_id]
        left = self._per_peer.pop(peer) - 1
        if left:
            self._per_peer[peer] = left

    def expire_idle(self, now: float, idle: float) -> None:
        """Expire and forget every sender not heard from for ``idle`` seconds."""
        for key, sender in list(self._senders.items()):
            if now - sender.last_heard >= idle:
                sender.expire()
                self.forget(key)
