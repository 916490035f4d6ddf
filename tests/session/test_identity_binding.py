"""Trust by authenticated identity, not by address (issue 8, Build 1 and the
duplicate-cache half of 6), on the seeded simulator.

Each attack is mounted by an *enrolled* node holding no permissions (it
completes TEP with anyone: the Authenticator knows it) that receives the
traffic of an address it does not own: the simulator detaches the genuine
core from the address and attaches the attacker's there. Each test shows the
attack refused (counted, nothing accepted) and the genuine party then served.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from dofpy._core import Address, DatagramCore
from dofpy.errors import BadPacket, PeerIdentityMismatch, ProviderNotPermitted
from dofpy.oap.core import (
    AccessDenied,
    IncomingRequest,
    Notification,
    OapConfig,
    OapCore,
    OapEvent,
    OapRequestFailed,
    RequestCompleted,
    RequestKind,
)
from dofpy.oap.errors import OapError, OapErrorCode
from dofpy.session.node import NodeConfig
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.testing.secure import CLIENT, CLIENT_ID, PROVIDER, PROVIDER_ID, SecureDomain
from dofpy.testing.secure import thermostat_grant as grant
from dofpy.wire.dpp import AppId, decode_frame_untrusted
from dofpy.wire.oap import Binding, ChangeCommand, GetResponse, encode_oap
from dofpy.wire.oid import OID

IMPOSTOR_ID = OID(3, b"impostor@example.org")
GENUINE_VALUE = 21
IMPOSTOR_VALUE = 666


class World:
    """A secure THERMOSTAT domain: the genuine provider, a client, and an
    impostor enrolled with no permissions at all (it provides THERMOSTAT
    itself, answering :data:`IMPOSTOR_VALUE`, to show what it would serve)."""

    def __init__(self, seed: int = 1, **client: Any) -> None:
        self.domain = SecureDomain(seed=seed)
        self.net = self.domain.net
        self.domain.local.enrol(IMPOSTOR_ID)
        self.provider = self.domain.provider()
        self.client = self.domain.client(**client)
        self.impostor = OapCore(OapConfig(node=self.domain.local.node_config(IMPOSTOR_ID)))
        self.impostor.provide(THERMOSTAT_OID, THERMOSTAT)
        self.events: dict[int, list[OapEvent]] = {
            id(core): [] for core in (self.provider, self.client, self.impostor)
        }
        self.requestors = [self.client]
        self.answering = True  # False: requests wait for the test to answer them

    def add_requestor(self, core: OapCore) -> None:
        self.requestors.append(core)
        self.events[id(core)] = []

    def of(self, core: OapCore) -> list[OapEvent]:
        return self.events[id(core)]

    def requests(self, core: OapCore) -> list[IncomingRequest]:
        return [e for e in self.of(core) if isinstance(e, IncomingRequest)]

    def at(self, address: Address, core: DatagramCore) -> None:
        """Put ``core`` at ``address``, detaching whatever was there."""
        with contextlib.suppress(KeyError):
            self.net.remove(address)
        self.net.add(core, address)

    def pump(self) -> bool:
        for core, value in ((self.provider, GENUINE_VALUE), (self.impostor, IMPOSTOR_VALUE)):
            while (event := core.next_event()) is not None:
                self.of(core).append(event)
                if isinstance(event, IncomingRequest) and self.answering:
                    values: list[Any] = []
                    if event.kind in (RequestKind.GET, RequestKind.INVOKE):
                        values = [value]
                    core.respond(event, values, self.net.now)
                    self.wakeup()
        for requestor in self.requestors:
            while (event := requestor.next_event()) is not None:
                self.of(requestor).append(event)
        return False

    def result(
        self, request_id: int, core: OapCore | None = None, max_time: float = 60
    ) -> OapEvent:
        core = core or self.client

        def done() -> bool:
            self.pump()
            return any(getattr(e, "request_id", None) == request_id for e in self.of(core))

        assert self.net.run_until(done, max_time=max_time), f"request {request_id} never ended"
        return next(e for e in self.of(core) if getattr(e, "request_id", None) == request_id)

    def wakeup(self) -> None:
        for address in (PROVIDER, CLIENT):
            try:
                self.net.wakeup(address)
            except KeyError:
                continue  # nobody there now

    def run(self, seconds: float) -> None:
        self.net.run_until(self.pump, max_time=seconds)


def _mismatch(event: OapEvent) -> PeerIdentityMismatch:
    assert isinstance(event, OapRequestFailed), event
    assert isinstance(event.error, PeerIdentityMismatch), event.error
    return event.error


# -- (a) an impostor at the provider's address --------------------------------------


def test_impostor_answering_for_the_providers_address_is_accepted_without_a_binding() -> None:
    """The attack itself: unbound, the requestor takes the impostor's answer."""
    world = World()
    world.at(PROVIDER, world.impostor)
    get = world.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    assert world.result(get) == RequestCompleted(get, (IMPOSTOR_VALUE,))
    assert world.client.node.peer_identity(PROVIDER) == IMPOSTOR_ID


@pytest.mark.parametrize("how", ["identity=", "peer_identities"])
def test_impostor_fails_fast_with_identity_mismatch_then_the_genuine_provider_serves(
    how: str,
) -> None:
    client_options: dict[str, Any] = (
        {"peer_identities": {PROVIDER: PROVIDER_ID}} if how == "peer_identities" else {}
    )
    world = World(**client_options)
    bound: dict[str, Any] = {"identity": PROVIDER_ID} if how == "identity=" else {}
    world.at(PROVIDER, world.impostor)
    now = world.net.now
    get = world.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", now, **bound)
    error = _mismatch(world.result(get))
    # Fails fast: one handshake round trip (cookie, Rekey, Accept), far
    # before the request's own 15 s of retransmissions.
    assert world.net.now - now < 1.0
    assert (error.peer, error.expected, error.actual) == (PROVIDER, PROVIDER_ID, IMPOSTOR_ID)
    assert "10.1.0.1:3567" in str(error) and str(PROVIDER_ID) in str(error)
    assert str(IMPOSTOR_ID) in str(error)
    now = world.net.now
    invoke = world.client.invoke(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "add", [1, 2], now, **bound)
    subscribe = world.client.subscribe(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "alarm", now, **bound)
    _mismatch(world.result(invoke))
    _mismatch(world.result(subscribe))
    # The impostor was never asked anything: no session was ever installed.
    assert world.requests(world.impostor) == []
    assert world.client.node.peer_identity(PROVIDER) is None
    client_security = world.client.statistics().node.security
    assert client_security is not None
    assert client_security.identity_mismatches >= 2
    assert client_security.sessions == 0
    impostor_security = world.impostor.statistics().node.security
    assert impostor_security is not None and impostor_security.sessions == 0
    assert not any(isinstance(e, Notification) for e in world.of(world.client))

    # The genuine provider is back at its address: the same requestor is served.
    world.at(PROVIDER, world.provider)
    now = world.net.now
    get = world.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", now, **bound)
    assert world.result(get) == RequestCompleted(get, (GENUINE_VALUE,))
    invoke = world.client.invoke(
        PROVIDER, THERMOSTAT_OID, THERMOSTAT, "add", [1, 2], world.net.now, **bound
    )
    assert world.result(invoke) == RequestCompleted(invoke, (GENUINE_VALUE,))
    assert world.client.node.peer_identity(PROVIDER) == PROVIDER_ID


def test_a_session_with_the_wrong_identity_is_never_used_for_a_bound_request() -> None:
    """An unbound request made a session with the impostor; a bound one does
    not go through it: a handshake of its own fails on the impostor, then
    reaches the genuine provider, which replaces the session."""
    world = World()
    world.at(PROVIDER, world.impostor)
    now = world.net.now
    unbound = world.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", now)
    assert world.result(unbound) == RequestCompleted(unbound, (IMPOSTOR_VALUE,))
    asked = len(world.requests(world.impostor))
    bound = world.client.set(
        PROVIDER, THERMOSTAT_OID, THERMOSTAT, "label", "x", world.net.now, identity=PROVIDER_ID
    )
    _mismatch(world.result(bound))
    assert len(world.requests(world.impostor)) == asked  # the Set never reached it

    world.at(PROVIDER, world.provider)
    bound = world.client.set(
        PROVIDER, THERMOSTAT_OID, THERMOSTAT, "label", "x", world.net.now, identity=PROVIDER_ID
    )
    assert world.result(bound) == RequestCompleted(bound, ())
    assert [r.kind for r in world.requests(world.provider)] == [RequestKind.SET]
    assert world.client.node.peer_identity(PROVIDER) == PROVIDER_ID


class _DropRekeys:
    """A core that never hears TEP commands (Rekeys) in the clear: it may open
    sessions to others, but nobody completes a handshake with it."""

    def __init__(self, inner: OapCore) -> None:
        self.inner = inner

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        try:
            _, packet = decode_frame_untrusted(data)
        except BadPacket:
            packet = None
        if (
            packet is not None
            and packet.security is None
            and packet.app_id == AppId.TEP
            and not packet.is_response
        ):
            return
        self.inner.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self.inner.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self.inner.get_timer()

    def handle_timer(self, now: float) -> None:
        self.inner.handle_timer(now)


def _impostor_session_to_the_client(world: World) -> None:
    """The impostor, at the provider's address, opens a session to the client."""
    world.at(PROVIDER, _DropRekeys(world.impostor))
    world.impostor.node.secure_session(CLIENT, world.net.now)
    world.net.wakeup(PROVIDER)
    assert world.net.run_until(
        lambda: world.impostor.node.peer_identity(CLIENT) == CLIENT_ID, max_time=5
    )


def test_a_response_from_another_session_at_the_address_is_not_the_answer() -> None:
    world = World()
    world.net.remove(PROVIDER)  # nobody there yet: the bound Get waits
    get = world.client.get(
        PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now, identity=PROVIDER_ID
    )
    world.run(0.2)
    _impostor_session_to_the_client(world)
    # The impostor answers the Get it guessed the op id of, sealed in its session.
    answer = encode_oap(GetResponse((IMPOSTOR_VALUE,)))
    world.impostor.node.send_response(CLIENT, get, AppId.OAP, answer, world.net.now)
    world.net.wakeup(PROVIDER)
    world.run(0.5)
    assert world.client.statistics().node.responses_wrong_identity == 1
    assert not any(getattr(e, "request_id", None) == get for e in world.of(world.client))
    assert world.requests(world.impostor) == []  # not sent on its session either

    world.at(PROVIDER, world.provider)
    assert world.result(get) == RequestCompleted(get, (GENUINE_VALUE,))


def test_notifications_only_from_the_bound_identity() -> None:
    world = World()
    now = world.net.now
    sub = world.client.subscribe(
        PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", now, identity=PROVIDER_ID
    )
    assert world.result(sub) == RequestCompleted(sub, ())
    _impostor_session_to_the_client(world)
    change = ChangeCommand(
        THERMOSTAT.property("temperature").item_id,
        Binding(THERMOSTAT.iid, THERMOSTAT_OID),
        1,
        (IMPOSTOR_VALUE,),
    )
    world.impostor.node.send_command(
        CLIENT, AppId.OAP, encode_oap(change), world.net.now, expect_response=False
    )
    world.net.wakeup(PROVIDER)
    world.run(0.5)
    assert not any(isinstance(e, Notification) for e in world.of(world.client))
    assert world.client.statistics().answers_not_permitted == 1

    world.at(PROVIDER, world.provider)
    world.provider.notify_change(
        THERMOSTAT_OID, THERMOSTAT, "temperature", GENUINE_VALUE, world.net.now
    )
    world.net.wakeup(PROVIDER)
    world.run(0.5)
    notes = [e for e in world.of(world.client) if isinstance(e, Notification)]
    assert [n.values for n in notes] == [(GENUINE_VALUE,)]


def test_the_bound_identity_must_be_granted_the_binding_it_answers_for() -> None:
    """The impostor *is* the identity asked for, but the Authenticator granted
    it nothing: the Accept says so (its permissions are under the ticket's
    MAC), and its answer is refused."""
    world = World()
    world.at(PROVIDER, world.impostor)
    get = world.client.get(
        PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now, identity=IMPOSTOR_ID
    )
    failed = world.result(get)
    assert isinstance(failed, OapRequestFailed) and isinstance(failed.error, ProviderNotPermitted)
    assert world.client.statistics().answers_not_permitted == 1
    world.at(PROVIDER, world.provider)
    get = world.client.get(
        PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now, identity=PROVIDER_ID
    )
    assert world.result(get) == RequestCompleted(get, (GENUINE_VALUE,))


def test_binding_needs_security_and_agrees_with_the_configuration() -> None:
    plain = OapCore()
    with pytest.raises(Exception, match="SecurityConfig"):
        plain.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", 0.0, identity=PROVIDER_ID)
    world = World(peer_identities={PROVIDER: PROVIDER_ID})
    with pytest.raises(Exception, match="contradicts"):
        world.client.get(
            PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", 0.0, identity=IMPOSTOR_ID
        )


# -- (b) an address taken over by another identity: the duplicate cache ------------


@pytest.mark.parametrize("intruder_grant", ["", "rw"])
def test_address_taken_over_gets_no_cached_answer_and_genuine_retransmission_does(
    intruder_grant: str,
) -> None:
    world = World()
    genuine = world.client
    world.result(genuine.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", 0.0))
    # The genuine Set is executed and answered; the answer is lost on the way.
    lossy = world.net.link_conditions(PROVIDER, CLIENT)
    world.net.set_direction(PROVIDER, CLIENT, lossy.__class__(loss=1.0))
    put = genuine.set(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "label", "genuine", world.net.now)
    world.run(0.2)
    assert [r.values for r in world.requests(world.provider)][-1] == ("genuine",)
    world.net.set_direction(PROVIDER, CLIENT, lossy)

    # Within the cache lifetime another enrolled identity takes the address
    # and sends a Set with the same operation id.
    intruder_id, intruder = _intruder(world, intruder_grant, put)
    world.at(CLIENT, intruder)
    taken = intruder.set(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "label", "intruder", world.net.now)
    assert taken == put
    result = world.result(taken, intruder)
    sets = [r for r in world.requests(world.provider) if r.kind is RequestKind.SET]
    if intruder_grant:
        # Answered afresh, for the intruder: executed as its own command.
        assert result == RequestCompleted(taken, ())
        assert [(s.identity, s.values) for s in sets] == [
            (CLIENT_ID, ("genuine",)),
            (intruder_id, ("intruder",)),
        ]
    else:
        # Through the permission check, and refused there.
        assert isinstance(result, OapRequestFailed) and isinstance(result.error, OapError)
        assert result.error.error_code is OapErrorCode.PERMISSION_DENIED
        denied = [e for e in world.of(world.provider) if isinstance(e, AccessDenied)]
        assert [e.identity for e in denied] == [intruder_id]
        assert len(sets) == 1

    # The genuine node comes back; its retransmission of the Set gets its own
    # cached answer (not executed again), through its own session.
    resent = world.provider.statistics().node.duplicate_responses_resent
    world.at(CLIENT, genuine)
    assert world.result(put) == RequestCompleted(put, ())
    assert world.provider.statistics().node.duplicate_responses_resent > resent
    assert len([r for r in world.requests(world.provider) if r.kind is RequestKind.SET]) == len(
        sets
    )


def _intruder(world: World, grants: str, first_op: int) -> tuple[OID, OapCore]:
    """Another enrolled identity (granted ``grants``) whose first command has
    operation id ``first_op``; not attached yet."""
    intruder_id = OID(3, b"intruder@example.org")
    world.domain.local.enrol(intruder_id, grant(grants))
    node = world.domain.local.node_config(intruder_id)
    config = NodeConfig(node_id=intruder_id, security=node.security, first_op_count=first_op)
    intruder = OapCore(OapConfig(node=config))
    world.add_requestor(intruder)
    return intruder_id, intruder


def test_an_answer_for_the_previous_identity_is_never_sent_to_the_new_one() -> None:
    """The genuine identity's Invoke is still being served when another
    identity takes the address and sends an Invoke with the same operation
    id: the genuine answer is not sealed to the newcomer (who would take it
    as its own), each identity gets its own answer."""
    world = World()
    genuine = world.client
    world.result(genuine.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", 0.0))
    world.answering = False
    call = genuine.invoke(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "add", [1, 1], world.net.now)
    world.run(0.1)
    first = world.requests(world.provider)[-1]
    assert first.values == (1, 1) and first.identity == CLIENT_ID

    intruder_id, intruder = _intruder(world, "x", call)
    world.at(CLIENT, intruder)
    taken = intruder.invoke(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "add", [50, 50], world.net.now)
    assert taken == call
    world.net.run_until(
        lambda: world.pump() or world.requests(world.provider)[-1].identity == intruder_id,
        max_time=5,
    )
    second = world.requests(world.provider)[-1]
    assert second.values == (50, 50)
    world.provider.respond(first, [2], world.net.now)  # the genuine answer, now
    world.net.wakeup(PROVIDER)
    world.run(0.3)
    assert world.provider.statistics().node.responses_withheld == 1
    assert not any(getattr(e, "request_id", None) == taken for e in world.of(intruder))
    world.provider.respond(second, [100], world.net.now)
    world.net.wakeup(PROVIDER)
    assert world.result(taken, intruder) == RequestCompleted(taken, (100,))

    world.at(CLIENT, genuine)
    assert world.result(call) == RequestCompleted(call, (2,))


def test_a_peers_cached_answers_go_when_its_session_ends() -> None:
    world = World()
    put = world.client.set(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "label", "x", 0.0)
    assert world.result(put) == RequestCompleted(put, ())
    cache = world.provider.node._duplicates
    assert len(cache) >= 1
    world.client.node.end_secure_session(PROVIDER, world.net.now)
    world.net.wakeup(CLIENT)
    world.run(0.5)
    assert len(cache) == 0
    # A new session, a new command: served as usual.
    put = world.client.set(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "label", "y", world.net.now)
    assert world.result(put) == RequestCompleted(put, ())
