"""Secured nodes for tests, from one :class:`~dofpy.testing.LocalDomain`.

Two shapes, one per kind of test:

- :class:`SecureDomain` — sans-IO, on the seeded simulator: an in-process
  Authenticator, a provider of :data:`~dofpy.testing.example.THERMOSTAT` and
  any number of clients, every key and nonce from one seeded generator, so a
  run replays exactly.
- :func:`open_secure_pair` — over real UDP on 127.0.0.1 port 0: a provider
  and a requestor :class:`~dofpy.trio.DofNode` of the domain with their secure
  session already established; :func:`open_secure_node` opens any further
  node of the domain.

    local = LocalDomain(OID(6, b"example.org"), rng=random.Random(1).randbytes)
    local.enrol(SERVER_ID, grant("p", interface=MY_SERVICE.iid))
    local.enrol(DEVICE_ID, grant("rx", interface=MY_SERVICE.iid))
    async with open_secure_pair(local, SERVER_ID, DEVICE_ID) as pair:
        pair.provider.provide(MY_OID, MY_SERVICE, MyService())
        client = MY_SERVICE.client(pair.requestor, pair.peer, MY_OID)
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from dofpy._core import Address
from dofpy.errors import DofError
from dofpy.oap.core import OapConfig, OapCore
from dofpy.security.authenticator import InMemoryCredentialStore, TrpAuthenticator
from dofpy.security.identity import Domain
from dofpy.session.node import SecurityConfig
from dofpy.testing.domain import LocalDomain, grant
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.trio import DofNode, open_node
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet

__all__ = [
    "AUTHENTICATOR_ADDRESS",
    "AUTHENTICATOR_ID",
    "CLIENT",
    "CLIENT_ID",
    "DOMAIN_OID",
    "PROVIDER",
    "PROVIDER_ID",
    "SecureDomain",
    "SecurePair",
    "open_secure_node",
    "open_secure_pair",
    "thermostat_grant",
]

DOMAIN_OID = OID(6, b"example.org")
PROVIDER_ID = OID(3, b"thermostat-host@example.org")
CLIENT_ID = OID(3, b"console@example.org")
PROVIDER: Address = ("10.1.0.1", 3567)
CLIENT: Address = ("10.1.0.2", 40000)
AUTHENTICATOR_ADDRESS: Address = ("10.1.0.9", 3568)
AUTHENTICATOR_ID = OID(3, b"authenticator@example.org")


def thermostat_grant(actions: str) -> PermissionSet:
    """``actions`` (``"rwxsp"`` letters) on any object of THERMOSTAT's interface."""
    return grant(actions, interface=THERMOSTAT.iid)


@dataclass
class SecureDomain:
    """A secured THERMOSTAT domain on the simulator.

    The provider (:data:`PROVIDER_ID`) is granted ``"p"``; clients
    (:data:`CLIENT_ID` unless told) are granted ``client_grant`` and ask for
    ``client_asks``. ``seed`` seeds both the keys and the network.
    """

    seed: int = 1
    conditions: LinkConditions = field(default_factory=lambda: LinkConditions(delay=0.002))
    client_grant: str = "rwxs"
    client_asks: str = "rwxs"
    trace: bool = False
    """Record the network's trace (:attr:`Network.trace`), as a differential
    test comparing two runs datagram for datagram needs."""
    local: LocalDomain = field(init=False)
    net: Network = field(init=False)

    def __post_init__(self) -> None:
        self.local = LocalDomain(DOMAIN_OID, rng=random.Random(self.seed).randbytes)
        self.local.enrol(PROVIDER_ID, thermostat_grant("p"))
        self.local.enrol(CLIENT_ID, thermostat_grant(self.client_grant))
        self.net = Network(self.seed, default=self.conditions, trace=self.trace)

    @property
    def domain(self) -> Domain:
        return self.local.domain

    @property
    def store(self) -> InMemoryCredentialStore:
        return self.local.store

    @property
    def authenticator(self) -> TrpAuthenticator:
        return self.local.authenticator

    def authenticator_security(self, **overrides: Any) -> SecurityConfig:
        """The security of an Authenticator of this domain (:data:`AUTHENTICATOR_ID`,
        enrolled on first use, keyed by the in-process authenticator): what a
        sealed-only ``AuthenticatorCore`` at :data:`AUTHENTICATOR_ADDRESS` needs, so that
        nodes given ``authenticator=AUTHENTICATOR_ADDRESS`` ask it inside a secure session.
        ``overrides`` go to :meth:`LocalDomain.security`."""
        if self.store.lookup(DOMAIN_OID, AUTHENTICATOR_ID) is None:
            self.local.enrol(AUTHENTICATOR_ID)
        return self.local.security(AUTHENTICATOR_ID, **overrides)

    def provider(self, **overrides: Any) -> OapCore:
        """The provider's core, providing THERMOSTAT at :data:`PROVIDER`;
        ``overrides`` go to :meth:`LocalDomain.security`."""
        core = OapCore(OapConfig(node=self.local.node_config(PROVIDER_ID, **overrides)))
        core.provide(THERMOSTAT_OID, THERMOSTAT)
        self.net.add(core, PROVIDER)
        return core

    def client(
        self, address: Address = CLIENT, identity: OID = CLIENT_ID, **overrides: Any
    ) -> OapCore:
        """A client's core at ``address``; ``overrides`` go to
        :meth:`LocalDomain.security`."""
        options: dict[str, Any] = {"asks": thermostat_grant(self.client_asks), **overrides}
        core = OapCore(OapConfig(node=self.local.node_config(identity, **options)))
        self.net.add(core, address)
        return core


@asynccontextmanager
async def open_secure_node(
    domain: LocalDomain, identity: OID, **security: Any
) -> AsyncIterator[DofNode]:
    """A :class:`~dofpy.trio.DofNode` of ``domain`` as ``identity`` on
    127.0.0.1 port 0; ``security`` goes to :meth:`LocalDomain.security`
    (``asks=``, ``authenticator=``...)."""
    config = OapConfig(node=domain.node_config(identity, **security))
    async with open_node(("127.0.0.1", 0), config) as node:
        yield node


@dataclass(frozen=True)
class SecurePair:
    """A provider and a requestor of one domain, their secure session established."""

    domain: LocalDomain
    provider: DofNode
    requestor: DofNode

    @property
    def peer(self) -> Address:
        """Where the requestor reaches the provider."""
        return self.provider.local_address


@asynccontextmanager
async def open_secure_pair(
    domain: LocalDomain,
    provider_id: OID,
    requestor_id: OID,
    *,
    establish: bool = True,
    **security: Any,
) -> AsyncIterator[SecurePair]:
    """A provider (``provider_id``) and a requestor (``requestor_id``) of
    ``domain`` over UDP on 127.0.0.1, for the block's lifetime.

    Both must be enrolled (their grants are the test's business). With
    ``establish`` (the default) the requestor has already authenticated the
    provider when the block starts, so a refused handshake fails here, not in
    the first request. ``security`` goes to both nodes'
    :meth:`LocalDomain.security`.
    """
    async with (
        open_secure_node(domain, provider_id, **security) as provider,
        open_secure_node(domain, requestor_id, **security) as requestor,
    ):
        pair = SecurePair(domain, provider, requestor)
        refused = await _establish(pair, provider_id) if establish else None
        if refused is None:
            yield pair
            return
    # Raised once both nodes are closed, so that it is not wrapped in an
    # ExceptionGroup by their nurseries: the caller catches the error itself.
    raise refused


async def _establish(pair: SecurePair, provider_id: OID) -> Exception | None:
    """Authenticate the provider; the error when that fails, else ``None``."""
    try:
        identity = await pair.requestor.secure_session(pair.peer)
    except DofError as exc:
        return exc
    if identity != provider_id:
        return AssertionError(f"the provider authenticated as {identity}, not {provider_id}")
    return None
