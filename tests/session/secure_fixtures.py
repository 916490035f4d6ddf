"""A small secured domain for tests: an Authenticator, a provider and clients
on the seeded simulator, every random byte from one seeded generator."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from dofpy.oap.core import OapConfig, OapCore
from dofpy.testing import LinkConditions, LocalDomain, Network
from dofpy.testing import grant as grant_on
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet
from tests.oap.example import THERMOSTAT, THERMOSTAT_OID

DOMAIN_OID = OID(6, b"example.org")
PROVIDER_ID = OID(3, b"thermostat-host@example.org")
CLIENT_ID = OID(3, b"console@example.org")
PROVIDER = ("10.1.0.1", 3567)
CLIENT = ("10.1.0.2", 40000)
AUTHORITY = ("10.1.0.9", 3568)


def grant(actions: str) -> PermissionSet:
    return grant_on(actions, interface=THERMOSTAT.iid)


@dataclass
class SecureDomain:
    seed: int = 1
    conditions: LinkConditions = field(default_factory=lambda: LinkConditions(delay=0.002))
    client_grant: str = "rwxs"
    client_asks: str = "rwxs"
    local: LocalDomain = field(init=False)
    net: Network = field(init=False)

    def __post_init__(self) -> None:
        self.local = LocalDomain(DOMAIN_OID, rng=random.Random(self.seed).randbytes)
        self.local.enrol(PROVIDER_ID, grant("p"))
        self.local.enrol(CLIENT_ID, grant(self.client_grant))
        self.domain, self.store, self.authority = (
            self.local.domain,
            self.local.store,
            self.local.authority,
        )
        self.net = Network(self.seed, default=self.conditions)

    def provider(self, **overrides: object) -> OapCore:
        core = OapCore(OapConfig(node=self.local.node_config(PROVIDER_ID, **overrides)))
        core.provide(THERMOSTAT_OID, THERMOSTAT)
        self.net.add(core, PROVIDER)
        return core

    def client(
        self, address: tuple[str, int] = CLIENT, identity: OID = CLIENT_ID, **overrides: object
    ) -> OapCore:
        options: dict[str, object] = {"asks": grant(self.client_asks), **overrides}
        core = OapCore(OapConfig(node=self.local.node_config(identity, **options)))
        self.net.add(core, address)
        return core
