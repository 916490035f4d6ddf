"""Hash chunks sized by the block size (docs/protocol.md, section 6)."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.testing.netsim import LinkConditions, Network
from dofpy.testing.transfer import PROVIDER, REQUESTOR, make_object, run_to_event
from dofpy.transfer.core import TransferCompleted, TransferConfig, TransferCore
from dofpy.transfer.manifest import HASH_CHUNK_BUDGET, HASH_SIZE, ObjectHashes
from dofpy.transfer.messages import HashChunkMessage, RefuseCode, RefusedMessage
from dofpy.transfer.receiver import Receiver, ReceiverConfig
from dofpy.transfer.sender import SenderConfig
from dofpy.transfer.store import MemoryStore


def test_chunks_of_every_power_of_two_verify_against_the_same_root() -> None:
    hashes = ObjectHashes.build(os.urandom(100 * 64 + 5), 64)
    manifest = hashes.manifest
    for chunk_leaves in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        for chunk in range(manifest.chunk_count_for(chunk_leaves)):
            data, proof = hashes.chunk(chunk, chunk_leaves)
            start, end = manifest.chunk_range(chunk, chunk_leaves)
            assert data == hashes.leaf_hashes[start * HASH_SIZE : end * HASH_SIZE]
            assert manifest.verify_chunk(chunk, data, proof, chunk_leaves)
            other = 32 if chunk_leaves != 32 else 16
            assert not manifest.verify_chunk(chunk, data, proof, other)
    assert not manifest.verify_chunk(0, hashes.leaf_hashes[:96], [], 3)  # not a power of two


@settings(max_examples=60)
@given(
    st.integers(1, 1 << 24),
    st.sampled_from([64, 512, 1024, 2048, 4096, 8192, 16384, 65536]),
)
def test_a_hash_chunk_fits_its_block_size(leaf_count: int, block_size: int) -> None:
    hashes = ObjectHashes.build(b"x", 64)  # any manifest: only its leaf count matters
    manifest = type(hashes.manifest)(
        hashes.manifest.object_id, leaf_count * 64, 64, hashes.manifest.merkle_root
    )
    leaves = manifest.chunk_leaves_for(block_size)
    assert leaves >= 1 and leaves & (leaves - 1) == 0
    depth = (manifest.chunk_count_for(leaves) - 1).bit_length()
    budget = max(HASH_CHUNK_BUDGET, block_size)
    assert (leaves + depth) * HASH_SIZE <= budget
    if leaves * 2 <= leaf_count:  # and it is the largest power of two that fits
        deeper = (manifest.chunk_count_for(leaves * 2) - 1).bit_length()
        assert (leaves * 2 + deeper) * HASH_SIZE > budget
    assert manifest.chunk_leaves_for(HASH_CHUNK_BUDGET) == manifest.chunk_leaves


def test_8k_blocks_need_an_eighth_of_the_hash_chunks() -> None:
    data = make_object(1 << 20)
    provider = TransferCore()
    manifest = provider.publish(data)
    requestor = TransferCore()
    net = Network(seed=3, default=LinkConditions(delay=0.001))
    net.add(provider, PROVIDER)
    net.add(requestor, REQUESTOR)
    tid = requestor.fetch(manifest, [PROVIDER], net.now, config=ReceiverConfig(block_size=8192))
    assert isinstance(run_to_event(net, requestor), TransferCompleted)
    chunk_leaves = manifest.chunk_leaves_for(8192)
    assert chunk_leaves == 8 * manifest.chunk_leaves == 128
    received = requestor.transfer_statistics(tid, net.now).blocks_received
    assert received == manifest.leaf_count // 8 + manifest.chunk_count_for(chunk_leaves)
    store = requestor.store
    assert isinstance(store, MemoryStore) and store.data(manifest.object_id) == data


def test_fallback_block_size_resizes_the_chunks_still_needed() -> None:
    """Hashes verified at one chunk size are not fetched again at another."""
    hashes = ObjectHashes.build(make_object(1 << 20), 1024)  # 1024 leaves
    manifest = hashes.manifest
    receiver = Receiver(manifest, [PROVIDER], MemoryStore(), 0.0, ReceiverConfig(block_size=8192))
    ((_peer, first),) = receiver.take_fetches()
    assert first.block_size == 8192 and first.hash_chunks == ((0, 8),)  # 128 hashes each
    data, proof = hashes.chunk(0, 128)
    receiver.receive(
        PROVIDER,
        HashChunkMessage(manifest.object_id, 1, 0, data, tuple(proof), first.fetch_seq, 0),
        0.01,
    )
    receiver.take_fetches()
    refusal = RefusedMessage(manifest.object_id, 2, RefuseCode.BLOCK_SIZE, 2048)
    receiver.receive(PROVIDER, refusal, 0.02)
    fetches = receiver.take_fetches()
    assert fetches and fetches[0][1].block_size == 2048
    # 32 hashes per chunk now: chunks 0-3 are the 128 hashes verified already.
    # (as many as the window allows).
    chunks = fetches[0][1].hash_chunks
    assert chunks[0][0] == 4 and chunks[-1][1] <= 32
    assert receiver.statistics(0.02).verification_failures == 0


def test_fallback_transfer_completes_with_resized_chunks() -> None:
    data = make_object(1 << 20)
    provider = TransferCore(TransferConfig(sender=SenderConfig(max_block_size=2048)))
    manifest = provider.publish(data)
    requestor = TransferCore()
    net = Network(seed=4, default=LinkConditions(delay=0.005, loss=0.02))
    net.add(provider, PROVIDER)
    net.add(requestor, REQUESTOR)
    requestor.fetch(manifest, [PROVIDER], net.now, config=ReceiverConfig(block_size=8192))
    assert isinstance(run_to_event(net, requestor), TransferCompleted)
    store = requestor.store
    assert isinstance(store, MemoryStore) and store.data(manifest.object_id) == data
    assert requestor.statistics().verification_failures == 0
