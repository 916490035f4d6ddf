"""Fuzz target: the TRP decoder ``decode_trp_untrusted``.

The first input byte picks the direction (bit 0 set: a response); the rest is
the TRP payload.
"""

from __future__ import annotations

from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet, RequestorPermission
from dofpy.wire.security import (
    AuthenticatorBlock,
    IdentityResolution,
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

_DOMAIN = OID(6, b"example.org")
_PERMISSIONS = PermissionSet(
    (BindingPermission(Action.READ, OID(0), IID(1, b"\x01")), RequestorPermission())
)
_REQUEST = KeyRequest(SecurityIdentity(OID(3, b"dev@example.org")), bytes(16), _PERMISSIONS)
_TICKET = Ticket(bytes(range(32)), bytes(range(32, 64)))
_SCOPES = (PermissionScope(ScopeMode.REFERENCE), PermissionScope(ScopeMode.ABSOLUTE, (1, 300)))

_PDUS: tuple[TrpPdu, ...] = (
    TrpReject(TrpError.UNKNOWN_INITIATOR),
    RequestKekCommand(_DOMAIN, _REQUEST, OID(4, b"group")),
    RequestKekResponse(
        _TICKET, 1, 2, 3, 4, OID(4, b"g"), (5,), SecurityMode.ccm(), 77, _PERMISSIONS, _SCOPES
    ),
    RequestRandomCommand(_DOMAIN, _REQUEST),
    RequestRandomResponse(_TICKET),
    RequestSessionCommand(_DOMAIN, _REQUEST, InitiatorBlock(_REQUEST, desired_duration=30)),
    RequestSessionResponse(_TICKET, _TICKET, AuthenticatorBlock(30, (1,), _SCOPES, _SCOPES)),
    RequestScopesCommand(_DOMAIN, 3, _REQUEST, OID(3, b"n")),
    RequestScopesResponse(_TICKET, 3, (1,), _SCOPES),
    ResolveCredentialCommand(_DOMAIN, IdentityResolution(1, 0, b"public")),
    ResolveCredentialResponse(IdentityResolution(1, 0, b"public")),
    ValidateCredentialCommand(_DOMAIN, SecurityIdentity(OID(3, b"n")), b"data"),
    ValidateCredentialResponse(b"ok"),
)

SEEDS: tuple[bytes, ...] = tuple(bytes((int(pdu.is_response),)) + encode_trp(pdu) for pdu in _PDUS)


def target(data: bytes) -> None:
    """Decode; an accepted PDU must re-encode to exactly the same payload."""
    if not data:
        return
    pdu = decode_trp_untrusted(data[1:], is_response=bool(data[0] & 1))
    if encode_trp(pdu) != data[1:]:
        raise AssertionError("accepted a TRP payload that is not in minimal form")
