"""The value-list decoder and encoder against the recursive reference they
replaced (kept here as the model): the explicit-stack versions in
:mod:`dofpy.wire.values` were written for speed and must accept, refuse and
produce exactly what the reference does."""

from __future__ import annotations

import enum

import cbor2
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

from .test_values import keys, nested, value_lists

_ALLOWED_SIMPLE = frozenset({20, 21, 22})
_FLOAT_INFO = frozenset({25, 26, 27})
_ARG_BYTES = {24: 1, 25: 2, 26: 4, 27: 8}
_ARG_MINIMUM = {24: 24, 25: 0x100, 26: 0x1_0000, 27: 0x1_0000_0000}


class _Budget:
    def __init__(self) -> None:
        self.items = 0

    def spend(self) -> bool:
        self.items += 1
        return self.items <= MAX_ITEMS


def _reference_scan(data: bytes, pos: int, depth: int, budget: _Budget) -> int:
    if not budget.spend():
        raise BadPacket("too many items")
    if pos >= len(data):
        raise BadPacket("truncated")
    initial = data[pos]
    pos += 1
    major, info = initial >> 5, initial & 0x1F
    if major == 7:
        if info in _ALLOWED_SIMPLE:
            return pos
        if info in _FLOAT_INFO:
            end = pos + _ARG_BYTES[info]
            if end > len(data):
                raise BadPacket("truncated float")
            return end
        raise BadPacket("simple value")
    if major == 6:
        raise BadPacket("tag")
    if info < 24:
        argument = info
    elif info in _ARG_BYTES:
        width = _ARG_BYTES[info]
        if pos + width > len(data):
            raise BadPacket("truncated head")
        argument = int.from_bytes(data[pos : pos + width], "big")
        pos += width
        if argument < _ARG_MINIMUM[info]:
            raise BadPacket("head not minimal")
    else:
        raise BadPacket("indefinite")
    if major in (0, 1):
        return pos
    if major in (2, 3):
        if argument > len(data) - pos:
            raise BadPacket("string past the end")
        return pos + argument
    count = argument if major == 4 else 2 * argument
    if count > len(data) - pos:
        raise BadPacket("container past the end")
    if depth > MAX_DEPTH:
        raise BadPacket("too deep")
    for _ in range(count):
        pos = _reference_scan(data, pos, depth + 1, budget)
    return pos


def _reference_keys(value: object) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) not in (int, str, bytes):
                raise BadPacket("map key")
            _reference_keys(item)
    elif isinstance(value, list):
        for item in value:
            _reference_keys(item)


def reference_decode(raw: bytes) -> tuple[object, ...]:
    if len(raw) > MAX_VALUES_SIZE or not raw or raw[0] >> 5 != 4:
        raise BadPacket("not one array")
    if _reference_scan(raw, 0, 0, _Budget()) != len(raw):
        raise BadPacket("trailing bytes")
    try:
        decoded = cbor2.loads(raw, max_depth=MAX_DEPTH + 1, allow_indefinite=False)
        _reference_keys(decoded)
        canonical = cbor2.dumps(decoded, canonical=True)
    except BadPacket:
        raise
    except Exception as exc:
        raise BadPacket(str(exc)) from None
    if canonical != raw:
        raise BadPacket("not canonical")
    assert isinstance(decoded, list)
    return tuple(decoded)


def _reference_check(value: object, depth: int, budget: _Budget) -> None:
    if not budget.spend():
        raise ValueError("too many items")
    kind = type(value)
    if value is None or kind in (bool, float, bytes):
        return
    if kind is int:
        assert isinstance(value, int)
        if not -(1 << 64) <= value <= (1 << 64) - 1:
            raise ValueError("integer range")
        return
    if kind is str:
        assert isinstance(value, str)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("not UTF-8") from None
        return
    if kind in (list, tuple, dict):
        if depth > MAX_DEPTH:
            raise ValueError("too deep")
        if isinstance(value, dict):
            for key, item in value.items():
                if type(key) not in (int, str, bytes):
                    raise ValueError("map key")
                _reference_check(key, depth + 1, budget)
                _reference_check(item, depth + 1, budget)
        else:
            assert isinstance(value, list | tuple)
            for item in value:
                _reference_check(item, depth + 1, budget)
        return
    raise ValueError("type")


def reference_encode(values: list[object]) -> bytes:
    _reference_check(values, 0, _Budget())
    encoded: bytes = cbor2.dumps(values, canonical=True)
    if len(encoded) > MAX_VALUES_SIZE:
        raise ValueError("too large")
    return encoded


def _same_decoding(raw: bytes) -> None:
    try:
        expected: tuple[object, ...] | None = reference_decode(raw)
    except BadPacket:
        expected = None
    try:
        got: tuple[object, ...] | None = decode_values_untrusted(raw)
    except BadPacket:
        got = None
    # Compare encodings, not values: NaN != NaN, and 1 == 1.0 == True.
    assert (None if got is None else cbor2.dumps(list(got), canonical=True)) == (
        None if expected is None else cbor2.dumps(list(expected), canonical=True)
    ), raw.hex()


@given(st.binary(max_size=96))
def test_arbitrary_bytes_decode_as_the_reference_does(blob: bytes) -> None:
    _same_decoding(b"\x82" + blob)
    _same_decoding(blob)


@given(value_lists, st.data())
def test_mutated_value_lists_decode_as_the_reference_does(
    values: list[object], data: st.DataObject
) -> None:
    raw = bytearray(encode_values(values))
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(("flip", "insert", "delete")))
        byte = data.draw(st.integers(0, 255))
        if action == "insert" or where == len(raw):
            raw.insert(where, byte)
        elif action == "flip":
            raw[where] = byte
        else:
            del raw[where]
    _same_decoding(bytes(raw))


# Maps whose keys the subset refuses (floats, bools, null, arrays, maps),
# built as bytes since Python cannot always hold them as keys.
@pytest.mark.parametrize(
    "raw",
    [
        "81a1f93c0001",  # {1.0: 1}
        "81a1f501",  # {true: 1}
        "81a1f601",  # {null: 1}
        "81a1810101",  # {[1]: 1}
        "81a1a0" + "01",  # {{}: 1}
        "81a201a1f50102",  # {1: {true: 1}, 2: ...} truncated differently
        "81a2010203f4",  # {1: 2, 3: false}: allowed
        "81a1" + "01" * 2,  # {1: 1}: allowed
    ],
)
def test_map_keys_as_the_reference(raw: str) -> None:
    _same_decoding(bytes.fromhex(raw))


def test_depth_and_item_limits_as_the_reference() -> None:
    for depth in (MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 2):
        _same_decoding(b"\x81" * (depth + 1) + b"\x80")
    for count in (MAX_ITEMS - 2, MAX_ITEMS - 1, MAX_ITEMS, MAX_ITEMS + 1):
        _same_decoding(b"\x99" + count.to_bytes(2, "big") + b"\x00" * count)
        pairs = count // 2
        _same_decoding(
            b"\x81\xb9"
            + pairs.to_bytes(2, "big")
            + b"".join(
                bytes([0x19]) + i.to_bytes(2, "big") + b"\x00" for i in range(256, 256 + pairs)
            )
        )


class Colour(enum.IntEnum):
    RED = 1


class Text(str):
    pass


strange = (
    st.just(Colour.RED)
    | st.just(Text("x"))
    | st.just(1 << 64)
    | st.just(-(1 << 64) - 1)
    | st.just("\ud800")
    | st.just(frozenset())
    | st.just(object())
)
with_strange = st.recursive(
    nested(1) | strange,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(keys | st.just((1,)) | st.just(1.5), inner, max_size=3)
    ),
    max_leaves=12,
)


def _same_encoding(values: list[object]) -> None:
    try:
        expected: bytes | None = reference_encode(values)
    except ValueError:
        expected = None
    try:
        got: bytes | None = encode_values(values)
    except ValueError:
        got = None
    assert got == expected


@given(st.lists(with_strange, max_size=4))
def test_encoding_accepts_and_refuses_as_the_reference(values: list[object]) -> None:
    _same_encoding(values)


def test_encoding_limits_as_the_reference() -> None:
    deep: object = 0
    for _depth in range(MAX_DEPTH + 3):
        _same_encoding([deep])
        deep = [deep]
    for count in (MAX_ITEMS - 2, MAX_ITEMS - 1, MAX_ITEMS, MAX_ITEMS + 1):
        _same_encoding([0] * count)
        _same_encoding([{i: 0 for i in range(count // 2)}])
