"""The sans-IO DPS node, driven by the seeded network simulator."""

from __future__ import annotations

import logging
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.errors import BrokenResourceError, DofTimeoutError, LocalProtocolError
from dofpy.session._retry import RetryPolicy, RetryState
from dofpy.session.node import (
    CommandReceived,
    Node,
    NodeConfig,
    NodeEvent,
    PeerClosed,
    PeerState,
    RequestFailed,
    ResponseReceived,
    SecurityConfig,
    SessionOpened,
)
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.testing.secure import CLIENT_ID, DOMAIN_OID, PROVIDER_ID, SecureDomain
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame

A = ("10.0.0.1", 3567)
B = ("10.0.0.2", 3567)


def events(node: Node) -> list[NodeEvent]:
    out = []
    while (event := node.next_event()) is not None:
        out.append(event)
    return out


class EchoApp:
    """Answers every OAP-app command on ``node`` with its payload reversed,
    counting how often each payload was executed."""

    def __init__(self, network: Network, node: Node, address: tuple[str, int]) -> None:
        self.network, self.node, self.address = network, node, address
        self.executed: dict[bytes, int] = {}
        self.events: list[NodeEvent] = []

    def pump(self) -> None:
        for event in events(self.node):
            self.events.append(event)
            if isinstance(event, CommandReceived):
                self.executed[event.payload] = self.executed.get(event.payload, 0) + 1
                self.node.send_response(
                    event.peer, event.op_count, event.app_id, event.payload[::-1], self.network.now
                )
                self.network.wakeup(self.address)


def pair(seed: int = 1, conditions: LinkConditions | None = None) -> tuple[Network, Node, Node]:
    network = Network(seed, default=conditions or LinkConditions(delay=0.005))
    a, b = Node(), Node()
    network.add(a, A)
    network.add(b, B)
    return network, a, b


def test_command_and_response_on_a_clean_link() -> None:
    network, a, b = pair()
    app = EchoApp(network, b, B)
    request = a.send_command(B, AppId.OAP, b"hello", network.now)
    network.wakeup(A)
    got: list[NodeEvent] = []
    network.run_until(lambda: app.pump() or bool(got.extend(events(a)) or got), max_time=5)
    assert got == [ResponseReceived(request, B, AppId.OAP, b"olleh")]
    assert a.statistics().retransmissions == 0


@pytest.mark.parametrize("seed", range(8))
def test_lossy_link_executes_each_command_at_most_once(seed: int) -> None:
    network, a, b = pair(seed, LinkConditions(loss=0.3, duplicate=0.2, reorder=0.2, delay=0.01))
    app = EchoApp(network, b, B)
    payloads = [f"cmd-{i}".encode() for i in range(30)]
    requests = {a.send_command(B, AppId.OAP, p, network.now): p for p in payloads}
    network.wakeup(A)
    done: dict[int, NodeEvent] = {}

    def finished() -> bool:
        app.pump()
        for event in events(a):
            assert isinstance(event, ResponseReceived | RequestFailed)
            done[event.request_id] = event
        return len(done) == len(requests)

    assert network.run_until(finished, max_time=120)
    for request, payload in requests.items():
        event = done[request]
        if isinstance(event, ResponseReceived):
            assert event.payload == payload[::-1]
            assert app.executed[payload] == 1
        else:
            assert isinstance(event.error, DofTimeoutError)
            assert app.executed.get(payload, 0) <= 1
    assert all(count == 1 for count in app.executed.values())
    assert sum(isinstance(e, ResponseReceived) for e in done.values()) >= 25
    assert a.statistics().retransmissions > 0


def test_retransmitted_command_is_answered_from_the_duplicate_cache() -> None:
    network, a, b = pair()
    app = EchoApp(network, b, B)
    # Drop every response once so the requestor retransmits.
    network.set_direction(B, A, LinkConditions(loss=1.0))
    request = a.send_command(B, AppId.OAP, b"set", network.now)
    network.wakeup(A)
    network.run_until(lambda: app.pump() or b.statistics().duplicate_commands >= 2, max_time=10)
    network.set_direction(B, A, LinkConditions())
    got: list[NodeEvent] = []
    network.run_until(lambda: app.pump() or bool(got.extend(events(a)) or got), max_time=10)
    assert got == [ResponseReceived(request, B, AppId.OAP, b"tes")]
    assert app.executed == {b"set": 1}
    assert b.statistics().duplicate_responses_resent >= 2


def test_request_to_a_silent_peer_times_out_after_its_policy() -> None:
    policy = RetryPolicy(
        initial_timeout=0.5, backoff=2, max_timeout=2, max_attempts=4, total_timeout=30
    )
    network = Network(3)
    a = Node(NodeConfig(retry=policy))
    network.add(a, A)
    request = a.send_command(("10.9.9.9", 1), AppId.OAP, b"x", network.now)
    network.wakeup(A)
    got: list[NodeEvent] = []
    network.run_until(lambda: bool(got.extend(events(a)) or got), max_time=60)
    assert len(got) == 1
    assert isinstance(got[0], RequestFailed) and got[0].request_id == request
    assert isinstance(got[0].error, DofTimeoutError)
    # 4 sends at 0, 0.5, 1.5, 3.5; gives up at 5.5 when the last wait ends.
    assert network.now == pytest.approx(5.5)
    stats = a.statistics()
    assert (stats.retransmissions, stats.requests_timed_out) == (3, 1)


def test_retry_state_schedule_and_byte() -> None:
    state = RetryState.start(
        RetryPolicy(initial_timeout=1, backoff=2, max_timeout=3, max_attempts=3, total_timeout=100),
        now=0.0,
    )
    assert (state.next_timer(), state.retry_byte) == (1.0, 0)
    assert not state.due(0.5) and state.due(1.0)
    state.record_send(1.0)
    assert (state.next_timer(), state.retry_byte) == (3.0, 1)
    state.record_send(3.0)
    assert (state.next_timer(), state.retry_byte) == (6.0, 2)
    assert not state.due(6.0) and state.expired(6.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_timeout": 0},
        {"initial_timeout": 2, "max_timeout": 1},
        {"backoff": 0.5},
        {"max_attempts": 0},
        {"total_timeout": 0},
    ],
)
def test_retry_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_dsp_open_ping_and_terminate() -> None:
    network, a, b = pair()
    opened = a.open_session(B, network.now)
    assert a.peer_state(B) is PeerState.OPENING
    ping = a.ping(B, network.now)
    network.wakeup(A)
    got: list[NodeEvent] = []
    network.run_until(lambda: bool(got.extend(events(a))) or len(got) >= 2, max_time=5)
    assert SessionOpened(opened, B, (AppId.OAP,)) in got
    assert any(isinstance(e, ResponseReceived) and e.request_id == ping for e in got)
    assert a.peer_state(B) is PeerState.OPEN
    assert b.peer_state(A) is PeerState.OPEN
    # A command pending when the peer terminates fails with a broken resource.
    pending = b.send_command(("10.0.0.3", 1), AppId.OAP, b"x", network.now)
    b.terminate_session(A, network.now)
    network.wakeup(B)
    network.run_until(lambda: a.peer_state(B) is PeerState.CLOSED, max_time=5)
    closed = events(a)
    assert PeerClosed(B, by_peer=True) in closed
    # The Terminate is answered; the command to another peer stays pending.
    assert network.run_until(lambda: b.statistics().pending_commands == 1, max_time=1)
    assert pending > 0


def test_terminate_fails_pending_commands_to_that_peer() -> None:
    network, a, b = pair()
    network.set_direction(B, A, LinkConditions(loss=1.0))
    request = a.send_command(B, AppId.OAP, b"x", network.now)
    network.wakeup(A)
    network.run_until(lambda: bool(events(b)), max_time=5)
    b.terminate_session(A, network.now)
    network.set_direction(B, A, LinkConditions())
    network.wakeup(B)
    got: list[NodeEvent] = []
    network.run_until(lambda: bool(got.extend(events(a))) or len(got) >= 2, max_time=5)
    failed = [e for e in got if isinstance(e, RequestFailed)]
    assert failed and failed[0].request_id == request
    assert isinstance(failed[0].error, BrokenResourceError)


def test_bad_and_unsupported_datagrams_are_counted_and_dropped() -> None:
    node = Node()
    node.receive_datagram(b"", A, 0.0)
    node.receive_datagram(b"\x01\x02", A, 0.0)  # DPP without an application id
    node.receive_datagram(encode_frame(DppPacket(app_id=AppId.TEP, payload=b"\x01")), A, 0.0)
    stray = DppPacket(
        app_id=AppId.OAP,
        payload=b"",
        is_response=True,
        op_id_type=OpIdType.IMPLIED_RECEIVER,
        op_count=99,
    )
    node.receive_datagram(encode_frame(stray), A, 0.0)
    stats = node.statistics()
    assert (stats.bad_datagrams, stats.unsupported_datagrams, stats.unmatched_responses) == (
        2,
        1,
        1,
    )
    assert node.next_event() is None


def test_a_bad_datagram_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    node = Node()
    with caplog.at_level(logging.DEBUG, logger="dofpy.session.inbound"):
        node.receive_datagram(b"", A, 0.0)
    assert node.statistics().bad_datagrams == 1
    (record,) = caplog.records
    assert record.getMessage().startswith(f"dropped a bad datagram of 0 bytes from {A}: ")
    assert len(record.getMessage()) > len(f"dropped a bad datagram of 0 bytes from {A}: ")


def test_event_queue_is_bounded_and_refusals_counted() -> None:
    node = Node(NodeConfig(max_events=3))
    for op in range(5):
        packet = DppPacket(
            app_id=AppId.OAP, payload=bytes([op]), op_id_type=OpIdType.IMPLIED_SENDER, op_count=op
        )
        node.receive_datagram(encode_frame(packet), A, 0.0)
    assert len(events(node)) == 3
    stats = node.statistics()
    assert (stats.events_dropped, stats.commands_refused) == (2, 2)


def test_pending_commands_are_bounded() -> None:
    node = Node(NodeConfig(max_pending_commands=2))
    node.send_command(B, AppId.OAP, b"1", 0.0)
    node.send_command(B, AppId.OAP, b"2", 0.0)
    with pytest.raises(LocalProtocolError, match="max_pending_commands"):
        node.send_command(B, AppId.OAP, b"3", 0.0)
    node.send_command(B, AppId.OAP, b"fire-and-forget", 0.0, expect_response=False)
    assert len(node.datagrams_to_send(0.0)) == 3


def test_responses_need_an_operation_id() -> None:
    with pytest.raises(LocalProtocolError):
        Node().send_response(A, None, AppId.OAP, b"", 0.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=40))
def test_arbitrary_datagrams_never_escape_as_exceptions(datagrams: list[bytes]) -> None:
    node = Node()
    for index, data in enumerate(datagrams):
        node.receive_datagram(data, A, float(index))
        node.handle_timer(float(index))
    stats = node.statistics()
    assert stats.datagrams_received == len(datagrams)


def test_a_secure_node_is_who_its_credentials_say() -> None:
    """NodeConfig.node_id and SecurityConfig.identity cannot disagree: unset,
    node_id is the security identity; a different one is refused at once."""
    security = SecureDomain().local.security(CLIENT_ID)
    assert NodeConfig(security=security).node_id == CLIENT_ID
    assert NodeConfig(node_id=CLIENT_ID, security=security).node_id == CLIENT_ID
    with pytest.raises(ValueError, match="differs from the security identity"):
        NodeConfig(node_id=PROVIDER_ID, security=security)


def test_randomness_and_cookie_keys_default_to_the_csprng() -> None:
    one = SecurityConfig(domain=DOMAIN_OID, identity=CLIENT_ID, secret=bytes(32))
    two = SecurityConfig(domain=DOMAIN_OID, identity=CLIENT_ID, secret=bytes(32))
    assert one.rng is secrets.token_bytes
    assert len(one.cookie_key) == 32 and one.cookie_key != two.cookie_key
