"""Unit tests: range sets, RTT, congestion, manifest, cache, stores, messages."""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.testing.tshark import check_datagrams, require_tshark
from dofpy.transfer.cache import BlockCache
from dofpy.transfer.congestion import CongestionConfig, CongestionController
from dofpy.transfer.manifest import (
    ObjectHashes,
    decode_manifest_untrusted,
    merkle_proof,
    merkle_root,
    root_from_proof,
)
from dofpy.transfer.messages import (
    BlockMessage,
    FetchRequest,
    HashChunkMessage,
    RefuseCode,
    RefusedMessage,
    RootChunkMessage,
    TransferMessage,
    decode_transfer_untrusted,
    encode_transfer,
)
from dofpy.transfer.rangeset import RangeSet
from dofpy.transfer.rtt import RttConfig, RttEstimator
from dofpy.transfer.store import FileStore, MemoryStore
from dofpy.wire.dpp import DppPacket, OpIdType, encode_frame
from dofpy.wire.oap import decode_oap_untrusted
from dofpy.wire.values import encode_values

OBJECT = bytes(range(32))

# -- range sets -----------------------------------------------------------------------


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 200), st.integers(0, 30)), max_size=40))
def test_rangeset_matches_a_python_set(ops: list[tuple[bool, int, int]]) -> None:
    model: set[int] = set()
    ranges = RangeSet()
    for add, start, length in ops:
        if add:
            ranges.add(start, start + length)
            model.update(range(start, start + length))
        else:
            ranges.discard(start, start + length)
            model.difference_update(range(start, start + length))
    assert {i for s, e in ranges for i in range(s, e)} == model
    assert ranges.count() == len(model)
    bounds = list(ranges)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(bounds))
    assert all((i in ranges) == (i in model) for i in range(0, 240))
    taken = ranges.copy().take(7)
    assert [i for s, e in taken for i in range(s, e)] == sorted(model)[:7]


@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(1, 30)), max_size=12),
    st.integers(1, 9),
    st.integers(-1, 12),
    st.integers(0, 400),
)
def test_rangeset_pop_pieces_and_count_up_to(
    adds: list[tuple[int, int]], align: int, pieces: int, limit: int
) -> None:
    """pop_pieces equals taking ``pieces`` aligned pieces one discard at a time
    (the per-piece loop it replaces); count_up_to is min(count, limit)."""
    ranges = RangeSet()
    for start, length in adds:
        ranges.add(start, start + length)
    assert ranges.count_up_to(limit) == min(ranges.count(), limit)
    reference = ranges.copy()
    expected: tuple[int, int] | None = None
    if reference and pieces >= 1:
        first, range_end = next(iter(reference))
        stop = first
        for _ in range(pieces):
            if stop >= range_end:
                break
            stop = min((stop // align + 1) * align, range_end)
        reference.discard(first, stop)
        expected = (first, stop)
    assert ranges.pop_pieces(align, pieces) == expected
    assert ranges == reference


def test_rangeset_covers_and_errors() -> None:
    ranges = RangeSet([(0, 5), (10, 20)])
    assert ranges.covers(10, 20) and not ranges.covers(4, 11) and ranges.covers(3, 3)
    assert ranges.first() == 0 and "x" not in ranges
    with pytest.raises(ValueError):
        ranges.add(5, 2)
    with pytest.raises(TypeError):
        hash(ranges)


# -- RTT and congestion -------------------------------------------------------------------


def test_rto_backs_off_and_caps() -> None:
    rtt = RttEstimator(RttConfig(initial_rto=1.0, min_rto=0.2, max_rto=4.0))
    assert rtt.rto() == 1.0
    rtt.sample(0.1)
    assert rtt.srtt == pytest.approx(0.1) and rtt.rto() == pytest.approx(0.3)
    for _ in range(10):
        rtt.on_timeout()
    assert rtt.rto() == 4.0
    rtt.sample(0.1)
    assert rtt.backoff == 0 and rtt.rto() < 1.0


def test_random_loss_keeps_window_congestion_reduces_it() -> None:
    cc = CongestionController(CongestionConfig(initial_window=64))
    for _ in range(50):
        cc.on_delivered(9)
        cc.on_lost(1, 1.0, srtt=0.02, min_rtt=0.02)  # 10 % loss, no queueing
    assert cc.window >= 64 and cc.reductions == 0 and cc.random_losses == 50
    before = cc.window
    cc.on_lost(1, 2.0, srtt=0.06, min_rtt=0.02)  # RTT tripled: a queue
    assert cc.window < before and cc.reductions == 1
    cc.on_lost(1, 2.01, srtt=0.06, min_rtt=0.02)  # same recovery period
    assert cc.reductions == 1
    capped = CongestionController(CongestionConfig(rate_cap=1000.0))
    assert capped.pacing_rate(1024, None) == 1000.0
    assert capped.pacing_rate(1024, 0.01) == 1000.0


# -- manifest and Merkle tree ---------------------------------------------------------------------


@settings(max_examples=40)
@given(st.integers(1, 300), st.data())
def test_merkle_proofs_verify_and_reject(count: int, data: st.DataObject) -> None:
    hashes = [i.to_bytes(32, "big") for i in range(count)]
    root = merkle_root(hashes)
    index = data.draw(st.integers(0, count - 1))
    proof = merkle_proof(hashes, index)
    assert root_from_proof(hashes[index], index, count, proof) == root
    assert root_from_proof(b"\xff" * 32, index, count, proof) != root
    assert root_from_proof(hashes[index], index, count, [*proof, root]) is None


def test_manifest_chunks_and_cbor() -> None:
    hashes = ObjectHashes.build(os.urandom(100 * 64 + 5), 64)
    manifest = hashes.manifest
    assert manifest.leaf_count == 101 and manifest.leaf_length(100) == 5
    for chunk in range(manifest.chunk_count):
        data, proof = hashes.chunk(chunk)
        assert manifest.verify_chunk(chunk, data, proof)
        assert not manifest.verify_chunk(chunk, data[:-32], proof)
        assert not manifest.verify_chunk(manifest.chunk_count, data, proof)
    encoded = encode_values([manifest.to_cbor_map()])
    assert decode_manifest_untrusted(encoded) == manifest
    for bad in ([{1: b"x"}], [1, 2], [{1: b"a" * 32, 2: 0, 3: 64, 4: b"b" * 32}]):
        with pytest.raises(BadPacket):
            decode_manifest_untrusted(encode_values(bad))
    with pytest.raises(ValueError):
        ObjectHashes(manifest, b"\x00" * 32 * manifest.leaf_count)


# -- cache and stores ----------------------------------------------------------------------------


def test_cache_is_lru_bounded_and_counts() -> None:
    store = MemoryStore()
    hashes = ObjectHashes.build(bytes(range(256)) * 4, 64)
    store.put(bytes(range(256)) * 4, hashes.manifest)
    cache = BlockCache(store, max_bytes=128)
    oid = hashes.manifest.object_id
    assert cache.read(oid, 0, 64) == bytes(range(64))
    cache.read(oid, 0, 64)
    cache.read(oid, 64, 64)
    cache.read(oid, 128, 64)  # evicts the least recently used (offset 0)
    stats = cache.statistics()
    assert (stats.hits, stats.misses, stats.evictions, stats.bytes) == (1, 3, 1, 128)


def test_file_store_writes_in_place_and_resumes(tmp_path: Path) -> None:
    data = os.urandom(10 * 64 + 3)
    manifest = ObjectHashes.build(data, 64).manifest
    store = FileStore(tmp_path)
    assert store.open(manifest) == RangeSet()
    store.write_verified(manifest.object_id, 3, data[3 * 64 : 5 * 64])
    store.write_verified(manifest.object_id, 10, data[640:])
    store.close()
    again = FileStore(tmp_path)
    assert again.open(manifest) == RangeSet([(3, 5), (10, 11)])
    assert again.read(manifest.object_id, 3 * 64, 128) == data[3 * 64 : 5 * 64]
    assert again.verified(manifest.object_id) == RangeSet([(3, 5), (10, 11)])
    again.close()


# -- messages ------------------------------------------------------------------------------------

_ranges = (
    st.lists(st.integers(0, 5000), max_size=20, unique=True)
    .map(lambda xs: tuple(zip(sorted(xs)[::2], sorted(xs)[1::2], strict=False)))
    .filter(
        lambda rs: all(b[0] > a[1] for a, b in itertools.pairwise(rs)) and all(s < e for s, e in rs)
    )
)
_u32 = st.integers(0, 0xFFFFFFFF)
_messages: st.SearchStrategy[TransferMessage] = st.one_of(
    st.builds(
        FetchRequest,
        st.just(OBJECT),
        _u32,
        st.integers(1, 65536),
        st.integers(0, 10**9),
        st.integers(0, 0xFFFF),
        _ranges,
        _ranges,
    ),
    st.builds(  # compact hashes: root ranges, with or without a token
        FetchRequest,
        st.just(OBJECT),
        _u32,
        st.integers(1, 65536),
        st.integers(0, 10**9),
        st.integers(0, 0xFFFF),
        _ranges,
        _ranges,
        st.binary(max_size=64),
        _ranges,
    ),
    st.builds(
        RootChunkMessage,
        st.just(OBJECT),
        st.integers(0, 0xFFFF),
        _u32,
        st.integers(1, 4).map(lambda n: bytes(32 * n)),
        st.lists(st.just(b"\x02" * 32), max_size=5).map(tuple),
        _u32,
        _u32,
    ),
    st.builds(
        BlockMessage,
        st.just(OBJECT),
        st.integers(0, 0xFFFF),
        _u32,
        st.binary(min_size=1, max_size=300),
        _u32,
        _u32,
    ),
    st.builds(
        HashChunkMessage,
        st.just(OBJECT),
        st.integers(0, 0xFFFF),
        _u32,
        st.integers(1, 4).map(lambda n: bytes(32 * n)),
        st.lists(st.just(b"\x01" * 32), max_size=5).map(tuple),
        _u32,
        _u32,
    ),
    st.builds(
        RefusedMessage,
        st.just(OBJECT),
        st.integers(0, 0xFFFF),
        st.sampled_from(RefuseCode),
        st.integers(0, 65536),
    ),
)


def _decode(payload: bytes) -> TransferMessage:
    return decode_transfer_untrusted(decode_oap_untrusted(payload, False))


@given(_messages)
def test_message_round_trip(message: TransferMessage) -> None:
    assert _decode(encode_transfer(message)) == message


@settings(max_examples=200)
@given(_messages, st.data())
def test_mutated_messages_raise_only_bad_packet(
    message: TransferMessage, data: st.DataObject
) -> None:
    payload = bytearray(encode_transfer(message))
    cut = data.draw(st.integers(0, len(payload)))
    pos = data.draw(st.integers(0, len(payload) - 1))
    payload_mutated = bytearray(payload)
    payload_mutated[pos] ^= data.draw(st.integers(1, 255))
    for candidate in (bytes(payload[:cut]), bytes(payload_mutated)):
        with contextlib.suppress(BadPacket):
            _decode(candidate)


def test_messages_refuse_bad_values() -> None:
    with pytest.raises(ValueError):
        FetchRequest(OBJECT, 1, 1024, 0, 4, ((5, 3),))
    with pytest.raises(ValueError):
        FetchRequest(OBJECT, 1, 1024, 0, 4, (), ((0, 3), (3, 5)))  # touching: not minimal
    with pytest.raises(ValueError):
        BlockMessage(b"short", 1, 0, b"x", 0, 0)
    with pytest.raises(ValueError):
        HashChunkMessage(OBJECT, 1, 0, b"x", (), 0, 0)


def test_tshark_decodes_every_transfer_message() -> None:
    require_tshark()

    samples: list[TransferMessage] = [
        FetchRequest(OBJECT, 1, 1024, 123456, 64, ((0, 4),), ((0, 100), (200, 300))),
        BlockMessage(OBJECT, 7, 99, os.urandom(1024), 1, 250),
        HashChunkMessage(OBJECT, 8, 3, os.urandom(512), (os.urandom(32),) * 10, 2, 0),
        RefusedMessage(OBJECT, 9, RefuseCode.BLOCK_SIZE, 1024),
        # Compact hashes: a Fetch with root ranges, a root chunk, a full bare chunk.
        FetchRequest(OBJECT, 2, 1024, 0, 64, ((0, 16),), (), b"", ((0, 32),)),
        RootChunkMessage(OBJECT, 10, 1, os.urandom(512), (os.urandom(32),) * 5, 2, 0),
        HashChunkMessage(OBJECT, 11, 4, os.urandom(1024), (), 2, 0),
    ]
    frames = [
        encode_frame(
            DppPacket(
                app_id=1,
                payload=encode_transfer(m),
                op_id_type=OpIdType.IMPLIED_SENDER,
                op_count=0x3FFF_FF00 + i,
            )
        )
        for i, m in enumerate(samples)
    ]
    assert max(len(f) for f in frames) <= 1232  # default blocks fit the IPv6 minimum MTU
    result = check_datagrams(frames)
    assert result.problems == []
    assert (
        result.info == ["OAP Invoke "] + ["OAP Signal "] * 3 + ["OAP Invoke "] + ["OAP Signal "] * 2
    )
    assert all(p.endswith("dof.oap") for p in result.protocols)
