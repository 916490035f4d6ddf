"""Secure datagrams: seal/open, tampering, replay, and tshark decrypting a
hand-built TEP exchange followed by secure OAP traffic."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.security import crypto
from dofpy.security.crypto import INITIATOR_NODE, RESPONDER_NODE, AuthenticationFailed
from dofpy.security.secure_frame import (
    ChannelStatistics,
    ReplayedPacket,
    SecureChannel,
    WrongSession,
    open_datagram_untrusted,
    parse_secure_datagram_untrusted,
    seal_datagram,
)
from dofpy.testing.tshark import Datagram, check_datagrams
from dofpy.wire.ccm import CcmOptions
from dofpy.wire.dpp import AppId, DppPacket, DppSecurityHeader, OpIdType, encode_frame
from dofpy.wire.oap import OAP_APP_ID, Binding, GetCommand, GetResponse, encode_oap
from dofpy.wire.oid import IID, OID
from dofpy.wire.security import KeyRequest, SecurityIdentity
from dofpy.wire.tep import ResponderInit, TepPdu, encode_tep

KEY = bytes(range(100, 132))
SECRET = bytes(range(32))
DOMAIN = OID(6, b"example.org")
CLIENT = OID(3, b"client@example.org")
SERVER = OID(3, b"server@example.org")
SSID = 5

GET = DppPacket(
    OAP_APP_ID, b"\x0a\x03\x01\x02", op_id_type=OpIdType.IMPLIED_SENDER, op_count=2, delay=4
)

packets = st.builds(
    DppPacket,
    st.integers(0, 0x7FFF),
    st.binary(max_size=100),
    is_response=st.just(False),
    op_id_type=st.just(OpIdType.IMPLIED_SENDER),
    op_count=st.integers(0, 0x3FFFFFFF),
    seq=st.none() | st.integers(0, 255),
    delay=st.integers(0, 255),
) | st.builds(
    DppPacket,
    st.integers(0, 0x7FFF),
    st.binary(max_size=100),
    is_response=st.just(True),
    op_id_type=st.just(OpIdType.IMPLIED_RECEIVER),
    op_count=st.integers(0, 0x3FFFFFFF),
)


def seal(packet: DppPacket = GET, **kwargs: object) -> bytes:
    args: dict[str, object] = {
        "key": KEY,
        "ssid": SSID,
        "sender_node": INITIATOR_NODE,
        "packet_number": 1,
    }
    args.update(kwargs)
    return seal_datagram(packet, **args)  # type: ignore[arg-type]


@given(packets, st.sampled_from([4, 8, 16]), st.integers(0, 0x3FFFFFFF), st.booleans())
def test_seal_open_round_trip(packet: DppPacket, tag: int, number: int, initiator: bool) -> None:
    node = INITIATOR_NODE if initiator else RESPONDER_NODE
    datagram = seal(packet, tag_length=tag, packet_number=number, sender_node=node, source=3)
    opened = open_datagram_untrusted(datagram, key=KEY, sender_node=node, tag_length=tag)
    assert opened.dpp == packet
    assert opened.packet_number == number
    assert opened.security.ssid == SSID
    assert opened.dnp.source == 3


def test_layout() -> None:
    datagram = seal()
    # DNP 01 · DPP 82 a0 (secure, implied sender) · op 02 · delay 04 ·
    # security 81 (mode header, SSID) · SSID 05 · CCM 01 (packet number) · 01
    assert datagram[:9] == bytes.fromhex("0182a0020481050101")
    frame = parse_secure_datagram_untrusted(datagram)
    assert frame.associated_data == datagram[1:9]
    assert len(frame.sealed) == 1 + 4 + 16  # app id, OAP bytes, tag
    assert frame.ssid == SSID
    assert frame.packet_number == 1


def test_every_flipped_bit_is_refused() -> None:
    datagram = seal()
    for bit in range(8 * len(datagram)):
        mutated = bytearray(datagram)
        mutated[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BadPacket):
            open_datagram_untrusted(bytes(mutated), key=KEY, sender_node=INITIATOR_NODE)


@pytest.mark.parametrize(
    "index",
    [
        4,  # DPP delay byte (header)
        6,  # SSID
        8,  # packet number (header and nonce)
        9,  # the encrypted application id
        -17,  # last ciphertext byte
        -1,  # last tag byte
    ],
)
def test_flips_in_header_ciphertext_and_tag_fail_authentication(index: int) -> None:
    mutated = bytearray(seal())
    mutated[index] ^= 0x01
    with pytest.raises(AuthenticationFailed):
        open_datagram_untrusted(bytes(mutated), key=KEY, sender_node=INITIATOR_NODE)


def test_wrong_key_or_reflected_packet_fails() -> None:
    datagram = seal()
    with pytest.raises(AuthenticationFailed):
        open_datagram_untrusted(datagram, key=SECRET, sender_node=INITIATOR_NODE)
    # The responder's nonce differs: a packet reflected back to its sender fails.
    with pytest.raises(AuthenticationFailed):
        open_datagram_untrusted(datagram, key=KEY, sender_node=RESPONDER_NODE)


def test_clear_and_unnumbered_packets_are_refused() -> None:
    with pytest.raises(WrongSession):
        parse_secure_datagram_untrusted(encode_frame(GET))
    unnumbered = bytearray(seal())
    unnumbered[7:9] = b"\x00"  # CCM flags without the packet-number bit
    with pytest.raises(BadPacket, match="packet number"):
        parse_secure_datagram_untrusted(bytes(unnumbered[:8] + unnumbered[9:]))
    with pytest.raises(ValueError):
        seal(dataclasses.replace(GET, app_id=None, security=DppSecurityHeader(ssid=1)))


def test_channel_refuses_replays_and_old_numbers_and_accepts_reordering() -> None:
    client = SecureChannel(KEY, ssid=SSID, initiator=True, window_size=4)
    server = SecureChannel(KEY, ssid=SSID, initiator=False, window_size=4)
    sent = [client.seal(GET) for _ in range(8)]
    for index in (1, 0, 3, 2):
        assert server.open_untrusted(sent[index]).dpp == GET
    with pytest.raises(ReplayedPacket):
        server.open_untrusted(sent[2])
    server.open_untrusted(sent[7])  # number 8: the window now starts at 5
    with pytest.raises(ReplayedPacket):
        server.open_untrusted(sent[3])  # number 4: below the window
    assert server.open_untrusted(sent[4]).packet_number == 5
    # A forged packet with a fresh number fails and does not use the number.
    forged = bytearray(sent[5])
    forged[-1] ^= 0x80
    with pytest.raises(AuthenticationFailed):
        server.open_untrusted(bytes(forged))
    assert server.open_untrusted(sent[5]).packet_number == 6
    assert server.statistics() == ChannelStatistics(
        accepted=7, replayed=1, too_old=1, failed_authentication=1
    )
    # Answers travel under the responder's node id.
    reply = server.seal(dataclasses.replace(GET, app_id=AppId.OAP), destination=2)
    assert client.open_untrusted(reply).dnp.destination == 2
    assert client.packets_remaining == 0x3FFFFFFF + 1 - 9
    assert client.ssid == SSID


def test_channel_refuses_other_sessions() -> None:
    server = SecureChannel(KEY, ssid=SSID, initiator=False)
    with pytest.raises(WrongSession):
        server.open_untrusted(seal(ssid=SSID + 1))
    with pytest.raises(WrongSession):
        server.open_untrusted(encode_frame(GET))


@pytest.mark.parametrize(
    "kwargs", [{"key": bytes(16)}, {"tag_length": 3}, {"ssid": -1}, {"first_packet_number": -1}]
)
def test_channel_checks_its_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"key": KEY, "ssid": 1, "initiator": True, **kwargs}
    with pytest.raises(ValueError):
        SecureChannel(**args)  # type: ignore[arg-type]


# -- tshark decrypts a whole exchange ------------------------------------------------


def tep_frame(pdu: TepPdu, op_count: int) -> Datagram:
    op_id_type = OpIdType.IMPLIED_RECEIVER if pdu.IS_RESPONSE else OpIdType.IMPLIED_SENDER
    packet = DppPacket(
        AppId.TEP,
        encode_tep(pdu),
        is_response=pdu.IS_RESPONSE,
        op_id_type=op_id_type,
        op_count=op_count,
    )
    return Datagram(encode_frame(packet), from_client=not pdu.IS_RESPONSE)


def conversation(tag: int) -> list[Datagram]:
    """Rekey → Accept → Confirm, then two secure OAP Gets and their answers."""
    options = CcmOptions(min_tag=tag, max_tag=16)
    rekey = crypto.build_rekey(DOMAIN, CLIENT, bytes(range(16)), options=options)
    accept = crypto.build_accept(
        rekey.initiator,
        session_key=KEY,
        ticket=crypto.make_ticket(KEY, SECRET, bytes(range(200, 232))),
        responder=KeyRequest(SecurityIdentity(SERVER), b"\x5a" * 12),
        responder_init=ResponderInit(SSID),
    )
    key = crypto.session_key_from_accept(accept, rekey.initiator, SECRET)
    confirm = crypto.build_confirm(key, rekey.initiator, accept)
    crypto.verify_confirm(confirm, KEY, rekey.initiator, accept)
    client = SecureChannel(key, ssid=SSID, initiator=True, tag_length=tag)
    server = SecureChannel(KEY, ssid=SSID, initiator=False, tag_length=tag)
    binding = Binding(IID(1, b"\x00\x01\x00\x00"), OID(7, b"device-1"))
    frames = [tep_frame(rekey, 1), tep_frame(accept, 1), tep_frame(confirm, 1)]
    for op_count, item in ((2, 3), (3, 300)):
        command = DppPacket(
            OAP_APP_ID,
            encode_oap(GetCommand(item, binding)),
            op_id_type=OpIdType.IMPLIED_SENDER,
            op_count=op_count,
        )
        response = DppPacket(
            OAP_APP_ID,
            encode_oap(GetResponse((item,))),
            is_response=True,
            op_id_type=OpIdType.IMPLIED_RECEIVER,
            op_count=op_count,
        )
        sealed_command = client.seal(command)
        assert server.open_untrusted(sealed_command).dpp == command
        sealed_response = server.seal(response)
        assert client.open_untrusted(sealed_response).dpp == response
        frames += [Datagram(sealed_command), Datagram(sealed_response, from_client=False)]
    return frames


SECURE_INFO = ["OAP Get", "OAP Get Response", "OAP Get", "OAP Get Response"]
TEP_INFO = ["TEP Rekey", "TEP Accept", "TEP Confirm"]


def seckey(key: bytes) -> list[str]:
    return ["-o", f'uat:custom_dof_seckey_list:"{key.hex()}"']


def identsecret(secret: bytes) -> list[str]:
    entry = f'"{DOMAIN.encode().hex()}","{CLIENT.encode().hex()}","{secret.hex()}"'
    return ["-o", f"uat:custom_dof_identsecret_list:{entry}"]


@pytest.mark.external
@pytest.mark.parametrize("tag", [8, 16])
@pytest.mark.parametrize("keys", ["session key", "identity secret"])
def test_tshark_decrypts_our_secure_traffic(tag: int, keys: str) -> None:
    extra = seckey(KEY) if keys == "session key" else identsecret(SECRET)
    result = check_datagrams(conversation(tag), extra=extra)
    assert result.problems == []
    assert [info.strip() for info in result.info] == TEP_INFO + SECURE_INFO
    for protocols in result.protocols[3:]:
        assert protocols.endswith("dof:dof.ccm:dof.oap"), protocols
    assert "Encrypted" not in result.verbose
    assert "Item ID: 3" in result.verbose
    assert "Item ID: 300" in result.verbose
    assert "Packet Number: 2" in result.verbose
    assert "Object ID: [{07}:device-1]" in result.verbose


@pytest.mark.external
def test_tshark_cannot_decrypt_with_wrong_or_no_keys() -> None:
    frames = conversation(16)
    for extra in ([], seckey(SECRET), identsecret(KEY)):
        result = check_datagrams(frames, extra=extra)
        assert [info.strip() for info in result.info[:3]] == TEP_INFO
        # Only the secure packets are flagged, and only for the missing context.
        assert len(result.problems) == 4, result.problems
        for problem, info in zip(result.problems, result.info[3:], strict=True):
            assert "No security context" in problem
            assert info.startswith("[Encrypted")
