"""A security domain held in memory, for tests, demos and benchmarks.

It gathers what every secured example needs: a domain master key, the nodes
enrolled with their grants (an in-memory credential store), an in-process
Authenticator, and the :class:`~dofpy.session.config.SecurityConfig` of
each node. Production deployments use the Authenticator daemon and its
SQLite store instead (docs/operations.md).

    domain = LocalDomain(OID(6, b"example.org"), rng=random.Random(1).randbytes)
    domain.enrol(DEVICE, grant(Action.READ, interface=VERSION_IID))
    config = domain.node_config(DEVICE)          # a NodeConfig with security

All keys and nonces come from ``rng`` (seed it for deterministic tests; the
default is :func:`secrets.token_bytes`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from dofpy._core import Address
from dofpy.security.authenticator import InMemoryCredentialStore, NodeRecord, TrpAuthenticator
from dofpy.security.identity import Domain, KeyCredential
from dofpy.session.node import NodeConfig, SecurityConfig
from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet

__all__ = ["LocalDomain", "grant"]


def grant(
    actions: str | Action, obj: OID | None = None, interface: IID | None = None
) -> PermissionSet:
    """A permission set of one binding permission: ``actions`` (``"rwxsp"``
    letters) on ``obj`` (default: any object) and ``interface`` (default: any)."""
    parsed = Action.parse(actions) if isinstance(actions, str) else actions
    pattern = obj if obj is not None else OID(0)
    return PermissionSet((BindingPermission(parsed, pattern, interface),))


class LocalDomain:
    """A domain, its enrolled nodes and an in-process Authenticator."""

    def __init__(
        self,
        oid: OID,
        *,
        rng: Callable[[int], bytes] = secrets.token_bytes,
        master_key: bytes | None = None,
    ) -> None:
        self.rng = rng
        self.domain = Domain(oid, master_key if master_key is not None else rng(32))
        self.store = InMemoryCredentialStore([self.domain])
        self.authenticator = TrpAuthenticator(self.store, rng)
        self._grants: dict[OID, PermissionSet] = {}

    @property
    def oid(self) -> OID:
        return self.domain.oid

    def credential(self, identity: OID) -> KeyCredential:
        """The key credential of ``identity`` (enrolled or not: derived)."""
        return self.domain.credential_for(identity)

    def enrol(
        self,
        identity: OID,
        grants: PermissionSet | None = None,
        *,
        revoked: bool = False,
        max_duration: int = 255,
    ) -> KeyCredential:
        """Enrol (or replace) ``identity`` with ``grants``; its credential."""
        credential = self.credential(identity)
        granted = grants if grants is not None else PermissionSet()
        self.store.put(NodeRecord(credential, granted, revoked, max_duration))
        self._grants[identity] = granted
        return credential

    def revoke(self, identity: OID) -> None:
        record = self.store.lookup(self.oid, identity)
        if record is None:
            raise KeyError(f"{identity} is not enrolled")
        self.store.put(NodeRecord(record.credential, record.permissions, True, record.max_duration))

    def security(
        self,
        identity: OID,
        *,
        asks: PermissionSet | None = None,
        authenticator: Address | None = None,
        **overrides: Any,
    ) -> SecurityConfig:
        """The security configuration of ``identity``: it asks for ``asks``
        (default: all it was granted); responders ask the Authenticator at
        ``authenticator`` (sealed, inside a secure session with it, as a
        sealed-only Authenticator requires; ``seal_authenticator=False`` asks in
        the clear), or (by default) the in-process one, or with
        ``defer_authenticator=True`` the application."""
        options: dict[str, Any] = {
            "domain": self.oid,
            "identity": identity,
            "secret": self.credential(identity).secret,
            "rng": self.rng,
            "cookie_key": self.rng(32),
            "permissions": asks
            if asks is not None
            else self._grants.get(identity, PermissionSet()),
            "authenticator": authenticator,
            "seal_authenticator": authenticator is not None,
            "local_authenticator": (
                None
                if authenticator is not None or overrides.get("defer_authenticator")
                else self.authenticator
            ),
        }
        options.update(overrides)
        return SecurityConfig(**options)

    def node_config(self, identity: OID, **options: Any) -> NodeConfig:
        """A :class:`NodeConfig` for ``identity`` with :meth:`security`."""
        return NodeConfig(node_id=identity, security=self.security(identity, **options))
