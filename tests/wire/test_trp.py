"""TRP (application 129) PDUs: round trips, refusals, and tshark decoding them."""

from __future__ import annotations

import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.testing.tshark import Datagram, check_datagrams
from dofpy.wire import trp
from dofpy.wire._codec import C4_MAX
from dofpy.wire.ccm import CcmOptions
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame
from dofpy.wire.oid import OID
from dofpy.wire.security import (
    GROUP_SESSION_SCOPE,
    AuthenticatorBlock,
    InitiatorBlock,
    KeyRequest,
    PermissionScope,
    ScopeMode,
    SecurityIdentity,
    SecurityMode,
    Ticket,
)
from dofpy.wire.trp import (
    RequestKekCommand,
    RequestKekResponse,
    RequestRandomCommand,
    RequestRandomResponse,
    RequestScopesCommand,
    RequestScopesResponse,
    RequestSessionCommand,
    RequestSessionResponse,
    ResolveCredentialCommand,
    ResolveCredentialResponse,
    TrpError,
    TrpPdu,
    TrpReject,
    ValidateCredentialCommand,
    ValidateCredentialResponse,
    decode_trp_untrusted,
    encode_trp,
)
from tests.wire.test_permissions import oids, permission_sets
from tests.wire.test_security_blocks import (
    authenticators,
    group_ids,
    identities,
    initiator_blocks,
    key_requests,
    modes,
    resolutions,
    tickets,
    u8,
    validations,
)

STRATEGIES: dict[type, st.SearchStrategy[TrpPdu]] = {
    TrpReject: st.builds(TrpReject, st.sampled_from(TrpError)),
    RequestKekCommand: st.builds(RequestKekCommand, oids, key_requests, oids),
    RequestKekResponse: st.builds(
        RequestKekResponse,
        tickets,
        u8,
        u8,
        u8,
        st.integers(0, 0xFFFF),
        oids,
        group_ids,
        modes,
        st.integers(0, C4_MAX),
        permission_sets,
        validations,
        validations,
    ),
    RequestRandomCommand: st.builds(RequestRandomCommand, oids, key_requests),
    RequestRandomResponse: st.builds(RequestRandomResponse, tickets),
    RequestSessionCommand: st.builds(RequestSessionCommand, oids, key_requests, initiator_blocks),
    RequestSessionResponse: st.builds(RequestSessionResponse, tickets, tickets, authenticators),
    RequestScopesCommand: st.builds(RequestScopesCommand, oids, u8, key_requests, oids),
    RequestScopesResponse: st.builds(RequestScopesResponse, tickets, u8, group_ids, validations),
    ResolveCredentialCommand: st.builds(ResolveCredentialCommand, oids, resolutions),
    ResolveCredentialResponse: st.builds(ResolveCredentialResponse, resolutions),
    ValidateCredentialCommand: st.builds(
        ValidateCredentialCommand, oids, identities, st.binary(max_size=8)
    ),
    ValidateCredentialResponse: st.builds(ValidateCredentialResponse, st.binary(max_size=8)),
}
any_pdu = st.one_of(*STRATEGIES.values())


def test_every_pdu_class_has_a_strategy() -> None:
    assert set(typing.get_args(trp.TrpPdu)) == set(STRATEGIES)


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
@given(data=st.data())
def test_round_trip(cls: type, data: st.DataObject) -> None:
    pdu = data.draw(STRATEGIES[cls])
    assert decode_trp_untrusted(encode_trp(pdu), pdu.is_response) == pdu


@given(any_pdu)
def test_every_truncation_and_extension_is_refused(pdu: TrpPdu) -> None:
    encoded = encode_trp(pdu)
    opaque_tail = isinstance(pdu, ValidateCredentialCommand | ValidateCredentialResponse)
    for cut in range(len(encoded)):
        if opaque_tail and cut >= len(encoded) - len(pdu.data):
            break  # the opaque data may be any length
        with pytest.raises(BadPacket):
            decode_trp_untrusted(encoded[:cut], pdu.is_response)
    if not opaque_tail:
        with pytest.raises(BadPacket):
            decode_trp_untrusted(encoded + b"\x00", pdu.is_response)


@given(any_pdu, st.data())
def test_mutations_raise_only_badpacket_or_are_canonical(pdu: TrpPdu, data: st.DataObject) -> None:
    encoded = bytearray(encode_trp(pdu))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(u8)
    try:
        decoded = decode_trp_untrusted(bytes(encoded), pdu.is_response)
    except BadPacket:
        return
    assert encode_trp(decoded) == bytes(encoded)


@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_raise_only_badpacket(blob: bytes, is_response: bool) -> None:
    try:
        decoded = decode_trp_untrusted(blob, is_response)
    except BadPacket:
        return
    assert encode_trp(decoded) == blob


@pytest.mark.parametrize(
    ("payload", "is_response", "reason"),
    [
        ("", False, "empty"),
        ("07", False, "unsupported"),
        ("00", False, "unsupported"),
        ("83", True, "unsupported"),
        ("0009", True, "error code"),
        # key request with reserved bits 0x30 set
        ("02 0600 30 0100 0300 00 00", False, "reserved"),
        # identity stage 1
        ("02 0600 00 0101 0300 00 00", False, "stage"),
        # security mode id outside 0x6000..0x6FFF (Request Session initiator block)
        ("03 0600 00 0100 0300 00 00 05 02 5001 00", False, "security mode"),
        # reference permission scope with a count
        ("03" + "00" * 128 + "05 00 01 01 00", True, "reference"),
    ],
)
def test_refused_payloads(payload: str, is_response: bool, reason: str) -> None:
    with pytest.raises(BadPacket, match=reason):
        decode_trp_untrusted(bytes.fromhex(payload), is_response)


def test_request_session_layout() -> None:
    command = RequestSessionCommand(
        OID(6, b"d"),
        KeyRequest(SecurityIdentity(OID(3, b"r")), b"\xaa"),
        InitiatorBlock(
            KeyRequest(SecurityIdentity(OID(3, b"i")), b"\xbb\xcc"), SecurityMode.ccm(), 9
        ),
    )
    assert encode_trp(command) == bytes.fromhex(
        "03"  # opcode
        "06 01 64"  # domain [6:d]
        "00 01 00 03 01 72 aa 00"  # responder: flags, identity, nonce, no permissions
        "09 02 6001 03 01 01 ff"  # duration, CCM mode (AES-256, encrypted, 16-byte tag)
        "01 01 00 03 01 69 bbcc 00"  # initiator key request
    )


def test_constructors_refuse_bad_values() -> None:
    # The blocks' refusals are in test_security_blocks.py.
    with pytest.raises(ValueError, match="SSID"):
        RequestKekResponse(Ticket(bytes(32), bytes(32)), 0, 0, 0, 0, OID(4), (), SecurityMode(), -1)
    with pytest.raises(ValueError, match="security_mode"):
        RequestKekResponse(Ticket(bytes(32), bytes(32)), 0, 0, 0, 0, OID(4), (), "ccm", 1)  # type: ignore[arg-type]


EXPECTED_INFO = {
    TrpReject: "Reject",
    RequestKekCommand: "TRP Request KEK",
    RequestKekResponse: "TRP Request KEK Response",
    RequestRandomCommand: "TRP Request Random",
    RequestRandomResponse: "TRP Request Random Response",
    RequestSessionCommand: "TRP Request Session",
    RequestSessionResponse: "TRP Request Session Response",
    RequestScopesCommand: "TRP Request Security Scopes",
    RequestScopesResponse: "TRP Request Security Scopes Response",
    ResolveCredentialCommand: "TRP Resolve Credential",
    ResolveCredentialResponse: "TRP Resolve Credential Response",
    ValidateCredentialCommand: "TRP Validate Credential",
    ValidateCredentialResponse: "TRP Validate Credential Response",
}


def frame(pdu: TrpPdu, op_count: int) -> Datagram:
    packet = DppPacket(
        app_id=AppId.TRP,
        payload=encode_trp(pdu),
        is_response=pdu.is_response,
        op_id_type=OpIdType.IMPLIED_RECEIVER if pdu.is_response else OpIdType.IMPLIED_SENDER,
        op_count=op_count,
    )
    return Datagram(encode_frame(packet), from_client=not pdu.is_response)


@settings(max_examples=3, deadline=None)
@given(st.tuples(*(STRATEGIES[cls] for cls in EXPECTED_INFO)))
def test_tshark_decodes_every_pdu(pdus: tuple[TrpPdu, ...]) -> None:
    result = check_datagrams([frame(pdu, index + 1) for index, pdu in enumerate(pdus)])
    assert result.problems == []
    assert [info.strip() for info in result.info] == list(EXPECTED_INFO.values())
    assert all(proto.startswith("raw:ip:udp:dof:dof.trp") for proto in result.protocols)


def test_tshark_shows_the_fields_we_meant() -> None:
    command = RequestSessionCommand(
        OID(6, b"example.org"),
        KeyRequest(SecurityIdentity(OID(3, b"resp@example.org")), bytes(range(16))),
        InitiatorBlock(
            KeyRequest(SecurityIdentity(OID(3, b"init@example.org")), b"\x01\x02\x03\x04"),
            SecurityMode.ccm(CcmOptions(min_tag=8)),
            42,
        ),
    )
    response = RequestSessionResponse(
        Ticket(b"\x11" * 32, b"\x22" * 32),
        Ticket(b"\x33" * 32, b"\x44" * 32),
        AuthenticatorBlock(
            30,
            (7, GROUP_SESSION_SCOPE),
            (PermissionScope(ScopeMode.ABSOLUTE, (1, 300)),),
            (PermissionScope(ScopeMode.REFERENCE),),
        ),
    )
    reject = TrpReject(TrpError.UNKNOWN_INITIATOR)
    result = check_datagrams([frame(command, 5), frame(response, 5), frame(reject, 6)])
    assert result.problems == []
    verbose = result.verbose
    assert "[{06}:example.org]" in verbose
    assert "[{03}:init@example.org]" in verbose
    assert "Desired Duration: 42" in verbose
    assert "Nonce: 000102030405060708090a0b0c0d0e0f" in verbose
    assert "MAC: " + "11" * 32 in verbose
    assert "KEY: " + "44" * 32 in verbose
    assert "Granted Duration: 30" in verbose
    assert "1073741821 (session scope)" in verbose
    assert "Permission Group Identifier: 300" in verbose
    assert "Unknown Initiator (3)" in verbose


def test_tshark_decodes_every_ccm_option_length_dofpy_sends() -> None:
    # The CCM option value is parsed by the dissector; dofpy refuses the
    # lengths it calls malformed (a count with too few bytes after it) and
    # every length it does send decodes cleanly.
    request = KeyRequest(SecurityIdentity(OID(1, b"")), b"\x00")
    values = [
        b"",
        b"\x00\x00",
        b"\x00\x00\x00",
        b"\x01\x01\x01",
        b"\x01\x01\x01\x01",
        b"\x02\x01\x02\xc9",
    ]
    pdus = [
        RequestSessionCommand(
            OID(1, b""), request, InitiatorBlock(request, SecurityMode(0x6001, value), 0)
        )
        for value in values
    ]
    result = check_datagrams([frame(pdu, index + 1) for index, pdu in enumerate(pdus)])
    assert result.problems == []
    assert [info.strip() for info in result.info] == ["TRP Request Session"] * len(values)
    for short in (b"\x00", b"\x01", b"\x01\x01", b"\x02\x01\x01", b"\x05\x01"):
        with pytest.raises(ValueError, match="cut short"):
            SecurityMode(0x6001, short)
