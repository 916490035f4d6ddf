"""Shared set-up for transfer tests: a provider and requestors on a netsim network."""

from __future__ import annotations

import random

from dofpy._core import Address
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.transfer.core import TransferCore, TransferEvent

PROVIDER: Address = ("10.0.0.1", 3567)
REQUESTOR: Address = ("10.0.0.2", 40000)


def make_object(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def run_to_event(network: Network, core: TransferCore, max_time: float = 600.0) -> TransferEvent:
    events: list[TransferEvent] = []

    def done() -> bool:
        event = core.next_event()
        if event is not None:
            events.append(event)
        return bool(events)

    assert network.run_until(done, max_time=max_time), "no transfer event in time"
    return events[0]


def network(seed: int, conditions: LinkConditions) -> Network:
    return Network(seed=seed, default=conditions)
