"""TEP (application 128) codec: round trips, hostile input, and tshark."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.testing.tshark import Datagram, check_datagrams
from dofpy.wire._codec import C4_MAX
from dofpy.wire.ccm import CcmOptions
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame
from dofpy.wire.oid import OID
from dofpy.wire.permissions import IamPermission, PermissionSet, RawPermission
from dofpy.wire.security import (
    AuthenticatorBlock,
    InitiatorBlock,
    KeyRequest,
    PermissionScope,
    ScopeMode,
    SecurityIdentity,
    SecurityMode,
    Ticket,
)
from dofpy.wire.tep import (
    ResponderInit,
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
from tests.wire.test_permissions import oids
from tests.wire.test_security_blocks import (
    authenticators,
    initiator_blocks,
    key_requests,
    tickets,
)

# -- strategies (the blocks' are in test_security_blocks.py) ---------------------

c4s = st.integers(0, C4_MAX)
TICKET = Ticket.from_bytes(bytes(64))
_REQUEST = KeyRequest(SecurityIdentity(OID(3)), b"1")
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
        tickets,
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
    block = InitiatorBlock(KeyRequest(SecurityIdentity(OID(3, b"a")), b"\x07"))
    rekey = TepRekey(OID(6, b"d"), block)
    # opcode · domain · initiator block (see test_security_blocks.py)
    assert encode_tep(rekey) == bytes.fromhex("11 060164 00026001030101ff0001000301610700")
    assert encode_tep(TepConfirm(bytes(32))) == b"\x21" + bytes(32)
    assert encode_tep(TepReject(4)) == b"\x00\x04"
    assert encode_tep(TepConfirmAck()) == b"\x21"
    assert encode_tep(TepEndSession()) == b"\x05"
    assert encode_tep(TepSessionEnding()) == b"\x06"
    init = ResponderInit(0x80, b"\xaa")
    assert init.encode() == bytes.fromhex("808001aa")
    assert ResponderInit(None).encode() == b"\x00"


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
    responder = KeyRequest(SecurityIdentity(OID(3, b"b")), b"\x01")
    accept = TepAccept(TICKET, bytes(32), None, responder)
    data = bytearray(encode_tep(accept))
    data[-2:] = b"\x01\x01"  # responder validation: one scope, mode 0, count 1
    with pytest.raises(BadPacket, match="mode 0"):
        decode_tep_untrusted(bytes(data), is_response=True, answers_rekey=False)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ResponderInit(C4_MAX + 1),
        lambda: ResponderInit(1, "state"),  # type: ignore[arg-type]
        lambda: TepRekey("d", InitiatorBlock(_REQUEST)),  # type: ignore[arg-type]
        lambda: TepRekey(None, "block"),  # type: ignore[arg-type]
        lambda: TepRequest("block"),  # type: ignore[arg-type]
        lambda: TepConfirm(bytes(31)),
        lambda: TepReject(256),
        lambda: TepReject(1, "why"),  # type: ignore[arg-type]
        lambda: TepAccept(bytes(64), bytes(32), None, _REQUEST),  # type: ignore[arg-type]
        lambda: TepAccept(TICKET, bytes(31), None, _REQUEST),
        lambda: TepAccept(TICKET, bytes(32), "init", _REQUEST),  # type: ignore[arg-type]
        lambda: TepAccept(TICKET, bytes(32), None, "responder"),  # type: ignore[arg-type]
        lambda: TepAccept(TICKET, bytes(32), None, _REQUEST, "a"),  # type: ignore[arg-type]
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
    permissions = PermissionSet((RawPermission(4), IamPermission(OID(3, b"me"))))
    block = InitiatorBlock(
        KeyRequest(SecurityIdentity(INITIATOR), bytes(range(16)), permissions),
        SecurityMode.ccm(CcmOptions(min_tag=8, max_tag=16)),
        desired_duration=9,
    )
    responder = KeyRequest(SecurityIdentity(RESPONDER, credential_type=2), b"\x55" * 8)
    authenticator = AuthenticatorBlock(
        7,
        (0x3FFFFFFD,),
        (PermissionScope(ScopeMode.RELATIVE, (4, 5)),),
        (PermissionScope(ScopeMode.REFERENCE),),
    )
    sequence: list[tuple[TepPdu, int]] = [
        (TepRekey(DOMAIN, block), 1),
        (
            TepAccept(TICKET, bytes(32), ResponderInit(9, b"\x01\x02"), responder, authenticator),
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
