"""Compact hashes (the adaptive transfer's hash phase): root chunks proved
against the signed Merkle root, then bare chunks without proofs, each checked
against its proved subtree root before any leaf is trusted. Driven at the
receiver (sans-IO), message by message, and at the provider's sender."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import adaptive
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.testing.transfer import run_to_event
from dofpy.transfer.cache import BlockCache
from dofpy.transfer.core import TransferCompleted, TransferCore
from dofpy.transfer.manifest import BARE_CHUNK_LEAVES, HASH_CHUNK_BUDGET, HASH_SIZE, ObjectHashes
from dofpy.transfer.messages import (
    FetchRequest,
    HashChunkMessage,
    RootChunkMessage,
    decode_transfer_untrusted,
    encode_transfer,
)
from dofpy.transfer.rangeset import RangeSet
from dofpy.transfer.receiver import Receiver
from dofpy.transfer.relay import RelayCore
from dofpy.transfer.sender import BlockSender, SenderConfig
from dofpy.transfer.source import ServedObject
from dofpy.transfer.store import MemoryStore
from dofpy.wire.oap import decode_oap_untrusted
from dofpy_services.device.local_leaves import SlotLeaves

PROVIDER = ("127.0.0.1", 4000)
LEAF = 64


class HeldLeaves:
    """Leaves of ``data`` found by leaf hash (the running image)."""

    def __init__(self, hashes: ObjectHashes, data: bytes) -> None:
        self._by_hash = {
            hashes.leaf(i): data[i * LEAF : (i + 1) * LEAF]
            for i in range(hashes.manifest.leaf_count)
        }

    def leaf(self, digest: bytes, length: int) -> bytes | None:
        return self._by_hash.get(digest)


def _setup(leaves: int, seed: int = 1) -> tuple[ObjectHashes, bytes, Receiver]:
    data = random.Random(seed).randbytes(leaves * LEAF - 5)
    hashes = ObjectHashes.build(data, LEAF)
    receiver = Receiver(
        hashes.manifest, [PROVIDER], MemoryStore(), 0.0, local=HeldLeaves(hashes, data)
    )
    return hashes, data, receiver


def _root(hashes: ObjectHashes, chunk: int, seq: int = 1) -> RootChunkMessage:
    roots, proof = hashes.root_chunk(chunk)
    return RootChunkMessage(hashes.manifest.object_id, 0, chunk, roots, tuple(proof), seq, 0)


def _bare(hashes: ObjectHashes, chunk: int, seq: int = 1) -> HashChunkMessage:
    return HashChunkMessage(
        hashes.manifest.object_id, 0, chunk, hashes.bare_chunk(chunk), (), seq, 0
    )


def test_a_local_transfer_asks_for_root_chunks_first_then_bare_chunks_once_proved() -> None:
    hashes, data, receiver = _setup(20_000)
    manifest = hashes.manifest
    assert manifest.root_chunk_count > 1
    [(_, first)] = receiver.take_fetches()
    assert first.compact and first.hash_chunks == () and first.leaves == ()
    assert first.root_chunks and first.root_chunks[0][0] == 0
    delivered = RangeSet()
    for start, end in first.root_chunks:
        for chunk in range(start, end):
            receiver.receive(PROVIDER, _root(hashes, chunk, first.fetch_seq), 0.01)
            delivered.add(*manifest.root_chunk_range(chunk))
    asked = [request for _, request in receiver.take_fetches()]
    bare = RangeSet([r for request in asked for r in request.hash_chunks])
    assert bare and all(request.compact for request in asked)
    assert all(delivered.covers(start, end) for start, end in bare)  # only proved roots
    receiver.receive(PROVIDER, _bare(hashes, 3, first.fetch_seq), 0.02)
    leaves = range(3 * BARE_CHUNK_LEAVES, 4 * BARE_CHUNK_LEAVES)
    assert receiver.local_leaves == len(leaves)  # copied from the held image, verified
    assert receiver.verified.covers(leaves[0], leaves[-1] + 1)
    assert (
        receiver.store.read(manifest.object_id, leaves[0] * LEAF, LEAF)
        == (data[leaves[0] * LEAF : (leaves[0] + 1) * LEAF])
    )


def test_a_bare_chunk_before_its_root_is_proved_is_dropped_not_trusted() -> None:
    hashes, _, receiver = _setup(2_000)
    receiver.take_fetches()
    receiver.receive(PROVIDER, _bare(hashes, 0), 0.01)
    stats = receiver.statistics(0.01)
    assert stats.unrequested == 1 and stats.verification_failures == 0
    assert receiver.local_leaves == 0 and not receiver.verified


def test_forged_roots_and_bare_chunks_fail_verification_and_write_nothing() -> None:
    hashes, _, receiver = _setup(20_000)
    manifest = hashes.manifest
    receiver.take_fetches()
    roots, proof = hashes.root_chunk(1)
    forged = bytes(HASH_SIZE) + roots[HASH_SIZE:]
    receiver.receive(
        PROVIDER, RootChunkMessage(manifest.object_id, 0, 1, forged, tuple(proof), 1, 0), 0.01
    )
    assert receiver.statistics(0.01).verification_failures == 1
    receiver.receive(PROVIDER, _root(hashes, 0), 0.02)
    tampered = bytearray(hashes.bare_chunk(2))
    tampered[5] ^= 1
    receiver.receive(
        PROVIDER, HashChunkMessage(manifest.object_id, 0, 2, bytes(tampered), (), 1, 0), 0.03
    )
    # A bare chunk must come without a proof (one encoding of one answer).
    with_proof = HashChunkMessage(
        manifest.object_id, 0, 2, hashes.bare_chunk(2), (bytes(HASH_SIZE),), 1, 0
    )
    receiver.receive(PROVIDER, with_proof, 0.04)
    assert receiver.statistics(0.04).verification_failures == 3
    assert not receiver.verified and receiver.local_leaves == 0
    # The genuine chunk is still taken afterwards.
    receiver.receive(PROVIDER, _bare(hashes, 2), 0.05)
    assert receiver.verified.covers(2 * BARE_CHUNK_LEAVES, 3 * BARE_CHUNK_LEAVES)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3000), st.data())
def test_every_hash_proved_in_compact_form_completes_the_transfer(
    leaves: int, data: st.DataObject
) -> None:
    hashes, image, receiver = _setup(leaves, seed=leaves)
    manifest = hashes.manifest
    receiver.take_fetches()
    order = data.draw(st.permutations(range(manifest.root_chunk_count)))
    now = 0.0
    for chunk in order:
        now += 0.001
        receiver.receive(PROVIDER, _root(hashes, chunk), now)
    for chunk in data.draw(st.permutations(range(manifest.bare_chunk_count))):
        now += 0.001
        receiver.receive(PROVIDER, _bare(hashes, chunk), now)
    assert receiver.hashes_known() and receiver.leaf_hashes() == hashes.leaf_hashes
    assert receiver.done and receiver.error is None  # every leaf was held locally
    assert receiver.store.read(manifest.object_id, 0, manifest.size) == image


def test_the_sender_serves_root_chunks_then_bare_chunks_without_proofs() -> None:
    data = random.Random(9).randbytes(20_000 * LEAF)
    hashes = ObjectHashes.build(data, LEAF)
    manifest = hashes.manifest
    store = MemoryStore()
    store.open(manifest)
    store.write_verified(manifest.object_id, 0, data)
    source = ServedObject(
        manifest, BlockCache(store, 1 << 20), RangeSet([(0, manifest.leaf_count)]), hashes
    )
    sender = BlockSender(PROVIDER, source, SenderConfig(), 0.0)
    request = FetchRequest(manifest.object_id, 7, 1024, 0, 64, ((4, 6),), (), b"", ((1, 3),))
    # Through the wire and back: the compact Fetch is what the provider reads.
    request = decode_transfer_untrusted(decode_oap_untrusted(encode_transfer(request), False))  # type: ignore[assignment]
    assert isinstance(request, FetchRequest) and request.root_chunks == ((1, 3),)
    sender.on_fetch(request, 0.0)
    sent = [sender.next_message(0.0) for _ in range(4)]
    assert [type(m).__name__ for m in sent] == ["RootChunkMessage"] * 2 + ["HashChunkMessage"] * 2
    for message in sent[:2]:
        assert isinstance(message, RootChunkMessage)
        assert manifest.verify_root_chunk(message.chunk, message.roots, message.proof)
    for message in sent[2:]:
        assert isinstance(message, HashChunkMessage) and message.proof == ()
        assert message.hashes == hashes.bare_chunk(message.chunk)
        assert len(message.hashes) <= HASH_CHUNK_BUDGET  # fits the default datagram
    assert sender.next_message(0.0) is None


def test_an_adaptive_fetch_through_a_relay_gets_compact_hashes_once_the_relay_has_them() -> None:
    """The relay's root chunks and bare chunks wait until its own (plain)
    upstream transfer proved the hashes, then go out; the requestor copies
    every unchanged leaf and fetches only the changed ones."""
    old, new, changed = adaptive.images(300 * 1024, 0.05, seed=8)
    origin = TransferCore()
    manifest = origin.publish(new)
    relay_address, requestor_address = ("10.0.1.1", 3567), ("10.0.2.1", 3567)
    relay = RelayCore()
    relay.add_object(manifest, [PROVIDER])
    requestor = TransferCore()
    net = Network(seed=3, default=LinkConditions(delay=0.005, loss=0.02))
    net.add(origin, PROVIDER)
    net.add(relay, relay_address)
    net.add(requestor, requestor_address)
    local = SlotLeaves(lambda o, n: old[o : o + n], len(old), 1024)
    transfer = requestor.fetch(manifest, [relay_address], net.now, local=local)
    receiver = requestor.receiver(transfer)
    net.wakeup(requestor_address)
    event = run_to_event(net, requestor)
    assert isinstance(event, TransferCompleted)
    assert requestor.store.read(manifest.object_id, 0, manifest.size) == new
    assert receiver.local_leaves == manifest.leaf_count - changed
