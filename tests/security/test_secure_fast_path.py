"""The per-packet path of :class:`SecureChannel` (cached cipher, header bytes built
directly, datagrams opened from their one decode) gives exactly what the general
functions :func:`seal_datagram` / :func:`open_datagram_untrusted` give."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.security import crypto
from dofpy.security.crypto import INITIATOR_NODE, RESPONDER_NODE
from dofpy.security.secure_frame import (
    SecureChannel,
    open_datagram_untrusted,
    seal_datagram,
)
from dofpy.wire.ccm import CcmHeader
from dofpy.wire.dnp import DnpPacket, encode_dnp
from dofpy.wire.dpp import (
    DppPacket,
    DppSecurityHeader,
    OpIdType,
    decode_frame_untrusted,
    encode_app,
    encode_dpp,
)
from dofpy.wire.oid import OID

KEY = bytes(range(100, 132))
SSID = 300

commands = st.builds(
    DppPacket,
    st.integers(0, 0x7FFF),
    st.binary(max_size=64),
    is_response=st.just(False),
    op_id_type=st.just(OpIdType.IMPLIED_SENDER),
    op_count=st.integers(0, 0x3FFFFFFF),
    seq=st.none() | st.integers(0, 255),
    retry=st.none() | st.integers(0, 255),
    delay=st.integers(0, 255),
) | st.builds(DppPacket, st.integers(0, 0x7FFF), st.binary(max_size=64))
responses = st.builds(
    DppPacket,
    st.integers(0, 0x7FFF),
    st.binary(max_size=64),
    is_response=st.just(True),
    op_id_type=st.just(OpIdType.IMPLIED_RECEIVER),
    op_count=st.integers(0, 0x3FFFFFFF),
)
explicit = st.builds(
    DppPacket,
    st.integers(0, 0x7FFF),
    st.binary(max_size=64),
    is_response=st.booleans(),
    op_id_type=st.just(OpIdType.EXPLICIT),
    sid=st.builds(OID, st.integers(1, 20), st.binary(max_size=8)),
    op_count=st.integers(0, 0x3FFFFFFF),
)
packets = commands | responses | explicit
addresses = st.none() | st.integers(0, 0x3FFFFF)


def pair(tag: int = 16, first: int = 1, window: int = 1024) -> tuple[SecureChannel, SecureChannel]:
    """(initiator, responder) channels of one session."""
    initiator = SecureChannel(
        KEY, ssid=SSID, initiator=True, tag_length=tag, first_packet_number=first
    )
    responder = SecureChannel(
        KEY,
        ssid=SSID,
        initiator=False,
        tag_length=tag,
        first_packet_number=first,
        window_size=window,
    )
    return initiator, responder


@given(
    packets,
    st.sampled_from([4, 8, 12, 16]),
    st.integers(0, 0x3FFFFFF0),
    st.booleans(),
    addresses,
    addresses,
)
def test_channel_seal_equals_seal_datagram(
    packet: DppPacket,
    tag: int,
    first: int,
    initiator: bool,
    source: int | None,
    destination: int | None,
) -> None:
    channel = SecureChannel(
        KEY, ssid=SSID, initiator=initiator, tag_length=tag, first_packet_number=first
    )
    for number in (first, first + 1):
        expected = seal_datagram(
            packet,
            key=KEY,
            ssid=SSID,
            sender_node=INITIATOR_NODE if initiator else RESPONDER_NODE,
            packet_number=number,
            tag_length=tag,
            source=source,
            destination=destination,
        )
        assert channel.seal(packet, source=source, destination=destination) == expected


def test_channel_seal_refuses_secure_packets() -> None:
    channel, _ = pair()
    secure = DppPacket(None, b"\x01\x01", security=DppSecurityHeader(ssid=1))
    with pytest.raises(ValueError, match="clear DPP packet"):
        channel.seal(secure)


def _general_open(datagram: bytes, tag: int) -> DppPacket | None:
    try:
        return open_datagram_untrusted(
            datagram, key=KEY, sender_node=INITIATOR_NODE, tag_length=tag
        ).dpp
    except BadPacket:
        return None


def _fast_open(datagram: bytes, tag: int) -> DppPacket | None:
    _, responder = pair(tag)
    try:
        dnp, dpp = decode_frame_untrusted(datagram)
        return responder.open_packet_untrusted(dnp, dpp)
    except BadPacket:
        return None


@given(packets, st.sampled_from([4, 16]), st.integers(1, 0x3FFFFFFF), st.data())
def test_open_packet_equals_general_open_on_mutations(
    packet: DppPacket, tag: int, number: int, data: st.DataObject
) -> None:
    initiator, _ = pair(tag, first=number)
    datagram = initiator.seal(packet)
    assert _fast_open(datagram, tag) == packet == _general_open(datagram, tag)
    index = data.draw(st.integers(0, len(datagram) - 1))
    flipped = bytearray(datagram)
    flipped[index] ^= data.draw(st.integers(1, 255))
    cut = datagram[: data.draw(st.integers(0, len(datagram) - 1))]
    for mutated in (bytes(flipped), cut):
        # Whatever the general path accepts the fast path accepts, with the same
        # packet, and the other way round.
        assert _fast_open(mutated, tag) == _general_open(mutated, tag)


def _sealed_with_ccm_header(packet: DppPacket, ccm: CcmHeader) -> bytes:
    """A datagram whose CCM header is not the one dofpy sends (key period,
    target and next node): the general header reader handles it."""
    secure = dataclasses.replace(
        packet, app_id=None, security=DppSecurityHeader(ssid=SSID), payload=ccm.encode()
    )
    associated_data = encode_dpp(secure)
    assert packet.app_id is not None and ccm.packet_number is not None
    sealed = crypto.ccm_seal(
        KEY,
        crypto.ccm_nonce(INITIATOR_NODE, ccm.packet_number),
        associated_data,
        encode_app(packet.app_id, packet.payload),
        16,
    )
    return encode_dnp(DnpPacket(associated_data + sealed))


@given(
    packets,
    st.builds(
        CcmHeader,
        st.none() | st.integers(0, 0x3FFFFFFF),
        st.none() | st.integers(0, 0x3FFFFFFF),
        st.none() | st.integers(0, 0x3FFFFFFF),
        st.integers(0, 7),
        st.booleans(),
    ),
)
def test_open_packet_reads_every_ccm_header_form(packet: DppPacket, ccm: CcmHeader) -> None:
    if ccm.packet_number is None:
        numbered = dataclasses.replace(ccm, packet_number=7)
        datagram = _sealed_with_ccm_header(packet, numbered)
        # The same datagram with the number removed from the header.
        secure = dataclasses.replace(
            packet, app_id=None, security=DppSecurityHeader(ssid=SSID), payload=ccm.encode()
        )
        datagram = encode_dnp(DnpPacket(encode_dpp(secure) + b"\x00" * 20))
        assert _fast_open(datagram, 16) is None
        assert _general_open(datagram, 16) is None
        return
    datagram = _sealed_with_ccm_header(packet, ccm)
    assert _fast_open(datagram, 16) == packet == _general_open(datagram, 16)


def test_open_packet_refuses_clear_and_other_sessions() -> None:
    initiator, responder = pair()
    clear = DppPacket(1, b"x", op_id_type=OpIdType.IMPLIED_SENDER, op_count=1)
    other = SecureChannel(KEY, ssid=SSID + 1, initiator=True)
    no_mode = dataclasses.replace(
        clear, app_id=None, security=DppSecurityHeader(ssid=SSID, mode_header=False)
    )
    for datagram in (
        encode_dnp(DnpPacket(encode_dpp(clear))),
        other.seal(clear),
        encode_dnp(DnpPacket(encode_dpp(no_mode))),
    ):
        dnp, dpp = decode_frame_untrusted(datagram)
        with pytest.raises(BadPacket):
            responder.open_packet_untrusted(dnp, dpp)
    assert responder.statistics().accepted == 0
    datagram = initiator.seal(clear)
    dnp, dpp = decode_frame_untrusted(datagram)
    assert responder.open_packet_untrusted(dnp, dpp) == clear
    with pytest.raises(BadPacket, match="replayed"):
        responder.open_packet_untrusted(dnp, dpp)
    assert responder.statistics().replayed == 1
