"""The Authentication Server (AS) logic, sans-IO: answer TRP commands.

A responder that receives a TEP Rekey from an initiator it cannot key by
itself asks the AS with a TRP **Request Session** carrying its own key request
(responder block) and the initiator's block from the Rekey. The AS

1. checks the domain is one it serves (else ``UNKNOWN_DOMAIN``);
2. looks both identities up *in that domain* through a :class:`CredentialStore`
   (unknown there, e.g. enrolled in another domain: ``UNKNOWN_RESPONDER`` /
   ``UNKNOWN_INITIATOR``; revoked: ``ACCESS_DENIED``; a credential type other
   than the key credential: ``INCOMPATIBLE_SECURITY_IDENTIFIERS``);
3. checks the desired security mode is one it allows (else ``BAD_MODE``);
4. checks each side asks only for permissions it was granted
   (:func:`dofpy.security.permissions.covers`, else ``ACCESS_DENIED``): the
   permission set in the initiator's key request is what the session grants,
   so the responder enforces exactly that set;
5. grants ``min(desired, node limit, AS limit)`` as duration, draws a fresh
   256-bit session key K from the injected ``rng`` and answers with two
   tickets, one per side.

Ticket construction (the recovery of K is OpenDOF's, as Wireshark's dissector
computes it; the MAC is a **dofpy extension**, in the style of the KEK
derivation the dissector sketches)::

    mac key  = HKDF-SHA256(IKM = identity secret S, salt = "dofpy trp ticket v1",
                           info = "mac", L = 32)
    MAC      = HMAC-SHA256(mac key, role || domain OID || responder block
                           || initiator block || authenticator block || K)
    ticket   = MAC || (K xor AES-256-ECB(S, MAC))

``role`` is ``b"\\x01initiator"`` or ``b"\\x01responder"`` (so a ticket for
one side is never accepted as the other's), the blocks are their exact wire
encodings (self-delimiting) as sent in the Request Session and its response:
the initiator sees the same bytes in the TEP Rekey / Accept. The MAC is a
synthetic IV (as in SIV, RFC 5297): it authenticates K and the whole context,
including both nonces, and it is the input of the AES pad, so the pad never
repeats unless K and the context repeat. Separate keys for the MAC (HKDF) and
the pad (S itself, fixed by the dissector) keep the two uses apart.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dofpy.errors import BadPacket
from dofpy.security.crypto import make_ticket, session_key_from_ticket
from dofpy.security.identity import SECRET_SIZE, Domain, KeyCredential, NodeIdentity
from dofpy.security.permissions import covers
from dofpy.wire.ccm import CCM_PROTOCOL_ID
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet
from dofpy.wire.security import (
    KEY_CREDENTIAL,
    AuthenticatorBlock,
    InitiatorBlock,
    KeyRequest,
    Ticket,
)
from dofpy.wire.trp import (
    RequestSessionCommand,
    RequestSessionResponse,
    TrpError,
    TrpPdu,
    TrpReject,
)

__all__ = [
    "SESSION_KEY_SIZE",
    "AuthenticatorPolicy",
    "CredentialStore",
    "Decision",
    "InMemoryCredentialStore",
    "NodeRecord",
    "TicketError",
    "TicketRole",
    "TrpAuthenticator",
    "make_session_ticket",
    "open_session_ticket",
    "ticket_mac",
]

SESSION_KEY_SIZE = 32
_MAC_SALT = b"dofpy trp ticket v1"


class TicketRole(enum.Enum):
    """Which side of a session a ticket is for."""

    INITIATOR = b"\x01initiator"
    RESPONDER = b"\x01responder"


class TicketError(BadPacket):
    """A ticket's MAC does not verify with this secret and context."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What the AS knows of one enrolled node: its credential, what it may ask
    for, the longest duration it may be granted and whether it is revoked."""

    credential: KeyCredential
    permissions: PermissionSet = field(default_factory=PermissionSet)
    revoked: bool = False
    max_duration: int = 255

    @property
    def node(self) -> NodeIdentity:
        return self.credential.node


class CredentialStore(Protocol):
    """Where the AS finds domains and nodes (a database, a file, memory)."""

    def has_domain(self, domain: OID) -> bool:
        """Whether this AS serves ``domain``."""
        ...

    def lookup(self, domain: OID, identity: OID) -> NodeRecord | None:
        """The record of ``identity`` enrolled in ``domain``, or ``None``."""
        ...


class InMemoryCredentialStore:
    """A :class:`CredentialStore` in memory (tests, small fixed deployments)."""

    def __init__(self, domains: Iterable[Domain] = (), nodes: Iterable[NodeRecord] = ()) -> None:
        self._domains = {domain.oid: domain for domain in domains}
        self._nodes: dict[tuple[OID, OID], NodeRecord] = {}
        for record in nodes:
            self.put(record)

    def add_domain(self, domain: Domain) -> None:
        """Serve ``domain``."""
        self._domains[domain.oid] = domain

    def put(self, record: NodeRecord) -> None:
        """Enrol (or replace) a node; its domain must be served."""
        if record.node.domain not in self._domains:
            raise ValueError(f"domain {record.node.domain} is not served here")
        self._nodes[(record.node.domain, record.node.identity)] = record

    def has_domain(self, domain: OID) -> bool:
        return domain in self._domains

    def lookup(self, domain: OID, identity: OID) -> NodeRecord | None:
        return self._nodes.get((domain, identity))


@dataclass(frozen=True, slots=True)
class AuthenticatorPolicy:
    """Limits the AS applies to every grant."""

    max_duration: int = 255
    security_modes: frozenset[int] = frozenset({CCM_PROTOCOL_ID})

    def __post_init__(self) -> None:
        if isinstance(self.max_duration, bool) or not 0 <= self.max_duration <= 0xFF:
            raise ValueError(f"max duration {self.max_duration} outside 0..255")


@dataclass(frozen=True, slots=True)
class Decision:
    """The AS's answer to one command, with what an audit log needs.

    ``response`` is what to send back. ``granted`` says whether a key was
    issued; ``reason`` says why not (or ``"granted"``). ``session_key`` is
    set only for a grant and never shown by ``repr`` (export it only to an
    operator's key log).
    """

    response: TrpPdu
    granted: bool
    reason: str
    initiator: OID | None = None
    responder: OID | None = None
    permissions: PermissionSet = field(default_factory=PermissionSet)
    session_key: bytes | None = field(default=None, repr=False)


def _mac_key(secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_MAC_SALT, info=b"mac").derive(secret)


def ticket_mac(
    secret: bytes,
    role: TicketRole,
    domain: OID,
    responder: KeyRequest,
    initiator: InitiatorBlock,
    authenticator: AuthenticatorBlock,
    session_key: bytes,
) -> bytes:
    """The 32-byte ticket MAC (see the module docstring)."""
    if len(secret) != SECRET_SIZE or len(session_key) != SESSION_KEY_SIZE:
        raise ValueError("identity secret and session key are 32 bytes each")
    message = b"".join(
        (
            role.value,
            domain.encode(),
            responder.encode(),
            initiator.encode(),
            authenticator.encode(),
            session_key,
        )
    )
    return hmac.new(_mac_key(secret), message, hashlib.sha256).digest()


def make_session_ticket(
    secret: bytes,
    role: TicketRole,
    command: RequestSessionCommand,
    authenticator: AuthenticatorBlock,
    session_key: bytes,
) -> Ticket:
    """The ticket carrying ``session_key`` to the holder of ``secret``."""
    mac = ticket_mac(
        secret,
        role,
        command.domain,
        command.responder,
        command.initiator,
        authenticator,
        session_key,
    )
    return make_ticket(session_key, secret, mac)


def open_session_ticket(
    ticket: Ticket,
    secret: bytes,
    role: TicketRole,
    command: RequestSessionCommand,
    authenticator: AuthenticatorBlock,
) -> bytes:
    """Recover K from ``ticket`` and verify its MAC (constant-time); raises
    :class:`TicketError` when the ticket was not made for this secret, role
    and context."""
    session_key = session_key_from_ticket(ticket, secret)
    expected = ticket_mac(
        secret,
        role,
        command.domain,
        command.responder,
        command.initiator,
        authenticator,
        session_key,
    )
    if not hmac.compare_digest(expected, ticket.mac):
        raise TicketError("ticket MAC does not verify")
    return session_key


class TrpAuthenticator:
    """The sans-IO AS: ``decide(pdu)`` for each TRP command received.

    ``rng(n)`` must return ``n`` unpredictable bytes (``secrets.token_bytes``
    in a daemon, a seeded generator in tests): it is the only source of
    session keys.
    """

    def __init__(
        self,
        store: CredentialStore,
        rng: Callable[[int], bytes],
        policy: AuthenticatorPolicy | None = None,
    ) -> None:
        self._store = store
        self._rng = rng
        self._policy = policy or AuthenticatorPolicy()

    def decide(self, pdu: TrpPdu) -> Decision:
        """The answer to one decoded TRP command."""
        if isinstance(pdu, RequestSessionCommand):
            return self._request_session(pdu)
        if pdu.is_response:
            raise ValueError(f"{type(pdu).__name__} is a response, not a command")
        return Decision(
            TrpReject(TrpError.ACCESS_DENIED),
            False,
            f"{type(pdu).__name__} is not offered by this authenticator",
        )

    def decide_bad_payload(self, error: BadPacket) -> Decision:
        """The answer to a TRP command that did not decode."""
        return Decision(TrpReject(TrpError.PARSE_ERROR), False, f"parse error: {error}")

    def _check_node(
        self, domain: OID, request: KeyRequest, unknown: TrpError, role: str
    ) -> NodeRecord | tuple[TrpError, str]:
        identity = request.identity.node
        if request.identity.credential_type != KEY_CREDENTIAL:
            return (
                TrpError.INCOMPATIBLE_SECURITY_IDENTIFIERS,
                f"{role} {identity}: credential type {request.identity.credential_type}",
            )
        record = self._store.lookup(domain, identity)
        if record is None:
            return unknown, f"{role} {identity} is not enrolled in {domain}"
        if record.revoked:
            return TrpError.ACCESS_DENIED, f"{role} {identity} is revoked"
        if not covers(record.permissions, request.permissions):
            return TrpError.ACCESS_DENIED, f"{role} {identity} asks for permissions not granted"
        return record

    def _request_session(self, command: RequestSessionCommand) -> Decision:
        domain = command.domain
        initiator_id = command.initiator.request.identity.node
        responder_id = command.responder.identity.node

        def refuse(error: TrpError, reason: str) -> Decision:
            return Decision(TrpReject(error), False, reason, initiator_id, responder_id)

        if not self._store.has_domain(domain):
            return refuse(TrpError.UNKNOWN_DOMAIN, f"domain {domain} is not served here")
        responder = self._check_node(
            domain, command.responder, TrpError.UNKNOWN_RESPONDER, "responder"
        )
        if not isinstance(responder, NodeRecord):
            return refuse(*responder)
        initiator = self._check_node(
            domain, command.initiator.request, TrpError.UNKNOWN_INITIATOR, "initiator"
        )
        if not isinstance(initiator, NodeRecord):
            return refuse(*initiator)
        mode = command.initiator.security_mode.protocol_id
        if mode not in self._policy.security_modes:
            return refuse(TrpError.BAD_MODE, f"security mode {mode:#06x} not allowed")
        duration = min(
            command.initiator.desired_duration,
            initiator.max_duration,
            responder.max_duration,
            self._policy.max_duration,
        )
        session_key = self._rng(SESSION_KEY_SIZE)
        if not isinstance(session_key, bytes) or len(session_key) != SESSION_KEY_SIZE:
            raise ValueError("rng returned something other than 32 bytes")
        authenticator = AuthenticatorBlock(duration)
        response = RequestSessionResponse(
            make_session_ticket(
                responder.credential.secret,
                TicketRole.RESPONDER,
                command,
                authenticator,
                session_key,
            ),
            make_session_ticket(
                initiator.credential.secret,
                TicketRole.INITIATOR,
                command,
                authenticator,
                session_key,
            ),
            authenticator,
        )
        return Decision(
            response,
            True,
            "granted",
            initiator_id,
            responder_id,
            command.initiator.request.permissions,
            session_key,
        )
