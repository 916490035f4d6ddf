"""Hypothesis drives the TEP handshake through arbitrary delivery schedules:
drops, duplicates, reordering, replays of any earlier datagram to either side
and time jumps. Neither node may raise, and once the adversary stops
interfering the session comes up and traffic flows."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.oap.core import IncomingRequest, OapCore, RequestCompleted
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.testing.secure import CLIENT, PROVIDER, SecureDomain

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["deliver", "drop", "duplicate", "replay", "swap", "tick"]),
        st.integers(min_value=0, max_value=63),
    ),
    max_size=60,
)


def _serve(provider: OapCore, now: float) -> None:
    while (event := provider.next_event()) is not None:
        if isinstance(event, IncomingRequest):
            provider.respond(event, [21], now)


@settings(max_examples=150, deadline=None)
@given(ACTIONS)
def test_any_schedule_is_survived_and_recovers(actions: list[tuple[str, int]]) -> None:
    world = SecureDomain()
    provider, client = world.provider(), world.client()
    now = 0.0
    request = client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", now)
    queue: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = []
    history: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = []
    cores = {PROVIDER: provider, CLIENT: client}

    def collect() -> None:
        for source, core in cores.items():
            for data, destination in core.datagrams_to_send(now):
                if destination in cores:
                    queue.append((data, source, destination))

    def deliver(item: tuple[bytes, tuple[str, int], tuple[str, int]]) -> None:
        data, source, destination = item
        cores[destination].receive_datagram(data, source, now)
        history.append(item)
        _serve(provider, now)

    collect()
    for action, index in actions:
        if action == "tick":
            now += 0.5 + index / 8
            for core in cores.values():
                timer = core.get_timer()
                if timer is not None and timer <= now:
                    core.handle_timer(now)
        elif action == "replay" and history:
            deliver(history[index % len(history)])
        elif queue:
            position = index % len(queue)
            if action == "deliver":
                deliver(queue.pop(position))
            elif action == "drop":
                queue.pop(position)
            elif action == "duplicate":
                deliver(queue[position])
            elif action == "swap":
                queue[0], queue[position] = queue[position], queue[0]
        collect()

    def settle(request_id: int) -> bool:
        """Deliver everything and run the timers (bounded) until ``request_id``
        completes; whether it did."""
        nonlocal now
        for _ in range(400):
            collect()
            while queue:
                deliver(queue.pop(0))
                collect()
            while (event := client.next_event()) is not None:
                if isinstance(event, RequestCompleted) and event.request_id == request_id:
                    return True
            timers = [t for t in (c.get_timer() for c in cores.values()) if t is not None]
            if not timers:
                return False
            now = max(now, min(timers))
            for core in cores.values():
                if (timer := core.get_timer()) is not None and timer <= now:
                    core.handle_timer(now)
        return False

    # The adversary stops. The first request may have timed out under it; a new
    # one must then succeed on the clean network.
    completed = settle(request) or settle(
        client.get(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", now)
    )
    assert completed
