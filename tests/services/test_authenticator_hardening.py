"""The Authenticator's unauthenticated paths, attacked on the simulator:
TRP in the clear is refused by default (one constant answer, no decision, no
audit row) while a sealed device is served; one host flooding it is bounded
by its per-host rate limit while another host is served."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dofpy._core import Address
from dofpy.oap.core import RequestCompleted
from dofpy.security.authenticator import Decision
from dofpy.security.crypto import build_rekey
from dofpy.session.node import AuthenticatorRequested, CommandReceived
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.testing.secure import (
    AUTHENTICATOR_ADDRESS,
    CLIENT,
    CLIENT_ID,
    PROVIDER,
    PROVIDER_ID,
    SecureDomain,
    thermostat_grant,
)
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, decode_frame_untrusted, encode_frame
from dofpy.wire.oid import OID
from dofpy.wire.security import KeyRequest, SecurityIdentity
from dofpy.wire.trp import (
    RequestSessionCommand,
    RequestSessionResponse,
    TrpError,
    TrpReject,
    decode_trp_untrusted,
    encode_trp,
)
from dofpy_services.authenticator.daemon import AuthenticatorCore, TrpResponder
from dofpy_services.authenticator.limits import HostRateLimiter, RateLimit
from tests.services.test_authenticator import enrol, run
from tests.session.test_secure_sessions import Pair

ATTACKER: Address = ("10.6.6.6", 40000)


@dataclass
class Sink:
    """A core that only records what reaches it (the attacker's socket)."""

    received: list[bytes] = field(default_factory=list)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.received.append(data)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def clear_request(world: SecureDomain, initiator: OID, op: int) -> bytes:
    """A TRP Request Session in the clear asking about ``initiator``."""
    command = RequestSessionCommand(
        world.domain.oid,
        KeyRequest(SecurityIdentity(PROVIDER_ID), bytes(16), thermostat_grant("p")),
        build_rekey(world.domain.oid, initiator, bytes(16)).initiator,
    )
    return encode_frame(
        DppPacket(
            app_id=AppId.TRP,
            payload=encode_trp(command),
            op_id_type=OpIdType.IMPLIED_SENDER,
            op_count=op,
        )
    )


def authenticator_world(
    **options: Any,
) -> tuple[SecureDomain, AuthenticatorCore, list[tuple[Decision, Address]]]:
    world = SecureDomain()
    decided: list[tuple[Decision, Address]] = []
    core = AuthenticatorCore(
        world.authenticator,
        lambda decision, peer, now: decided.append((decision, peer)),
        security=world.authenticator_security(),
        **options,
    )
    world.net.add(core, AUTHENTICATOR_ADDRESS)
    return world, core, decided


def genuine_get(world: SecureDomain) -> object:
    """The genuine provider (asking the Authenticator sealed) serves a client."""
    p = Pair(world, world.provider(authenticator=AUTHENTICATOR_ADDRESS), world.client())
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    return p.result(get) == RequestCompleted(get, (21,))


def test_clear_trp_is_refused_by_default_alike_for_all_and_decides_nothing() -> None:
    world, authenticator, decided = authenticator_world()
    sink = Sink()
    world.net.add(sink, ATTACKER)
    # The attack: ask in the clear about an enrolled node, the Authenticator
    # itself and a stranger, each of which a clear answer would tell apart.
    askers = [CLIENT_ID, OID(3, b"authenticator@example.org"), OID(3, b"nobody@example.org")]
    requests = [clear_request(world, initiator, 100 + i) for i, initiator in enumerate(askers)]
    for request in requests:
        world.net.inject(request, ATTACKER, AUTHENTICATOR_ADDRESS)
    world.net.run_until(lambda: len(sink.received) == len(requests), max_time=5)
    assert len(sink.received) == len(requests)
    payloads = {decode_frame_untrusted(answer)[1].payload for answer in sink.received}
    # One constant answer, whoever is asked about: nothing learnt.
    assert len(payloads) == 1
    assert decode_trp_untrusted(payloads.pop(), True) == TrpReject(TrpError.ACCESS_DENIED)
    # No amplification: each answer is smaller than its request.
    assert max(map(len, sink.received)) < min(map(len, requests))
    # Nothing decided (no grant, no store lookup; the audit, given on_audit,
    # records only that clear TRP was refused: tests/services/test_authenticator_audit.py).
    assert authenticator.clear_refused == len(requests)
    assert authenticator.decisions == 0 and decided == []

    # The genuine provider, asking sealed, is served; its one decision is a grant.
    assert genuine_get(world)
    assert authenticator.decisions == 1 and [d.granted for d, _ in decided] == [True]
    assert decided[0][1][0] == PROVIDER[0] and authenticator.clear_refused == len(requests)


def test_clear_trp_still_answered_when_chosen_explicitly() -> None:
    # The counterpart: with sealed_only=False the same question is decided,
    # which is what the default refuses to do.
    world, authenticator, _ = authenticator_world(sealed_only=False)
    sink = Sink()
    world.net.add(sink, ATTACKER)
    world.net.inject(clear_request(world, CLIENT_ID, 7), ATTACKER, AUTHENTICATOR_ADDRESS)
    world.net.run_until(lambda: bool(sink.received), max_time=5)
    answer = decode_trp_untrusted(decode_frame_untrusted(sink.received[0])[1].payload, True)
    assert isinstance(answer, RequestSessionResponse)
    assert authenticator.decisions == 1 and authenticator.clear_refused == 0


def test_a_core_without_its_own_identity_must_choose_clear_trp() -> None:
    world = SecureDomain()
    with pytest.raises(ValueError, match="sealed_only=False"):
        AuthenticatorCore(world.authenticator)


@pytest.mark.parametrize("sealed_only", [True, False])
def test_one_flooding_host_is_rate_limited_while_another_is_served(sealed_only: bool) -> None:
    limit = RateLimit(rate=20, burst=40, max_hosts=64)
    world, authenticator, decided = authenticator_world(sealed_only=sealed_only, rate_limit=limit)
    # The genuine provider needs the Authenticator for the client's session...
    p = Pair(world, world.provider(authenticator=AUTHENTICATOR_ADDRESS), world.client())
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    world.net.wakeup(CLIENT)
    # ... while one host sends 1,000 requests a second for 2 s, its port
    # changing with each (a bucket per port would be a fresh bucket each).
    sent = 0
    for _tick in range(200):
        for _ in range(10):
            source = (ATTACKER[0], 40000 + sent % 5000)
            world.net.inject(clear_request(world, CLIENT_ID, sent), source, AUTHENTICATOR_ADDRESS)
            sent += 1
        world.net.run_until(p.pump, max_time=0.01)
    world.net.run_until(p.pump, max_time=1.0)
    attacker_decided = sum(1 for _, peer in decided if peer[0] == ATTACKER[0])
    attacker_served = authenticator.clear_refused + attacker_decided
    assert attacker_decided == (0 if sealed_only else attacker_served)
    # At most the burst plus the rate over the 2 s of the flood; the rest dropped.
    assert limit.burst <= attacker_served <= limit.burst + limit.rate * 2.0 + 1
    assert authenticator.rate_limited == sent - attacker_served
    # The genuine party was served meanwhile: its grant, and the client's answer.
    assert [d.granted for d, peer in decided if peer[0] == PROVIDER[0]] == [True]
    answers = [e for e in p.client_events if getattr(e, "request_id", None) == get]
    assert answers == [RequestCompleted(get, (21,))]


def test_the_rate_table_is_bounded_and_idle_buckets_come_back_full() -> None:
    limiter = HostRateLimiter(RateLimit(rate=1, burst=2, max_hosts=3))
    for host in range(10):
        assert limiter.allow((f"10.0.0.{host}", 1), 0.0)
    assert limiter.hosts == 3 and limiter.evictions == 7
    assert [limiter.allow(("10.0.0.9", 2), 0.0) for _ in range(2)] == [True, False]
    assert not limiter.allow(("10.0.0.9", 3), 0.5)  # half a token back: not yet
    assert limiter.allow(("10.0.0.9", 4), 1.0)
    assert not limiter.allow(("10.0.0.9", 4), 0.0)  # a clock going back refills nothing


@dataclass
class FakeNode:
    """What a TrpResponder needs of a node, recording its answers."""

    config: Any
    answers: list[tuple[int, object]] = field(default_factory=list)
    responses: list[tuple[Address, int, bytes]] = field(default_factory=list)

    def answer_authenticator(self, token: int, answer: object, now: float) -> bool:
        self.answers.append((token, answer))
        return True

    def send_response(
        self,
        peer: Address,
        op_count: int,
        app_id: int,
        payload: bytes,
        now: float,
        identity: object = None,
    ) -> None:
        self.responses.append((peer, op_count, payload))


def test_handshakes_over_the_rate_are_refused_high_load_without_a_decision() -> None:
    world = SecureDomain()
    node = FakeNode(config=type("Config", (), {"security": world.authenticator_security()})())
    decided: list[Decision] = []
    responder = TrpResponder(
        node,  # type: ignore[arg-type]
        world.authenticator,
        rate_limit=RateLimit(rate=1, burst=3, max_hosts=8),
        on_decision=lambda decision, peer, now: decided.append(decision),
    )
    command = RequestSessionCommand(
        world.domain.oid,
        KeyRequest(SecurityIdentity(PROVIDER_ID), bytes(16), thermostat_grant("p")),
        build_rekey(world.domain.oid, CLIENT_ID, bytes(16)).initiator,
    )
    for token in range(10):
        responder.on_event(AuthenticatorRequested(token, ATTACKER, command, 10.0), 0.0)
    # A genuine responder on another host, meanwhile: decided.
    responder.on_event(AuthenticatorRequested(99, PROVIDER, command, 10.0), 0.0)
    assert responder.rate_limited == 7 and responder.decisions == 4 and len(decided) == 4
    high_load = [token for token, answer in node.answers if answer == TrpReject(TrpError.HIGH_LOAD)]
    assert high_load == list(range(3, 10))
    assert dict(node.answers)[99] != TrpReject(TrpError.HIGH_LOAD)
    # A clear command is refused without a decision, counted apart.
    responder.on_event(CommandReceived(("10.7.7.7", 1), 5, AppId.TRP, b"\x00", 0), 0.0)
    assert responder.clear_refused == 1 and responder.decisions == 4
    assert node.responses[0][:2] == (("10.7.7.7", 1), 5)


def test_cli_checks_the_rate_limit_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "as.db")
    enrol(db, capsys)
    clear = ("serve", "--db", db, "--sealed-only", "false")
    status, _, err = run(capsys, *clear, "--rate-limit", "-1")
    assert status == 2 and "rate_limit" in err
    status, _, err = run(capsys, *clear, "--rate-burst", "0")
    assert status == 2 and "rate_burst" in err
    status, out, _ = run(capsys, *clear, "--rate-limit", "5", "--print-config")
    assert status == 0 and "rate_limit = 5" in out and "rate_burst = 40" in out


def test_sealed_commands_are_limited_per_authenticated_identity_not_per_host() -> None:
    """Two services on one host (or behind one NAT) asking for their devices'
    sessions: each has its own bucket, keyed by the identity its secure
    session authenticated; neither spends the other's, nor the strangers'
    per-host one (which stays small)."""
    world = SecureDomain()
    node = FakeNode(config=type("Config", (), {"security": world.authenticator_security()})())
    responder = TrpResponder(
        node,  # type: ignore[arg-type]
        world.authenticator,
        rate_limit=RateLimit(rate=1, burst=1, max_hosts=8),
        sealed_rate_limit=RateLimit(rate=1, burst=3, max_hosts=8),
    )
    host = ("10.1.1.1", 4000)
    for identity in (PROVIDER_ID, CLIENT_ID):
        for op in range(10):
            responder.on_event(
                CommandReceived(host, op, AppId.TRP, b"\x00", 0, identity=identity), 0.0
            )
    # Three each served (their bursts), seven each dropped: 14, not the 19 a
    # shared per-host bucket of one would drop.
    assert responder.rate_limited == 14
    # The host's own bucket is untouched: a stranger's clear command from it
    # is refused as clear (not as over the rate).
    responder.on_event(CommandReceived(host, 99, AppId.TRP, b"\x00", 0), 0.0)
    assert responder.rate_limited == 14 and responder.clear_refused == 1


def test_the_default_sealed_limit_serves_a_fleets_reconnection_burst() -> None:
    world = SecureDomain()
    node = FakeNode(config=type("Config", (), {"security": world.authenticator_security()})())
    responder = TrpResponder(node, world.authenticator)  # type: ignore[arg-type]
    for op in range(1000):  # a service accepting 1,000 devices' sessions at once
        responder.on_event(
            CommandReceived(("10.1.1.1", 4000), op, AppId.TRP, b"\x00", 0, identity=PROVIDER_ID),
            0.0,
        )
    assert responder.rate_limited == 0
