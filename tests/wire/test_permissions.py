"""Permission sets (Security.1 / Security.2): round trips, refusals, tshark."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.testing.tshark import Datagram, check_datagrams
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame
from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import (
    ActAsPermission,
    Action,
    BindingPermission,
    DefinePermission,
    IamPermission,
    Permission,
    PermissionSet,
    PermissionType,
    ProviderPermission,
    RawPermission,
    RequestorPermission,
    TunnelDomainPermission,
    decode_permission_set_untrusted,
    encode_permission,
)
from dofpy.wire.security import KeyRequest, SecurityIdentity
from dofpy.wire.trp import RequestRandomCommand, encode_trp

oids = st.builds(OID, st.integers(1, 0x3FFFFFFF), st.binary(max_size=20))
iids = st.builds(
    IID,
    st.integers(0, 63),
    st.sampled_from([1, 2, 4, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)
actions = st.integers(0, 0x1F).map(Action)
_KNOWN = {int(t) for t in PermissionType}


def _binding(draw_actions: Action, obj: OID, iid: IID | None, kind: int) -> BindingPermission:
    if kind == 0:
        return BindingPermission(draw_actions, OID(0), iid)
    if kind == 1:
        return BindingPermission(draw_actions, OID(obj.class_id), iid, class_match=True)
    return BindingPermission(draw_actions, obj, iid)


bindings = st.builds(_binding, actions, oids, st.none() | iids, st.integers(0, 2))
permissions: st.SearchStrategy[Permission] = st.one_of(
    bindings,
    st.builds(IamPermission, oids),
    st.builds(ActAsPermission, oids),
    st.just(RequestorPermission()),
    st.just(ProviderPermission()),
    st.builds(DefinePermission, st.binary(max_size=10)),
    st.builds(TunnelDomainPermission, oids),
    st.integers(0, 0x7FFF)
    .filter(lambda t: t not in _KNOWN)
    .flatmap(
        lambda t: st.builds(
            RawPermission, st.just(t), st.binary(max_size=8) if t % 2 else st.none()
        )
    ),
)
permission_sets = st.lists(permissions, max_size=6).map(lambda p: PermissionSet(tuple(p)))


@given(permission_sets)
def test_round_trip(permission_set: PermissionSet) -> None:
    encoded = permission_set.encode()
    assert decode_permission_set_untrusted(encoded) == permission_set


@given(permission_sets)
def test_every_truncation_is_refused(permission_set: PermissionSet) -> None:
    encoded = permission_set.encode()
    for cut in range(len(encoded)):
        with pytest.raises(BadPacket):
            decode_permission_set_untrusted(encoded[:cut])
    with pytest.raises(BadPacket):
        decode_permission_set_untrusted(encoded + b"\x00")


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_badpacket(blob: bytes) -> None:
    try:
        decoded = decode_permission_set_untrusted(blob)
    except BadPacket:
        return
    assert decoded.encode() == blob


def test_binding_layout() -> None:
    binding = BindingPermission(Action.READ | Action.EXECUTE, OID(3, b"dev"), IID(1, b"\x01"))
    # type 1 · length 8 · flags (r|x|interface) · OID 03 03 "dev" · IID 05 01
    assert encode_permission(binding) == bytes.fromhex("01 08 45 03 03 646576 05 01")
    assert encode_permission(RequestorPermission()) == bytes.fromhex("8080")
    assert encode_permission(ProviderPermission()) == bytes.fromhex("8082")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("01 01 04 01 0000 00", "trailing"),  # binding with bytes after the OID
        ("01 01 03 20 0000", "reserved"),  # reserved binding flag
        ("01 01 03 81 0000", "class"),  # class match on the broadcast OID
        ("01 01 04 81 030161", "class"),  # class match with data
        ("01 03 02 0000 00", "trailing"),  # IAM with a trailing byte
        ("05 01", "claims"),  # claims five permissions
    ],
)
def test_refused(data: str, reason: str) -> None:
    with pytest.raises(BadPacket, match=reason):
        decode_permission_set_untrusted(bytes.fromhex(data))


def test_constructors_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="own class"):
        RawPermission(1, b"")
    with pytest.raises(ValueError, match="carries data"):
        RawPermission(7)
    with pytest.raises(ValueError, match="carries no data"):
        RawPermission(8, b"")
    with pytest.raises(ValueError, match="rwxsp"):
        BindingPermission(Action(0x20))
    with pytest.raises(ValueError, match="class-match"):
        BindingPermission(Action.READ, OID(3, b"x"), class_match=True)
    with pytest.raises(ValueError, match="tuple"):
        PermissionSet([RequestorPermission()])  # type: ignore[arg-type]


def test_action_letters() -> None:
    assert Action.parse("xr") == Action.READ | Action.EXECUTE
    assert (Action.READ | Action.PROVIDE).letters() == "rp"
    assert Action(0).letters() == "-"
    with pytest.raises(ValueError, match="letter"):
        Action.parse("q")


def test_tshark_decodes_permission_sets() -> None:
    every_kind = PermissionSet(
        (
            BindingPermission(Action.READ | Action.SUBSCRIBE, OID(3, b"dev@example.org")),
            BindingPermission(Action.WRITE, OID(3), IID(1, b"\x01\x02"), class_match=True),
            BindingPermission(Action.PROVIDE, OID(0), IID(2, bytes(16))),
            IamPermission(OID(3, b"me")),
            ActAsPermission(OID(3, b"you")),
            RequestorPermission(),
            ProviderPermission(),
            DefinePermission(b"\x01\x02"),
            TunnelDomainPermission(OID(6, b"other.org")),
            RawPermission(9, b"zz"),
            RawPermission(200),
        )
    )
    command = RequestRandomCommand(
        OID(6, b"example.org"),
        KeyRequest(SecurityIdentity(OID(3, b"dev@example.org")), b"\x07" * 8, every_kind),
    )
    frame = encode_frame(
        DppPacket(
            app_id=AppId.TRP,
            payload=encode_trp(command),
            op_id_type=OpIdType.IMPLIED_SENDER,
            op_count=1,
        )
    )
    result = check_datagrams([Datagram(frame)])
    assert result.problems == []
    types = [line.strip() for line in result.verbose.splitlines() if "Permission Type:" in line]
    assert types == [
        "Permission Type: Binding (1)",
        "Permission Type: Binding (1)",
        "Permission Type: Binding (1)",
        "Permission Type: IAM (3)",
        "Permission Type: ACTAS (5)",
        "Permission Type: Requestor (128)",
        "Permission Type: Provider (130)",
        "Permission Type: Define (131)",
        "Permission Type: Tunnel Domain (133)",
        "Permission Type: Unknown (9)",
        "Permission Type: Unknown (200)",
    ]
