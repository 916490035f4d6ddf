"""CCM security-mode header and options codecs."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.wire._codec import C4_MAX
from dofpy.wire.ccm import (
    CcmHeader,
    CcmOptions,
    decode_ccm_header_untrusted,
    decode_ccm_options_untrusted,
)

c4s = st.none() | st.integers(0, C4_MAX)
headers = st.builds(CcmHeader, c4s, c4s, c4s, key_period=st.integers(0, 7), manager=st.booleans())
tags = st.sampled_from(range(4, 17, 2))
options = st.builds(
    lambda strengths, emin, emax, a, b: CcmOptions(strengths, emin, emax, max(a, b), min(a, b)),
    st.lists(st.integers(0, 255), min_size=1, max_size=4).map(tuple),
    st.booleans(),
    st.booleans(),
    tags,
    tags,
)


@given(headers)
def test_header_round_trip(header: CcmHeader) -> None:
    assert decode_ccm_header_untrusted(header.encode()) == header


@given(options)
def test_options_round_trip(value: CcmOptions) -> None:
    assert decode_ccm_options_untrusted(value.encode()) == value


def test_known_encodings() -> None:
    assert CcmHeader(packet_number=5).encode() == bytes.fromhex("0105")
    assert CcmHeader(packet_number=0x80).encode() == bytes.fromhex("018080")
    assert CcmHeader(1, 2, 3, key_period=2).encode() == bytes.fromhex("2b010203")
    assert CcmHeader(manager=True).encode() == b"\x80"
    # AES-256, encrypt, 16-byte tag: the dofpy default.
    assert CcmOptions().encode() == bytes.fromhex("0101ff")
    assert CcmOptions(min_tag=8).encode() == bytes.fromhex("0101fb")
    assert CcmOptions(encrypt_min=False, encrypt_max=False, min_tag=4, max_tag=4).encode() == (
        bytes.fromhex("010109")
    )
    assert CcmOptions(min_tag=8).tag_length == 8


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "truncated"),
        (b"\x04", "reserved"),
        (b"\x01", "truncated"),
        (b"\x01\x80\x05", "minimal"),
        (b"\x00\x00", "trailing"),
    ],
)
def test_bad_headers(data: bytes, why: str) -> None:
    with pytest.raises(BadPacket, match=why):
        decode_ccm_header_untrusted(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x01",
        b"\x00\xff",
        b"\x01\x01\xf8",
        b"\x01\x01\xc7",
        b"\x01\x01\xcb",
        b"\x01\x01\xff\x00",
    ],
)
def test_bad_options(data: bytes) -> None:
    with pytest.raises(BadPacket):
        decode_ccm_options_untrusted(data)


@given(st.binary(max_size=16))
def test_arbitrary_bytes_raise_only_bad_packet(data: bytes) -> None:
    for decode in (decode_ccm_header_untrusted, decode_ccm_options_untrusted):
        with contextlib.suppress(BadPacket):
            decode(data)


@given(headers)
def test_truncations_raise_bad_packet(header: CcmHeader) -> None:
    data = header.encode()
    for end in range(len(data)):
        with pytest.raises(BadPacket):
            decode_ccm_header_untrusted(data[:end])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"packet_number": -1},
        {"packet_number": C4_MAX + 1},
        {"target_node": True},
        {"next_node": -5},
        {"key_period": 8},
    ],
)
def test_header_refuses_bad_values(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        CcmHeader(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strengths": ()},
        {"strengths": [1]},
        {"strengths": (256,)},
        {"min_tag": 2},
        {"max_tag": 17},
        {"min_tag": 16, "max_tag": 8},
    ],
)
def test_options_refuse_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CcmOptions(**kwargs)  # type: ignore[arg-type]
