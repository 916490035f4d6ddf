"""DPP version 2 packets, the security header, the version query, frames."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.testing.tshark import Datagram, check_datagrams
from dofpy.wire._codec import C2_MAX, C4_MAX, Reader, encode_c2
from dofpy.wire.ccm import CcmHeader, read_ccm_header
from dofpy.wire.dnp import DnpPacket
from dofpy.wire.dpp import (
    AppId,
    DppPacket,
    DppPdu,
    DppSecurityHeader,
    DppVersionQuery,
    DppVersionResponse,
    OpIdType,
    decode_dpp_any_untrusted,
    decode_dpp_untrusted,
    decode_frame_untrusted,
    delay_seconds,
    encode_app,
    encode_dpp,
    encode_frame,
    encode_secure_dpp_head,
    split_app_untrusted,
)
from dofpy.wire.oid import OID
from tests.wire.test_oid import oids

c4s = st.integers(0, C4_MAX)
u8s = st.integers(0, 255)
partitions = st.lists(c4s, max_size=4).map(tuple)

security_headers = st.builds(
    lambda ssid, assigned, remote, remote_partition, partition, mode: DppSecurityHeader(
        ssid=ssid,
        as_assigned=assigned,
        remote_domain=remote,
        remote_partition=remote_partition if remote is not None else (),
        partition=partition,
        mode_header=mode,
    ),
    st.none() | c4s,
    st.booleans(),
    st.none() | c4s,
    partitions,
    st.none() | partitions,
    st.booleans(),
)


@st.composite
def dpp_packets(draw: st.DrawFn) -> DppPacket:
    is_response = draw(st.booleans())
    op_id_type = draw(st.sampled_from(OpIdType))
    security = draw(st.none() | security_headers)
    return DppPacket(
        app_id=None if security else draw(st.integers(0, C2_MAX)),
        payload=draw(st.binary(max_size=40)),
        is_response=is_response,
        op_id_type=op_id_type,
        sid=draw(oids()) if op_id_type is OpIdType.EXPLICIT else None,
        op_count=None if op_id_type is OpIdType.NONE else draw(c4s),
        seq=None if is_response else draw(st.none() | u8s),
        retry=None if is_response else draw(st.none() | u8s),
        delay=None if is_response else draw(u8s),
        security=security,
    )


dpp_pdus: st.SearchStrategy[DppPdu] = st.one_of(
    dpp_packets(),
    st.just(DppVersionQuery()),
    st.builds(DppVersionResponse, st.lists(st.integers(1, 255), min_size=1).map(tuple)),
)


@given(dpp_pdus)
def test_round_trip(pdu: DppPdu) -> None:
    assert decode_dpp_any_untrusted(encode_dpp(pdu)) == pdu


@given(dpp_packets())
def test_truncated_headers_raise_bad_packet(packet: DppPacket) -> None:
    encoded = encode_dpp(packet)
    assert decode_dpp_untrusted(encoded) == packet
    for cut in range(1, len(encoded) - len(packet.payload)):
        try:
            decoded = decode_dpp_untrusted(encoded[:cut])
        except BadPacket:
            continue
        # A shorter prefix can only parse as a different packet.
        assert decoded != packet


@given(st.binary(max_size=40))
def test_decoder_raises_only_bad_packet_and_is_canonical(data: bytes) -> None:
    try:
        pdu = decode_dpp_any_untrusted(data)
    except BadPacket:
        return
    assert encode_dpp(pdu) == data


@given(dpp_packets(), st.integers(0, 3), st.none() | st.integers(0, 100))
def test_frame_round_trip(packet: DppPacket, length_size: int, source: int | None) -> None:
    datagram = encode_frame(packet, source=source, length_size=length_size)
    dnp, dpp = decode_frame_untrusted(datagram)
    assert dpp == packet
    assert dnp == DnpPacket(encode_dpp(packet), source, None, length_size)


@pytest.mark.parametrize(
    ("packet", "wire"),
    [
        (DppPacket(AppId.COMMON, b"\x03"), "02 00 ffff 03"),
        (DppPacket(AppId.COMMON, b"\x03", is_response=True), "82 10 ffff 03"),
        (
            DppPacket(0, b"\x06", op_id_type=OpIdType.IMPLIED_SENDER, op_count=7, delay=3),
            "82 20 07 03 00 06",
        ),
        (
            DppPacket(
                0, b"", is_response=True, op_id_type=OpIdType.IMPLIED_RECEIVER, op_count=0x80
            ),
            "82 50 8080 00",
        ),
        (
            DppPacket(
                1, b"", op_id_type=OpIdType.EXPLICIT, sid=OID(3, b"z"), op_count=1, seq=9, retry=2
            ),
            "82 66 03017a 01 09 02 00 01",
        ),
        (
            DppPacket(None, b"\xcc", security=DppSecurityHeader(ssid=5)),
            "82 80 00 81 05 cc",
        ),
        (
            DppPacket(
                None,
                b"",
                is_response=True,
                security=DppSecurityHeader(
                    ssid=None,
                    as_assigned=True,
                    remote_domain=2,
                    remote_partition=(0x3FFFFFFF,),
                    partition=(),
                    mode_header=False,
                ),
            ),
            "82 90 0e 02 01 ffffffff 00",
        ),
    ],
)
def test_known_encodings(packet: DppPacket, wire: str) -> None:
    assert encode_dpp(packet) == bytes.fromhex(wire.replace(" ", ""))


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        ("", "truncated"),
        ("03 00", "version"),
        ("80", "flags bit"),
        ("00 0200", "contains 0"),
        ("82 00 00 00", "minimal"),
        ("82 01 00 00", "reserved"),
        ("82 08 00 00", "reserved"),
        ("82 14 00", "reserved"),
        ("82 11 00", "reserved"),
        ("82 80 00 70", "reserved"),
        ("82 80 00 84 05", "partition of 5"),
        ("82 20 80 05 00 00", "minimal"),
        ("02 00 80 05", "minimal"),
    ],
)
def test_bad_packets(wire: str, why: str) -> None:
    with pytest.raises(BadPacket, match=why):
        decode_dpp_any_untrusted(bytes.fromhex(wire.replace(" ", "")))


def test_version_query_forms() -> None:
    assert encode_dpp(DppVersionQuery()) == b"\x00"
    assert encode_dpp(DppVersionResponse((2,))) == b"\x00\x02"
    with pytest.raises(BadPacket, match="query"):
        decode_dpp_untrusted(b"\x00")


def test_helpers() -> None:
    assert delay_seconds(0) == 0
    assert delay_seconds(128) == 128
    assert delay_seconds(129) == 160
    assert delay_seconds(255) == 128 + 127 * 32
    assert split_app_untrusted(encode_app(AppId.COMMON, b"\x03")) == (0x7FFF, b"\x03")
    with pytest.raises(BadPacket):
        split_app_untrusted(b"\x80")
    assert DppPacket(0, b"").delay == 0
    assert DppPacket(None, b"", security=DppSecurityHeader()).is_secure
    assert not DppPacket(0, b"").is_secure


@pytest.mark.parametrize(
    "make",
    [
        lambda: DppPacket(None, b""),
        lambda: DppPacket(C2_MAX + 1, b""),
        lambda: DppPacket(True, b""),
        lambda: DppPacket(0, b"", security=DppSecurityHeader()),
        lambda: DppPacket(0, b"", op_id_type=4),  # type: ignore[arg-type]
        lambda: DppPacket(0, b"", op_id_type=OpIdType.EXPLICIT, op_count=1),
        lambda: DppPacket(0, b"", sid=OID(3), op_count=1),
        lambda: DppPacket(0, b"", op_id_type=OpIdType.IMPLIED_SENDER),
        lambda: DppPacket(0, b"", op_count=1),
        lambda: DppPacket(0, b"", op_id_type=OpIdType.IMPLIED_SENDER, op_count=C4_MAX + 1),
        lambda: DppPacket(0, b"", is_response=True, delay=0),
        lambda: DppPacket(0, b"", is_response=True, seq=0),
        lambda: DppPacket(0, b"", seq=256),
        lambda: DppPacket(0, b"", retry=-1),
        lambda: DppPacket(0, b"", delay=True),
        lambda: DppSecurityHeader(ssid=C4_MAX + 1),
        lambda: DppSecurityHeader(remote_partition=(1,)),
        lambda: DppSecurityHeader(partition=(-1,)),
        lambda: DppSecurityHeader(partition=(0,) * (C2_MAX + 1)),
        lambda: DppVersionResponse(()),
        lambda: DppVersionResponse((256,)),
    ],
)
def test_constructors_refuse_bad_values(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


@pytest.mark.external
def test_tshark_decodes_our_dpp_headers() -> None:
    sender = DppPacket(
        AppId.COMMON,
        b"\x03",
        op_id_type=OpIdType.IMPLIED_SENDER,
        op_count=0x4000,
        seq=1,
        retry=2,
        delay=129,
    )
    explicit = DppPacket(
        AppId.COMMON, b"\x05", op_id_type=OpIdType.EXPLICIT, sid=OID(6, b"node"), op_count=3
    )
    clear_secure = DppPacket(
        None,
        encode_app(AppId.COMMON, b"\x05"),
        security=DppSecurityHeader(
            ssid=300,
            remote_domain=7,
            remote_partition=(1, 0x3FFFFFFD),
            partition=(2,),
            mode_header=False,
        ),
    )
    result = check_datagrams(
        [
            encode_frame(DppVersionQuery()),
            Datagram(encode_frame(DppVersionResponse((2,))), from_client=False),
            encode_frame(sender),
            encode_frame(explicit),
            encode_frame(clear_secure),
        ]
    )
    assert result.problems == []
    assert result.info == [
        "Query",
        "Query Response",
        "DPP Ping ",
        "DPP Heartbeat ",
        "DPP Heartbeat ",
    ]
    for text in (
        "Sequence: 1",
        "Retry: 2",
        "Delay: 160 seconds",
        "Operation Count: 16384",
        "Object ID: [{06}:node]",
        "Security State Identifier: 300 (0x12c)",
        "Remote Domain Identifier: 7 (0x7)",
        "Permission Group Identifier: 1073741821 (session scope)",
    ):
        assert text in result.verbose


@given(
    dpp_packets().filter(lambda packet: packet.security is None),
    security_headers.filter(lambda header: header.mode_header),
    c4s,
)
def test_secure_head_is_the_encoding_of_the_secure_copy(
    packet: DppPacket, security: DppSecurityHeader, packet_number: int
) -> None:
    ccm = CcmHeader(packet_number=packet_number)
    secure = dataclasses.replace(packet, app_id=None, security=security, payload=ccm.encode())
    head = encode_secure_dpp_head(packet, security.encode(), packet_number)
    assert head == encode_dpp(secure)
    decoded = decode_dpp_untrusted(head)
    assert decoded.security == security
    assert read_ccm_header(Reader(decoded.payload)).packet_number == packet_number


@given(st.integers(0, C2_MAX), st.binary(max_size=8))
def test_app_payloads_are_the_c2_app_id_then_the_payload(app_id: int, payload: bytes) -> None:
    # The one-byte branch (ids below 0x80) is the general c2 encoding.
    data = encode_app(app_id, payload)
    assert data == encode_c2(app_id) + payload
    assert split_app_untrusted(data) == (app_id, payload)
