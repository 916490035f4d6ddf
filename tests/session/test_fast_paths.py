"""The session layer's fast paths change nothing but speed: the seeded
simulator runs the same secure sessions with ``fast_paths`` on and off and
sees the same events, statistics and datagrams."""

from __future__ import annotations

import dataclasses

import pytest

from dofpy.session.node import CommandReceived, Node, NodeEvent, NodeStatistics
from dofpy.testing.netsim import LinkConditions, TraceEvent
from dofpy.testing.secure import CLIENT, CLIENT_ID, PROVIDER, PROVIDER_ID, SecureDomain
from dofpy.wire.dpp import AppId

Run = tuple[
    list[NodeEvent], list[NodeEvent], NodeStatistics, NodeStatistics, tuple[TraceEvent, ...]
]


def _drain(node: Node) -> list[NodeEvent]:
    out = []
    while (event := node.next_event()) is not None:
        out.append(event)
    return out


def _run(fast_paths: bool, seed: int, conditions: LinkConditions) -> Run:
    world = SecureDomain(seed=seed, conditions=conditions, trace=True)
    provider = Node(
        dataclasses.replace(world.local.node_config(PROVIDER_ID), fast_paths=fast_paths)
    )
    client = Node(dataclasses.replace(world.local.node_config(CLIENT_ID), fast_paths=fast_paths))
    net = world.net
    net.add(provider, PROVIDER)
    net.add(client, CLIENT)
    client_events: list[NodeEvent] = []
    provider_events: list[NodeEvent] = []
    # Requests with answers (retransmitted, answered from the duplicate cache)
    # and one-way commands (the sealed-command path), both ways.
    requests = {client.send_command(PROVIDER, AppId.OAP, b"get %d" % i, net.now) for i in range(20)}
    for i in range(30):
        client.send_command(PROVIDER, AppId.OAP, b"block %d" % i, net.now, expect_response=False)
    net.wakeup(CLIENT)
    ended: set[int] = set()

    def step() -> bool:
        for event in _drain(provider):
            provider_events.append(event)
            if isinstance(event, CommandReceived) and event.payload.startswith(b"get"):
                provider.send_response(
                    event.peer, event.op_count, event.app_id, event.payload[::-1], net.now
                )
                provider.send_command(CLIENT, AppId.OAP, b"signal", net.now, expect_response=False)
                net.wakeup(PROVIDER)
        for event in _drain(client):
            client_events.append(event)
            request_id = getattr(event, "request_id", None)
            if request_id in requests:
                ended.add(request_id)
        return ended == requests

    assert net.run_until(step, max_time=120.0)
    net.run_until(max_time=30.0)  # let retransmissions and timers play out
    step()
    return client_events, provider_events, client.statistics(), provider.statistics(), net.trace


@pytest.mark.parametrize(
    ("seed", "conditions"),
    [
        (1, LinkConditions(delay=0.002)),
        (2, LinkConditions(loss=0.1, duplicate=0.1, reorder=0.1, delay=0.005)),
        (3, LinkConditions(loss=0.2, duplicate=0.2, corrupt=0.05, delay=0.003, jitter=0.002)),
    ],
)
def test_fast_paths_on_and_off_see_the_same_session(seed: int, conditions: LinkConditions) -> None:
    fast = _run(True, seed, conditions)
    reference = _run(False, seed, conditions)
    fast_client, fast_provider, fast_client_stats, fast_provider_stats, fast_trace = fast
    ref_client, ref_provider, ref_client_stats, ref_provider_stats, ref_trace = reference
    assert fast_client == ref_client
    assert fast_provider == ref_provider
    assert fast_client_stats == ref_client_stats
    assert fast_provider_stats == ref_provider_stats
    assert fast_trace == ref_trace
    assert fast_trace, "the simulator traced no datagram"
    # The runs did what they are for: sessions, answers, sealed one-way commands.
    assert fast_client_stats.security is not None and fast_client_stats.security.sessions == 1
    assert sum(isinstance(e, CommandReceived) and b"get" in e.payload for e in fast_provider) == 20
    assert any(isinstance(e, CommandReceived) and b"block" in e.payload for e in fast_provider)
    assert any(isinstance(e, CommandReceived) and e.payload == b"signal" for e in fast_client)
