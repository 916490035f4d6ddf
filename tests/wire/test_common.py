"""DPP common operations (application 0x7FFF)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.testing.tshark import Datagram, check_datagrams
from dofpy.wire._codec import C4_MAX
from dofpy.wire.common import (
    CancelAll,
    CommonPdu,
    Heartbeat,
    NodeDown,
    Ping,
    PingResponse,
    Query,
    QueryResponse,
    Rename,
    SourceFound,
    SourceLost,
    decode_common_untrusted,
    encode_common,
)
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame
from dofpy.wire.oid import OID
from tests.wire.test_oid import oids

common_pdus: st.SearchStrategy[CommonPdu] = st.one_of(
    st.sampled_from([Ping(), PingResponse(), Heartbeat(), Query()]),
    st.builds(QueryResponse, oids()),
    st.builds(NodeDown, oids()),
    st.builds(CancelAll, oids()),
    st.builds(SourceLost, oids(), st.integers(0, C4_MAX)),
    st.builds(SourceFound, oids(), st.integers(0, C4_MAX)),
    st.builds(Rename, oids(), st.integers(0, C4_MAX)),
)


@given(common_pdus)
def test_round_trip_and_truncation(pdu: CommonPdu) -> None:
    encoded = encode_common(pdu)
    assert decode_common_untrusted(encoded, pdu.is_response) == pdu
    for cut in range(len(encoded)):
        with pytest.raises(BadPacket):
            decode_common_untrusted(encoded[:cut], pdu.is_response)


@given(st.binary(max_size=20), st.booleans())
def test_decoder_raises_only_bad_packet_and_is_canonical(data: bytes, is_response: bool) -> None:
    try:
        pdu = decode_common_untrusted(data, is_response)
    except BadPacket:
        return
    assert encode_common(pdu) == data
    assert pdu.is_response == is_response


@pytest.mark.parametrize(
    ("pdu", "wire"),
    [
        (Ping(), "03"),
        (PingResponse(), "03"),
        (Heartbeat(), "05"),
        (Query(), "06"),
        (QueryResponse(OID(6, b"n")), "06 06016e"),
        (NodeDown(OID(0)), "00 0000"),
        (CancelAll(OID(6, b"n")), "04 06016e"),
        (SourceLost(OID(6, b"n"), 0x80), "01 06016e 8080"),
        (Rename(OID(6, b"n"), 1), "02 06016e 01"),
        (SourceFound(OID(6, b"n"), 2), "08 06016e 02"),
    ],
)
def test_known_encodings(pdu: CommonPdu, wire: str) -> None:
    assert encode_common(pdu) == bytes.fromhex(wire.replace(" ", ""))


@pytest.mark.parametrize(
    ("wire", "is_response", "why"),
    [
        ("05", True, "not a valid response"),
        ("07", False, "not a valid command"),
        ("43", False, "not a valid command"),
        ("03 00", False, "trailing"),
        ("06", True, "truncated"),
    ],
)
def test_bad_payloads(wire: str, is_response: bool, why: str) -> None:
    with pytest.raises(BadPacket, match=why):
        decode_common_untrusted(bytes.fromhex(wire.replace(" ", "")), is_response)


@pytest.mark.parametrize("op_count", [-1, C4_MAX + 1, True])
def test_operation_references_refuse_bad_counts(op_count: int) -> None:
    with pytest.raises(ValueError):
        SourceLost(OID(6, b"n"), op_count)


@pytest.mark.external
def test_tshark_decodes_every_common_operation() -> None:
    sid = OID(6, b"node")
    commands: list[CommonPdu] = [
        Ping(),
        Heartbeat(),
        Query(),
        NodeDown(sid),
        CancelAll(sid),
        SourceLost(sid, 7),
        SourceFound(sid, 8),
        Rename(sid, 9),
    ]
    datagrams: list[bytes | Datagram] = [
        encode_frame(
            DppPacket(
                AppId.COMMON,
                encode_common(pdu),
                op_id_type=OpIdType.IMPLIED_SENDER,
                op_count=index,
            )
        )
        for index, pdu in enumerate(commands)
    ]
    for index, pdu in ((0, PingResponse()), (2, QueryResponse(sid))):
        response = DppPacket(
            AppId.COMMON,
            encode_common(pdu),
            is_response=True,
            op_id_type=OpIdType.IMPLIED_RECEIVER,
            op_count=index,
        )
        datagrams.append(Datagram(encode_frame(response), from_client=False))
    result = check_datagrams(datagrams)
    assert result.problems == []
    assert result.info == [
        "DPP Ping ",
        "DPP Heartbeat ",
        "DPP Query ",
        "DPP Node Down ",
        "DPP Cancel All ",
        "DPP Source Lost ",
        "DPP Source Found ",
        "DPP Rename ",
        "DPP Ping Response ",
        "DPP Query Response ",
    ]
    assert result.verbose.count("Object ID: [{06}:node]") >= 6
    assert "Operation Count: 9" in result.verbose
