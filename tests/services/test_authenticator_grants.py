"""The text form of a permission (list, audit, ``ungrant --permission``):
``parse_permission`` inverts ``describe_permission`` for every permission, and
schema 1's audit reprs render to the same text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.wire.oid import OID
from dofpy.wire.permissions import (
    ActAsPermission,
    Action,
    BindingPermission,
    DefinePermission,
    IamPermission,
    Permission,
    ProviderPermission,
    RawPermission,
    RequestorPermission,
    TunnelDomainPermission,
)
from dofpy_services.authenticator.grants import (
    describe_permission,
    legacy_permission_text,
    parse_binding,
    parse_permission,
)
from tests.wire.test_oid import iids, oids, plain_oids

actions = st.integers(1, 0x1F).map(Action)


@st.composite
def bindings(draw: st.DrawFn, objects: st.SearchStrategy[OID]) -> BindingPermission:
    interface = draw(st.none() | iids)
    if draw(st.booleans()):
        class_id = draw(st.integers(1, 0x3FFF))
        return BindingPermission(draw(actions), OID(class_id), interface, class_match=True)
    obj = draw(objects)
    return BindingPermission(draw(actions), obj, interface)


def permissions(objects: st.SearchStrategy[OID]) -> st.SearchStrategy[Permission]:
    return st.one_of(
        bindings(objects),
        st.builds(IamPermission, oids()),
        st.builds(ActAsPermission, oids()),
        st.builds(TunnelDomainPermission, oids()),
        st.just(RequestorPermission()),
        st.just(ProviderPermission()),
        st.builds(DefinePermission, st.binary(max_size=40)),
        st.integers(0, 0x3FFF)
        .filter(lambda t: t not in (1, 3, 5, 128, 130, 131, 133))
        .flatmap(
            lambda t: st.builds(
                RawPermission, st.just(t), st.binary(max_size=20) if t % 2 else st.none()
            )
        ),
    )


@given(permissions(oids()))
def test_text_form_round_trip(permission: Permission) -> None:
    assert parse_permission(describe_permission(permission)) == permission


@given(permissions(plain_oids()))
def test_schema_1_reprs_render_as_the_text_form(permission: Permission) -> None:
    rendered = legacy_permission_text(repr(permission))
    if isinstance(permission, BindingPermission | IamPermission | ActAsPermission):
        if not getattr(permission, "identity", OID(0)).attributes:
            assert rendered == describe_permission(permission)
    elif isinstance(permission, RequestorPermission | ProviderPermission):
        assert rendered == describe_permission(permission)


def test_text_forms() -> None:
    assert describe_permission(parse_binding("sr", None, "[1:{01}]")) == "rs * [{01}:{01}]"
    assert describe_permission(parse_binding("x", "class:9", "*")) == "x class:9 *"
    assert describe_permission(parse_binding("p", "dev@example.org", None)) == (
        "p [{03}:dev@example.org] *"
    )
    assert parse_permission("iam alias@example.org") == IamPermission(OID(3, b"alias@example.org"))
    assert legacy_permission_text("SomethingElse(1)") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected 'LETTERS OBJECT INTERFACE'"),
        ("rs *", "expected 'LETTERS OBJECT INTERFACE'"),
        ("q * *", "actions 'q': unknown action letter 'q'"),
        ("r class:x *", "object 'class:x': class 'x' is not a number"),
        ("r * [1:", "interface '[1:'"),
        ("iam", "iam needs an OID"),
        ("define zz", "'zz' is not hexadecimal"),
        ("type x", "permission type 'x' is not a number"),
        ("type 7", "odd permission type 7 carries data"),
        ("type 1 00", "permission type 1 has its own class"),
    ],
)
def test_bad_text_names_the_part_at_fault(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("*", r"\*")):
        parse_permission(text)
