"""The transfer's fast paths give exactly what the general code gives."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.transfer.manifest import (
    ObjectHashes,
    merkle_levels,
    merkle_proof,
    merkle_root,
    proof_from_levels,
)
from dofpy.transfer.messages import (
    MAX_SEQ,
    BlockEncoder,
    BlockFields,
    BlockHeadCache,
    BlockMessage,
    FetchRequest,
    block_object_id,
    decode_transfer_command_untrusted,
    decode_transfer_untrusted,
    encode_transfer,
    read_block_untrusted,
)
from dofpy.transfer.sender import BlockSender, SenderConfig, message_size
from dofpy.wire.oap import decode_oap_untrusted, probe_command_head_untrusted


@settings(max_examples=200)
@given(
    object_id=st.binary(min_size=32, max_size=32),
    sequence=st.integers(0, 0xFFFF),
    leaf=st.integers(0, 1 << 32),
    data=st.binary(min_size=1, max_size=9000),
    fetch_seq=st.integers(0, MAX_SEQ),
    hold_us=st.integers(0, MAX_SEQ),
)
def test_block_encoder_matches_the_general_encoding(
    object_id: bytes, sequence: int, leaf: int, data: bytes, fetch_seq: int, hold_us: int
) -> None:
    message = BlockMessage(object_id, sequence, leaf, data, fetch_seq, hold_us)
    assert BlockEncoder(object_id).encode_message(message) == encode_transfer(message)


def test_block_encoder_refuses_out_of_range_fields() -> None:
    encoder = BlockEncoder(bytes(32))
    for bad in ((0x10000, 0, b"x", 0, 0), (0, -1, b"x", 0, 0), (0, 0, b"", 0, 0)):
        with pytest.raises(ValueError):
            encoder.encode(*bad)


@settings(max_examples=60)
@given(st.integers(1, 300), st.data())
def test_proofs_from_levels_match_merkle_proof(count: int, data: st.DataObject) -> None:
    hashes = [i.to_bytes(32, "big") for i in range(count)]
    levels = merkle_levels(hashes)
    assert levels[-1] == [merkle_root(hashes)]
    index = data.draw(st.integers(0, count - 1))
    assert proof_from_levels(levels, index) == merkle_proof(hashes, index)


def _head(major: int, value: int, width: int | None) -> bytes:
    """A CBOR head of ``major`` type: the shortest when ``width`` is None, else
    forced to ``width`` argument bytes (0: in the initial byte), possibly not minimal."""
    if width is None:
        width = next(
            w
            for w, top in ((0, 24), (1, 1 << 8), (2, 1 << 16), (4, 1 << 32), (8, 1 << 64))
            if value < top
        )
    if width == 0:
        return bytes((major | min(value, 23),))
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes((major | info,)) + (value % (1 << (8 * width))).to_bytes(width, "big")


widths = st.none() | st.sampled_from((0, 1, 2, 4, 8))


@settings(max_examples=400)
@given(
    leaf=st.integers(0, (1 << 33)),
    length=st.integers(0, (1 << 16) + 2),
    fetch_seq=st.integers(0, 1 << 33),
    hold_us=st.integers(0, 1 << 33),
    forms=st.tuples(widths, widths, widths, widths),
    array=st.sampled_from((0x84, 0x84, 0x83, 0x85)),
    tail=st.sampled_from((b"", b"", b"\x00")),
)
def test_block_reader_equals_the_general_decoder_on_any_head_forms(
    leaf: int,
    length: int,
    fetch_seq: int,
    hold_us: int,
    forms: tuple[int | None, ...],
    array: int,
    tail: bytes,
) -> None:
    """Minimal or not, in range or not: the inline Block reader decodes exactly
    what the OAP and CBOR decoders accept, and gives None (the general decoder
    then raises BadPacket) for the rest."""
    object_id = bytes(range(32))
    prefix = encode_transfer(BlockMessage(object_id, 7, 0, b"\x00", 0, 0))[:-6]
    data = b"\xab" * length
    payload = (
        prefix
        + bytes((array,))
        + _head(0x00, leaf, forms[0])
        + _head(0x40, length, forms[1])
        + data
        + _head(0x00, fetch_seq, forms[2])
        + _head(0x00, hold_us, forms[3])
        + tail
    )
    head = probe_command_head_untrusted(payload)
    assert head is not None
    assert block_object_id(head) == object_id
    try:
        general: object = decode_transfer_untrusted(decode_oap_untrusted(payload, False))
    except BadPacket:
        general = None
    fields = read_block_untrusted(payload, head.end)
    fast = None if fields is None else BlockMessage(object_id, *fields)
    assert fast == general
    if general is not None:
        assert decode_transfer_command_untrusted(head, payload) == general


class _Source:
    """A BlockSource over an object held in memory."""

    def __init__(self, data: bytes, leaf_size: int) -> None:
        self.hashes = ObjectHashes.build(data, leaf_size)
        self.manifest = self.hashes.manifest
        self.data = data

    def has_hashes(self) -> bool:
        return True

    def chunk(self, chunk: int, chunk_leaves: int) -> tuple[bytes, list[bytes]]:
        return self.hashes.chunk(chunk, chunk_leaves)

    def has_leaves(self, start: int, end: int) -> bool:
        return True

    def read(self, start: int, end: int) -> bytes:
        size = self.manifest.leaf_size
        return self.data[start * size : end * size]


@settings(max_examples=50)
@given(
    size=st.integers(1, 40 * 64),
    block_leaves=st.integers(1, 5),
    leaves=st.lists(st.integers(0, 45), max_size=16, unique=True),
    chunks=st.lists(st.integers(0, 3), max_size=3, unique=True),
)
def test_sender_payloads_are_the_encoded_messages(
    size: int, block_leaves: int, leaves: list[int], chunks: list[int]
) -> None:
    """next_payload (Blocks encoded from fields) gives the bytes of
    encode_transfer(next_message) and the same pacing accounting."""
    source = _Source(bytes(i % 251 for i in range(size)), 64)
    request = FetchRequest(
        source.manifest.object_id,
        5,
        64 * block_leaves,
        0,
        16,
        tuple((c, c + 1) for c in sorted(chunks) if c % 2 == 0),
        tuple((leaf, leaf + 1) for leaf in sorted(leaves) if leaf % 2 == 0),
    )
    by_message = BlockSender(("p", 1), source, SenderConfig(), 0.0)
    by_payload = BlockSender(("p", 1), source, SenderConfig(), 0.0)
    by_message.on_fetch(request, 0.0)
    by_payload.on_fetch(request, 0.0)
    while True:
        message = by_message.next_message(0.001)
        found = by_payload.next_payload(0.001)
        if message is None:
            assert found is None
            break
        assert found == (encode_transfer(message), message_size(message))
    assert (by_message.sent_blocks, by_message.sent_bytes, by_message.state) == (
        by_payload.sent_blocks,
        by_payload.sent_bytes,
        by_payload.state,
    )


def test_block_fields_are_named_as_the_message_fields_and_one_head_cache_judges_heads() -> None:
    message = BlockMessage(bytes(range(32)), 7, 3, b"abc", 9, 11)
    payload = encode_transfer(message)
    head = probe_command_head_untrusted(payload)
    assert head is not None
    fields = read_block_untrusted(payload, head.end)
    assert isinstance(fields, BlockFields)
    assert fields._fields == tuple(f.name for f in dataclasses.fields(BlockMessage))[1:]
    assert fields.leaf == 3 and fields.data == b"abc" and fields.hold_us == 11
    assert BlockMessage(message.object_id, *fields) == message

    cache = BlockHeadCache()
    assert cache.object_id(head) == message.object_id
    assert cache.object_id(head) == message.object_id  # the same head object: cached
    fetch = encode_transfer(FetchRequest(bytes(32), 1, 1024, 0, 4, (), ((0, 1),)))
    other = probe_command_head_untrusted(fetch)
    assert other is not None
    assert cache.object_id(other) is None  # not a Block's head...
    assert cache.object_id(head) == message.object_id  # ... and it evicted nothing
