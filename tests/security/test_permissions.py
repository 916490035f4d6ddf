"""Permission evaluation: every action per pattern, deny by default, covers()."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.security.permissions import (
    allowed_actions,
    covers,
    is_allowed,
    may_claim,
    may_provide,
    may_request,
)
from dofpy.wire.oid import IID, OID, OIDAttribute
from dofpy.wire.permissions import (
    Action,
    BindingPermission,
    IamPermission,
    PermissionSet,
    ProviderPermission,
    RequestorPermission,
)

DEV = OID(3, b"dev@example.org")
OTHER = OID(3, b"other@example.org")
SENSOR_CLASS_OBJ = OID(9, b"sensor-1")
IFACE = IID(1, b"\x01")
IFACE2 = IID(1, b"\x02")
ALL = [Action.READ, Action.WRITE, Action.EXECUTE, Action.SUBSCRIBE, Action.PROVIDE]


def test_deny_by_default() -> None:
    for action in ALL:
        assert not is_allowed(PermissionSet(), action, DEV, IFACE)
        assert not is_allowed([RequestorPermission(), ProviderPermission()], action, DEV, IFACE)


@pytest.mark.parametrize("granted", ALL)
def test_each_action_allows_only_itself(granted: Action) -> None:
    permissions = [BindingPermission(granted, DEV, IFACE)]
    for action in ALL:
        assert is_allowed(permissions, action, DEV, IFACE) == (action == granted)


def test_exact_object_pattern() -> None:
    permissions = [BindingPermission(Action.READ, DEV)]
    assert is_allowed(permissions, Action.READ, DEV, IFACE)
    assert is_allowed(permissions, Action.READ, DEV, IFACE2)  # any interface
    assert not is_allowed(permissions, Action.READ, OTHER, IFACE)
    assert not is_allowed(permissions, Action.READ, OID(0), IFACE)
    # The target's attributes do not make it another object...
    with_provider = OID(3, b"dev@example.org", (OIDAttribute.with_oid(0, OTHER),))
    assert is_allowed(permissions, Action.READ, with_provider, IFACE)
    # ...but a pattern with attributes matches only that exact OID.
    strict = [BindingPermission(Action.READ, with_provider)]
    assert is_allowed(strict, Action.READ, with_provider, IFACE)
    assert not is_allowed(strict, Action.READ, DEV, IFACE)


def test_interface_pattern() -> None:
    permissions = [BindingPermission(Action.EXECUTE, DEV, IFACE)]
    assert is_allowed(permissions, Action.EXECUTE, DEV, IFACE)
    assert not is_allowed(permissions, Action.EXECUTE, DEV, IFACE2)


def test_wildcard_and_class_patterns() -> None:
    anything = [BindingPermission(Action.SUBSCRIBE, OID(0))]
    assert is_allowed(anything, Action.SUBSCRIBE, DEV, IFACE)
    assert is_allowed(anything, Action.SUBSCRIBE, OID(0), IFACE)
    by_class = [BindingPermission(Action.WRITE, OID(9), class_match=True)]
    assert is_allowed(by_class, Action.WRITE, SENSOR_CLASS_OBJ, IFACE)
    assert not is_allowed(by_class, Action.WRITE, DEV, IFACE)
    assert not is_allowed(by_class, Action.WRITE, OID(0), IFACE)


def test_several_actions_need_each_one() -> None:
    permissions = [BindingPermission(Action.READ, DEV), BindingPermission(Action.WRITE, OID(0))]
    assert is_allowed(permissions, Action.READ | Action.WRITE, DEV, IFACE)
    assert not is_allowed(permissions, Action.READ | Action.WRITE, OTHER, IFACE)
    assert allowed_actions(permissions, DEV, IFACE) == Action.READ | Action.WRITE
    with pytest.raises(ValueError, match="at least one"):
        is_allowed(permissions, Action(0), DEV, IFACE)


def test_role_and_identity_permissions() -> None:
    permissions = PermissionSet((IamPermission(DEV), RequestorPermission()))
    assert may_claim(permissions, DEV)
    assert not may_claim(permissions, OTHER)
    assert may_request(permissions)
    assert not may_provide(permissions)
    assert may_provide([ProviderPermission()])


def test_covers() -> None:
    granted = [
        BindingPermission(Action.READ | Action.SUBSCRIBE, OID(0), IFACE),
        BindingPermission(Action.WRITE, OID(9), class_match=True),
        BindingPermission(Action.EXECUTE, DEV),
        RequestorPermission(),
    ]
    assert covers(granted, [])
    assert covers(granted, [BindingPermission(Action.READ, DEV, IFACE)])
    assert covers(granted, [BindingPermission(Action.READ | Action.SUBSCRIBE, OID(0), IFACE)])
    assert covers(granted, [BindingPermission(Action.WRITE, SENSOR_CLASS_OBJ, IFACE)])
    assert covers(granted, [BindingPermission(Action.WRITE, OID(9), class_match=True)])
    assert covers(granted, [BindingPermission(Action.EXECUTE, DEV, IFACE2)])
    assert covers(granted, [RequestorPermission()])
    assert not covers(granted, [ProviderPermission()])
    assert not covers(granted, [BindingPermission(Action.READ, DEV)])  # any interface
    assert not covers(granted, [BindingPermission(Action.READ, DEV, IFACE2)])
    assert not covers(granted, [BindingPermission(Action.EXECUTE, OID(0))])
    assert not covers(granted, [BindingPermission(Action.EXECUTE, OID(3), class_match=True)])
    assert not covers(granted, [BindingPermission(Action.PROVIDE, DEV)])
    # Two grants together cover two actions.
    assert covers(
        [BindingPermission(Action.READ, DEV), BindingPermission(Action.WRITE, OID(0))],
        [BindingPermission(Action.READ | Action.WRITE, DEV)],
    )


objects = st.sampled_from([DEV, OTHER, SENSOR_CLASS_OBJ, OID(0)])
interfaces = st.sampled_from([IFACE, IFACE2])
patterns = st.one_of(
    st.builds(BindingPermission, st.integers(1, 31).map(Action), objects, st.none() | interfaces),
    st.builds(
        lambda a, i: BindingPermission(a, OID(9), i, class_match=True),
        st.integers(1, 31).map(Action),
        st.none() | interfaces,
    ),
)


@given(st.lists(patterns, max_size=3), patterns, objects, interfaces)
def test_covered_requests_allow_nothing_more(
    granted: list[BindingPermission], wanted: BindingPermission, obj: OID, iface: IID
) -> None:
    """Whatever a covered request allows, the grants allow too."""
    if covers(granted, [wanted]):
        assert allowed_actions([wanted], obj, iface) & ~allowed_actions(granted, obj, iface) == 0
