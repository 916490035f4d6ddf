"""Diagnosable handshake failures (issue 9, Build 2), on the seeded simulator.

One test per cause: the request fails with a :class:`SecureSessionFailed`
whose type, cause and message name what went wrong; where the cause is
certain (a Reject carrying the handshake's random operation id) it fails
before the handshake deadline, where it could be forged (an Accept that does
not verify) the handshake waits for its deadline and then names it. The
Authenticator's own view (its audit lines, through ``on_audit``) is checked
alongside, and forged packets are shown not to end a genuine handshake early.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from dofpy._core import Address
from dofpy.errors import (
    DofTimeoutError,
    RemoteProtocolError,
    SecureSessionCause,
    SecureSessionFailed,
    SecureSessionRefused,
    SecureSessionTimeout,
)
from dofpy.oap.core import OapConfig, OapCore, OapEvent, OapRequestFailed, RequestCompleted
from dofpy.security.authenticator import Decision, TicketRole, make_session_ticket
from dofpy.security.crypto import build_accept
from dofpy.session.node import IncomingHandshakeFailed, NodeConfig, RetryPolicy, SecureSessionEnded
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
from dofpy.wire.security import AuthenticatorBlock, KeyRequest, SecurityIdentity
from dofpy.wire.tep import ResponderInit, TepConfirm, TepRekey, decode_tep_untrusted, encode_tep
from dofpy.wire.trp import RequestSessionCommand
from dofpy_services.authenticator.daemon import AuthenticatorCore
from tests.session.test_secure_sessions import Pair

# SecurityConfig's default handshake_timeout, which every node here keeps.
HANDSHAKE_TIMEOUT = 15.0


@dataclass
class World:
    """A client, a provider asking the Authenticator at AUTHENTICATOR_ADDRESS
    (sealed by default) and that Authenticator, its decisions and audit lines
    recorded."""

    sim: SecureDomain
    pair: Pair
    authenticator: AuthenticatorCore | None
    decisions: list[Decision] = field(default_factory=list)
    audits: list[tuple[str, str]] = field(default_factory=list)

    def failed_get(self, max_time: float = 60.0) -> tuple[SecureSessionFailed, float]:
        """One Get that must fail: its error and how long it took (virtual time)."""
        start = self.sim.net.now
        get = self.pair.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", start)
        result = self.pair.result(get, max_time=max_time)
        assert isinstance(result, OapRequestFailed), result
        assert isinstance(result.error, SecureSessionFailed), result.error
        return result.error, self.sim.net.now - start

    def run_until(self, condition: Any, max_time: float = 60.0) -> None:
        assert self.sim.net.run_until(lambda: self.pair.pump() or condition(), max_time=max_time)

    def provider_failures(self) -> list[IncomingHandshakeFailed]:
        return [e for e in self.pair.provider_events if isinstance(e, IncomingHandshakeFailed)]

    def provider_ended(self, peer: Address) -> list[SecureSessionEnded]:
        return [
            e
            for e in self.pair.provider_events
            if isinstance(e, SecureSessionEnded) and e.peer == peer
        ]

    def audited(self, kind: str) -> list[str]:
        return [detail for audited_kind, detail in self.audits if audited_kind == kind]


def world(
    *,
    authenticator: bool = True,
    authenticator_options: dict[str, Any] | None = None,
    provider: dict[str, Any] | None = None,
    client: dict[str, Any] | None = None,
) -> World:
    sim = SecureDomain()
    decisions: list[Decision] = []
    audits: list[tuple[str, str]] = []
    core = None
    if authenticator:
        options = {"security": sim.authenticator_security(), **(authenticator_options or {})}
        core = AuthenticatorCore(
            sim.authenticator,
            lambda decision, peer, now: decisions.append(decision),
            on_audit=lambda kind, detail, now: audits.append((kind, detail)),
            **options,
        )
        sim.net.add(core, AUTHENTICATOR_ADDRESS)
    provider_core = sim.provider(**{"authenticator": AUTHENTICATOR_ADDRESS, **(provider or {})})
    pair = Pair(sim, provider_core, sim.client(**(client or {})))
    return World(sim, pair, core, decisions, audits)


# -- one test per cause ------------------------------------------------------------------


def test_wrong_device_secret_is_named_at_the_deadline_and_the_server_sees_no_confirm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = world(client={"secret": bytes(range(32))})
    with caplog.at_level(logging.INFO, logger="dofpy.session.handshake"):
        error, took = w.failed_get()
    # An Accept that does not verify could be forged: the handshake waits for
    # one that does until its deadline, then names what it saw.
    assert isinstance(error, SecureSessionTimeout) and isinstance(error, DofTimeoutError)
    assert error.cause is SecureSessionCause.ACCEPT_NOT_VERIFIED and error.peer == PROVIDER
    message = str(error)
    assert (
        "the Accept from 10.1.0.1:3567 did not verify with this node's identity secret" in message
    )
    assert "the Authenticator's record of it, is wrong" in message
    assert took >= HANDSHAKE_TIMEOUT - 0.1
    # Logged when first seen, long before the deadline.
    seen = [r for r in caplog.records if "did not verify" in r.getMessage()]
    assert seen and seen[0].levelno == logging.INFO
    # The Authenticator granted (it cannot tell: the ticket is under the secret
    # it holds); the server sees its Accept go unconfirmed and says so.
    assert [d.granted for d in w.decisions] == [True]
    w.run_until(lambda: bool(w.provider_failures()))
    (failure,) = w.provider_failures()
    assert failure.peer == CLIENT and failure.claimed_identity == CLIENT_ID
    assert isinstance(failure.error, SecureSessionTimeout)
    assert failure.error.cause is SecureSessionCause.NO_CONFIRM
    assert "sent no Confirm after this node's Accept" in str(failure.error)


def test_wrong_server_secret_fails_early_naming_the_servers_secret() -> None:
    w = world(provider={"secret": bytes(range(32))})
    error, took = w.failed_get()
    assert isinstance(error, SecureSessionRefused) and isinstance(error, RemoteProtocolError)
    assert error.cause is SecureSessionCause.AUTHENTICATOR_FAILED
    assert "could not get a session key from its Authenticator (accept-not-verified" in str(error)
    assert "its identity secret, or the Authenticator's record of it, is wrong" in str(error)
    assert took < HANDSHAKE_TIMEOUT
    # The server names its own secret as the cause of the refusal...
    (failure,) = w.provider_failures()
    assert failure.error.cause is SecureSessionCause.AUTHENTICATOR_FAILED
    assert "did not verify with this node's identity secret" in str(failure.error)
    # ... its own handshake with the Authenticator then times out naming it...
    w.run_until(lambda: bool(w.provider_ended(AUTHENTICATOR_ADDRESS)))
    (ended,) = w.provider_ended(AUTHENTICATOR_ADDRESS)
    assert isinstance(ended.error, SecureSessionTimeout)
    assert ended.error.cause is SecureSessionCause.ACCEPT_NOT_VERIFIED
    # ... and the Authenticator audits the handshake that was never confirmed.
    w.run_until(lambda: bool(w.audited("handshake-failed")))
    (audited,) = w.audited("handshake-failed")
    assert f"initiator={PROVIDER_ID}" in audited and "cause=no-confirm" in audited


def test_wrong_secret_of_a_server_holding_the_store_is_named_at_once() -> None:
    # A responder keyed in-process (local_authenticator) opens its own ticket.
    sim = SecureDomain()
    p = Pair(sim, sim.provider(secret=bytes(range(32))), sim.client())
    start = sim.net.now
    get = p.client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", start)
    result = p.result(get)
    assert isinstance(result, OapRequestFailed)
    assert isinstance(result.error, SecureSessionRefused)
    assert result.error.cause is SecureSessionCause.TICKET_NOT_VERIFIED
    assert "its ticket from the Authenticator did not verify" in str(result.error)
    assert sim.net.now - start < 1.0
    failures = [e for e in p.provider_events if isinstance(e, IncomingHandshakeFailed)]
    assert failures and failures[0].error.cause is SecureSessionCause.TICKET_NOT_VERIFIED


def test_authenticator_down_fails_early_naming_it() -> None:
    w = world(authenticator=False)
    error, took = w.failed_get()
    assert isinstance(error, SecureSessionRefused)
    assert error.cause is SecureSessionCause.AUTHENTICATOR_FAILED
    assert "could not get a session key from its Authenticator (no-answer" in str(error)
    assert "is its Authenticator running and reachable" in str(error)
    # The responder gives its Authenticator two thirds of its handshake timeout.
    assert HANDSHAKE_TIMEOUT * 2 / 3 - 0.1 <= took < HANDSHAKE_TIMEOUT
    (failure,) = w.provider_failures()
    assert f"the Authenticator at {AUTHENTICATOR_ADDRESS[0]}" in str(failure.error)
    assert "did not answer the handshake" in str(failure.error)
    w.run_until(lambda: bool(w.provider_ended(AUTHENTICATOR_ADDRESS)))
    (ended,) = w.provider_ended(AUTHENTICATOR_ADDRESS)
    assert isinstance(ended.error, SecureSessionTimeout)
    assert ended.error.cause is SecureSessionCause.NO_ANSWER


def test_peer_down_is_named_at_the_deadline() -> None:
    sim = SecureDomain()
    client = sim.client()
    p = Pair(sim, sim.provider(), client)
    sim.net.remove(PROVIDER)
    start = sim.net.now
    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", start)
    result = p.result(get)
    assert isinstance(result, OapRequestFailed)
    assert isinstance(result.error, SecureSessionTimeout)
    assert result.error.cause is SecureSessionCause.NO_ANSWER
    assert "10.1.0.1:3567 did not answer the handshake" in str(result.error)
    # It says how hard it tried (the Rekey retransmissions of RetryPolicy).
    assert re.search(r"\((\d+) Rekeys in 15\.0 s\)", str(result.error)), result.error


def test_authenticator_refusal_fails_early_with_its_reason() -> None:
    w = world()
    w.sim.local.revoke(CLIENT_ID)
    error, took = w.failed_get()
    assert isinstance(error, SecureSessionRefused)
    assert error.cause is SecureSessionCause.AUTHENTICATOR_REFUSED
    assert "the Authenticator refused it (ACCESS_DENIED: a node is revoked" in str(error)
    assert took < 1.0
    (failure,) = w.provider_failures()
    assert failure.error.cause is SecureSessionCause.AUTHENTICATOR_REFUSED
    assert "ACCESS_DENIED" in str(failure.error)
    # The Authenticator's decision carries the precise reason (its audit row).
    (decision,) = w.decisions
    assert not decision.granted and decision.reason == f"initiator {CLIENT_ID} is revoked"


def test_unenrolled_device_is_told_it_is_not_enrolled() -> None:
    from dofpy.wire.oid import OID  # noqa: PLC0415

    stranger = OID(3, b"stranger@example.org")
    w = world(client={"identity": stranger})
    error, _ = w.failed_get()
    assert error.cause is SecureSessionCause.AUTHENTICATOR_REFUSED
    assert f"UNKNOWN_INITIATOR: this node ({stranger}) is not enrolled" in str(error)


def test_clear_trp_to_a_sealed_only_authenticator_is_named_on_all_three_nodes() -> None:
    w = world(provider={"seal_authenticator": False})
    error, took = w.failed_get()
    assert isinstance(error, SecureSessionRefused)
    assert error.cause is SecureSessionCause.AUTHENTICATOR_REFUSED
    assert "asked it in the clear" in str(error) and "needs seal_authenticator" in str(error)
    assert took < 1.0
    (failure,) = w.provider_failures()
    assert "set seal_authenticator" in str(failure.error)
    # Nothing decided; the clear command is audited as such.
    assert w.decisions == []
    (audited,) = w.audited("trp-clear-refused")
    assert audited.startswith("peer=10.1.0.1:3567 ")


def test_sealed_trp_to_an_authenticator_without_identity_is_named() -> None:
    w = world(authenticator_options={"security": None, "sealed_only": False})
    error, took = w.failed_get()
    assert error.cause is SecureSessionCause.AUTHENTICATOR_FAILED
    assert "(no-answer" in str(error) and took < HANDSHAKE_TIMEOUT
    w.run_until(lambda: bool(w.provider_ended(AUTHENTICATOR_ADDRESS)))
    (ended,) = w.provider_ended(AUTHENTICATOR_ADDRESS)
    assert ended.error.cause is SecureSessionCause.NO_ANSWER  # type: ignore[attr-defined]
    assert "an Authenticator without its own identity takes no sealed TRP" in str(ended.error)


def test_security_mode_mismatch_fails_early_on_both_sides_and_is_audited() -> None:
    # Against the Authenticator itself: a responder using 8-byte tags.
    w = world(provider={"tag_length": 8}, client={"tag_length": 8})
    error, took = w.failed_get()
    # The provider's own handshake with the Authenticator is refused (0xC3),
    # so it refuses the client's naming that (0xC2 "authenticator: ...").
    assert isinstance(error, SecureSessionRefused) and error.code == 0xC2
    assert error.cause is SecureSessionCause.AUTHENTICATOR_FAILED
    assert "(mode-mismatch" in str(error) and took < 1.0
    (ended,) = w.provider_ended(AUTHENTICATOR_ADDRESS)
    assert isinstance(ended.error, SecureSessionRefused)
    assert ended.error.cause is SecureSessionCause.MODE_MISMATCH
    assert "requires another security mode (TEP Reject 0xc3" in str(ended.error)
    (audited,) = w.audited("handshake-failed")
    assert f"initiator={PROVIDER_ID}" in audited and "cause=mode-mismatch" in audited
    assert "tag 8 (initiator)" in audited


def test_a_command_timing_out_before_the_handshake_names_its_cause() -> None:
    sim = SecureDomain()
    security = sim.local.security(CLIENT_ID, asks=thermostat_grant("rwxs"), secret=bytes(range(32)))
    config = NodeConfig(node_id=CLIENT_ID, security=security, retry=RetryPolicy(total_timeout=5.0))
    client = OapCore(OapConfig(node=config))
    sim.net.add(client, CLIENT)
    p = Pair(sim, sim.provider(), client)
    start = sim.net.now
    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", start)
    result = p.result(get)
    # The Get gave up (5 s) while the handshake still ran: it says why.
    assert sim.net.now - start < HANDSHAKE_TIMEOUT
    assert isinstance(result, OapRequestFailed)
    assert isinstance(result.error, SecureSessionTimeout)
    assert result.error.cause is SecureSessionCause.ACCEPT_NOT_VERIFIED
    assert "did not verify with this node's identity secret" in str(result.error)


# -- forged packets do not end a genuine handshake ------------------------------------


@dataclass
class OnPathForger:
    """Wraps the client's core: for every Rekey it sends, an attacker who sees
    it (so knows its random operation id) injects a forged Accept at once,
    ahead of the genuine one, and a forged Reject after it."""

    inner: OapCore
    sim: SecureDomain
    forged: int = 0

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.inner.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = self.inner.datagrams_to_send(now)
        for data, dst in out:
            _, packet = decode_frame_untrusted(data)
            if packet.app_id != AppId.TEP or packet.is_response or packet.security is not None:
                continue
            rekey = decode_tep_untrusted(packet.payload, is_response=False)
            if isinstance(rekey, TepRekey) and packet.op_count is not None:
                self._forge(rekey, packet.op_count, dst)
        return out

    def _forge(self, rekey: TepRekey, op: int, dst: Address) -> None:
        key = bytes(32)
        responder = KeyRequest(SecurityIdentity(PROVIDER_ID), bytes(16), thermostat_grant("p"))
        granted = AuthenticatorBlock(60)
        command = RequestSessionCommand(self.sim.domain.oid, responder, rekey.initiator)
        # The attacker holds no identity secret of the client: a guess.
        ticket = make_session_ticket(bytes(32), TicketRole.INITIATOR, command, granted, key)
        accept = build_accept(
            rekey.initiator,
            session_key=key,
            ticket=ticket,
            responder=responder,
            responder_init=ResponderInit(7),
            authenticator=granted,
        )
        frame = encode_frame(
            DppPacket(
                app_id=AppId.TEP,
                payload=encode_tep(accept),
                is_response=True,
                op_id_type=OpIdType.IMPLIED_RECEIVER,
                op_count=op,
            )
        )
        self.sim.net.inject(frame, dst, CLIENT)
        self.forged += 1

    def get_timer(self) -> float | None:
        return self.inner.get_timer()

    def handle_timer(self, now: float) -> None:
        self.inner.handle_timer(now)


def test_forged_accepts_with_the_right_operation_id_do_not_end_a_genuine_handshake() -> None:
    w = world()
    client = w.pair.client
    forger = OnPathForger(client, w.sim)
    w.sim.net.remove(CLIENT)
    w.sim.net.add(forger, CLIENT)
    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", w.sim.net.now)
    assert w.pair.result(get) == RequestCompleted(get, (21,))
    assert forger.forged >= 2  # one per Rekey (before and after the cookie)
    security = client.statistics().node.security
    assert security is not None
    # A forgery was taken up while the handshake waited for its Accept (later
    # ones find no handshake and are not verified at all)...
    assert security.authentication_failures >= 1
    assert security.handshakes_failed == 0 and security.handshakes_completed == 1
    # ... and named nowhere as a failure: no handshake ended.
    assert not any(isinstance(e, SecureSessionEnded) for e in w.pair.client_events)


def test_a_forged_accept_alone_is_reported_only_at_the_deadline() -> None:
    # The provider never answers (down): the only Accepts are forged ones.
    # They do not end the handshake early; at its deadline it names them.
    sim = SecureDomain()
    client = sim.client()
    p = Pair(sim, sim.provider(), client)
    sim.net.remove(PROVIDER)
    forger = OnPathForger(client, sim)
    sim.net.remove(CLIENT)
    sim.net.add(forger, CLIENT)
    start = sim.net.now
    get = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", start)
    result: OapEvent = p.result(get)
    assert isinstance(result, OapRequestFailed)
    assert isinstance(result.error, SecureSessionTimeout)
    assert result.error.cause is SecureSessionCause.ACCEPT_NOT_VERIFIED
    assert "(or the Accepts were forged)" in str(result.error)
    assert sim.net.now - start >= HANDSHAKE_TIMEOUT - 0.1


def test_the_handshake_timeout_assumed_here_is_the_default() -> None:
    sim = SecureDomain()
    assert sim.local.security(CLIENT_ID).handshake_timeout == HANDSHAKE_TIMEOUT


@dataclass
class ConfirmCorrupter:
    """Wraps the client's core and damages every Confirm it sends (a broken
    initiator, or a link that alters it): the responder never sees one verify."""

    inner: OapCore
    damaged: int = 0

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.inner.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = []
        for sent, dst in self.inner.datagrams_to_send(now):
            data = sent
            _, packet = decode_frame_untrusted(data)
            if packet.app_id == AppId.TEP and not packet.is_response and packet.security is None:
                pdu = decode_tep_untrusted(packet.payload, is_response=False)
                if isinstance(pdu, TepConfirm):
                    bad = TepConfirm(bytes([pdu.confirmation[0] ^ 1]) + pdu.confirmation[1:])
                    data = encode_frame(replace(packet, payload=encode_tep(bad)))
                    self.damaged += 1
            out.append((data, dst))
        return out

    def get_timer(self) -> float | None:
        return self.inner.get_timer()

    def handle_timer(self, now: float) -> None:
        self.inner.handle_timer(now)


def test_confirms_that_never_verify_are_named_on_both_sides_at_the_deadline() -> None:
    w = world()
    client = w.pair.client
    corrupter = ConfirmCorrupter(client)
    w.sim.net.remove(CLIENT)
    w.sim.net.add(corrupter, CLIENT)
    error, took = w.failed_get()
    assert took >= HANDSHAKE_TIMEOUT - 0.1  # a damaged Confirm could be forged: no early end
    assert corrupter.damaged >= 1
    assert isinstance(error, SecureSessionTimeout)
    assert error.cause is SecureSessionCause.NO_CONFIRM_ACK
    assert "did not acknowledge this node's Confirm (its Accept verified)" in str(error)
    w.run_until(lambda: bool(w.provider_failures()))
    (failure,) = w.provider_failures()
    assert failure.error.cause is SecureSessionCause.CONFIRM_NOT_VERIFIED
    assert "did not verify with the session key" in str(failure.error)
