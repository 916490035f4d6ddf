"""The handshake tables keep each handshake's next timer in a heap
(:class:`~dofpy.session.handshake.HandshakeTable`): the next wake-up is the
one a scan of every handshake gives, the due handshakes come in the scan's
order, and finding the next wake-up does not cost more with more finished
handshakes waiting for their deadline (entries examined, not time)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.oap.core import IncomingRequest
from dofpy.security.crypto import build_rekey
from dofpy.session.handshake import (
    Handshake,
    HandshakeTable,
    Phase,
    initiator_wake_at,
    responder_wake_at,
)
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.testing.secure import CLIENT_ID, PROVIDER, SecureDomain
from dofpy.wire.oid import OID

_BLOCK = build_rekey(OID(3, b"domain"), OID(3, b"node"), b"\x01" * 16).initiator

operations = st.lists(
    st.tuples(
        st.sampled_from(["add", "retry", "clear_retry", "ask", "answered", "remove", "due"]),
        st.integers(0, 7),  # key
        st.integers(0, 400),  # a time, in tenths of a second
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(operations, st.booleans())
def test_the_heap_gives_what_a_scan_of_the_table_gives(
    ops: list[tuple[str, int, int]], responder: bool
) -> None:
    wake_at = responder_wake_at if responder else initiator_wake_at
    table: HandshakeTable[int] = HandshakeTable(wake_at)
    entered: list[int] = []  # the keys in the order a dict of them would hold
    now = 0.0
    for name, key, tenths in ops:
        when = now + tenths / 10
        handshake = table.get(key)
        match name:
            case "add":
                phase = Phase.ASKING_AUTHENTICATOR if responder else Phase.REKEY_SENT
                table[key] = Handshake(("10.0.0.1", key), phase, when, _BLOCK, key)
                if key not in entered:
                    entered.append(key)
            case "retry" if handshake is not None and not responder:
                handshake.retry_at = when  # earlier or later than the deadline
                table.reschedule(key)
            case "clear_retry" if handshake is not None:
                handshake.retry_at = None  # later: no reschedule needed
            case "ask" if handshake is not None and responder:
                handshake.ask_deadline = when
                table.reschedule(key)
            case "answered" if handshake is not None and responder:
                handshake.phase = Phase.ACCEPT_SENT  # the ask deadline no longer counts
            case "remove" if handshake is not None:
                del table[key]
                entered.remove(key)
            case "due":
                now = when
                expected = [table.get(k) for k in entered]
                due = [h for h in expected if h is not None and wake_at(h) <= now]
                assert table.due(now) == due
                for h in due:  # what a timer does: each moves on (later)
                    h.deadline = now + 100.0
                    h.retry_at = None
                    h.ask_deadline = None
            case _:
                continue
        scan = [wake_at(h) for h in (table.get(k) for k in entered) if h is not None]
        assert table.next_wakeup() == (min(scan) if scan else None)
        assert len(table) == len(entered)


def _responder_examined(clients: int) -> tuple[int, int]:
    """A provider after ``clients`` finished handshakes (each kept until its
    deadline): (finished handshakes held, heap entries one get_timer examines)."""
    world = SecureDomain(seed=7)
    provider = world.provider()
    addresses = [(f"10.0.1.{i + 1}", 40000) for i in range(clients)]
    cores = [world.client(address, CLIENT_ID) for address in addresses]
    requests = [
        core.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", world.net.now)
        for core in cores
    ]
    for address in addresses:
        world.net.wakeup(address)
    answered: set[int] = set()

    def step() -> bool:
        while (incoming := provider.next_event()) is not None:
            if isinstance(incoming, IncomingRequest):
                provider.respond(incoming, [21], world.net.now)
                world.net.wakeup(PROVIDER)
        for core in cores:
            while (event := core.next_event()) is not None:
                answered.add(getattr(event, "request_id", -1))
        return answered.issuperset(requests)

    assert world.net.run_until(step, max_time=10.0)
    security = provider.node._security
    assert security is not None
    table = security.responder._responding
    finished = sum(h.phase is Phase.DONE for h in table.values())
    provider.node.get_timer()  # settle entries the handshakes moved
    before = table.examined
    provider.node.get_timer()
    return finished, table.examined - before


def test_get_timer_does_not_cost_more_with_more_finished_handshakes() -> None:
    few, few_cost = _responder_examined(1)
    many, many_cost = _responder_examined(40)
    assert (few, many) == (1, 40)  # every handshake finished and is still held
    # One entry looked at however many wait: the earliest, and it is current.
    assert few_cost == many_cost == 1


def test_a_random_schedule_of_handshakes_keeps_the_heap_small() -> None:
    # Rescheduling leaves stale entries behind; they are dropped before they
    # outnumber the live ones (plus a constant), so memory follows the table.
    table: HandshakeTable[int] = HandshakeTable(initiator_wake_at)
    rng = random.Random(3)
    for key in range(10):
        table[key] = Handshake(("10.0.0.1", key), Phase.REKEY_SENT, 100.0, _BLOCK, key)
    for _ in range(5000):
        handshake = table.get(rng.randrange(10))
        assert handshake is not None
        handshake.retry_at = rng.uniform(0, 100)
        table.reschedule(handshake.rekey_op)
    assert len(table._heap) <= 2 * len(table) + 64 + 1


def test_admitting_a_handshake_looks_only_at_the_half_open_ones() -> None:
    # 40 clients finish their handshakes; their handshakes stay in the table
    # until their deadline, but admission (the half-open limits) must not scan
    # them again and again: once seen finished, a key leaves the open set.
    world = SecureDomain(seed=13)
    provider = world.provider()
    addresses = [(f"10.0.2.{i + 1}", 40000) for i in range(40)]
    cores = [world.client(address, CLIENT_ID) for address in addresses]
    for core in cores:
        core.node.secure_session(PROVIDER, world.net.now)
    for address in addresses:
        world.net.wakeup(address)
    security = provider.node._security
    assert security is not None
    responder = security.responder

    def established() -> bool:
        for core in cores:
            while core.next_event() is not None:
                pass
        while provider.next_event() is not None:
            pass
        return all(core.node.peer_identity(PROVIDER) is not None for core in cores)

    assert world.net.run_until(established, max_time=10.0)
    table = responder._responding
    finished = sum(h.phase is Phase.DONE for h in table.values())
    assert finished == 40 == len(table)  # all held until their deadline
    assert responder.half_open == 0 == sum(h.phase is not Phase.DONE for h in table.values())
    assert responder._maybe_open == {}  # pruned: the next admission looks at nothing
