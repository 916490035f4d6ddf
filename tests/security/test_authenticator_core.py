"""The sans-IO Authentication Server: refusals with the right TRP error, and
tickets that give K to each side."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from dofpy.errors import BadPacket
from dofpy.security.authenticator import (
    AuthenticatorPolicy,
    InMemoryCredentialStore,
    NodeRecord,
    TicketError,
    TicketRole,
    TrpAuthenticator,
    open_session_ticket,
)
from dofpy.security.crypto import session_key_from_ticket
from dofpy.security.identity import Domain
from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet, RequestorPermission
from dofpy.wire.security import InitiatorBlock, KeyRequest, SecurityIdentity, SecurityMode
from dofpy.wire.trp import (
    RequestRandomCommand,
    RequestSessionCommand,
    RequestSessionResponse,
    TrpError,
    TrpReject,
)

DOMAIN = Domain(OID(6, b"example.org"), bytes(range(32)))
OTHER_DOMAIN = Domain(OID(6, b"other.org"), bytes(32))
DEVICE = OID(3, b"device@example.org")
CLIENT = OID(3, b"client@example.org")
STRANGER = OID(3, b"stranger@other.org")
REVOKED = OID(3, b"lost@example.org")
READ_ANY = BindingPermission(Action.READ, OID(0), IID(1, b"\x01"))
CLIENT_ASKS = PermissionSet((READ_ANY,))


def store() -> InMemoryCredentialStore:
    return InMemoryCredentialStore(
        [DOMAIN, OTHER_DOMAIN],
        [
            NodeRecord(DOMAIN.credential_for(DEVICE), PermissionSet((RequestorPermission(),))),
            NodeRecord(DOMAIN.credential_for(CLIENT), PermissionSet((READ_ANY,)), max_duration=60),
            NodeRecord(DOMAIN.credential_for(REVOKED), revoked=True),
            NodeRecord(OTHER_DOMAIN.credential_for(STRANGER)),
        ],
    )


def authenticator(policy: AuthenticatorPolicy | None = None) -> TrpAuthenticator:
    rng = random.Random(7)
    return TrpAuthenticator(store(), rng.randbytes, policy)


def command(
    initiator: OID = CLIENT,
    responder: OID = DEVICE,
    domain: OID = DOMAIN.oid,
    permissions: PermissionSet = CLIENT_ASKS,
    duration: int = 200,
    mode: SecurityMode | None = None,
) -> RequestSessionCommand:
    return RequestSessionCommand(
        domain,
        KeyRequest(SecurityIdentity(responder), b"R" * 16),
        InitiatorBlock(
            KeyRequest(SecurityIdentity(initiator), b"I" * 16, permissions),
            mode or SecurityMode.ccm(),
            duration,
        ),
    )


def test_grant_gives_both_sides_the_same_key() -> None:
    cmd = command()
    decision = authenticator().decide(cmd)
    assert decision.granted and decision.reason == "granted"
    response = decision.response
    assert isinstance(response, RequestSessionResponse)
    key = decision.session_key
    assert key is not None and len(key) == 32
    # The initiator's ticket decrypts to K with its secret: KEY xor AES-ECB(secret, MAC).
    client_secret = DOMAIN.credential_for(CLIENT).secret
    device_secret = DOMAIN.credential_for(DEVICE).secret
    assert session_key_from_ticket(response.initiator_ticket, client_secret) == key
    assert session_key_from_ticket(response.responder_ticket, device_secret) == key
    # And each MAC verifies for its own role and context only.
    auth = response.authenticator
    assert (
        open_session_ticket(
            response.initiator_ticket, client_secret, TicketRole.INITIATOR, cmd, auth
        )
        == key
    )
    assert (
        open_session_ticket(
            response.responder_ticket, device_secret, TicketRole.RESPONDER, cmd, auth
        )
        == key
    )
    with pytest.raises(TicketError):
        open_session_ticket(
            response.initiator_ticket, client_secret, TicketRole.RESPONDER, cmd, auth
        )
    with pytest.raises(TicketError):
        open_session_ticket(
            response.initiator_ticket, device_secret, TicketRole.INITIATOR, cmd, auth
        )
    with pytest.raises(TicketError):  # another context (e.g. an old nonce): refused
        open_session_ticket(
            response.initiator_ticket,
            client_secret,
            TicketRole.INITIATOR,
            command(duration=1),
            auth,
        )
    assert decision.permissions == PermissionSet((READ_ANY,))
    assert key.hex() not in repr(decision)


def test_duration_is_the_smallest_limit() -> None:
    decision = authenticator(AuthenticatorPolicy(max_duration=100)).decide(command(duration=200))
    assert isinstance(decision.response, RequestSessionResponse)
    assert decision.response.authenticator.granted_duration == 60  # the client's own limit
    decision = authenticator().decide(command(duration=10))
    assert isinstance(decision.response, RequestSessionResponse)
    assert decision.response.authenticator.granted_duration == 10


def test_fresh_keys_per_request() -> None:
    auth = authenticator()
    assert auth.decide(command()).session_key != auth.decide(command()).session_key


@pytest.mark.parametrize(
    ("cmd", "error"),
    [
        (command(domain=OID(6, b"nowhere.org")), TrpError.UNKNOWN_DOMAIN),
        (command(initiator=OID(3, b"nobody@example.org")), TrpError.UNKNOWN_INITIATOR),
        (command(responder=OID(3, b"nobody@example.org")), TrpError.UNKNOWN_RESPONDER),
        # Enrolled, but in another domain than the request's.
        (command(initiator=STRANGER), TrpError.UNKNOWN_INITIATOR),
        (command(responder=STRANGER), TrpError.UNKNOWN_RESPONDER),
        (command(initiator=REVOKED), TrpError.ACCESS_DENIED),
        (command(responder=REVOKED), TrpError.ACCESS_DENIED),
        # Asking for more than granted.
        (
            command(permissions=PermissionSet((BindingPermission(Action.WRITE, OID(0)),))),
            TrpError.ACCESS_DENIED,
        ),
        (command(mode=SecurityMode(0x6002)), TrpError.BAD_MODE),
    ],
)
def test_refusals(cmd: RequestSessionCommand, error: TrpError) -> None:
    decision = authenticator().decide(cmd)
    assert decision.response == TrpReject(error)
    assert not decision.granted and decision.session_key is None
    assert decision.reason


def test_other_credential_type_is_incompatible() -> None:
    cmd = command()
    odd = replace(
        cmd,
        initiator=replace(
            cmd.initiator,
            request=replace(cmd.initiator.request, identity=SecurityIdentity(CLIENT, 9)),
        ),
    )
    assert authenticator().decide(odd).response == TrpReject(
        TrpError.INCOMPATIBLE_SECURITY_IDENTIFIERS
    )


def test_unsupported_commands_bad_payloads_and_responses() -> None:
    auth = authenticator()
    random_cmd = RequestRandomCommand(DOMAIN.oid, KeyRequest(SecurityIdentity(CLIENT), b"x"))
    assert auth.decide(random_cmd).response == TrpReject(TrpError.ACCESS_DENIED)
    assert auth.decide_bad_payload(BadPacket("x")).response == TrpReject(TrpError.PARSE_ERROR)
    with pytest.raises(ValueError, match="response"):
        auth.decide(TrpReject(TrpError.HIGH_LOAD))


def test_bad_rng_and_policy_are_refused() -> None:
    with pytest.raises(ValueError, match="rng"):
        TrpAuthenticator(store(), lambda n: b"short").decide(command())
    with pytest.raises(ValueError, match="duration"):
        AuthenticatorPolicy(max_duration=256)


def test_store_refuses_nodes_of_unserved_domains() -> None:
    empty = InMemoryCredentialStore()
    with pytest.raises(ValueError, match="not served"):
        empty.put(NodeRecord(DOMAIN.credential_for(DEVICE)))
    empty.add_domain(DOMAIN)
    empty.put(NodeRecord(DOMAIN.credential_for(DEVICE)))
    assert empty.lookup(DOMAIN.oid, DEVICE) is not None
