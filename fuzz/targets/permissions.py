"""Fuzz target: the permission-set decoder ``decode_permission_set_untrusted``."""

from __future__ import annotations

from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import (
    ActAsPermission,
    Action,
    BindingPermission,
    DefinePermission,
    IamPermission,
    PermissionSet,
    ProviderPermission,
    RawPermission,
    RequestorPermission,
    TunnelDomainPermission,
    decode_permission_set_untrusted,
)

SEEDS: tuple[bytes, ...] = (
    PermissionSet().encode(),
    PermissionSet(
        (
            BindingPermission(Action.READ | Action.WRITE, OID(3, b"dev"), IID(1, b"\x01")),
            BindingPermission(Action.PROVIDE, OID(9), class_match=True),
            BindingPermission(Action.SUBSCRIBE),
            IamPermission(OID(3, b"me")),
            ActAsPermission(OID(3, b"you")),
            RequestorPermission(),
            ProviderPermission(),
            DefinePermission(b"\x01"),
            TunnelDomainPermission(OID(6, b"other.org")),
            RawPermission(7, b"x"),
            RawPermission(8),
        )
    ).encode(),
)


def target(data: bytes) -> None:
    """Decode; an accepted set must re-encode to exactly the same bytes."""
    if decode_permission_set_untrusted(data).encode() != data:
        raise AssertionError("accepted a permission set that is not in minimal form")
