"""Deferred authenticator decisions (``defer_authenticator``) and non-OAP application
commands through OapCore, on the seeded simulator with its virtual clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from dofpy.oap.core import (
    AuthenticatorRequested,
    CommandReceived,
    IncomingRequest,
    OapConfig,
    OapCore,
    OapEvent,
    OapRequestFailed,
    RequestCompleted,
    RequestKind,
)
from dofpy.security.authenticator import TrpAuthenticator
from dofpy.security.crypto import build_rekey
from dofpy.session.node import (
    Node,
    NodeConfig,
    ResponseReceived,
    SecureSessionEstablished,
    SecurityStatistics,
)
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.testing.netsim import Network
from dofpy.testing.secure import (
    AUTHENTICATOR_ADDRESS,
    CLIENT,
    CLIENT_ID,
    PROVIDER,
    PROVIDER_ID,
    SecureDomain,
)
from dofpy.wire.dpp import AppId
from dofpy.wire.oid import OID
from dofpy.wire.security import KeyRequest, SecurityIdentity
from dofpy.wire.trp import (
    RequestSessionCommand,
    TrpError,
    TrpReject,
    decode_trp_untrusted,
    encode_trp,
)

AUTHENTICATOR_ID = OID(3, b"authenticator@example.org")
WITH_TRP = (AppId.DSP, AppId.OAP, AppId.TRP, AppId.COMMON)


def security_statistics(core: OapCore) -> SecurityStatistics:
    security = core.statistics().node.security
    assert security is not None
    return security


@dataclass
class App:
    """What an application on one core does: serves OAP Gets at once, and
    answers AuthenticatorRequested and TRP commands ``delay`` seconds later (as
    a daemon's worker thread would), with ``authenticator`` unless ``answer``
    says otherwise."""

    world: SecureDomain
    core: OapCore
    address: tuple[str, int]
    authenticator: TrpAuthenticator
    delay: float = 2.0
    answer: Any = None  # a fixed TRP answer to every AuthenticatorRequested
    events: list[OapEvent] = field(default_factory=list)
    waiting: list[tuple[float, AuthenticatorRequested | CommandReceived]] = field(
        default_factory=list
    )
    answered: list[bool] = field(default_factory=list)

    def poll(self) -> None:
        now = self.world.net.now
        while (event := self.core.next_event()) is not None:
            self.events.append(event)
            match event:
                case IncomingRequest(kind=RequestKind.GET):
                    self.core.respond(event, [21], now)
                case AuthenticatorRequested() | CommandReceived():
                    self.waiting.append((now + self.delay, event))
        due = [entry for entry in self.waiting if entry[0] <= now]
        self.waiting = [entry for entry in self.waiting if entry[0] > now]
        for _, event in due:
            if isinstance(event, AuthenticatorRequested):
                answer = self.answer or self.authenticator.decide(event.command).response
                self.answered.append(self.core.node.answer_authenticator(event.token, answer, now))
            else:
                pdu = decode_trp_untrusted(event.payload, is_response=False)
                reply = self.authenticator.decide(pdu).response
                self.core.node.send_response(
                    event.peer, event.op_count, AppId.TRP, encode_trp(reply), now
                )
        self.world.net.wakeup(self.address)


def run(world: SecureDomain, apps: list[App], done: Any, max_time: float = 60.0) -> bool:
    """Run the simulator in 0.1 s slices, the applications polled at every step."""

    def step() -> bool:
        for app in apps:
            app.poll()
        return bool(done())

    end = world.net.now + max_time
    for _ in range(100_000):
        if step():
            return True
        if world.net.now >= end:
            return False
        world.net.run_until(step, max_time=min(0.1, end - world.net.now))
    return False


def result(core: OapCore, request_id: int) -> Any:
    def found() -> OapEvent | None:
        return next((e for e in seen if getattr(e, "request_id", None) == request_id), None)

    seen: list[OapEvent] = []

    def done() -> bool:
        while (event := core.next_event()) is not None:
            seen.append(event)
        return found() is not None

    return done, found


def deferred_pair(**provider_options: Any) -> tuple[SecureDomain, App, OapCore]:
    world = SecureDomain()
    provider = world.provider(defer_authenticator=True, **provider_options)
    app = App(world, provider, PROVIDER, world.authenticator)
    return world, app, world.client()


def test_a_deferred_answer_given_later_completes_the_handshake() -> None:
    world, app, client = deferred_pair()
    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    done, found = result(client, get)
    assert run(world, [app], done)
    assert found() == RequestCompleted(get, (21,))
    # One request despite the client's repeated Rekeys, answered 2 s after it came.
    requests = [e for e in app.events if isinstance(e, AuthenticatorRequested)]
    assert len(requests) == 1
    request = requests[0]
    assert (request.peer, request.initiator) == (CLIENT, CLIENT_ID)
    assert isinstance(request.command, RequestSessionCommand)
    assert app.answered == [True]
    established = [e for e in app.events if isinstance(e, SecureSessionEstablished)]
    assert [e.peer_identity for e in established] == [CLIENT_ID]
    security = security_statistics(app.core)
    assert (security.authenticator_requests, security.authenticator_pending) == (1, 0)
    assert (security.handshakes_completed, security.authenticator_answers_ignored) == (1, 0)


def test_a_trp_reject_answer_refuses_the_handshake() -> None:
    world, app, client = deferred_pair()
    app.answer = TrpReject(TrpError.ACCESS_DENIED)
    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    done, found = result(client, get)
    assert run(world, [app], done)
    failed = found()
    assert isinstance(failed, OapRequestFailed)
    assert "rejected the secure session" in str(failed.error)
    assert "ACCESS_DENIED" in str(failed.error)
    security = security_statistics(app.core)
    assert (security.handshakes_failed, security.sessions, security.authenticator_pending) == (
        1,
        0,
        0,
    )
    assert not any(isinstance(e, IncomingRequest) for e in app.events)


def test_late_duplicate_and_unknown_answers_are_ignored_and_counted() -> None:
    world, app, client = deferred_pair()
    app.delay = 1e9  # the test answers by hand
    node = app.core.node
    client.node.secure_session(PROVIDER, world.net.now)
    assert run(world, [app], lambda: bool(app.waiting), max_time=5)
    (_, timed_out), app.waiting = app.waiting[0], []
    assert isinstance(timed_out, AuthenticatorRequested)
    assert security_statistics(app.core).authenticator_pending == 1
    # Unanswered until the handshake timed out: swept, and its answer ignored.
    assert run(world, [app], lambda: security_statistics(app.core).half_open == 0, max_time=30)
    assert world.net.now >= timed_out.deadline
    assert security_statistics(app.core).authenticator_pending == 0
    late = world.authenticator.decide(timed_out.command).response
    assert not node.answer_authenticator(timed_out.token, late, world.net.now)
    assert not node.answer_authenticator(timed_out.token + 1000, late, world.net.now)  # unknown
    # Answered at its deadline, before the timer swept it: too late as well.
    other = world.client(("10.2.0.7", 50007))
    other.node.secure_session(PROVIDER, world.net.now)
    app.waiting = []
    assert run(world, [app], lambda: bool(app.waiting), max_time=5)
    (_, expiring), app.waiting = app.waiting[0], []
    assert isinstance(expiring, AuthenticatorRequested) and expiring.token != timed_out.token
    answer = world.authenticator.decide(expiring.command).response
    assert not node.answer_authenticator(expiring.token, answer, expiring.deadline)
    security = security_statistics(app.core)
    assert (security.authenticator_answers_ignored, security.sessions) == (3, 0)
    # The node keeps serving: the next handshake is answered, then answered again.
    app.delay = 0.5
    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    done, found = result(client, get)
    assert run(world, [app], done)
    assert found() == RequestCompleted(get, (21,))
    assert app.answered == [True]
    granted = [e for e in app.events if isinstance(e, AuthenticatorRequested)][-1]
    answer = world.authenticator.decide(granted.command).response
    assert not node.answer_authenticator(granted.token, answer, world.net.now)
    security = security_statistics(app.core)
    assert (security.authenticator_answers_ignored, security.sessions) == (4, 1)


def test_pending_decisions_are_bounded_by_max_half_open() -> None:
    world, app, _client = deferred_pair(max_half_open=3)
    clients = []
    for index in range(6):
        address = ("10.2.0.1", 50000 + index)
        client = world.client(address)
        client.node.secure_session(PROVIDER, world.net.now)
        world.net.wakeup(address)
        clients.append(client)
    app.delay = 1e9  # nobody answers yet
    run(world, [app], lambda: False, max_time=1.0)
    security = security_statistics(app.core)
    assert (security.authenticator_pending, security.half_open) == (3, 3)
    assert security.half_open_refused >= 3
    assert len(app.waiting) == 3
    # Answered, the three finish; the others, turned away busy, come back.
    app.delay = 0.2
    app.waiting = [(world.net.now, event) for _, event in app.waiting]
    most_pending = 0

    def all_sessions() -> bool:
        nonlocal most_pending
        for client in clients:
            while client.next_event() is not None:
                pass
        most_pending = max(most_pending, security_statistics(app.core).authenticator_pending)
        return security_statistics(app.core).sessions == 6

    assert run(world, [app], all_sessions, max_time=30)
    assert most_pending <= 3
    assert security_statistics(app.core).authenticator_requests == 6
    assert all(app.answered)


def test_the_synchronous_local_authenticator_is_unchanged() -> None:
    world = SecureDomain()
    provider = world.provider()  # local_authenticator: decided in the handshake
    app = App(world, provider, PROVIDER, world.authenticator)
    client = world.client()
    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    done, found = result(client, get)
    assert run(world, [app], done)
    assert found() == RequestCompleted(get, (21,))
    assert not any(isinstance(e, AuthenticatorRequested) for e in app.events)
    security = security_statistics(provider)
    assert (security.authenticator_requests, security.handshakes_completed) == (0, 1)


def test_defer_authenticator_excludes_other_authenticators() -> None:
    world = SecureDomain()
    with pytest.raises(ValueError, match="defer_authenticator"):
        world.local.security(
            CLIENT_ID, defer_authenticator=True, local_authenticator=world.authenticator
        )
    with pytest.raises(ValueError, match="defer_authenticator"):
        world.local.security(
            CLIENT_ID, defer_authenticator=True, authenticator=AUTHENTICATOR_ADDRESS
        )


def test_a_node_without_security_cannot_answer_authenticator() -> None:
    from dofpy.errors import LocalProtocolError  # noqa: PLC0415

    with pytest.raises(LocalProtocolError):
        Node().answer_authenticator(1, TrpReject(TrpError.ACCESS_DENIED), 0.0)


def test_authenticator_as_oap_node_with_deferred_decisions_and_sealed_trp() -> None:
    """The Authenticator as an OapCore node: its own handshakes decided later
    (defer_authenticator), TRP commands handed up as CommandReceived and answered
    later, OAP Gets served; a provider talks TRP to it sealed."""
    world = SecureDomain()
    world.local.enrol(AUTHENTICATOR_ID)
    authenticator = OapCore(
        OapConfig(
            node=NodeConfig(
                node_id=AUTHENTICATOR_ID,
                applications=WITH_TRP,
                security=world.local.security(AUTHENTICATOR_ID, defer_authenticator=True),
            )
        )
    )
    authenticator.provide(OID(3, b"health@example.org"), THERMOSTAT)
    world.net.add(authenticator, AUTHENTICATOR_ADDRESS)
    auth_app = App(world, authenticator, AUTHENTICATOR_ADDRESS, world.authenticator, delay=1.0)
    provider = world.provider(authenticator=AUTHENTICATOR_ADDRESS, seal_authenticator=True)
    provider_app = App(world, provider, PROVIDER, world.authenticator)
    client = world.client()

    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    done, found = result(client, get)
    assert run(world, [auth_app, provider_app], done)
    assert found() == RequestCompleted(get, (21,))
    trp = [e for e in auth_app.events if isinstance(e, CommandReceived)]
    assert len(trp) == 1
    assert (trp[0].app_id, trp[0].peer) == (AppId.TRP, PROVIDER)
    assert trp[0].identity == PROVIDER_ID
    assert trp[0].permissions is not None
    # The Authenticator's own handshake (with the provider) was deferred.
    requests = [e for e in auth_app.events if isinstance(e, AuthenticatorRequested)]
    assert [r.peer for r in requests] == [PROVIDER]

    # The same node serves OAP: the client reads its health (a second deferred handshake).
    health = client.get(
        AUTHENTICATOR_ADDRESS,
        OID(3, b"health@example.org"),
        THERMOSTAT,
        "temperature",
        world.net.now,
    )
    done, found = result(client, health)
    assert run(world, [auth_app, provider_app], done)
    assert found() == RequestCompleted(health, (21,))
    assert [r.peer for r in auth_app.events if isinstance(r, AuthenticatorRequested)] == [
        PROVIDER,
        CLIENT,
    ]
    assert all(auth_app.answered)


def test_plain_oap_core_hands_trp_commands_up_and_serves_oap() -> None:
    net = Network(1)
    server = OapCore(OapConfig(node=NodeConfig(applications=WITH_TRP)))
    server.provide(THERMOSTAT_OID, THERMOSTAT)
    server_address, peer_address = ("10.0.0.1", 3567), ("10.0.0.2", 40000)
    net.add(server, server_address)
    peer = Node()
    net.add(peer, peer_address)
    command = RequestSessionCommand(
        OID(6, b"example.org"),
        KeyRequest(SecurityIdentity(OID(3, b"responder@example.org")), b"\x02" * 16),
        build_rekey(OID(6, b"example.org"), CLIENT_ID, b"\x01" * 16).initiator,
    )
    asking = peer.send_command(server_address, AppId.TRP, encode_trp(command), net.now)
    requestor = OapCore()
    requestor_address = ("10.0.0.3", 40001)
    net.add(requestor, requestor_address)
    get = requestor.get(server_address, THERMOSTAT_OID, THERMOSTAT, "temperature", net.now)
    net.wakeup(requestor_address)
    answers: list[object] = []
    commands: list[CommandReceived] = []

    def serve() -> bool:
        while (event := server.next_event()) is not None:
            if isinstance(event, CommandReceived):
                commands.append(event)
                pdu = decode_trp_untrusted(event.payload, is_response=False)
                assert pdu == command
                reply = encode_trp(TrpReject(TrpError.UNKNOWN_DOMAIN))
                server.node.send_response(event.peer, event.op_count, AppId.TRP, reply, net.now)
            elif isinstance(event, IncomingRequest):
                server.respond(event, [21], net.now)
            net.wakeup(server_address)
        while (node_event := peer.next_event()) is not None:
            answers.append(node_event)
        while (oap_event := requestor.next_event()) is not None:
            answers.append(oap_event)
        return len(answers) == 2

    assert net.run_until(serve, max_time=10)
    assert RequestCompleted(get, (21,)) in answers
    reply = next(a for a in answers if isinstance(a, ResponseReceived))
    assert reply.request_id == asking
    assert decode_trp_untrusted(reply.payload, True) == TrpReject(TrpError.UNKNOWN_DOMAIN)
    assert [(c.app_id, c.peer, c.identity) for c in commands] == [(AppId.TRP, peer_address, None)]
    assert server.statistics().bad_oap_payloads == 0
