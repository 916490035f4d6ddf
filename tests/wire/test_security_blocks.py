"""The shared security blocks (dofpy.wire.security) used by TEP and TRP:
round trips, truncations, mutations, known encodings and refusals.

The strategies here are the ones tests/wire/test_tep.py and test_trp.py build
their PDUs from; tshark checks the blocks inside those PDUs there.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.wire._codec import C2_MAX, C4_MAX, Reader
from dofpy.wire.ccm import CcmOptions
from dofpy.wire.oid import OID
from dofpy.wire.permissions import decode_permission_set_untrusted
from dofpy.wire.security import (
    GROUP_SESSION_SCOPE,
    AuthenticatorBlock,
    IdentityResolution,
    InitiatorBlock,
    KeyRequest,
    PermissionScope,
    ScopeMode,
    SecurityIdentity,
    SecurityMode,
    Ticket,
    encode_validation,
    read_authenticator_block,
    read_identity,
    read_identity_resolution,
    read_initiator_block,
    read_key_request,
    read_security_mode,
    read_ticket,
    read_validation,
)
from tests.wire.test_permissions import oids, permission_sets

# -- strategies (shared with test_tep.py and test_trp.py) --------------------------

u8 = st.integers(0, 255)
group_ids = st.lists(st.integers(0, C4_MAX), max_size=4).map(tuple)
identities = st.builds(SecurityIdentity, oids, st.integers(0, C2_MAX))
resolutions = st.builds(IdentityResolution, st.integers(0, C2_MAX), u8, st.binary(max_size=8))
key_requests = st.builds(
    KeyRequest,
    identities,
    st.binary(min_size=1, max_size=16),
    permission_sets,
    l_flag=st.booleans(),
    f_flag=st.booleans(),
)
tickets = st.builds(
    Ticket, st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32)
)


def _mode_fits(mode: tuple[int, bytes, int]) -> bool:
    protocol_id, value, family = mode
    ccm = protocol_id == 0x6001 and family == 2
    return not (ccm and value and len(value) < value[0] + 2)


# Any id, bytes and family, well-formed CCM options among them; the CCM
# security mode on its own with arbitrary values is drawn often (its value
# is what the dissector parses), those cut short are refused below.
modes = (
    st.tuples(
        st.one_of(st.just(0x6001), st.integers(0x6000, 0x6FFF)),
        st.binary(max_size=8),
        st.one_of(st.just(2), u8),
    )
    .filter(_mode_fits)
    .map(lambda mode: SecurityMode(*mode))
)
initiator_blocks = st.builds(InitiatorBlock, key_requests, modes, u8)
scopes = st.one_of(
    st.just(PermissionScope(ScopeMode.REFERENCE)),
    st.builds(
        PermissionScope,
        st.sampled_from([ScopeMode.RELATIVE, ScopeMode.ABSOLUTE, ScopeMode.CONTINUED]),
        group_ids,
    ),
)
validations = st.lists(scopes, max_size=3).map(tuple)
authenticators = st.builds(AuthenticatorBlock, u8, group_ids, validations, validations)

# Each block with its reader (a validation stands for Security.11 and 12).
BLOCKS: dict[str, tuple[st.SearchStrategy[object], Callable[[Reader], object]]] = {
    "identity": (identities, read_identity),
    "identity resolution": (resolutions, read_identity_resolution),
    "key request": (key_requests, read_key_request),
    "ticket": (tickets, read_ticket),
    "security mode": (modes, read_security_mode),
    "initiator block": (initiator_blocks, read_initiator_block),
    "validation": (validations, read_validation),
    "authenticator block": (authenticators, read_authenticator_block),
}


def encode(block: object) -> bytes:
    if isinstance(block, tuple):  # a validation: c2 count, then the scopes
        return encode_validation(block)
    return block.encode()  # type: ignore[attr-defined, no-any-return]


def decode(data: bytes, read: Callable[[Reader], object]) -> object:
    reader = Reader(data)
    block = read(reader)
    reader.expect_end("block")
    return block


# -- round trips and hostile input ----------------------------------------------


@pytest.mark.parametrize("name", list(BLOCKS))
@given(data=st.data())
def test_round_trip(name: str, data: st.DataObject) -> None:
    strategy, read = BLOCKS[name]
    block = data.draw(strategy)
    assert decode(encode(block), read) == block


@pytest.mark.parametrize("name", list(BLOCKS))
@given(data=st.data())
def test_every_truncation_raises_bad_packet(name: str, data: st.DataObject) -> None:
    # Every block is self-delimiting, so no proper prefix is a block.
    strategy, read = BLOCKS[name]
    encoded = encode(data.draw(strategy))
    for cut in range(len(encoded)):
        with pytest.raises(BadPacket):
            decode(encoded[:cut], read)


@pytest.mark.parametrize("name", list(BLOCKS))
@given(data=st.data())
def test_mutations_raise_only_bad_packet_or_are_canonical(name: str, data: st.DataObject) -> None:
    strategy, read = BLOCKS[name]
    encoded = bytearray(encode(data.draw(strategy)))
    encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(u8)
    try:
        decoded = decode(bytes(encoded), read)
    except BadPacket:
        return
    assert encode(decoded) == bytes(encoded)


# -- known encodings -------------------------------------------------------------


def test_known_encodings() -> None:
    request = KeyRequest(SecurityIdentity(OID(3, b"a")), b"\x07")
    # duration · mode (family 2, 0x6001, 3 bytes: 1 strength AES-256, flags ff)
    # · key request (flags: nonce length 1; type 1, stage 0, OID; nonce; no perms)
    assert InitiatorBlock(request).encode() == bytes.fromhex("00026001030101ff0001000301610700")
    assert PermissionScope(ScopeMode.RELATIVE, (5,)).encode() == bytes.fromhex("4105")
    assert AuthenticatorBlock(3, (GROUP_SESSION_SCOPE,)).encode() == bytes.fromhex(
        "0301fffffffd0000"
    )
    assert Ticket.from_bytes(bytes(range(64))).encode() == bytes(range(64))
    assert IdentityResolution(2, 0, b"pk").encode() == bytes.fromhex("020002706b")


def test_ccm_security_mode() -> None:
    # The CCM option bytes are dofpy.wire.ccm's: AES-256, minimum and maximum
    # encrypt, maximum MAC code 7, minimum MAC code (tag - 2) / 2.
    assert SecurityMode.ccm().encode() == bytes.fromhex("0260010301 01ff")
    assert SecurityMode.ccm(CcmOptions(min_tag=8)).encode()[-1] == 0xFB
    assert SecurityMode.ccm(CcmOptions(min_tag=8)).ccm_options().tag_length == 8
    assert SecurityMode.ccm().ccm_options() == CcmOptions()


@pytest.mark.parametrize(
    ("hex_block", "read", "why"),
    [
        ("01 01 0300", read_identity, "stage"),  # stage 1
        ("30 0100 0300 00 00", read_key_request, "reserved"),
        ("02 5001 00", read_security_mode, "security mode"),
        ("01 01", read_validation, "reference"),  # mode 0 with a count of 1
        ("01 01", read_validation, "mode 0"),
        ("05 00", read_validation, "cannot fit"),
    ],
)
def test_bad_blocks(hex_block: str, read: Callable[[Reader], object], why: str) -> None:
    with pytest.raises(BadPacket, match=why):
        decode(bytes.fromhex(hex_block), read)


@pytest.mark.parametrize(
    "raw", [b"", b"\x01", b"\x01\x01", b"\x01\x03\x05", b"\x00\x00", b"\x80\x01\x00", b"x"]
)
def test_bad_permission_sets_are_refused(raw: bytes) -> None:
    with pytest.raises(BadPacket):
        decode_permission_set_untrusted(raw)


# -- constructors ------------------------------------------------------------------

_IDENTITY = SecurityIdentity(OID(3, b"a"))
_REQUEST = KeyRequest(_IDENTITY, b"1")


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: KeyRequest(_IDENTITY, b""), "nonce"),
        (lambda: KeyRequest(_IDENTITY, bytes(17)), "nonce"),
        (lambda: KeyRequest("who", b"\x01"), "identity"),
        (lambda: KeyRequest(_IDENTITY, b"\x01", b"\x00"), "permissions"),
        (lambda: SecurityIdentity("node"), "OID"),
        (lambda: SecurityIdentity(OID(3, b"a"), credential_type=C2_MAX + 1), "credential"),
        (lambda: SecurityIdentity(OID(3, b"a"), stage=1), "stage"),
        (lambda: SecurityIdentity(OID(3, b"a"), stage=256), "stage"),
        (lambda: IdentityResolution(-1), "credential"),
        (lambda: IdentityResolution(1, 256), "stage"),
        (lambda: IdentityResolution(1, 0, bytes(C2_MAX + 1)), "public data"),
        (lambda: Ticket(bytes(31), bytes(32)), "ticket"),
        (lambda: Ticket(bytes(32), "key"), "ticket"),
        (lambda: Ticket.from_bytes(bytes(63)), "64"),
        (lambda: SecurityMode(0x5FFF), "security mode"),
        (lambda: SecurityMode(value=bytes(256)), "value"),
        (lambda: SecurityMode(family=-1), "family"),
        (lambda: SecurityMode(value=b"\x00"), "cut short"),
        (lambda: SecurityMode(value=b"\x02\x01\x01"), "cut short"),
        (lambda: SecurityMode.ccm(CcmOptions(min_tag=5)), "min_tag"),
        (lambda: InitiatorBlock("r"), "request"),
        (lambda: InitiatorBlock(_REQUEST, "m"), "security mode"),
        (lambda: InitiatorBlock(_REQUEST, desired_duration=256), "duration"),
        (lambda: PermissionScope(4), "4"),
        (lambda: PermissionScope("1"), "ScopeMode"),
        (lambda: PermissionScope(ScopeMode.REFERENCE, (1,)), "reference"),
        (lambda: PermissionScope(ScopeMode.RELATIVE, (C4_MAX + 1,)), "group id"),
        (lambda: PermissionScope(ScopeMode.RELATIVE, tuple(range(64))), "more than 63"),
        (lambda: PermissionScope(ScopeMode.RELATIVE, [1]), "tuple"),
        (lambda: AuthenticatorBlock(responder_validation=[PermissionScope(0)]), "tuple"),
        (lambda: AuthenticatorBlock(scope=[1]), "tuple"),
        (lambda: AuthenticatorBlock(initiator_validation=(1,)), "PermissionScope"),
        (lambda: AuthenticatorBlock(granted_duration=True), "duration"),
    ],
)
def test_constructors_refuse_bad_values(make: Callable[[], object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        make()


def test_cut_short_ccm_options_on_the_wire_are_bad_packet() -> None:
    # family 2, id 0x6001, a one-byte value: a strength count with nothing after.
    with pytest.raises(BadPacket, match="cut short"):
        read_security_mode(Reader(b"\x02\x60\x01\x01\x00"))
    # The same bytes under another id are that mode's business.
    assert read_security_mode(Reader(b"\x02\x60\x02\x01\x00")).value == b"\x00"


def test_ccm_options_of_another_mode_is_bad_packet() -> None:
    with pytest.raises(BadPacket, match="not CCM"):
        SecurityMode(0x6002).ccm_options()
