"""Attacks on the TEP handshake and on DSP/TEP/TRP control, mounted on the
seeded simulator: each is refused or bounded, and the genuine party is still
served (issue 8, Build 4 half-open part, 5 and 6)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dofpy.errors import RemoteProtocolError, SecureSessionCause
from dofpy.oap.core import (
    AuthenticatorRequested,
    IncomingRequest,
    OapCore,
    OapEvent,
    OapRequestFailed,
    RequestCompleted,
)
from dofpy.session.node import (
    IncomingHandshakeFailed,
    SecureSessionEnded,
    SecurityStatistics,
)
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.testing.secure import AUTHENTICATOR_ADDRESS, CLIENT, CLIENT_ID, PROVIDER, SecureDomain
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame
from dofpy.wire.dsp import DspTerminate, encode_dsp
from dofpy.wire.oid import OID
from dofpy.wire.tep import CONFIRMATION_SIZE, TepConfirm, TepConfirmAck, TepReject, encode_tep
from dofpy.wire.trp import TrpError, TrpReject, encode_trp
from tests.session.test_secure_sessions import sealed_authenticator_world

Address = tuple[str, int]
# An off-path spoofer's guesses: the ids a counter from 1 would have used.
GUESSED_OPS = range(0, 48)


def stats(core: OapCore) -> SecurityStatistics:
    security = core.statistics().node.security
    assert security is not None
    return security


def serve(world: SecureDomain, provider: OapCore, events: list[OapEvent]) -> None:
    while (event := provider.next_event()) is not None:
        events.append(event)
        if isinstance(event, IncomingRequest):
            provider.respond(event, [21], world.net.now)
    world.net.wakeup(PROVIDER)


def get_result(
    world: SecureDomain,
    provider: OapCore,
    client: OapCore,
    *,
    spoof: Callable[[], None] | None = None,
    max_time: float = 30.0,
) -> OapEvent:
    """One Get from ``client``; ``spoof`` injects bursts while it runs."""
    request = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    world.net.wakeup(CLIENT)
    start = world.net.now
    seen: list[OapEvent] = []
    provider_events: list[OapEvent] = []

    bursts: list[float] = []

    def done() -> bool:
        # A burst every 20 ms of virtual time for the first 0.4 s: while the
        # handshake runs, never once per step (each burst adds steps).
        if (
            spoof is not None
            and world.net.now - start < 0.4
            and (not bursts or world.net.now - bursts[-1] >= 0.02)
        ):
            bursts.append(world.net.now)
            spoof()
        serve(world, provider, provider_events)
        while (event := client.next_event()) is not None:
            seen.append(event)
        return any(getattr(e, "request_id", None) == request for e in seen)

    assert world.net.run_until(done, max_time=max_time)
    return next(e for e in seen if getattr(e, "request_id", None) == request)


def clear_response(app_id: int, payload: bytes, op: int) -> bytes:
    return encode_frame(
        DppPacket(
            app_id=app_id,
            payload=payload,
            is_response=True,
            op_id_type=OpIdType.IMPLIED_RECEIVER,
            op_count=op,
        )
    )


# -- half-open exhaustion ------------------------------------------------------------


@pytest.mark.parametrize(
    "claim", ["one-host-many-identities", "many-hosts-one-identity", "one-host-one-identity"]
)
def test_half_open_flood_is_bounded_per_source_and_a_genuine_initiator_establishes(
    claim: str,
) -> None:
    world = SecureDomain()
    # The provider's application decides every Request Session: it leaves the
    # attacker's waiting (as a slow Authenticator would), so each stays half-open.
    provider = world.provider(defer_authenticator=True, max_half_open=16)
    attackers = []
    for index in range(40):
        if claim == "one-host-many-identities":
            address: Address = ("10.6.0.1", 40000 + index)
            identity = OID(3, f"claimed-{index}@example.org".encode())
        elif claim == "one-host-one-identity":
            # Both limits at once: its oldest is evicted once, not twice (that
            # was an IllegalTransition out of the receive path).
            address = ("10.6.0.1", 40000 + index)
            identity = OID(3, b"claimed@example.org")
        else:
            address = (f"10.7.{index}.1", 40000)
            identity = OID(3, b"claimed@example.org")
        attacker = world.client(address, identity=identity)
        attacker.node.secure_session(PROVIDER, world.net.now)
        world.net.wakeup(address)
        attackers.append(attacker)
    requests: list[AuthenticatorRequested] = []

    def collect() -> bool:
        while (event := provider.next_event()) is not None:
            if isinstance(event, AuthenticatorRequested):
                requests.append(event)
        for attacker in attackers:
            while attacker.next_event() is not None:
                pass
        return False

    world.net.run_until(collect, max_time=3.0)
    flooded = stats(provider)
    assert len(requests) >= 40  # every attacker passed the cookie (it receives)
    assert flooded.half_open <= 8  # max_half_open_per_source: a small share of 16
    assert flooded.half_open_replaced >= 32
    # The genuine client, from its own host and identity, still gets a slot and
    # its session: its Request Session is the one the application answers.
    client = world.client()
    request = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    world.net.wakeup(CLIENT)
    seen: list[OapEvent] = []

    def done() -> bool:
        while (event := provider.next_event()) is not None:
            if isinstance(event, AuthenticatorRequested) and event.initiator == CLIENT_ID:
                answer = world.authenticator.decide(event.command).response
                assert provider.node.answer_authenticator(event.token, answer, world.net.now)
            elif isinstance(event, IncomingRequest):
                provider.respond(event, [21], world.net.now)
        world.net.wakeup(PROVIDER)
        collect()
        while (event := client.next_event()) is not None:
            seen.append(event)
        return any(getattr(e, "request_id", None) == request for e in seen)

    assert world.net.run_until(done, max_time=30)
    assert RequestCompleted(request, (21,)) in seen
    assert stats(provider).half_open <= 9


# -- spoofed control -----------------------------------------------------------------


def test_spoofed_tep_reject_and_confirm_ack_are_ignored_and_the_handshake_completes() -> None:
    world = SecureDomain()
    provider, client = world.provider(), world.client()
    reject = encode_tep(TepReject(0xC2, b"forged"))
    ack = encode_tep(TepConfirmAck())

    def spoof() -> None:
        for op in GUESSED_OPS:
            world.net.inject(clear_response(AppId.TEP, reject, op), PROVIDER, CLIENT)
            world.net.inject(clear_response(AppId.TEP, ack, op), PROVIDER, CLIENT)

    result = get_result(world, provider, client, spoof=spoof)
    assert isinstance(result, RequestCompleted) and result.values == (21,)
    client_stats = stats(client)
    assert client_stats.handshakes_failed == 0
    assert client_stats.handshakes_completed == 1
    assert client_stats.control_ignored >= 2 * len(GUESSED_OPS)
    assert client.statistics().node.unmatched_responses >= 2 * len(GUESSED_OPS)


def test_spoofed_clear_dsp_terminate_is_ignored_while_security_is_required() -> None:
    world = SecureDomain()
    provider, client = world.provider(), world.client()
    first = get_result(world, provider, client)
    assert isinstance(first, RequestCompleted)
    terminate = encode_dsp(DspTerminate())

    def spoof() -> None:
        for op in GUESSED_OPS:
            packet = DppPacket(
                app_id=AppId.DSP,
                payload=terminate,
                op_id_type=OpIdType.IMPLIED_SENDER,
                op_count=op,
                retry=0,
            )
            world.net.inject(encode_frame(packet), PROVIDER, CLIENT)
            world.net.inject(encode_frame(packet), CLIENT, PROVIDER)

    second = get_result(world, provider, client, spoof=spoof)
    assert isinstance(second, RequestCompleted) and second.values == (21,)
    for core in (provider, client):
        assert stats(core).control_ignored >= len(GUESSED_OPS)
        assert stats(core).sessions == 1


def test_spoofed_trp_reject_in_the_clear_does_not_refuse_a_sealed_authenticator_handshake() -> None:
    world, _authenticator = sealed_authenticator_world()
    provider = world.provider(authenticator=AUTHENTICATOR_ADDRESS, seal_authenticator=True)
    client = world.client()
    forged = encode_trp(TrpReject(TrpError.ACCESS_DENIED))

    def spoof() -> None:
        for op in GUESSED_OPS:
            world.net.inject(clear_response(AppId.TRP, forged, op), AUTHENTICATOR_ADDRESS, PROVIDER)

    result = get_result(world, provider, client, spoof=spoof)
    assert isinstance(result, RequestCompleted) and result.values == (21,)
    assert stats(provider).control_ignored >= len(GUESSED_OPS)
    assert stats(client).handshakes_failed == 0


def test_spoofed_trp_reject_in_the_clear_authenticator_path_needs_the_random_op_id() -> None:
    from dofpy_services.authenticator.daemon import AuthenticatorCore  # noqa: PLC0415

    world = SecureDomain()
    clear = AuthenticatorCore(
        world.authenticator, security=world.authenticator_security(), sealed_only=False
    )
    world.net.add(clear, AUTHENTICATOR_ADDRESS)
    provider = world.provider(authenticator=AUTHENTICATOR_ADDRESS, seal_authenticator=False)
    client = world.client()
    forged = encode_trp(TrpReject(TrpError.ACCESS_DENIED))

    def spoof() -> None:
        for op in GUESSED_OPS:
            world.net.inject(clear_response(AppId.TRP, forged, op), AUTHENTICATOR_ADDRESS, PROVIDER)

    result = get_result(world, provider, client, spoof=spoof)
    assert isinstance(result, RequestCompleted) and result.values == (21,)
    assert stats(provider).control_ignored >= len(GUESSED_OPS)
    assert stats(provider).handshakes_failed == 0


def test_op_ids_start_at_a_random_value() -> None:
    first_ops = set()
    for seed in (1, 2, 3):
        world = SecureDomain(seed=seed)
        client = world.client()
        first_ops.add(client.node.send_command(PROVIDER, AppId.OAP, b"\x00", 0.0))
    assert 1 not in first_ops and len(first_ops) == 3


# -- simultaneous open ---------------------------------------------------------------


def test_simultaneous_open_gives_two_working_sessions() -> None:
    world = SecureDomain()
    provider = world.provider()
    client = world.client()
    provider.node.secure_session(CLIENT, world.net.now)
    client.node.secure_session(PROVIDER, world.net.now)
    world.net.wakeup(PROVIDER)
    world.net.wakeup(CLIENT)

    def both() -> bool:
        for core in (provider, client):
            while core.next_event() is not None:
                pass
        return stats(provider).handshakes_completed == 2 and stats(client).handshakes_completed == 2

    assert world.net.run_until(both, max_time=10)
    # Each side holds both sessions (different SSIDs); sealed traffic both ways
    # (the Get and its answer, then the provider's Get, refused by permission
    # but answered) authenticates.
    result = get_result(world, provider, client)
    assert isinstance(result, RequestCompleted) and result.values == (21,)
    back = provider.get(CLIENT, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    world.net.wakeup(PROVIDER)
    seen: list[OapEvent] = []

    def answered() -> bool:
        while client.next_event() is not None:
            pass
        while (event := provider.next_event()) is not None:
            seen.append(event)
        return any(getattr(e, "request_id", None) == back for e in seen)

    assert world.net.run_until(answered, max_time=10)
    refused = next(e for e in seen if getattr(e, "request_id", None) == back)
    assert isinstance(refused, OapRequestFailed) and "timed out" not in str(refused.error)
    for core in (provider, client):
        assert stats(core).authentication_failures == 0
        assert stats(core).unknown_sessions == 0


# -- security mode --------------------------------------------------------------------


def test_tag_length_mismatch_is_refused_at_once_on_both_sides() -> None:
    world = SecureDomain()
    provider = world.provider(tag_length=16)
    client = world.client(tag_length=8)
    provider_events: list[OapEvent] = []
    start = world.net.now
    request = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
    world.net.wakeup(CLIENT)
    seen: list[OapEvent] = []

    def done() -> bool:
        while (event := provider.next_event()) is not None:
            provider_events.append(event)
        while (event := client.next_event()) is not None:
            seen.append(event)
        return any(getattr(e, "request_id", None) == request for e in seen)

    assert world.net.run_until(done, max_time=30)
    assert world.net.now - start < 1.0  # refused in the handshake, not timed out
    failed = next(e for e in seen if getattr(e, "request_id", None) == request)
    assert isinstance(failed, OapRequestFailed)
    assert isinstance(failed.error, RemoteProtocolError)
    assert "tag 8 (initiator)" in str(failed.error) and "tag 16 (responder)" in str(failed.error)
    # The provider names the refused handshake too (not as a session of its own).
    assert not any(isinstance(e, SecureSessionEnded) for e in provider_events)
    failed_in = [e for e in provider_events if isinstance(e, IncomingHandshakeFailed)]
    assert len(failed_in) == 1 and "tag 8 (initiator)" in str(failed_in[0].error)
    assert failed_in[0].error.cause is SecureSessionCause.MODE_MISMATCH
    assert failed_in[0].claimed_identity == CLIENT_ID
    assert stats(provider).mode_mismatches == 1 and stats(client).mode_mismatches == 1
    assert stats(provider).sessions == 0
    # With the modes matching the same client is served.
    world.net.remove(CLIENT)
    fixed = world.client(tag_length=16)
    result = get_result(world, provider, fixed)
    assert isinstance(result, RequestCompleted) and result.values == (21,)


def test_a_stray_confirm_is_ignored_not_counted_malformed() -> None:
    # A Confirm for no handshake (a late retransmission after the finished
    # handshake was forgotten, or a stray) is well-formed: ignored and counted
    # as out-of-place control, not as a bad datagram; the genuine client is served.
    world = SecureDomain()
    provider = world.provider()
    client = world.client()
    stray = encode_frame(
        DppPacket(
            app_id=AppId.TEP,
            payload=encode_tep(TepConfirm(bytes(CONFIRMATION_SIZE))),
            op_id_type=OpIdType.IMPLIED_SENDER,
            op_count=7,
        )
    )

    def spoof() -> None:
        world.net.inject(stray, ("10.8.0.1", 40000), PROVIDER)

    result = get_result(world, provider, client, spoof=spoof)
    assert isinstance(result, RequestCompleted) and result.values == (21,)
    node = provider.statistics().node
    assert stats(provider).control_ignored >= 1
    assert node.bad_datagrams == 0
