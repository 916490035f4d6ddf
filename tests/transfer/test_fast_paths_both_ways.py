"""The transfer's receive fast paths (the OAP gate's raw path: Blocks and
Fetches read from their head, the block reader, the head caches) and the
session's change nothing but speed: the seeded simulator runs the same block
transfers with the node's ``fast_paths`` on and off and sees the same events,
statistics and datagrams on both sides."""

from __future__ import annotations

import dataclasses
import random

import pytest

from dofpy.oap.config import OapConfig
from dofpy.session.config import NodeConfig
from dofpy.testing import grant as grant_on
from dofpy.testing.domain import LocalDomain
from dofpy.testing.netsim import LinkConditions, Network, TraceEvent
from dofpy.testing.transfer import PROVIDER, REQUESTOR, make_object
from dofpy.transfer.core import (
    TransferCompleted,
    TransferConfig,
    TransferCore,
    TransferEvent,
    TransferStatistics,
)
from dofpy.transfer.messages import TRANSFER_IID
from dofpy.transfer.store import MemoryStore
from dofpy.wire.oid import OID

TOKEN_KEY = bytes(range(32))  # a fixed address-token key: both runs send the same Retry
SIZE = 96 * 1024 + 77

Statistics = tuple[TransferStatistics, object, TransferStatistics, object]
Run = tuple[list[tuple[object, ...]], Statistics, tuple[TraceEvent, ...]]


def _comparable(event: TransferEvent) -> tuple[object, ...]:
    """An event with its exception as (class, args): exceptions compare by
    identity, the runs' must compare by what they say."""
    values = []
    for field in dataclasses.fields(event):  # type: ignore[arg-type]
        value = getattr(event, field.name)
        values.append((type(value), value.args) if isinstance(value, BaseException) else value)
    return (type(event), *values)


def _nodes(secure: bool) -> tuple[NodeConfig, NodeConfig]:
    if not secure:
        return NodeConfig(), NodeConfig()
    local = LocalDomain(OID(6, b"transfer.example"), rng=random.Random(4).randbytes)
    provider_id = OID(3, b"provider@transfer.example")
    requestor_id = OID(3, b"device@transfer.example")
    local.enrol(provider_id, grant_on("p", interface=TRANSFER_IID))
    local.enrol(requestor_id, grant_on("rx", interface=TRANSFER_IID))
    return local.node_config(provider_id), local.node_config(requestor_id)


def _run(fast_paths: bool, secure: bool, seed: int, conditions: LinkConditions) -> Run:
    cores = []
    for number, node in enumerate(_nodes(secure)):
        config = TransferConfig(
            oap=OapConfig(node=dataclasses.replace(node, fast_paths=fast_paths)),
            address_token_key=TOKEN_KEY,
        )
        cores.append(TransferCore(config, rng=random.Random(seed * 10 + number)))
    provider, requestor = cores
    net = Network(seed=seed, default=conditions, trace=True)
    net.add(provider, PROVIDER)
    net.add(requestor, REQUESTOR)
    data = make_object(SIZE, seed)
    manifest = provider.publish(data)
    requestor.fetch(manifest, [PROVIDER], net.now, store=MemoryStore())
    net.wakeup(REQUESTOR)
    events: list[TransferEvent] = []

    def done() -> bool:
        while (event := requestor.next_event()) is not None:
            events.append(event)
        return bool(events)

    assert net.run_until(done, max_time=300.0)
    net.run_until(lambda: bool(done()) and False, max_time=5.0)  # the "done" Fetch lands
    assert isinstance(events[0], TransferCompleted), events[0]
    statistics = (
        provider.statistics(),
        provider.oap.statistics(),
        requestor.statistics(),
        requestor.oap.statistics(),
    )
    return [_comparable(e) for e in events], statistics, net.trace


@pytest.mark.parametrize(
    ("secure", "seed", "conditions"),
    [
        (False, 1, LinkConditions(delay=0.002)),
        (False, 2, LinkConditions(loss=0.05, duplicate=0.05, reorder=0.05, delay=0.005)),
        (False, 3, LinkConditions(loss=0.05, corrupt=0.02, delay=0.003, jitter=0.001)),
        (True, 4, LinkConditions(delay=0.002)),
        (True, 5, LinkConditions(loss=0.05, duplicate=0.05, corrupt=0.02, delay=0.004)),
    ],
)
def test_fast_paths_on_and_off_see_the_same_transfer(
    secure: bool, seed: int, conditions: LinkConditions
) -> None:
    fast_events, fast_statistics, fast_trace = _run(True, secure, seed, conditions)
    ref_events, ref_statistics, ref_trace = _run(False, secure, seed, conditions)
    assert fast_events == ref_events
    assert fast_statistics == ref_statistics
    assert fast_trace == ref_trace
    assert len(fast_trace) > SIZE // 1024, "the simulator traced fewer datagrams than blocks"
