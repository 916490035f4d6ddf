"""Fuzz target for a secure node's receive path: TEP handshakes (cookies,
Rekey, Confirm), CCM packets and the plaintext refusal, on a node configured
with security and an in-process Authenticator. It must never raise."""

from __future__ import annotations

import random

from dofpy.oap.core import OapConfig, OapCore
from dofpy.testing import LocalDomain
from dofpy.wire.oid import OID

_SERVER = OID(3, b"server@fuzz.example")
_CLIENT = OID(3, b"client@fuzz.example")
_SERVER_ADDR = ("192.0.2.1", 3567)
_CLIENT_ADDR = ("192.0.2.2", 40000)


def _core(identity: OID, seed: int) -> OapCore:
    domain = LocalDomain(
        OID(6, b"fuzz.example"), rng=random.Random(seed).randbytes, master_key=bytes(range(32))
    )
    domain.enrol(_SERVER)
    domain.enrol(_CLIENT)
    return OapCore(OapConfig(node=domain.node_config(identity, cookie_key=bytes(32))))


def _handshake_datagrams() -> tuple[bytes, ...]:
    """A real exchange between two secure cores: every datagram either sent."""
    server, client = _core(_SERVER, 1), _core(_CLIENT, 2)
    client.node.secure_session(_SERVER_ADDR, 0.0)
    seen: list[bytes] = []
    for _ in range(8):
        for data, _to in client.datagrams_to_send(0.0):
            seen.append(data)
            server.receive_datagram(data, _CLIENT_ADDR, 0.0)
        for data, _to in server.datagrams_to_send(0.0):
            seen.append(data)
            client.receive_datagram(data, _SERVER_ADDR, 0.0)
    return tuple(seen)


SEEDS: tuple[bytes, ...] = _handshake_datagrams()


def target(data: bytes) -> None:
    """Feed one datagram to a fresh secure server; any exception is a crash."""
    core = _core(_SERVER, 3)
    core.receive_datagram(data, _CLIENT_ADDR, 1.0)
    while core.next_event() is not None:
        pass
    core.datagrams_to_send(1.0)
    core.handle_timer(100.0)
