"""Domains, node identities and their key credentials.

Every node has an identity (an OID such as ``[{03}:sensor-17@example.org]``) in
a domain (an OID such as ``[{06}:example.org]``) and a 256-bit key credential,
its *identity secret*. The secret is never stored by the Authentication Server:
it is derived from the domain's master key, so any number of AS replicas that
share the master key need no other shared state (dofpy extension)::

    identity secret = HKDF-SHA256(
        IKM  = domain master key (32 bytes),
        salt = "dofpy identity secret v1",
        info = domain OID (wire encoding) || identity OID (wire encoding)
               || purpose label (UTF-8) || generation (4 bytes, big-endian),
        L    = 32)

OID encodings are self-delimiting (class, header with the data length,
attributes with their lengths), so the concatenation is unambiguous. The purpose
label keeps keys for different uses apart (``"key credential"`` for the
identity secret); ``generation`` lets an operator rotate one node's credential
(bump it: the old secret no longer matches) without touching the master key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dofpy.wire.oid import OID

__all__ = [
    "KEY_CREDENTIAL_PURPOSE",
    "MASTER_KEY_SIZE",
    "SECRET_SIZE",
    "Domain",
    "KeyCredential",
    "NodeIdentity",
    "derive_identity_secret",
]

SECRET_SIZE = 32
MASTER_KEY_SIZE = 32
KEY_CREDENTIAL_PURPOSE = "key credential"
_SALT = b"dofpy identity secret v1"
_MAX_GENERATION = 0xFFFFFFFF


def _check_domain_oid(oid: OID) -> None:
    if oid.is_broadcast or oid.attributes:
        raise ValueError(f"a domain is a plain, non-broadcast OID, not {oid}")


def _check_identity_oid(oid: OID) -> None:
    if oid.is_broadcast or oid.attributes:
        raise ValueError(f"a node identity is a plain, non-broadcast OID, not {oid}")


@dataclass(frozen=True, slots=True)
class Domain:
    """A security domain: its OID and the master key its identity secrets
    derive from. ``repr`` never shows the key."""

    oid: OID
    master_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_domain_oid(self.oid)
        if len(self.master_key) != MASTER_KEY_SIZE:
            raise ValueError(f"a domain master key is {MASTER_KEY_SIZE} bytes")

    def credential_for(
        self,
        identity: OID,
        generation: int = 0,
        purpose: str = KEY_CREDENTIAL_PURPOSE,
    ) -> KeyCredential:
        """The key credential of ``identity`` in this domain."""
        node = NodeIdentity(self.oid, identity)
        secret = derive_identity_secret(self.master_key, self.oid, identity, generation, purpose)
        return KeyCredential(node, secret, generation)


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A node's identity: the domain it belongs to and its own OID."""

    domain: OID
    identity: OID

    def __post_init__(self) -> None:
        _check_domain_oid(self.domain)
        _check_identity_oid(self.identity)

    def __str__(self) -> str:
        return f"{self.identity} in {self.domain}"


@dataclass(frozen=True, slots=True)
class KeyCredential:
    """A 256-bit key credential: the identity secret of ``node``. ``repr``
    never shows the secret."""

    node: NodeIdentity
    secret: bytes = field(repr=False)
    generation: int = 0

    def __post_init__(self) -> None:
        if len(self.secret) != SECRET_SIZE:
            raise ValueError(f"an identity secret is {SECRET_SIZE} bytes")
        if isinstance(self.generation, bool) or not 0 <= self.generation <= _MAX_GENERATION:
            raise ValueError(f"credential generation {self.generation} outside 0..2**32-1")

    def wireshark_uat(self) -> str:
        """This credential as one line of Wireshark's ``custom_dof_identsecret_list``
        table (domain, identity and secret in hex), so tshark can decrypt."""
        return (
            f'"{self.node.domain.encode().hex()}",'
            f'"{self.node.identity.encode().hex()}",'
            f'"{self.secret.hex()}"'
        )


def derive_identity_secret(
    master_key: bytes,
    domain: OID,
    identity: OID,
    generation: int = 0,
    purpose: str = KEY_CREDENTIAL_PURPOSE,
) -> bytes:
    """HKDF-SHA256 of the domain master key for one identity (see the module
    docstring for the exact inputs)."""
    if len(master_key) != MASTER_KEY_SIZE:
        raise ValueError(f"a domain master key is {MASTER_KEY_SIZE} bytes")
    _check_domain_oid(domain)
    _check_identity_oid(identity)
    if isinstance(generation, bool) or not 0 <= generation <= _MAX_GENERATION:
        raise ValueError(f"credential generation {generation} outside 0..2**32-1")
    if not purpose:
        raise ValueError("a purpose label is required")
    info = (
        domain.encode()
        + identity.encode()
        + purpose.encode("utf-8")
        + generation.to_bytes(4, "big")
    )
    return HKDF(algorithm=hashes.SHA256(), length=SECRET_SIZE, salt=_SALT, info=info).derive(
        master_key
    )
