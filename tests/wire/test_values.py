"""The CBOR value-list codec: round trips, the safe subset, limits, hostile input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.wire.values import (
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_VALUES_SIZE,
    decode_values_untrusted,
    encode_values,
)

INT_MIN, INT_MAX = -(1 << 64), (1 << 64) - 1

leaves = (
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
keys = st.integers(INT_MIN, INT_MAX) | st.text(max_size=4) | st.binary(max_size=4)


def nested(levels: int) -> st.SearchStrategy[object]:
    """Values nested at most ``levels`` containers deep."""
    if levels == 0:
        return leaves
    inner = nested(levels - 1)
    return leaves | st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3)


value_lists = st.lists(nested(3), max_size=5)


@given(value_lists)
def test_round_trip(values: list[object]) -> None:
    encoded = encode_values(values)
    assert decode_values_untrusted(encoded) == tuple(values)
    # Encoding is deterministic: the decoded values encode to the same bytes.
    assert encode_values(decode_values_untrusted(encoded)) == encoded


@given(value_lists)
def test_every_truncation_is_refused(values: list[object]) -> None:
    encoded = encode_values(values)
    for end in range(len(encoded)):
        with pytest.raises(BadPacket):
            decode_values_untrusted(encoded[:end])


@given(value_lists, st.data())
def test_mutations_raise_only_badpacket_or_are_canonical(
    values: list[object], data: st.DataObject
) -> None:
    encoded = bytearray(encode_values(values))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_values_untrusted(bytes(encoded))
    except BadPacket:
        return
    assert encode_values(decoded) == bytes(encoded)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_badpacket(blob: bytes) -> None:
    try:
        decoded = decode_values_untrusted(blob)
    except BadPacket:
        return
    assert encode_values(decoded) == blob


def test_empty_list_is_one_byte() -> None:
    # tshark marks an empty (zero-byte) value list malformed, so never send one.
    assert encode_values([]) == b"\x80"
    assert decode_values_untrusted(b"\x80") == ()


def test_known_encoding() -> None:
    encoded = encode_values([1, "a", b"\x00", None, True, 1.5, [2], {"k": -1}])
    assert encoded.hex() == "8801616141 00f6f5f93e0081 02a1616b20".replace(" ", "")


def test_tuples_encode_as_arrays_and_decode_as_lists() -> None:
    assert decode_values_untrusted(encode_values(((1, 2),))) == ([1, 2],)


def test_nan_is_canonical_half_float() -> None:
    encoded = encode_values([math.nan])
    assert encoded == b"\x81\xf9\x7e\x00"
    (value,) = decode_values_untrusted(encoded)
    assert isinstance(value, float) and math.isnan(value)


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "one CBOR array"),
        (b"\x01", "one CBOR array"),
        (b"\x9f\xff", "indefinite"),
        (b"\x81\x5f\x41\x00\xff", "indefinite"),
        (b"\x81\xc1\x00", "tags"),
        (b"\x81\xf7", "simple value"),
        (b"\x81\xf0", "simple value"),
        (b"\x81\xf8\x20", "simple value"),
        (b"\x81\x1c", "reserved"),
        (b"\x81\x18\x01", "minimally"),
        (b"\x81\x19\x00\xff", "minimally"),
        (b"\x81\x1a\x00\x00\xff\xff", "minimally"),
        (b"\x81\x1b\x00\x00\x00\x00\xff\xff\xff\xff", "minimally"),
        (b"\x81\x19\x01", "truncated"),
        (b"\x81\xf9\x3c", "truncated"),
        (b"\x81\x42\x00", "past the end"),
        (b"\x82\x01", "more items"),
        (b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", "more items"),
        (b"\x80\x00", "trailing"),
        (b"\x81\xfb\x3f\xf8\x00\x00\x00\x00\x00\x00", "canonical"),  # 1.5 as a double
        (b"\x81\xa2\x61\x62\x01\x61\x61\x02", "canonical"),  # keys out of order
        (b"\x81\xa2\x01\x01\x01\x02", "canonical"),  # duplicate keys
        (b"\x81\x62\xff\xfe", "does not decode"),  # invalid UTF-8
        (b"\x81\xa1\x81\x01\x01", "map key"),  # array as a key
        (b"\x81\xa1\xf5\x01", "map key"),  # bool as a key
        (b"\x81\xa1\xf9\x3c\x00\x01", "map key"),  # float as a key
        (b"\x81\x81\xa1\xf6\x01", "map key"),  # null as a nested key
    ],
)
def test_refused_encodings(blob: bytes, reason: str) -> None:
    with pytest.raises(BadPacket, match=reason):
        decode_values_untrusted(blob)


def test_depth_limit() -> None:
    deep: object = 1
    for _ in range(MAX_DEPTH):
        deep = [deep]
    encoded = encode_values([deep])
    assert decode_values_untrusted(encoded) == (deep,)
    with pytest.raises(ValueError, match="deeper"):
        encode_values([[deep]])
    with pytest.raises(BadPacket, match="deeper"):
        decode_values_untrusted(b"\x81" + encoded)


def test_item_limit() -> None:
    fits = [0] * (MAX_ITEMS - 1)  # plus the outer array
    assert decode_values_untrusted(encode_values(fits)) == tuple(fits)
    with pytest.raises(ValueError, match="items"):
        encode_values([*fits, 0])
    too_many = b"\x99" + MAX_ITEMS.to_bytes(2, "big") + bytes(MAX_ITEMS)
    with pytest.raises(BadPacket, match="items"):
        decode_values_untrusted(too_many)


def test_size_limit() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode_values([bytes(MAX_VALUES_SIZE)])
    with pytest.raises(BadPacket, match="exceeds"):
        decode_values_untrusted(bytes(MAX_VALUES_SIZE + 1))


class _Int(int):
    pass


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([1 << 64], "outside"),
        ([-(1 << 64) - 1], "outside"),
        ([object()], "type object"),
        ([{1, 2}], "type set"),
        ([bytearray(b"x")], "type bytearray"),
        ([_Int(3)], "type _Int"),
        ([{1.5: 1}], "map key"),
        ([{True: 1}], "map key"),
        ([{(1,): 1}], "map key"),
        (["\ud800"], "UTF-8"),
        ("ab", "not a string"),
        (b"ab", "not a string"),
    ],
)
def test_encoder_refuses(values: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        encode_values(values)  # type: ignore[arg-type]
