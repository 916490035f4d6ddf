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
from dofpy.testing.netsim import Network
from dofpy.transfer.core import TransferCore, TransferEvent

__all__ = ["PROVIDER", "REQUESTOR", "make_object", "run_to_event"]

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
