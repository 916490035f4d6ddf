"""The transfer's fast paths give exactly what the general code gives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.transfer.manifest import merkle_levels, merkle_proof, merkle_root, proof_from_levels
from dofpy.transfer.messages import MAX_SEQ, BlockEncoder, BlockMessage, encode_transfer


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
