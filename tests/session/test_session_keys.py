"""Session keys over their lifetime, on the seeded simulator: how many a node
holds per peer across rekeys and End Sessions, the AEAD usage limits (RFC 9001
§6.6) on both sides, forgeries retiring a key, and the plaintext policy."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from dofpy.oap.core import IncomingRequest, OapConfig, OapCore, RequestCompleted
from dofpy.session.channels import ChannelTable
from dofpy.session.node import (
    NodeConfig,
    PlaintextPolicy,
    PlaintextUsed,
    SecureSessionEnded,
    SecureSessionEstablished,
    SecurityConfig,
    SecurityStatistics,
)
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.testing.secure import CLIENT, CLIENT_ID, PROVIDER, SecureDomain
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame
from dofpy.wire.oap import Binding, GetCommand, encode_oap
from tests.session.test_secure_sessions import Pair


def security_of(core: OapCore) -> SecurityStatistics:
    stats = core.statistics().node.security
    assert stats is not None
    return stats


def layer(core: OapCore) -> ChannelTable:
    security = core.node._security
    assert security is not None
    return security.channels


def keys_with(core: OapCore, peer: tuple[str, int]) -> int:
    """Session keys ``core`` holds for ``peer`` (current and superseded)."""
    return layer(core).keys_with(peer)


def usage_with(core: OapCore, peer: tuple[str, int]) -> int:
    session = layer(core).session(peer)
    return 0 if session is None else session.channel.packets_protected


def sealed_by(core: OapCore, peer: tuple[str, int]) -> int:
    session = layer(core).session(peer)
    return 0 if session is None else session.channel._counter.used


def invoke(p: Pair, index: int) -> None:
    call = p.client.invoke(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "add", [index, 1], p.world.net.now)
    assert p.result(call) == RequestCompleted(call, (index + 1,)), index


# -- session accumulation ------------------------------------------------------------


def test_many_rekeys_and_end_sessions_leave_a_bounded_number_of_keys_per_peer() -> None:
    world = SecureDomain()
    # A small usage limit makes the client rekey every handful of requests.
    p = Pair(world, world.provider(), world.client(confidentiality_limit=12))
    most = 0
    for index in range(60):
        invoke(p, index)
        if index in (14, 29, 44):
            assert p.client.node.end_secure_session(PROVIDER, world.net.now)
        most = max(most, keys_with(p.client, PROVIDER), keys_with(p.provider, CLIENT))
    client, provider = security_of(p.client), security_of(p.provider)
    # Many new keys were made (rekeys and new sessions after each End Session) ...
    assert client.rekeys >= 6 and client.handshakes_completed >= 10
    # (the provider completes a few the client abandons: it ended the session
    # while the new key was being confirmed)
    assert provider.handshakes_completed >= client.handshakes_completed
    # ... yet each side never held more than the current and one superseded key
    # for the peer (before: every superseded key stayed about an hour).
    assert most <= 2
    assert client.keys <= 2 and provider.keys <= 2
    assert client.sessions == provider.sessions == 1
    assert provider.keys_retired >= provider.handshakes_completed - 2
    # Left alone, each side is down to the one current key within the grace.
    world.net.run_until(p.pump, max_time=40.0)
    assert keys_with(p.client, PROVIDER) == keys_with(p.provider, CLIENT) == 1
    invoke(p, 1000)


def test_a_superseded_key_opens_in_flight_packets_then_is_retired() -> None:
    world = SecureDomain()
    p = Pair(world, world.provider(superseded_grace=10.0), world.client())
    invoke(p, 0)
    now = world.net.now
    # A command sealed under the first key, held back while the key changes.
    p.client.invoke(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "add", [41, 1], now)
    ((late, _),) = p.client.datagrams_to_send(now)
    p.client.node.secure_session(PROVIDER, now)
    world.net.wakeup(CLIENT)
    world.net.run_until(lambda: p.pump() or security_of(p.client).rekeys == 1, max_time=5.0)
    assert security_of(p.provider).rekeys == 1 and keys_with(p.provider, CLIENT) == 2
    served = len([e for e in p.provider_events if isinstance(e, IncomingRequest)])
    p.provider.receive_datagram(late, CLIENT, world.net.now)
    p.pump()
    assert len([e for e in p.provider_events if isinstance(e, IncomingRequest)]) == served + 1
    # Once the client is seen using the new key, the old one goes after a
    # short reorder grace, well before superseded_grace.
    invoke(p, 1)
    later = world.net.now + 3.0
    p.provider.handle_timer(later)
    assert keys_with(p.provider, CLIENT) == 1
    unknown = security_of(p.provider).unknown_sessions
    p.provider.receive_datagram(late, CLIENT, later)  # a copy under the old key
    assert security_of(p.provider).unknown_sessions == unknown + 1
    assert security_of(p.provider).keys_retired == 1


def test_end_session_retires_every_key_of_the_peer() -> None:
    world = SecureDomain()
    p = Pair(world, world.provider(), world.client(confidentiality_limit=8))
    for index in range(8):
        invoke(p, index)
    assert security_of(p.client).rekeys >= 1
    assert p.client.node.end_secure_session(PROVIDER, world.net.now)
    assert keys_with(p.client, PROVIDER) == 0
    world.net.wakeup(CLIENT)
    world.net.run_until(
        lambda: p.pump() or any(isinstance(e, SecureSessionEnded) for e in p.provider_events),
        max_time=5.0,
    )
    assert keys_with(p.provider, CLIENT) == 0 and security_of(p.provider).keys == 0
    invoke(p, 7)  # a new session, and served
    assert keys_with(p.client, PROVIDER) == keys_with(p.provider, CLIENT) == 1


# -- AEAD usage limits ----------------------------------------------------------------


def test_the_initiator_rekeys_before_the_usage_limit() -> None:
    world = SecureDomain()
    limit = 40
    p = Pair(world, world.provider(), world.client(confidentiality_limit=limit))
    for index in range(80):
        invoke(p, index)
        assert usage_with(p.client, PROVIDER) <= limit
    client = security_of(p.client)
    assert client.usage_rekeys >= 3 and client.rekeys >= 3
    assert client.sends_held == 0
    # The client stayed the initiator throughout: the provider never had to.
    assert security_of(p.provider).usage_rekeys == 0
    session = layer(p.client).session(PROVIDER)
    assert session is not None and session.channel.initiator


def test_the_responder_rekeys_before_the_usage_limit() -> None:
    world = SecureDomain()
    limit = 40
    # Only the provider (the responder) has a small limit: it must rekey itself.
    p = Pair(world, world.provider(confidentiality_limit=limit), world.client())
    for index in range(80):
        invoke(p, index)
        assert usage_with(p.provider, CLIENT) <= limit
    provider = security_of(p.provider)
    assert provider.usage_rekeys >= 3 and provider.rekeys >= 3
    assert security_of(p.client).usage_rekeys == 0
    # The provider started the handshakes: it is now the initiator of the session.
    session = layer(p.provider).session(CLIENT)
    assert session is not None and session.channel.initiator
    assert keys_with(p.provider, CLIENT) <= 2 and keys_with(p.client, PROVIDER) <= 2


def test_sends_past_the_usage_limit_are_held_for_the_new_key_never_raised() -> None:
    world = SecureDomain()
    limit = 10
    p = Pair(world, world.provider(), world.client(confidentiality_limit=limit))
    invoke(p, 0)
    now = world.net.now
    # Thirty commands at once, before anything is delivered: the key reaches
    # its limit long before the new one can be in place.
    calls = [
        p.client.invoke(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "add", [index, 1], now)
        for index in range(30)
    ]
    one_way = [p.client.node.send_heartbeat(PROVIDER, now) for _ in range(3)]
    assert len(one_way) == 3
    assert usage_with(p.client, PROVIDER) <= limit
    assert security_of(p.client).sends_held >= 1
    results = [p.result(call, max_time=120) for call in calls]
    assert results == [RequestCompleted(c, (i + 1,)) for i, c in enumerate(calls)]
    assert security_of(p.client).rekeys >= 1
    assert usage_with(p.client, PROVIDER) <= limit


def test_forgeries_past_the_integrity_limit_retire_the_key() -> None:
    world = SecureDomain()
    p = Pair(world, world.provider(integrity_limit=5), world.client())
    invoke(p, 0)
    now = world.net.now
    p.client.invoke(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "add", [1, 1], now)
    ((genuine, _),) = p.client.datagrams_to_send(now)
    forged = bytearray(genuine)
    forged[-1] ^= 0x01  # the tag
    # An off-path attacker spoofing the client: four forgeries leave the key in use.
    for _ in range(4):
        p.provider.receive_datagram(bytes(forged), CLIENT, now)
    assert security_of(p.provider).authentication_failures == 4
    assert security_of(p.provider).integrity_retirements == 0
    assert keys_with(p.provider, CLIENT) == 1
    # The fifth reaches the integrity limit: the key is retired at once and the
    # client told (sealed End Session) so that it makes a new one.
    p.provider.receive_datagram(bytes(forged), CLIENT, now)
    provider = security_of(p.provider)
    assert provider.integrity_retirements == 1 and provider.keys == 0 and provider.sessions == 0
    # The genuine party is still served, under a new key.
    invoke(p, 2)
    assert any(
        isinstance(e, SecureSessionEnded) and "ended the secure session" in str(e.error)
        for e in p.client_events
    )
    assert security_of(p.provider).sessions == 1 and keys_with(p.provider, CLIENT) == 1
    established = [e for e in p.client_events if isinstance(e, SecureSessionEstablished)]
    assert len({e.session_key for e in established}) == 2


def test_limits_are_checked() -> None:
    world = SecureDomain()
    for bad in ({"confidentiality_limit": 3}, {"confidentiality_limit": 1 << 31}):
        with pytest.raises(ValueError, match="confidentiality_limit"):
            world.local.security(CLIENT_ID, **bad)
    with pytest.raises(ValueError, match="integrity_limit"):
        world.local.security(CLIENT_ID, integrity_limit=0)


# -- the plaintext policy -------------------------------------------------------------


def security(world: SecureDomain, **overrides: Any) -> SecurityConfig:
    return world.local.security(CLIENT_ID, **overrides)


def test_plaintext_is_refused_unless_explicitly_allowed() -> None:
    world = SecureDomain()
    assert security(world).plaintext is PlaintextPolicy.REFUSE
    assert security(world).require_security
    allowed = security(world, plaintext=PlaintextPolicy.ALLOW)
    assert not allowed.require_security
    with pytest.raises(ValueError, match="contradicts"):
        security(world, plaintext=PlaintextPolicy.REFUSE, require_security=False)
    # The older spelling still works, and says what it means.
    with pytest.warns(DeprecationWarning, match="PlaintextPolicy.ALLOW"):
        legacy = security(world, require_security=False)
    assert legacy.plaintext is PlaintextPolicy.ALLOW
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        security(world)  # no warning by default


def plaintext_provider(world: SecureDomain) -> OapCore:
    core = OapCore(OapConfig(node=NodeConfig()))
    core.provide(THERMOSTAT_OID, THERMOSTAT)
    world.net.add(core, PROVIDER)
    return core


def test_allowed_plaintext_is_counted_and_announced_once_per_peer() -> None:
    world = SecureDomain()
    p = Pair(world, plaintext_provider(world), world.client(plaintext=PlaintextPolicy.ALLOW))
    for _ in range(3):
        get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
        assert p.result(get) == RequestCompleted(get, (21,))
    client = security_of(p.client)
    assert client.plaintext_sent == 3 and client.plaintext_accepted == 3
    assert client.handshakes_started == 0
    announced = [e for e in p.client_events if isinstance(e, PlaintextUsed)]
    assert announced == [PlaintextUsed(PROVIDER, True), PlaintextUsed(PROVIDER, False)]


def spoofed_get(op: int) -> bytes:
    return encode_frame(
        DppPacket(
            AppId.OAP,
            encode_oap(GetCommand(1, Binding(THERMOSTAT.iid, THERMOSTAT_OID))),
            op_id_type=OpIdType.IMPLIED_SENDER,
            op_count=op,
            retry=0,
        )
    )


def test_allowed_plaintext_never_downgrades_a_secured_peer() -> None:
    world = SecureDomain()
    p = Pair(
        world,
        world.provider(plaintext=PlaintextPolicy.ALLOW),
        world.client(plaintext=PlaintextPolicy.ALLOW),
    )
    p.client.node.secure_session(PROVIDER, world.net.now)
    invoke(p, 0)
    assert security_of(p.client).plaintext_sent == 0
    # Anyone can send from the client's address: a clear command from it is
    # refused while (and after) the client is secured with the provider.
    served = len([e for e in p.provider_events if isinstance(e, IncomingRequest)])
    p.provider.receive_datagram(spoofed_get(77), CLIENT, world.net.now)
    p.pump()
    assert len([e for e in p.provider_events if isinstance(e, IncomingRequest)]) == served
    assert security_of(p.provider).plaintext_refused == 1
    assert security_of(p.provider).plaintext_accepted == 0
    # After the session ends, the client does not fall back to the clear with
    # this peer: its next request starts a new handshake and is sealed.
    assert p.client.node.end_secure_session(PROVIDER, world.net.now)
    invoke(p, 1)
    assert security_of(p.client).plaintext_sent == 0
    assert security_of(p.client).handshakes_completed == 2
    p.provider.receive_datagram(spoofed_get(78), CLIENT, world.net.now)
    assert security_of(p.provider).plaintext_refused == 2
    assert not any(isinstance(e, PlaintextUsed) for e in p.client_events + p.provider_events)


def test_a_responder_whose_peer_cannot_take_its_rekey_holds_at_the_limit_and_recovers() -> None:
    world = SecureDomain()
    limit = 24
    # The client has no Authenticator: it cannot answer the provider's Rekey.
    # (Nor does it rekey on its own when the provider falls silent: that
    # recovery, SecurityConfig.silence_rekey, is the restart tests'.)
    p = Pair(
        world,
        world.provider(confidentiality_limit=limit),
        world.client(local_authenticator=None, handshake_timeout=2.0, silence_rekey=0.0),
    )
    completed = 0
    frozen: int | None = None
    for index in range(16):
        call = p.client.invoke(
            PROVIDER, THERMOSTAT_OID, THERMOSTAT, "add", [index, 1], world.net.now
        )
        result = p.result(call, max_time=30)
        completed += isinstance(result, RequestCompleted)
        # Nothing raised; once the key is used up the provider seals nothing
        # more under it (the client, with its own larger limit, may seal on).
        session = layer(p.provider).session(CLIENT)
        assert session is not None
        if session.channel.exhausted and frozen is None:
            frozen = sealed_by(p.provider, CLIENT)
        # Frozen until the client, its request unanswered and nothing heard
        # since, retires the session and handshakes again.
        retired = security_of(p.client).silent_sessions_retired
        assert frozen is None or retired or sealed_by(p.provider, CLIENT) == frozen
    provider = security_of(p.provider)
    assert frozen is not None
    assert provider.sends_held >= 1 and provider.handshakes_failed >= 1
    # Its new handshakes are spaced by the handshake timeout, not one per packet.
    assert provider.usage_rekeys <= 1 + world.net.now / 15.0
    assert 10 <= completed <= 16
    # The initiator's own rekey brings the traffic back (if it is not back).
    p.client.node.secure_session(PROVIDER, world.net.now)
    invoke(p, 100)
    assert sealed_by(p.provider, CLIENT) < limit


def test_simultaneous_open_keeps_both_directions_working_past_the_grace() -> None:
    """Two sessions, one started by each side, are not a rekey of each other:
    retiring 'the older one' after the grace would cut one direction."""
    world = SecureDomain()
    p = Pair(world, world.provider(), world.client())
    p.provider.node.secure_session(CLIENT, world.net.now)
    p.client.node.secure_session(PROVIDER, world.net.now)
    world.net.wakeup(PROVIDER)
    world.net.wakeup(CLIENT)
    assert world.net.run_until(
        lambda: (
            p.pump()
            or (
                security_of(p.provider).handshakes_completed == 2
                and security_of(p.client).handshakes_completed == 2
            )
        ),
        max_time=10,
    )
    end = world.net.now + 31.0
    world.net.run_until(lambda: p.pump() or world.net.now >= end, max_time=32.0)
    call = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    assert p.result(call) == RequestCompleted(call, (21,))
    back = p.provider.get(CLIENT, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    world.net.wakeup(PROVIDER)
    assert world.net.run_until(
        lambda: p.pump() or any(getattr(e, "request_id", None) == back for e in p.provider_events),
        max_time=20,
    )
    answered = next(e for e in p.provider_events if getattr(e, "request_id", None) == back)
    # The client provides nothing: refused by it, not lost to a retired key.
    assert "no response" not in str(getattr(answered, "error", ""))
    for core in (p.client, p.provider):
        assert security_of(core).authentication_failures == 0
