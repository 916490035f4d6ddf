"""Fuzz target: a secure server node's state machines (TEP handshake, the
Authenticator round trip, channel table, replay window, DSP and OAP on an
established session) fed arbitrary *sequences* of datagrams with time passing.

The single-datagram targets (``secure_node``, ``oap_node``) reach only a
node's first state; here a seed is a whole recorded exchange — a client's
handshake and its sealed OAP commands, as the client sent them — so a
mutation can change, drop, repeat or reorder one datagram deep in an
established session. The server is rebuilt identically for every input
(seeded randomness, fixed cookie key), so the seeds replay into a live
session. Nothing may raise; the server must still answer a fresh client's
handshake afterwards (it is never wedged by what came before).
"""

from __future__ import annotations

import random

from dofpy.oap.core import OapConfig, OapCore
from dofpy.oap.interface import Interface, Method, Param, Property, ValueType
from dofpy.testing import LocalDomain, grant
from dofpy.wire.oid import OID
from fuzz.targets._sequence import decode_sequence, encode_sequence

_SERVER = OID(3, b"server@fuzz.example")
_CLIENT = OID(3, b"client@fuzz.example")
_LATE = OID(3, b"late@fuzz.example")
_SERVER_ADDR = ("192.0.2.1", 3567)
_CLIENT_ADDR = ("192.0.2.2", 40000)
_LATE_ADDR = ("192.0.2.3", 40001)
_IFACE = Interface.define(
    "[1:{01000006}]",
    "FuzzedSecure",
    [
        Property(1, "p", ValueType.INT, writable=True, observable=True),
        Method(2, "m", (Param("a", ValueType.INT),), (Param("r", ValueType.INT),)),
    ],
)
_OBJECT = OID(3, b"object@fuzz.example")


def _core(identity: OID, seed: int) -> OapCore:
    domain = LocalDomain(
        OID(6, b"fuzz.example"), rng=random.Random(seed).randbytes, master_key=bytes(range(32))
    )
    domain.enrol(_SERVER, grant("p", interface=_IFACE.iid))
    for client in (_CLIENT, _LATE):
        domain.enrol(client, grant("rwxs", interface=_IFACE.iid))
    return OapCore(OapConfig(node=domain.node_config(identity, cookie_key=bytes(32))))


def _server() -> OapCore:
    server = _core(_SERVER, 1)
    server.provide(_OBJECT, _IFACE)
    return server


def _exchange(
    client: OapCore,
    client_addr: tuple[str, int],
    server: OapCore,
    now: float,
    rounds: int,
    sent: list[tuple[int, bytes, int]] | None = None,
) -> None:
    """``rounds`` of lossless exchange between ``client`` and ``server``,
    events discarded; what the client sends is recorded in ``sent``."""
    for _ in range(rounds):
        for data, _to in client.datagrams_to_send(now):
            if sent is not None:
                sent.append((0, data, 0))
            server.receive_datagram(data, client_addr, now)
        for data, _to in server.datagrams_to_send(now):
            client.receive_datagram(data, _SERVER_ADDR, now)
        while client.next_event() is not None:
            pass
        while server.next_event() is not None:
            pass


def _recorded_exchange() -> bytes:
    """A client's handshake, then OAP commands in its session, as it sent them."""
    server, client = _server(), _core(_CLIENT, 2)
    client.node.secure_session(_SERVER_ADDR, 0.0)
    sent: list[tuple[int, bytes, int]] = []
    _exchange(client, _CLIENT_ADDR, server, 0.0, 8, sent)
    client.get(_SERVER_ADDR, _OBJECT, _IFACE, "p", 0.0)
    _exchange(client, _CLIENT_ADDR, server, 0.0, 2, sent)
    client.invoke(_SERVER_ADDR, _OBJECT, _IFACE, "m", (7,), 0.0)
    _exchange(client, _CLIENT_ADDR, server, 0.0, 2, sent)
    client.subscribe(_SERVER_ADDR, _OBJECT, _IFACE, "p", 0.0)
    _exchange(client, _CLIENT_ADDR, server, 0.0, 2, sent)
    return encode_sequence(sent)


SEEDS: tuple[bytes, ...] = (_recorded_exchange(),)


def target(data: bytes) -> None:
    """Replay ``data`` into a fresh server; then a new client must still get a session."""
    server, now = replay(data)
    _late_client_served(server, now)


def replay(data: bytes) -> tuple[OapCore, float]:
    """``data`` replayed into a fresh server: the server and the time after it."""
    server = _server()
    now = 1.0
    for _to, datagram, step in decode_sequence(data):
        server.receive_datagram(datagram, _CLIENT_ADDR, now)
        while server.next_event() is not None:
            pass
        server.datagrams_to_send(now)
        now += step
        timer = server.get_timer()
        if timer is not None and timer <= now:
            server.handle_timer(now)
    return server, now


def _late_client_served(server: OapCore, now: float) -> None:
    late = _core(_LATE, 3)
    late.node.secure_session(_SERVER_ADDR, now)
    _exchange(late, _LATE_ADDR, server, now, 8)
    if late.node.peer_identity(_SERVER_ADDR) != _SERVER:
        raise AssertionError("after the sequence, the server no longer completes a handshake")
