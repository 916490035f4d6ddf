"""Secure sessions end to end on the seeded simulator: handshake with cookies,
CCM traffic, permissions, and each attack refused while the node keeps serving."""

from __future__ import annotations

from typing import Any

import pytest

from dofpy.errors import SecureSessionCause, SecureSessionRefused
from dofpy.oap.core import (
    AccessDenied,
    IncomingRequest,
    OapConfig,
    OapCore,
    OapEvent,
    OapRequestFailed,
    RequestCompleted,
    RequestKind,
)
from dofpy.oap.errors import OapError, OapErrorCode
from dofpy.session.handshake import COOKIE_REJECT_CODE
from dofpy.session.node import SecureSessionEnded, SecureSessionEstablished
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.testing.netsim import LinkConditions
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
from dofpy.wire.oap import Binding, GetCommand, encode_oap
from dofpy.wire.tep import TepReject, decode_tep_untrusted


def drain(core: OapCore) -> list[OapEvent]:
    out = []
    while (event := core.next_event()) is not None:
        out.append(event)
    return out


class Pair:
    def __init__(self, world: SecureDomain, provider: OapCore, client: OapCore) -> None:
        self.world, self.provider, self.client = world, provider, client
        self.client_events: list[OapEvent] = []
        self.provider_events: list[OapEvent] = []

    def pump(self) -> bool:
        for event in drain(self.provider):
            self.provider_events.append(event)
            if isinstance(event, IncomingRequest):
                values: list[Any] = []
                if event.kind is RequestKind.GET:
                    values = [21]
                elif event.kind is RequestKind.INVOKE:
                    values = [sum(event.values)]
                self.provider.respond(event, values, self.world.net.now)
                self.world.net.wakeup(PROVIDER)
        self.client_events.extend(drain(self.client))
        return False

    def result(self, request_id: int, max_time: float = 60) -> OapEvent:
        self.world.net.wakeup(CLIENT)
        self.world.net.run_until(
            lambda: (
                self.pump()
                or any(getattr(e, "request_id", None) == request_id for e in self.client_events)
            ),
            max_time=max_time,
        )
        return next(e for e in self.client_events if getattr(e, "request_id", None) == request_id)


def pair(**kwargs: Any) -> Pair:
    world = SecureDomain(**kwargs)
    return Pair(world, world.provider(), world.client())


def test_handshake_then_secure_get_and_set() -> None:
    p = pair()
    now = p.world.net.now
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", now)
    assert p.result(get) == RequestCompleted(get, (21,))
    established = [e for e in p.client_events if isinstance(e, SecureSessionEstablished)]
    assert len(established) == 1
    assert established[0].peer_identity == PROVIDER_ID and established[0].initiator
    served = [e for e in p.provider_events if isinstance(e, SecureSessionEstablished)]
    assert served[0].peer_identity == CLIENT_ID and not served[0].initiator
    assert served[0].session_key == established[0].session_key
    put = p.client.set(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "label", "x", p.world.net.now)
    assert p.result(put) == RequestCompleted(put, ())
    stats = p.provider.statistics().node.security
    assert stats is not None
    assert (stats.cookies_sent, stats.handshakes_completed, stats.sessions) == (1, 1, 1)


@pytest.mark.parametrize("seed", range(3))
def test_handshake_and_requests_survive_a_lossy_link(seed: int) -> None:
    p = pair(seed=seed, conditions=LinkConditions(loss=0.2, duplicate=0.1, reorder=0.1, delay=0.01))
    calls = [
        p.client.invoke(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "add", [i, 1], p.world.net.now)
        for i in range(5)
    ]
    results = [p.result(c, max_time=120) for c in calls]
    assert sum(isinstance(r, RequestCompleted) for r in results) >= 4, results


def test_remote_authenticator_over_trp() -> None:
    from dofpy_services.authenticator.daemon import AuthenticatorCore  # noqa: PLC0415

    world = SecureDomain()
    world.net.add(
        AuthenticatorCore(world.authenticator, security=world.authenticator_security()),
        AUTHENTICATOR_ADDRESS,
    )
    # A node given a remote authenticator asks it sealed (the Authenticator's default).
    p = Pair(world, world.provider(authenticator=AUTHENTICATOR_ADDRESS), world.client())
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    assert p.result(get) == RequestCompleted(get, (21,))


def test_remote_authenticator_in_the_clear_only_when_both_sides_choose_it() -> None:
    from dofpy_services.authenticator.daemon import AuthenticatorCore  # noqa: PLC0415

    world = SecureDomain()
    authenticator = AuthenticatorCore(world.authenticator, sealed_only=False)
    world.net.add(authenticator, AUTHENTICATOR_ADDRESS)
    provider = world.provider(authenticator=AUTHENTICATOR_ADDRESS, seal_authenticator=False)
    p = Pair(world, provider, world.client())
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    assert p.result(get) == RequestCompleted(get, (21,))
    assert authenticator.decisions == 1 and authenticator.clear_refused == 0


def test_permission_denied_for_each_action_while_others_are_served() -> None:
    p = pair(client_grant="r", client_asks="r")
    now = p.world.net.now
    allowed = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", now)
    assert isinstance(p.result(allowed), RequestCompleted)
    for request in (
        p.client.set(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "label", "x", now),
        p.client.invoke(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "add", [1, 2], now),
        p.client.subscribe(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "alarm", now),
    ):
        failed = p.result(request)
        assert isinstance(failed, OapRequestFailed)
        assert isinstance(failed.error, OapError)
        assert failed.error.error_code is OapErrorCode.PERMISSION_DENIED
    denied = [e for e in p.provider_events if isinstance(e, AccessDenied)]
    assert {e.action.letters() for e in denied} == {"w", "x", "s"}
    assert all(e.identity == CLIENT_ID for e in denied)
    assert p.provider.statistics().permission_denied == 3


def test_revoked_identity_is_refused() -> None:
    world = SecureDomain()
    provider = world.provider()
    world.local.revoke(CLIENT_ID)
    p = Pair(world, provider, world.client())
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    failed = p.result(get)
    assert isinstance(failed, OapRequestFailed)
    assert "ACCESS_DENIED" in str(failed.error)
    assert any(isinstance(e, SecureSessionEnded) for e in p.client_events)


def test_plaintext_oap_is_refused_by_a_secure_node() -> None:
    p = pair()
    packet = DppPacket(
        AppId.OAP,
        encode_oap(GetCommand(1, Binding(THERMOSTAT.iid, THERMOSTAT_OID))),
        op_id_type=OpIdType.IMPLIED_SENDER,
        op_count=5,
        retry=0,
    )
    p.provider.receive_datagram(encode_frame(packet), CLIENT, 0.0)
    p.pump()
    assert p.provider.datagrams_to_send(0.0) == []
    assert not any(isinstance(e, IncomingRequest) for e in p.provider_events)
    stats = p.provider.statistics().node.security
    assert stats is not None and stats.plaintext_refused == 1


def capture(p: Pair, request_id: int) -> list[tuple[bytes, tuple[str, int], tuple[str, int]]]:
    """Run a request to completion, recording every datagram delivered."""
    seen: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = []
    original_provider = p.provider.receive_datagram
    original_client = p.client.receive_datagram

    def tap_provider(data: bytes, addr: tuple[str, int], now: float) -> None:
        seen.append((data, addr, PROVIDER))
        original_provider(data, addr, now)

    def tap_client(data: bytes, addr: tuple[str, int], now: float) -> None:
        seen.append((data, addr, CLIENT))
        original_client(data, addr, now)

    p.provider.receive_datagram = tap_provider  # type: ignore[method-assign]
    p.client.receive_datagram = tap_client  # type: ignore[method-assign]
    p.result(request_id)
    return seen


def secure_commands_to_provider(seen: list[tuple[bytes, Any, Any]]) -> list[bytes]:
    out = []
    for data, _src, dst in seen:
        if dst != PROVIDER:
            continue
        _dnp, packet = decode_frame_untrusted(data)
        if packet.security is not None:
            out.append(data)
    return out


def test_replayed_and_tampered_packets_are_refused_and_counted() -> None:
    p = pair()
    first = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    assert isinstance(p.result(first), RequestCompleted)
    now = p.world.net.now
    # A fresh secure command, taken off the client before the network sees it.
    p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", now)
    ((genuine, _),) = p.client.datagrams_to_send(now)
    served = lambda: len([e for e in p.provider_events if isinstance(e, IncomingRequest)])  # noqa: E731
    before = served()
    for index in (3, len(genuine) // 2, len(genuine) - 1):  # header, ciphertext, tag
        data = bytearray(genuine)
        data[index] ^= 0x01
        p.provider.receive_datagram(bytes(data), CLIENT, now)
    p.pump()
    assert served() == before
    stats = p.provider.statistics()
    security = stats.node.security
    assert security is not None
    assert security.authentication_failures + stats.node.bad_datagrams == 3
    p.provider.receive_datagram(genuine, CLIENT, now)
    p.pump()
    assert served() == before + 1
    p.provider.receive_datagram(genuine, CLIENT, now)  # replayed
    p.pump()
    assert served() == before + 1
    security = p.provider.statistics().node.security
    assert security is not None and security.replays == 1
    # ... and the provider keeps serving the genuine client.
    again = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", now)
    assert isinstance(p.result(again), RequestCompleted)


def test_packet_from_another_address_or_wrong_key_is_refused() -> None:
    p = pair()
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    (secure_get,) = secure_commands_to_provider(capture(p, get))
    # The same bytes from another address name no session there.
    p.provider.receive_datagram(secure_get, ("10.1.0.66", 40000), p.world.net.now)
    security = p.provider.statistics().node.security
    assert security is not None and security.unknown_sessions == 1


def test_cookie_reject_is_smaller_than_the_rekey_and_keeps_no_state() -> None:
    world = SecureDomain()
    provider = world.provider()
    client = world.client()
    client.node.secure_session(PROVIDER, 0.0)
    ((rekey, _),) = client.datagrams_to_send(0.0)
    spoofed = ("203.0.113.5", 1234)
    for index in range(500):
        provider.receive_datagram(rekey, (spoofed[0], 1000 + index), 0.0)
    replies = provider.datagrams_to_send(0.0)
    assert len(replies) == 500
    for reply, _addr in replies:
        assert len(reply) < len(rekey)
        _dnp, packet = decode_frame_untrusted(reply)
        reject = decode_tep_untrusted(packet.payload, is_response=True)
        assert isinstance(reject, TepReject) and reject.code == COOKIE_REJECT_CODE
    security = provider.statistics().node.security
    assert security is not None
    assert (security.half_open, security.cookies_sent) == (0, 500)
    assert provider.statistics().node.peers == 0
    # The genuine client, in the middle of the flood, is served as usual.
    p = Pair(world, provider, client)
    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    assert p.result(get) == RequestCompleted(get, (21,))


def test_half_open_handshakes_are_bounded_and_counted() -> None:
    world = SecureDomain()
    provider = world.provider(
        max_half_open=3, authenticator=("10.9.9.9", 1)
    )  # an authenticator that never answers
    for index in range(6):
        address = ("10.2.0.1", 50000 + index)
        client = world.client(address)
        client.node.secure_session(PROVIDER, world.net.now)
        world.net.wakeup(address)
    world.net.run_until(max_time=1.0)
    security = provider.statistics().node.security
    assert security is not None
    assert security.half_open == 3
    # A full table evicts at random (refusing only what the application holds).
    assert security.half_open_refused + security.half_open_replaced >= 3


def test_wrong_domain_is_refused() -> None:
    from dofpy.wire.oid import OID  # noqa: PLC0415

    world = SecureDomain()
    provider = world.provider()
    client = world.client(domain=OID(6, b"elsewhere.org"))
    p = Pair(world, provider, client)
    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    failed = p.result(get)
    assert isinstance(failed, OapRequestFailed)
    assert "rejected the secure session" in str(failed.error)


def test_forged_identity_fails_the_accept_confirmation() -> None:
    world = SecureDomain()
    provider = world.provider()
    # The client claims CLIENT_ID but holds another secret.
    client = world.client(secret=bytes(32))
    p = Pair(world, provider, client)
    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    failed = p.result(get, max_time=120)
    assert isinstance(failed, OapRequestFailed)
    security = client.statistics().node.security
    assert security is not None and security.authentication_failures >= 1


def test_unknown_identity_is_refused() -> None:
    from dofpy.wire.oid import OID  # noqa: PLC0415

    world = SecureDomain()
    provider = world.provider()
    stranger = OID(3, b"stranger@example.org")
    client = world.client(identity=stranger)
    p = Pair(world, provider, client)
    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    failed = p.result(get)
    assert isinstance(failed, OapRequestFailed)
    assert "UNKNOWN_INITIATOR" in str(failed.error)


def test_read_is_denied_without_r() -> None:
    p = pair(client_grant="x", client_asks="x")
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    failed = p.result(get)
    assert isinstance(failed, OapRequestFailed) and isinstance(failed.error, OapError)
    assert failed.error.error_code is OapErrorCode.PERMISSION_DENIED


def test_asking_for_more_than_granted_is_refused_by_the_authenticator() -> None:
    p = pair(client_grant="r", client_asks="rw")
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    failed = p.result(get)
    assert isinstance(failed, OapRequestFailed)
    assert "ACCESS_DENIED" in str(failed.error)


def test_rekey_before_packet_numbers_run_out() -> None:
    world = SecureDomain()
    provider = world.provider()
    # Rekey as soon as fewer than 2**32 - 6 packet numbers are left: after a
    # handful of packets.
    client = world.client(rekey_packets_left=(1 << 32) - 6)
    p = Pair(world, provider, client)
    for index in range(12):
        call = client.invoke(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "add", [index, 1], world.net.now)
        assert p.result(call) == RequestCompleted(call, (index + 1,))
    security = client.statistics().node.security
    assert security is not None and security.rekeys >= 1
    assert len([e for e in p.client_events if isinstance(e, SecureSessionEstablished)]) >= 2


def test_rekey_when_the_granted_duration_ends() -> None:
    world = SecureDomain()
    provider = world.provider()
    client = world.client(desired_duration=1)  # one minute
    p = Pair(world, provider, client)
    for minute in range(4):
        call = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
        assert p.result(call) == RequestCompleted(call, (21,)), minute
        world.net.run_until(p.pump, max_time=40.0)
    security = client.statistics().node.security
    assert security is not None and security.rekeys >= 2
    served = provider.statistics().node.security
    assert served is not None and served.sessions == 1


def test_a_session_the_responder_forgot_is_unknown() -> None:
    p = pair()
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    assert isinstance(p.result(get), RequestCompleted)
    now = p.world.net.now
    p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", now)
    ((sealed, _),) = p.client.datagrams_to_send(now)
    # Long after the session's duration and grace, the provider has let it go.
    p.provider.handle_timer(now + 60 * 60 * 24)
    p.provider.receive_datagram(sealed, CLIENT, now + 60 * 60 * 24)
    security = p.provider.statistics().node.security
    assert security is not None and security.unknown_sessions == 1 and security.sessions == 0


def test_unreachable_authenticator_refuses_the_handshake() -> None:
    world = SecureDomain()
    provider = world.provider(authenticator=("10.9.9.9", 1))
    client = world.client(handshake_timeout=120.0)
    p = Pair(world, provider, client)
    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    start = world.net.now
    failed = p.result(get, max_time=200)
    assert isinstance(failed, OapRequestFailed)
    # The provider gives its Authenticator two thirds of its handshake timeout,
    # then refuses the handshake naming why: long before the client's deadline.
    assert isinstance(failed.error, SecureSessionRefused)
    assert failed.error.cause is SecureSessionCause.AUTHENTICATOR_FAILED
    assert "could not get a session key from its Authenticator (no-answer" in str(failed.error)
    assert world.net.now - start < 15.0
    ended = next(e for e in p.client_events if isinstance(e, SecureSessionEnded))
    assert ended.error is failed.error
    world.net.run_until(p.pump, max_time=60)
    security = provider.statistics().node.security
    # Two failed: the client's, and the provider's own (sealed TRP) with the
    # Authenticator that never answers.
    assert security is not None and security.handshakes_failed == 2 and security.half_open == 0


def test_clean_end_of_a_secure_session_and_a_new_one_after() -> None:
    p = pair()
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    assert isinstance(p.result(get), RequestCompleted)
    assert p.client.node.end_secure_session(PROVIDER, p.world.net.now)
    p.world.net.wakeup(CLIENT)
    p.world.net.run_until(
        lambda: p.pump() or any(isinstance(e, SecureSessionEnded) for e in p.provider_events),
        max_time=5,
    )
    ended = next(e for e in p.provider_events if isinstance(e, SecureSessionEnded))
    assert "ended the secure session" in str(ended.error)
    assert p.provider.statistics().node.security.sessions == 0  # type: ignore[union-attr]
    assert not p.client.node.end_secure_session(PROVIDER, p.world.net.now)
    # An End Session in the clear (anyone could send one) is ignored.
    again = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    assert isinstance(p.result(again), RequestCompleted)
    from dofpy.wire.tep import TepEndSession, encode_tep  # noqa: PLC0415

    forged = DppPacket(
        AppId.TEP, encode_tep(TepEndSession()), op_id_type=OpIdType.IMPLIED_SENDER, op_count=999
    )
    p.provider.receive_datagram(encode_frame(forged), CLIENT, p.world.net.now)
    assert p.provider.statistics().node.security.sessions == 1  # type: ignore[union-attr]


def test_provide_without_p_is_denied() -> None:
    p = pair()
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    assert isinstance(p.result(get), RequestCompleted)
    # The client (granted rwxs, not p) announces that it provides the thermostat.
    p.client.provide(THERMOSTAT_OID, THERMOSTAT)
    p.client.announce(PROVIDER, THERMOSTAT_OID, THERMOSTAT, p.world.net.now)
    p.world.net.wakeup(CLIENT)
    p.world.net.run_until(p.pump, max_time=2)
    denied = [e for e in p.provider_events if isinstance(e, AccessDenied)]
    assert [e.action.letters() for e in denied] == ["p"]


def test_intercepted_interfaces_are_permission_checked_too() -> None:
    from dofpy.wire.oap import InvokeCommand  # noqa: PLC0415
    from dofpy.wire.oid import IID  # noqa: PLC0415

    p = pair()
    other = IID(1, b"\xd0\xf9")
    intercepted: list[object] = []
    p.provider.intercept(other, lambda peer, identity, op, pdu, now: intercepted.append(pdu))
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    assert isinstance(p.result(get), RequestCompleted)
    # The client may use the thermostat's interface, not the intercepted one.
    payload = encode_oap(InvokeCommand(1, Binding(other, THERMOSTAT_OID), (1,)))
    p.client.node.send_command(PROVIDER, AppId.OAP, payload, p.world.net.now, expect_response=False)
    p.world.net.wakeup(CLIENT)
    p.world.net.run_until(p.pump, max_time=2)
    assert intercepted == []
    denied = [e for e in p.provider_events if isinstance(e, AccessDenied)]
    assert [(e.action.letters(), e.interface) for e in denied] == [("x", other)]


def test_one_way_commands_wait_for_the_secure_session() -> None:
    p = pair()
    # Nothing sent before: the announce (one-way) starts the handshake and waits.
    p.client.provide(THERMOSTAT_OID, THERMOSTAT)
    p.client.announce(PROVIDER, THERMOSTAT_OID, THERMOSTAT, p.world.net.now)
    p.world.net.wakeup(CLIENT)
    p.world.net.run_until(
        lambda: p.pump() or any(isinstance(e, AccessDenied) for e in p.provider_events), max_time=10
    )
    denied = [e for e in p.provider_events if isinstance(e, AccessDenied)]
    assert [e.action.letters() for e in denied] == ["p"]  # it arrived, sealed
    assert p.client.statistics().node.held_dropped == 0


def test_responder_cannot_claim_more_than_the_authenticator_granted() -> None:
    from dofpy.security.crypto import build_accept  # noqa: PLC0415
    from dofpy.wire.security import KeyRequest, SecurityIdentity  # noqa: PLC0415
    from dofpy.wire.tep import ResponderInit, TepRekey, encode_tep  # noqa: PLC0415
    from dofpy.wire.trp import RequestSessionCommand, RequestSessionResponse  # noqa: PLC0415

    def accept_with(responder_permissions: str) -> list[bytes]:
        world = SecureDomain()
        client = world.client()
        client.node.secure_session(PROVIDER, 0.0)
        ((datagram, _),) = client.datagrams_to_send(0.0)
        _dnp, packet = decode_frame_untrusted(datagram)
        rekey = decode_tep_untrusted(packet.payload, is_response=False)
        assert isinstance(rekey, TepRekey) and packet.op_count is not None
        honest = KeyRequest(SecurityIdentity(PROVIDER_ID), b"\x11" * 16, thermostat_grant("p"))
        decision = world.authenticator.decide(
            RequestSessionCommand(world.domain.oid, honest, rekey.initiator)
        )
        answer = decision.response
        assert isinstance(answer, RequestSessionResponse) and decision.session_key
        claimed = KeyRequest(honest.identity, honest.nonce, thermostat_grant(responder_permissions))
        accept = build_accept(
            rekey.initiator,
            session_key=decision.session_key,
            ticket=answer.initiator_ticket,
            responder=claimed,
            responder_init=ResponderInit(7),
            authenticator=answer.authenticator,
        )
        reply = DppPacket(
            AppId.TEP,
            encode_tep(accept),
            is_response=True,
            op_id_type=OpIdType.IMPLIED_RECEIVER,
            op_count=packet.op_count,
        )
        client.receive_datagram(encode_frame(reply), PROVIDER, 0.1)
        sent = [data for data, _ in client.datagrams_to_send(0.1)]
        security = client.statistics().node.security
        assert security is not None
        assert security.authentication_failures == (0 if responder_permissions == "p" else 1)
        return sent

    assert len(accept_with("p")) == 1  # the honest Accept is confirmed
    assert accept_with("rwxsp") == []  # the inflated one is refused


def test_clients_turned_away_busy_come_back_and_get_their_session() -> None:
    world = SecureDomain()
    provider = world.provider(max_half_open=2)
    clients = []
    for index in range(8):
        address = ("10.3.0.1", 50000 + index)
        client = world.client(address)
        client.node.secure_session(PROVIDER, world.net.now)
        world.net.wakeup(address)
        clients.append(client)

    def sessions() -> int:
        for core in (provider, *clients):
            while core.next_event() is not None:
                pass
        security = provider.statistics().node.security
        assert security is not None
        return security.sessions

    assert world.net.run_until(lambda: sessions() == 8, max_time=30)
    security = provider.statistics().node.security
    assert security is not None and security.half_open_replaced > 0
    retries = sum(
        c.statistics().node.security.busy_retries  # type: ignore[union-attr]
        for c in clients
    )
    # Each evicted (or refused) initiator was told "busy" and came back.
    assert retries == security.half_open_refused + security.half_open_replaced


def sealed_authenticator_world() -> tuple[SecureDomain, Any]:
    from dofpy_services.authenticator.daemon import AuthenticatorCore  # noqa: PLC0415

    world = SecureDomain()
    core = AuthenticatorCore(world.authenticator, security=world.authenticator_security())
    world.net.add(core, AUTHENTICATOR_ADDRESS)
    return world, core


def test_trp_sealed_inside_a_session_with_the_authenticator() -> None:

    world, authenticator = sealed_authenticator_world()
    provider = world.provider(authenticator=AUTHENTICATOR_ADDRESS, seal_authenticator=True)
    p = Pair(world, provider, world.client())
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    assert p.result(get) == RequestCompleted(get, (21,))
    # The provider first opened a secure session with the Authenticator itself.
    assert provider.node.peer_identity(AUTHENTICATOR_ADDRESS) is not None
    assert authenticator.decisions == 1


def test_sealed_only_authenticator_refuses_trp_in_the_clear() -> None:

    world, authenticator = sealed_authenticator_world()
    provider = world.provider(
        authenticator=AUTHENTICATOR_ADDRESS, seal_authenticator=False
    )  # asks in the clear
    p = Pair(world, provider, world.client())
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    failed = p.result(get)
    assert isinstance(failed, OapRequestFailed)
    assert "ACCESS_DENIED" in str(failed.error)
    # Refused before any decision: nothing looked up, nothing to audit.
    assert authenticator.decisions == 0 and authenticator.clear_refused >= 1


def test_authenticator_grants_a_sealed_request_only_to_the_responder_it_authenticated() -> None:
    from dofpy.wire.security import KeyRequest, SecurityIdentity  # noqa: PLC0415
    from dofpy.wire.trp import (  # noqa: PLC0415
        RequestSessionCommand,
        TrpReject,
        decode_trp_untrusted,
        encode_trp,
    )

    world, _authenticator = sealed_authenticator_world()
    # The client (authenticated to the Authenticator as itself) asks for a
    # session key as if it were the provider.
    from dofpy.security.crypto import build_rekey  # noqa: PLC0415
    from dofpy.session.node import Node  # noqa: PLC0415

    client = Node(
        world.local.node_config(
            CLIENT_ID, authenticator=AUTHENTICATOR_ADDRESS, seal_authenticator=True
        )
    )
    world.net.add(client, CLIENT)

    initiator = build_rekey(world.domain.oid, CLIENT_ID, b"\x01" * 16).initiator
    forged = RequestSessionCommand(
        world.domain.oid,
        KeyRequest(SecurityIdentity(PROVIDER_ID), b"\x02" * 16, thermostat_grant("p")),
        initiator,
    )
    request = client.send_command(
        AUTHENTICATOR_ADDRESS, AppId.TRP, encode_trp(forged), world.net.now
    )
    answers: list[object] = []

    def answered() -> bool:
        while (event := client.next_event()) is not None:
            if getattr(event, "request_id", None) == request:
                answers.append(event)
        return bool(answers)

    world.net.wakeup(CLIENT)
    assert world.net.run_until(answered, max_time=30)
    reply = decode_trp_untrusted(answers[0].payload, True)  # type: ignore[attr-defined]
    assert isinstance(reply, TrpReject)
    # ... it went sealed: the client holds a session with the Authenticator.
    assert client.peer_identity(AUTHENTICATOR_ADDRESS) is not None


def test_a_responder_bound_to_the_authenticators_identity_refuses_an_impostor_there() -> None:
    """The sealed TRP goes only to the Authenticator the credentials name: an
    enrolled node answering at its address fails the handshake at once
    (PeerIdentityMismatch) and hears no Request Session; the genuine one is
    then asked and the client served."""
    from dofpy.errors import PeerIdentityMismatch  # noqa: PLC0415
    from dofpy.testing.secure import AUTHENTICATOR_ID  # noqa: PLC0415
    from dofpy.wire.oid import OID  # noqa: PLC0415
    from dofpy.wire.permissions import PermissionSet  # noqa: PLC0415

    world, authenticator = sealed_authenticator_world()
    impostor_id = OID(3, b"impostor@example.org")
    world.local.enrol(impostor_id, PermissionSet())
    impostor = OapCore(OapConfig(node=world.local.node_config(impostor_id)))
    world.net.remove(AUTHENTICATOR_ADDRESS)
    world.net.add(impostor, AUTHENTICATOR_ADDRESS)
    provider = world.provider(
        authenticator=AUTHENTICATOR_ADDRESS,
        seal_authenticator=True,
        peer_identities={AUTHENTICATOR_ADDRESS: AUTHENTICATOR_ID},
    )
    p = Pair(world, provider, world.client())
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    assert isinstance(p.result(get), OapRequestFailed)
    assert p.provider.statistics().node.security.identity_mismatches >= 1  # type: ignore[union-attr]
    assert any(
        isinstance(e, SecureSessionEnded) and isinstance(e.error, PeerIdentityMismatch)
        for e in p.provider_events
    )
    assert authenticator.decisions == 0
    world.net.remove(AUTHENTICATOR_ADDRESS)
    world.net.add(authenticator, AUTHENTICATOR_ADDRESS)
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    assert p.result(get) == RequestCompleted(get, (21,))
    assert authenticator.decisions == 1


def test_a_restarted_provider_is_reached_again_with_a_new_handshake() -> None:
    """The provider restarts (a new process at the same address: no session
    keys). The client's next request is sealed under the old key and never
    answered; once it times out with nothing from the provider authenticated
    since it was sent, the session is retired, so the request after it
    handshakes again and is served, rather than going unheard until the key
    expires hours later."""
    p = pair()
    first = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    assert p.result(first) == RequestCompleted(first, (21,))
    p.world.net.remove(PROVIDER)
    p.provider = p.world.provider()  # restarted: same address, no keys
    lost = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    failed = p.result(lost, max_time=300)
    assert isinstance(failed, OapRequestFailed)
    assert "its secure session is retired" in str(failed.error)
    client_security = p.client.statistics().node.security
    assert client_security is not None and client_security.silent_sessions_retired == 1
    provider_security = p.provider.statistics().node.security
    assert provider_security is not None and provider_security.unknown_sessions >= 1
    again = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    assert p.result(again) == RequestCompleted(again, (21,))
    established = [e for e in p.client_events if isinstance(e, SecureSessionEstablished)]
    assert len(established) == 2


def test_a_live_session_is_not_retired_when_only_some_requests_are_lost() -> None:
    """A request that times out while the provider was heard from under the
    key since it was sent (the link lost that request's copies, not the
    peer its keys) keeps the session."""
    p = pair()
    first = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    assert p.result(first) == RequestCompleted(first, (21,))
    channels = p.client.node._security.channels  # type: ignore[union-attr]
    session = channels.session(PROVIDER)
    assert session is not None
    # Asking whether it is silent changes nothing; retiring acts on the answer.
    assert not channels.is_silent(PROVIDER, session.last_opened - 1.0)
    assert channels.is_silent(PROVIDER, session.last_opened + 1.0)
    assert channels.session(PROVIDER) is session
    assert not channels.retire_if_silent(PROVIDER, session.last_opened - 1.0, p.world.net.now)
    assert channels.session(PROVIDER) is session
    assert channels.retire_if_silent(PROVIDER, session.last_opened + 1.0, p.world.net.now + 2)
    assert channels.session(PROVIDER) is None


def test_one_way_traffic_to_a_restarted_provider_comes_back_by_a_silence_rekey() -> None:
    """One-way commands (no response: nothing ever times out) sealed to a
    provider that restarted: after ``silence_rekey`` seconds of sealing with
    nothing authenticated back, the initiator handshakes again and the
    provider hears the next command."""
    p = pair()
    first = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", p.world.net.now)
    assert p.result(first) == RequestCompleted(first, (21,))
    p.world.net.remove(PROVIDER)
    p.provider = p.world.provider()
    heard: list[int] = []
    for tick in range(60):  # a one-way command a second for a minute
        now = p.world.net.now
        p.client.node.send_command(PROVIDER, AppId.OAP, b"\x00", now, expect_response=False)
        p.world.net.wakeup(CLIENT)
        p.world.net.run_until(lambda: bool(p.pump()), max_time=1.0)
        security = p.provider.statistics().node.security
        assert security is not None
        if security.handshakes_completed:
            heard.append(tick)
    client = p.client.statistics().node.security
    # The first silence rekey reached the restarted provider; a provider that
    # answers nothing to one-way commands is rekeyed again every 20 s or so.
    assert client is not None and 1 <= client.silence_rekeys <= 3
    assert heard and 19 <= heard[0] <= 40
