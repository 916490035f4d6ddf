"""TEP (application 128) codec: round trips, hostile input, and tshark."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.wire._codec import C2_MAX, C4_MAX, encode_c2
from dofpy.wire.ccm import CcmOptions
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame
from dofpy.wire.oid import OID
from dofpy.wire.tep import (
    AuthenticatorBlock,
    Credential,
    InitiatorBlock,
    KeyRequest,
    PermissionScope,
    PermissionSet,
    ResponderInit,
    SecurityMode,
    TepAccept,
    TepConfirm,
    TepConfirmAck,
    TepEndSession,
    TepPdu,
    TepReject,
    TepRekey,
    TepRequest,
    TepSessionEnding,
    decode_tep_untrusted,
    encode_tep,
)
from tests.tshark_oracle import Datagram, check_datagrams

# -- strategies ----------------------------------------------------------------

c4s = st.integers(0, C4_MAX)
oids = st.builds(OID, st.integers(1, C4_MAX), st.binary(max_size=24))
permission = st.one_of(
    st.integers(0, C2_MAX // 2).map(lambda t: encode_c2(2 * t)),
    st.tuples(st.integers(0, C2_MAX // 2 - 1), st.binary(max_size=6)).map(
        lambda tv: encode_c2(2 * tv[0] + 1) + encode_c2(len(tv[1])) + tv[1]
    ),
)
permission_sets = st.lists(permission, max_size=3).map(
    lambda items: PermissionSet(encode_c2(len(items)) + b"".join(items))
)
credentials = st.builds(Credential, oids, st.integers(0, C2_MAX), st.integers(0, 255))
key_requests = st.builds(
    KeyRequest,
    credentials,
    st.binary(min_size=1, max_size=16),
    permission_sets,
    st.booleans(),
    st.booleans(),
)
modes = st.builds(
    SecurityMode, st.integers(0x6000, 0x6FFF), st.binary(max_size=8), st.integers(0, 255)
)
initiator_blocks = st.builds(InitiatorBlock, key_requests, modes, st.integers(0, 255))
scopes = st.just(PermissionScope(0)) | st.builds(
    PermissionScope, st.integers(1, 3), st.lists(c4s, max_size=3).map(tuple)
)
authenticators = st.builds(
    AuthenticatorBlock,
    st.integers(0, 255),
    st.lists(c4s, max_size=3).map(tuple),
    st.lists(scopes, max_size=2).map(tuple),
    st.lists(scopes, max_size=2).map(tuple),
)
responder_inits = st.builds(ResponderInit, st.none() | c4s, st.binary(max_size=8))
pdus: st.SearchStrategy[TepPdu] = st.one_of(
    st.builds(TepRekey, st.none() | oids, initiator_blocks),
    st.builds(TepRequest, initiator_blocks),
    st.builds(TepConfirm, st.binary(min_size=32, max_size=32)),
    st.just(TepEndSession()),
    st.just(TepSessionEnding()),
    st.just(TepConfirmAck()),
    st.builds(TepReject, st.integers(0, 255), st.binary(max_size=8)),
    st.builds(
        TepAccept,
        st.binary(min_size=64, max_size=64),
        st.binary(min_size=32, max_size=32),
        st.none() | responder_inits,
        key_requests,
        authenticators,
    ),
)


def context(pdu: TepPdu) -> dict[str, bool]:
    """The decoder context in which ``pdu`` was meant to be sent."""
    secure = False
    if isinstance(pdu, TepRekey):
        secure = pdu.domain is None
    answers_rekey = True
    if isinstance(pdu, TepAccept):
        answers_rekey = pdu.responder_init is not None
        secure = (
            answers_rekey and pdu.responder_init is not None and pdu.responder_init.ssid is None
        )
    return {"is_response": pdu.IS_RESPONSE, "secure": secure, "answers_rekey": answers_rekey}


def decode(data: bytes, pdu: TepPdu) -> TepPdu:
    return decode_tep_untrusted(data, **context(pdu))


@given(pdus)
def test_round_trip(pdu: TepPdu) -> None:
    assert decode(encode_tep(pdu), pdu) == pdu


@given(pdus)
def test_truncations_raise_bad_packet(pdu: TepPdu) -> None:
    data = encode_tep(pdu)
    # A Reject's description and a TEP payload's end are open-ended, so only
    # the cuts before the fixed part are certain to fail.
    minimum = 2 if isinstance(pdu, TepReject) else len(data)
    for end in range(minimum):
        with pytest.raises(BadPacket):
            decode(data[:end], pdu)


@given(pdus, st.data())
def test_mutations_raise_only_bad_packet(pdu: TepPdu, data: st.DataObject) -> None:
    raw = bytearray(encode_tep(pdu))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    extra = data.draw(st.binary(max_size=3))
    flags = data.draw(st.fixed_dictionaries({k: st.booleans() for k in context(pdu)}))
    with contextlib.suppress(BadPacket):
        decode_tep_untrusted(bytes(raw) + extra, **flags)


def test_known_encodings() -> None:
    node = OID(3, b"a")
    request = KeyRequest(Credential(node), b"\x07")
    block = InitiatorBlock(request)
    # duration · mode (family 2, 0x6001, 3 bytes: 1 strength AES-256, flags ff)
    # · key request (flags: nonce length 1; type 1, stage 0, OID; nonce; no perms)
    assert block.encode() == bytes.fromhex("00026001030101ff0001000301610700")
    rekey = TepRekey(OID(6, b"d"), block)
    assert encode_tep(rekey) == b"\x11" + bytes.fromhex("060164") + block.encode()
    assert encode_tep(TepConfirm(bytes(32))) == b"\x21" + bytes(32)
    assert encode_tep(TepReject(4)) == b"\x00\x04"
    assert encode_tep(TepConfirmAck()) == b"\x21"
    assert encode_tep(TepEndSession()) == b"\x05"
    assert encode_tep(TepSessionEnding()) == b"\x06"
    init = ResponderInit(0x80, b"\xaa")
    assert init.encode() == bytes.fromhex("808001aa")
    assert ResponderInit(None).encode() == b"\x00"
    assert PermissionScope(1, (5,)).encode() == bytes.fromhex("4105")
    assert AuthenticatorBlock(3, (0x3FFFFFFD,)).encode() == bytes.fromhex("0301fffffffd0000")
    assert SecurityMode.ccm(CcmOptions(min_tag=8)).ccm_options().tag_length == 8


@pytest.mark.parametrize(
    ("payload", "kwargs", "why"),
    [
        (b"", {"is_response": False}, "truncated"),
        (b"\x07", {"is_response": False}, "not a valid command"),
        (b"\x11", {"is_response": True}, "not a valid response"),
        (b"\x05\x00", {"is_response": False}, "trailing"),
        (b"\x21" + bytes(31), {"is_response": False}, "truncated"),
        # Security mode id outside 0x6000..0x6FFF.
        (b"\x01\x00\x02\x50\x01\x00", {"is_response": False}, "security mode"),
        # Key request with reserved bits 0x30.
        (b"\x01\x00\x02\x60\x01\x00\x30", {"is_response": False}, "reserved"),
    ],
)
def test_bad_payloads(payload: bytes, kwargs: dict[str, bool], why: str) -> None:
    with pytest.raises(BadPacket, match=why):
        decode_tep_untrusted(payload, **kwargs)


def test_permission_scope_mode_zero_with_count_is_refused() -> None:
    accept = TepAccept(bytes(64), bytes(32), None, KeyRequest(Credential(OID(3, b"b")), b"\x01"))
    data = bytearray(encode_tep(accept))
    data[-2:] = b"\x01\x01"  # responder validation: one scope, mode 0, count 1
    with pytest.raises(BadPacket, match="mode 0"):
        decode_tep_untrusted(bytes(data), is_response=True, answers_rekey=False)


@pytest.mark.parametrize(
    "raw", [b"", b"\x01", b"\x01\x01", b"\x01\x03\x05", b"\x00\x00", b"\x80\x01\x00", b"x"]
)
def test_permission_set_refuses_bad_encodings(raw: bytes) -> None:
    with pytest.raises(ValueError):
        PermissionSet(raw)


@pytest.mark.parametrize(
    "make",
    [
        lambda: KeyRequest(Credential(OID(3, b"a")), b""),
        lambda: KeyRequest(Credential(OID(3, b"a")), bytes(17)),
        lambda: KeyRequest("who", b"\x01"),  # type: ignore[arg-type]
        lambda: KeyRequest(Credential(OID(3, b"a")), b"\x01", b"\x00"),  # type: ignore[arg-type]
        lambda: Credential("node"),  # type: ignore[arg-type]
        lambda: Credential(OID(3, b"a"), credential_type=C2_MAX + 1),
        lambda: Credential(OID(3, b"a"), stage=256),
        lambda: SecurityMode(0x5FFF),
        lambda: SecurityMode(value=bytes(256)),
        lambda: SecurityMode(family=-1),
        lambda: InitiatorBlock("r"),  # type: ignore[arg-type]
        lambda: InitiatorBlock(KeyRequest(Credential(OID(3)), b"1"), "m"),  # type: ignore[arg-type]
        lambda: InitiatorBlock(KeyRequest(Credential(OID(3)), b"1"), desired_duration=256),
        lambda: ResponderInit(C4_MAX + 1),
        lambda: ResponderInit(1, "state"),  # type: ignore[arg-type]
        lambda: PermissionScope(4),
        lambda: PermissionScope(0, (1,)),
        lambda: PermissionScope(1, (C4_MAX + 1,)),
        lambda: PermissionScope(1, tuple(range(64))),
        lambda: PermissionSet("00"),  # type: ignore[arg-type]
        lambda: AuthenticatorBlock(responder_validation=[PermissionScope(0)]),  # type: ignore[arg-type]
        lambda: AuthenticatorBlock(scope=[1]),  # type: ignore[arg-type]
        lambda: AuthenticatorBlock(initiator_validation=(1,)),  # type: ignore[arg-type]
        lambda: AuthenticatorBlock(granted_duration=True),
        lambda: TepRekey("d", InitiatorBlock(KeyRequest(Credential(OID(3)), b"1"))),  # type: ignore[arg-type]
        lambda: TepRekey(None, "block"),  # type: ignore[arg-type]
        lambda: TepRequest("block"),  # type: ignore[arg-type]
        lambda: TepConfirm(bytes(31)),
        lambda: TepReject(256),
        lambda: TepReject(1, "why"),  # type: ignore[arg-type]
        lambda: TepAccept(bytes(63), bytes(32), None, KeyRequest(Credential(OID(3)), b"1")),
        lambda: TepAccept(bytes(64), bytes(32), "init", KeyRequest(Credential(OID(3)), b"1")),  # type: ignore[arg-type]
        lambda: TepAccept(bytes(64), bytes(32), None, "responder"),  # type: ignore[arg-type]
        lambda: TepAccept(bytes(64), bytes(32), None, KeyRequest(Credential(OID(3)), b"1"), "a"),  # type: ignore[arg-type]
        lambda: SecurityMode(0x6002).ccm_options(),
    ],
)
def test_constructors_refuse_bad_values(make: object) -> None:
    with pytest.raises((ValueError, BadPacket)):
        make()  # type: ignore[operator]


# -- tshark ---------------------------------------------------------------------

DOMAIN = OID(6, b"example.org")
INITIATOR = OID(3, b"client@example.org")
RESPONDER = OID(3, b"server@example.org")


def frame(pdu: TepPdu, op_count: int) -> Datagram:
    op_id_type = OpIdType.IMPLIED_RECEIVER if pdu.IS_RESPONSE else OpIdType.IMPLIED_SENDER
    packet = DppPacket(
        AppId.TEP,
        encode_tep(pdu),
        is_response=pdu.IS_RESPONSE,
        op_id_type=op_id_type,
        op_count=op_count,
    )
    return Datagram(encode_frame(packet), from_client=not pdu.IS_RESPONSE)


@pytest.mark.external
def test_tshark_decodes_our_tep() -> None:
    permissions = PermissionSet(bytes.fromhex("02040302abcd"))
    block = InitiatorBlock(
        KeyRequest(Credential(INITIATOR), bytes(range(16)), permissions),
        SecurityMode.ccm(CcmOptions(min_tag=8, max_tag=16)),
        desired_duration=9,
    )
    responder = KeyRequest(Credential(RESPONDER, credential_type=2), b"\x55" * 8)
    authenticator = AuthenticatorBlock(
        7, (0x3FFFFFFD,), (PermissionScope(1, (4, 5)),), (PermissionScope(0),)
    )
    sequence: list[tuple[TepPdu, int]] = [
        (TepRekey(DOMAIN, block), 1),
        (
            TepAccept(
                bytes(64), bytes(32), ResponderInit(9, b"\x01\x02"), responder, authenticator
            ),
            1,
        ),
        (TepConfirm(b"\x33" * 32), 1),
        (TepConfirmAck(), 1),
        (TepRequest(block), 2),
        (TepReject(3, b"no"), 2),
        (TepEndSession(), 3),
        (TepSessionEnding(), 4),
    ]
    result = check_datagrams([frame(pdu, op) for pdu, op in sequence])
    assert result.problems == []
    assert [info.strip() for info in result.info] == [
        "TEP Rekey",
        "TEP Accept",
        "TEP Confirm",
        "TEP Confirm Ack",
        "TEP Request",
        "TEP Reject",
        "TEP End Session",
        "TEP Session Ending",
    ]
    text = result.verbose
    assert "Object ID: [{06}:example.org]" in text
    assert "Object ID: [{03}:client@example.org]" in text
    assert "Object ID: [{03}:server@example.org]" in text
    assert "Desired Duration: 9" in text
    assert "CCM Minimum MAC: 3" in text  # (8 - 2) / 2
    assert "CCM Maximum MAC: 7" in text
    assert "Nonce: 000102030405060708090a0b0c0d0e0f" in text
    assert "Nonce: 5555555555555555" in text
    assert "State Identifier: 9" in text
    assert "Granted Duration: 7" in text
    assert "Credential Type: 2" in text
    assert "Ticket Confirmation: " + "33" * 32 in text
    assert "Code: 3" in text
