"""DNP version 1 framing and the version 0 query."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.testing.tshark import Datagram, check_datagrams
from dofpy.wire._codec import C3_MAX
from dofpy.wire.dnp import (
    DnpPacket,
    DnpPdu,
    DnpVersionQuery,
    DnpVersionResponse,
    decode_dnp_any_untrusted,
    decode_dnp_untrusted,
    encode_dnp,
)

addresses = st.one_of(st.none(), st.integers(0, C3_MAX))


@st.composite
def dnp_packets(draw: st.DrawFn) -> DnpPacket:
    payload = draw(st.binary(max_size=300))
    source, destination = draw(addresses), draw(addresses)
    overhead = 6
    smallest = next(n for n in (0, 1, 2, 3) if n == 0 or len(payload) + overhead < 1 << (8 * n))
    length_size = draw(st.sampled_from([0] + [n for n in (1, 2, 3) if n >= max(smallest, 1)]))
    return DnpPacket(payload, source, destination, length_size)


dnp_pdus: st.SearchStrategy[DnpPdu] = st.one_of(
    dnp_packets(),
    st.builds(DnpVersionQuery, st.integers(0, 4)),
    st.builds(DnpVersionResponse, st.lists(st.integers(1, 255), min_size=1).map(tuple)),
)


@given(dnp_pdus)
def test_round_trip(pdu: DnpPdu) -> None:
    assert decode_dnp_any_untrusted(encode_dnp(pdu)) == pdu


@given(dnp_packets())
def test_v1_round_trip_and_truncation(packet: DnpPacket) -> None:
    encoded = encode_dnp(packet)
    assert decode_dnp_untrusted(encoded) == packet
    header_size = len(encoded) - len(packet.payload)
    for cut in range(1, header_size):
        with pytest.raises(BadPacket):
            decode_dnp_untrusted(encoded[:cut])
    if packet.length_size and packet.payload:
        with pytest.raises(BadPacket, match="length"):
            decode_dnp_untrusted(encoded[:-1])


@given(st.binary(max_size=40))
def test_decoder_raises_only_bad_packet_and_is_canonical(data: bytes) -> None:
    try:
        pdu = decode_dnp_any_untrusted(data)
    except BadPacket:
        return
    assert encode_dnp(pdu) == data


@pytest.mark.parametrize(
    ("packet", "wire"),
    [
        (DnpPacket(b"\x02"), "01 02"),
        (DnpPacket(b"\x02", source=5), "81 04 05 02"),
        (DnpPacket(b"\x02", destination=0x100), "81 08 8100 02"),
        (
            DnpPacket(b"\x02", source=1, destination=0x4000, length_size=2),
            "81 0e 0005 01 c04000 02",
        ),
        (DnpPacket(b"", length_size=1), "81 01 00"),
        (DnpVersionQuery(), "00"),
        (DnpVersionQuery(2), "00 0000"),
        (DnpVersionResponse((1,)), "00 01"),
    ],
)
def test_known_encodings(packet: DnpPdu, wire: str) -> None:
    assert encode_dnp(packet) == bytes.fromhex(wire.replace(" ", ""))


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        ("", "truncated"),
        ("02 00", "version"),
        ("81 00 02", "minimal"),
        ("81 10 02", "reserved"),
        ("81 01 05 02", "length"),
        ("80", "flags bit"),
        ("00 0001", "padding"),
        ("00 0100", "padding"),
        ("81 04 8005 02", "minimal"),
    ],
)
def test_bad_datagrams(wire: str, why: str) -> None:
    with pytest.raises(BadPacket, match=why):
        decode_dnp_any_untrusted(bytes.fromhex(wire.replace(" ", "")))


def test_version_query_is_refused_by_the_v1_decoder() -> None:
    with pytest.raises(BadPacket, match="query"):
        decode_dnp_untrusted(b"\x00")


@pytest.mark.parametrize(
    "make",
    [
        lambda: DnpPacket(b"", version=2),
        lambda: DnpPacket(b"", length_size=4),
        lambda: DnpPacket(b"", source=C3_MAX + 1),
        lambda: DnpPacket(b"", destination=-1),
        lambda: DnpVersionQuery(-1),
        lambda: DnpVersionResponse(()),
        lambda: DnpVersionResponse((0,)),
        lambda: encode_dnp(DnpPacket(bytes(300), length_size=1)),
    ],
)
def test_encoder_refuses_bad_values(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


@pytest.mark.external
def test_tshark_decodes_our_dnp_framing() -> None:
    ping = b"\x02\x00\xff\xff\x03"  # DPP command, delay 0, app 0x7FFF, ping
    result = check_datagrams(
        [
            encode_dnp(DnpVersionQuery()),
            Datagram(encode_dnp(DnpVersionResponse((1,))), from_client=False),
            encode_dnp(DnpPacket(ping)),
            encode_dnp(DnpPacket(ping, source=3, destination=0x4001, length_size=2)),
            encode_dnp(DnpPacket(ping, length_size=3)),
        ]
    )
    assert result.problems == []
    assert result.info == ["Query", "Query Response", "DPP Ping ", "DPP Ping ", "DPP Ping "]
    assert "Source Address: 3" in result.verbose
    assert "Destination Address: 16385" in result.verbose
    assert "Length: 9" in result.verbose
