"""DSP (application 0) PDUs, and a whole session exchange checked by tshark."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.testing.tshark import Datagram, check_datagrams
from dofpy.wire._codec import C2_MAX
from dofpy.wire.common import Heartbeat, Ping, PingResponse, encode_common
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame
from dofpy.wire.dsp import (
    DspConfigAck,
    DspConfigNak,
    DspConfigReject,
    DspConfigRequest,
    DspNop,
    DspOpen,
    DspOpenResponse,
    DspOpenSecureResponse,
    DspOption,
    DspOptionFamily,
    DspPdu,
    DspQuery,
    DspQueryResponse,
    DspTerminate,
    DspTerminateResponse,
    decode_dsp_untrusted,
    encode_dsp,
)

options = st.lists(
    st.builds(DspOption, st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=8)),
    max_size=4,
).map(tuple)
app_ids = st.lists(st.integers(0, C2_MAX), max_size=5).map(tuple)

dsp_pdus: st.SearchStrategy[DspPdu] = st.one_of(
    st.sampled_from(
        [
            DspNop(),
            DspQuery(),
            DspConfigAck(),
            DspConfigReject(),
            DspTerminate(),
            DspTerminateResponse(),
            DspOpen(),
        ]
    ),
    st.builds(DspQueryResponse, app_ids),
    st.builds(DspOpenResponse, app_ids),
    st.builds(DspOpenSecureResponse, app_ids),
    st.builds(DspConfigRequest, options),
    st.builds(DspConfigNak, options),
)


@given(dsp_pdus)
def test_round_trip(pdu: DspPdu) -> None:
    encoded = encode_dsp(pdu)
    assert decode_dsp_untrusted(encoded, pdu.is_response) == pdu
    for cut in range(1, len(encoded)):
        try:
            decoded = decode_dsp_untrusted(encoded[:cut], pdu.is_response)
        except BadPacket:
            continue
        assert decoded != pdu


@given(st.binary(max_size=20), st.booleans())
def test_decoder_raises_only_bad_packet_and_is_canonical(data: bytes, is_response: bool) -> None:
    try:
        pdu = decode_dsp_untrusted(data, is_response)
    except BadPacket:
        return
    assert encode_dsp(pdu) == data
    assert pdu.is_response == is_response


@pytest.mark.parametrize(
    ("pdu", "wire"),
    [
        (DspNop(), ""),
        (DspOpen(), "06"),
        (DspOpenResponse((1, 0x7FFF)), "06 01 ffff"),
        (DspOpenSecureResponse((128,)), "07 8080"),
        (DspConfigRequest((DspOption(DspOptionFamily.OAP, 1),)), "01 01 0001 00"),
        (DspConfigNak((DspOption(2, 0x6001, b"\x01\x00\x17"),)), "03 02 6001 03 010017"),
        (DspConfigAck(), "02"),
        (DspConfigReject(), "04"),
        (DspTerminate(), "05"),
        (DspTerminateResponse(), "05"),
        (DspQuery(), "00"),
        (DspQueryResponse((0, 1)), "00 00 01"),
    ],
)
def test_known_encodings(pdu: DspPdu, wire: str) -> None:
    assert encode_dsp(pdu) == bytes.fromhex(wire.replace(" ", ""))


@pytest.mark.parametrize(
    ("wire", "is_response", "why"),
    [
        ("", True, "empty"),
        ("02", False, "not a valid command"),
        ("01", True, "not a valid response"),
        ("86", False, "not a valid command"),
        ("06 00", False, "trailing"),
        ("01 01 0001", False, "truncated"),
        ("06 80", True, "truncated"),
    ],
)
def test_bad_payloads(wire: str, is_response: bool, why: str) -> None:
    with pytest.raises(BadPacket, match=why):
        decode_dsp_untrusted(bytes.fromhex(wire.replace(" ", "")), is_response)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DspOption(256, 0),
        lambda: DspOption(0, 0x10000),
        lambda: DspOption(0, 0, bytes(256)),
        lambda: DspOpenResponse((C2_MAX + 1,)),
        lambda: DspQueryResponse((True,)),
    ],
)
def test_constructors_refuse_bad_values(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def _command(app_id: int, payload: bytes, op_count: int | None) -> bytes:
    if op_count is None:
        return encode_frame(DppPacket(app_id, payload))
    packet = DppPacket(app_id, payload, op_id_type=OpIdType.IMPLIED_SENDER, op_count=op_count)
    return encode_frame(packet)


def _response(app_id: int, payload: bytes, op_count: int) -> Datagram:
    packet = DppPacket(
        app_id,
        payload,
        is_response=True,
        op_id_type=OpIdType.IMPLIED_RECEIVER,
        op_count=op_count,
    )
    return Datagram(encode_frame(packet), from_client=False)


@pytest.mark.external
def test_tshark_accepts_a_session_exchange() -> None:
    """A UDP session as dofpy runs it: DSP open and config, a ping, a
    heartbeat, terminate. tshark shows what we meant, reports nothing, and
    links every response to its command by the operation id."""
    oap_option = DspOption(DspOptionFamily.OAP, AppId.OAP)
    exchange: list[bytes | Datagram] = [
        _command(AppId.DSP, encode_dsp(DspOpen()), 1),
        _response(AppId.DSP, encode_dsp(DspOpenResponse((AppId.OAP, AppId.COMMON))), 1),
        _command(AppId.DSP, encode_dsp(DspConfigRequest((oap_option,))), 2),
        _response(AppId.DSP, encode_dsp(DspConfigAck()), 2),
        _command(AppId.COMMON, encode_common(Ping()), 3),
        _response(AppId.COMMON, encode_common(PingResponse()), 3),
        _command(AppId.COMMON, encode_common(Heartbeat()), None),
        _command(AppId.DSP, encode_dsp(DspTerminate()), 4),
        _response(AppId.DSP, encode_dsp(DspTerminateResponse()), 4),
    ]
    result = check_datagrams(exchange, extra=["-o", "dof.custom_dof_track_operations:TRUE"])
    assert result.problems == []
    assert result.info == [
        "DSP Open",
        "DSP Open Response",
        "DSP Request",
        "DSP ACK Response",
        "DPP Ping ",
        "DPP Ping Response ",
        "DPP Heartbeat ",
        "DSP Terminate/Close Request",
        "DSP Terminate/Close Response",
    ]
    frames = re.split(r"^Frame \d+:", result.verbose, flags=re.MULTILINE)[1:]
    # Each command/response pair shares one operation: both frames show the
    # command as first operation and the response as first response.
    for command_frame, response_frame in ((1, 2), (3, 4), (5, 6), (8, 9)):
        for frame in (command_frame, response_frame):
            text = frames[frame - 1]
            assert f"First Operation: {command_frame}" in text
            assert f"First Response: {response_frame}" in text
    assert "Operation History" not in frames[6]
    assert "Attribute Code: OAP Family (1)" in frames[2]
