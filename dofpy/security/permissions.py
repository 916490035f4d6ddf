"""Permission evaluation: may a node holding these permissions do this?

Deny by default: an action is allowed only when some binding permission in the
set matches the object and the interface and includes that action. Several
actions asked at once must each be allowed (possibly by different permissions).

Matching (see :class:`dofpy.wire.permissions.BindingPermission`):

- object pattern = the broadcast OID: any object;
- ``class_match``: any object whose class is the pattern's class;
- otherwise one object: a pattern without attributes matches the object with
  any attributes (a provider or session attribute does not change which object
  it is); a pattern with attributes matches only an identical OID;
- interface ``None``: any interface; otherwise that interface exactly.

:func:`covers` answers the Authentication Server's question: is every
permission a node *asks* for implied by what it was *granted*?
"""

from __future__ import annotations

from collections.abc import Iterable

from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import (
    Action,
    BindingPermission,
    IamPermission,
    Permission,
    PermissionSet,
    ProviderPermission,
    RequestorPermission,
)

__all__ = [
    "allowed_actions",
    "binding_matches",
    "covers",
    "is_allowed",
    "may_claim",
    "may_provide",
    "may_request",
    "object_matches",
]


def _permissions(permissions: PermissionSet | Iterable[Permission]) -> Iterable[Permission]:
    return permissions.permissions if isinstance(permissions, PermissionSet) else permissions


def object_matches(binding: BindingPermission, obj: OID) -> bool:
    """Whether the binding's object pattern matches ``obj``."""
    pattern = binding.object_pattern
    if pattern.is_broadcast:
        return True
    if obj.is_broadcast:
        return False  # only the wildcard covers a broadcast request
    if binding.class_match:
        return obj.class_id == pattern.class_id
    if pattern.attributes:
        return obj == pattern
    return obj.without_attributes() == pattern


def binding_matches(binding: BindingPermission, obj: OID, interface: IID) -> bool:
    """Whether ``binding`` applies to the binding (``obj``, ``interface``)."""
    if binding.interface is not None and binding.interface != interface:
        return False
    return object_matches(binding, obj)


def allowed_actions(
    permissions: PermissionSet | Iterable[Permission], obj: OID, interface: IID
) -> Action:
    """Every action the permissions allow on (``obj``, ``interface``); none by default."""
    allowed = Action(0)
    for permission in _permissions(permissions):
        if isinstance(permission, BindingPermission) and binding_matches(
            permission, obj, interface
        ):
            allowed |= permission.actions
    return allowed


def is_allowed(
    permissions: PermissionSet | Iterable[Permission],
    action: Action,
    obj: OID,
    interface: IID,
) -> bool:
    """True only if every action in ``action`` is allowed on (``obj``,
    ``interface``). Asking for no action at all is refused."""
    action = Action(action)
    if not action:
        raise ValueError("ask for at least one action")
    return (allowed_actions(permissions, obj, interface) & action) == action


def may_claim(permissions: PermissionSet | Iterable[Permission], identity: OID) -> bool:
    """Whether an IAM permission lets the holder claim to be ``identity``."""
    return any(
        isinstance(p, IamPermission) and p.identity == identity for p in _permissions(permissions)
    )


def may_request(permissions: PermissionSet | Iterable[Permission]) -> bool:
    """Whether the holder may act as a requestor at all."""
    return any(isinstance(p, RequestorPermission) for p in _permissions(permissions))


def may_provide(permissions: PermissionSet | Iterable[Permission]) -> bool:
    """Whether the holder may act as a provider at all."""
    return any(isinstance(p, ProviderPermission) for p in _permissions(permissions))


def _pattern_contains(outer: BindingPermission, inner: BindingPermission) -> bool:
    """Whether every binding ``inner`` matches is matched by ``outer``."""
    if outer.interface is not None and outer.interface != inner.interface:
        return False
    pattern = outer.object_pattern
    if pattern.is_broadcast:
        return True
    if inner.object_pattern.is_broadcast:
        return False
    if outer.class_match:
        return inner.object_pattern.class_id == pattern.class_id
    if inner.class_match:
        return False
    if pattern.attributes:
        return inner.object_pattern == pattern
    return inner.object_pattern.without_attributes() == pattern


def _covered(granted: tuple[Permission, ...], wanted: Permission) -> bool:
    if not isinstance(wanted, BindingPermission):
        return wanted in granted
    missing = wanted.actions
    for permission in granted:
        if isinstance(permission, BindingPermission) and _pattern_contains(permission, wanted):
            missing &= ~permission.actions
    return not missing


def covers(
    granted: PermissionSet | Iterable[Permission],
    requested: PermissionSet | Iterable[Permission],
) -> bool:
    """True if every requested permission is implied by the granted ones: a
    binding when, for each of its actions, some granted binding with that action
    matches everything it matches; any other permission when it was granted as
    it is."""
    held = tuple(_permissions(granted))
    return all(_covered(held, wanted) for wanted in _permissions(requested))
