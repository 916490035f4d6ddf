"""The byte reader and the compressed integers c2/c3/c4."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.wire._codec import (
    C2_MAX,
    C3_MAX,
    C4_MAX,
    Reader,
    check_u8,
    encode_c2,
    encode_c3,
    encode_c4,
)


@given(st.integers(0, C2_MAX))
def test_c2_round_trip(value: int) -> None:
    encoded = encode_c2(value)
    assert len(encoded) == (1 if value < 0x80 else 2)
    reader = Reader(encoded)
    assert reader.c2() == value
    assert reader.at_end()


@given(st.integers(0, C3_MAX))
def test_c3_round_trip(value: int) -> None:
    encoded = encode_c3(value)
    assert len(encoded) == (1 if value < 0x80 else 2 if value <= 0x3FFF else 3)
    reader = Reader(encoded)
    assert reader.c3() == value
    assert reader.at_end()


@given(st.integers(0, C4_MAX))
def test_c4_round_trip(value: int) -> None:
    encoded = encode_c4(value)
    assert len(encoded) == (1 if value < 0x80 else 2 if value <= 0x3FFF else 4)
    reader = Reader(encoded)
    assert reader.c4() == value
    assert reader.at_end()


@pytest.mark.parametrize(
    ("method", "data"),
    [
        ("c2", b"\x80\x05"),
        ("c3", b"\x80\x05"),
        ("c3", b"\xc0\x00\x05"),
        ("c3", b"\xc0\x3f\xff"),
        ("c4", b"\x80\x7f"),
        ("c4", b"\xc0\x00\x00\x7f"),
        ("c4", b"\xc0\x00\x3f\xff"),
    ],
)
def test_non_minimal_compressed_integers_are_refused(method: str, data: bytes) -> None:
    with pytest.raises(BadPacket, match="minimal"):
        getattr(Reader(data), method)()


@pytest.mark.parametrize(
    ("method", "data"),
    [("c2", b"\x80"), ("c3", b"\xc0\x40"), ("c4", b"\xc0\x40\x00"), ("u16", b"\x01"), ("u8", b"")],
)
def test_truncated_reads_raise_bad_packet(method: str, data: bytes) -> None:
    with pytest.raises(BadPacket, match="truncated"):
        getattr(Reader(data), method)()


@pytest.mark.parametrize("encoder", [encode_c2, encode_c3, encode_c4, lambda v: check_u8(v, "x")])
@pytest.mark.parametrize("bad", [-1, C4_MAX + 1, True, "1"])
def test_encoders_refuse_bad_values(encoder: object, bad: object) -> None:
    with pytest.raises(ValueError):
        encoder(bad)  # type: ignore[operator]


def test_reader_cursor_operations() -> None:
    reader = Reader(b"\x01\x02\x03\x04\x05\x06\x07", pos=0)
    assert reader.peek_u8() == 1
    assert reader.u8() == 1
    assert reader.u16() == 0x0203
    assert reader.pos == 3
    assert reader.remaining() == 4
    with pytest.raises(BadPacket, match="trailing"):
        reader.expect_end("thing")
    assert reader.u32() == 0x04050607
    reader.expect_end("thing")
    assert reader.rest() == b""
    with pytest.raises(BadPacket):
        reader.take(-1)
