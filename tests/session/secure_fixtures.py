"""A small secured domain for tests: an Authenticator, a provider and clients
on the seeded simulator, every random byte from one seeded generator."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from dofpy.oap.core import OapConfig, OapCore
from dofpy.security.authority import InMemoryCredentialStore, NodeRecord, TrpAuthority
from dofpy.security.identity import Domain
from dofpy.session.node import NodeConfig
from dofpy.session.security import SecurityConfig
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from tests.oap.example import THERMOSTAT, THERMOSTAT_OID

DOMAIN_OID = OID(6, b"example.org")
PROVIDER_ID = OID(3, b"thermostat-host@example.org")
CLIENT_ID = OID(3, b"console@example.org")
PROVIDER = ("10.1.0.1", 3567)
CLIENT = ("10.1.0.2", 40000)
AUTHORITY = ("10.1.0.9", 3568)


def rng_from(seed: int) -> Callable[[int], bytes]:
    generator = random.Random(seed)
    return generator.randbytes


def grant(actions: str, obj: OID | None = None) -> PermissionSet:
    pattern = obj if obj is not None else OID(0)
    return PermissionSet((BindingPermission(Action.parse(actions), pattern, THERMOSTAT.iid),))


@dataclass
class SecureDomain:
    seed: int = 1
    conditions: LinkConditions = field(default_factory=lambda: LinkConditions(delay=0.002))
    client_grant: str = "rwxs"
    client_asks: str = "rwxs"
    domain: Domain = field(init=False)
    store: InMemoryCredentialStore = field(init=False)
    net: Network = field(init=False)

    def __post_init__(self) -> None:
        self.rng = rng_from(self.seed)
        self.domain = Domain(DOMAIN_OID, self.rng(32))
        self.store = InMemoryCredentialStore([self.domain])
        self.store.put(NodeRecord(self.domain.credential_for(PROVIDER_ID), grant("p")))
        self.store.put(NodeRecord(self.domain.credential_for(CLIENT_ID), grant(self.client_grant)))
        self.authority = TrpAuthority(self.store, self.rng)
        self.net = Network(self.seed, default=self.conditions)

    def security(
        self,
        identity: OID,
        *,
        asks: PermissionSet | None = None,
        local_authority: bool = True,
        **overrides: object,
    ) -> SecurityConfig:
        options: dict[str, object] = {
            "domain": DOMAIN_OID,
            "identity": identity,
            "secret": self.domain.credential_for(identity).secret,  # enrolled or not
            "rng": self.rng,
            "cookie_key": self.rng(32),
            "permissions": asks if asks is not None else PermissionSet(),
            "local_authority": self.authority if local_authority else None,
            "authority": None if local_authority else AUTHORITY,
        }
        options.update(overrides)
        return SecurityConfig(**options)  # type: ignore[arg-type]

    def provider(self, **overrides: object) -> OapCore:
        core = OapCore(
            OapConfig(
                node=NodeConfig(
                    node_id=PROVIDER_ID,
                    security=self.security(PROVIDER_ID, asks=grant("p"), **overrides),
                )
            )
        )
        core.provide(THERMOSTAT_OID, THERMOSTAT)
        self.net.add(core, PROVIDER)
        return core

    def client(
        self, address: tuple[str, int] = CLIENT, identity: OID = CLIENT_ID, **overrides: object
    ) -> OapCore:
        core = OapCore(
            OapConfig(
                node=NodeConfig(
                    node_id=identity,
                    security=self.security(identity, asks=grant(self.client_asks), **overrides),
                )
            )
        )
        self.net.add(core, address)
        return core
