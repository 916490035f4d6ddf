"""Block-transfer tests on the simulator: objects to transfer, and running a
:class:`~dofpy.transfer.core.TransferCore` until its next event.

    network = Network(seed=1, default=LinkConditions(loss=0.05, delay=0.01))
    network.add(provider_core, PROVIDER)
    network.add(requestor_core, REQUESTOR)
    requestor_core.fetch(manifest, [PROVIDER], network.now)
    network.wakeup(REQUESTOR)
    assert isinstance(run_to_event(network, requestor_core), TransferCompleted)
"""

from __future__ import annotations

import random

from dofpy._core import Address
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.transfer.core import TransferCompleted, TransferCore, TransferEvent
from dofpy.transfer.store import MemoryStore

__all__ = ["PROVIDER", "REQUESTOR", "SequentialTransfers", "make_object", "run_to_event"]

PROVIDER: Address = ("10.0.0.1", 3567)
REQUESTOR: Address = ("10.0.0.2", 40000)


def make_object(size: int, seed: int = 1) -> bytes:
    """``size`` bytes, the same for the same ``seed`` (an image to transfer)."""
    return random.Random(seed).randbytes(size)


def run_to_event(network: Network, core: TransferCore, max_time: float = 600.0) -> TransferEvent:
    """Run ``network`` until ``core`` has an event; that event. Fails (an
    ``AssertionError``) when none comes within ``max_time`` virtual seconds."""
    events: list[TransferEvent] = []

    def done() -> bool:
        event = core.next_event()
        if event is not None:
            events.append(event)
        return bool(events)

    if not network.run_until(done, max_time=max_time):
        raise AssertionError(f"no transfer event within {max_time} virtual seconds")
    return events[0]


class SequentialTransfers:
    """One provider serving one object to one requestor, transfer after
    transfer, on the simulator: what a provider running for months looks
    like, in fast motion. Each fetch goes to a fresh store (the requestor
    keeps nothing either), so whatever grows with :meth:`run` is state the
    cores keep."""

    def __init__(self, size: int = 4096, seed: int = 1) -> None:
        self.provider = TransferCore()
        self.requestor = TransferCore()
        self.manifest = self.provider.publish(make_object(size, seed), leaf_size=1024)
        self.network = Network(seed=seed, default=LinkConditions(delay=0.001))
        self.network.add(self.provider, PROVIDER)
        self.network.add(self.requestor, REQUESTOR)
        self.completed = 0
        self.blocks_received = 0  # summed over the final statistics of the events

    def run(self, count: int) -> None:
        """Run ``count`` more transfers, each to completion (fails otherwise)."""
        for _ in range(count):
            self.requestor.fetch(self.manifest, [PROVIDER], self.network.now, store=MemoryStore())
            self.network.wakeup(REQUESTOR)
            event = run_to_event(self.network, self.requestor, max_time=60.0)
            if not isinstance(event, TransferCompleted):
                raise AssertionError(f"transfer {self.completed + 1} did not complete: {event}")
            self.completed += 1
            self.blocks_received += event.statistics.blocks_received
        # Let the last "done" Fetch reach the provider, so it forgets its sender.
        self.network.run_until(lambda: False, max_time=1.0)
