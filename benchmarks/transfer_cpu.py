"""The CPU cost of a secure block transfer, without sockets or a wall clock.

A provider and a requestor :class:`~dofpy.transfer.core.TransferCore` on a
secure session (the loopback benchmark's domain, its keys fixed) are driven in
memory the way :mod:`dofpy.trio`'s endpoint drives them: every datagram that
has arrived by ``now`` is received, then one flush (``datagrams_to_send``,
``get_timer``); the virtual clock moves in 0.5 ms ticks (a real loop's timer
slack, so that pacing sends bursts as it does on loopback), each datagram
arriving 0.2 ms after it left. Nothing here depends on the machine's speed: the
same tree makes the same calls and datagrams on every run, so its instruction
count (``valgrind --tool=callgrind``) or its Python call count (``--calls``)
compares two trees exactly where the loopback benchmark's MB/s is noise on a
shared machine.

``python -m benchmarks.transfer_cpu [--size BYTES] [--block BYTES] [--calls]``
prints the datagrams, the CPU seconds of the transfer (handshake excluded) and
what that is in MB/s; with ``--calls``, the Python function calls it made
(``sys.setprofile``, slower). Under callgrind, take the difference of two sizes
to leave out start-up and the handshake.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

from dofpy._core import Address
from dofpy.oap.config import OapConfig
from dofpy.session.events import SecureSessionEstablished
from dofpy.testing import LocalDomain, grant
from dofpy.transfer.core import TransferCompleted, TransferConfig, TransferCore
from dofpy.transfer.messages import DEFAULT_BLOCK_SIZE, TRANSFER_IID
from dofpy.transfer.receiver import ReceiverConfig
from dofpy.wire.oid import OID

DOMAIN = OID(6, b"transfer.bench.example")
PROVIDER_ID = OID(3, b"provider@transfer.bench.example")
REQUESTOR_ID = OID(3, b"requestor-0@transfer.bench.example")
PROVIDER: Address = ("10.0.0.1", 3567)
REQUESTOR: Address = ("10.0.0.2", 40000)
DELAY = 0.0002
"""Seconds from a datagram's send to its arrival."""
TICK = 0.0005
"""The clock's step: timers and arrivals are handled at the next multiple."""


@dataclass(frozen=True, slots=True)
class CpuResult:
    size: int
    block_size: int
    datagrams: int
    cpu_seconds: float
    calls: int | None

    @property
    def megabytes_per_cpu_second(self) -> float:
        return self.size / self.cpu_seconds / 1e6 if self.cpu_seconds > 0 else math.inf


class InMemoryLink:
    """Two cores and the datagrams between them, on a virtual clock."""

    def __init__(self, provider: TransferCore, requestor: TransferCore) -> None:
        self.cores = {PROVIDER: provider, REQUESTOR: requestor}
        self.timers: dict[Address, float | None] = dict.fromkeys(self.cores)
        self.now = 0.0
        self.datagrams = 0
        self._queue: list[tuple[float, int, Address, bytes, Address]] = []
        self._sent = 0
        for address in self.cores:
            self.flush(address)

    def flush(self, address: Address) -> None:
        """What the core at ``address`` sends now, on its way; its timer read again."""
        core = self.cores[address]
        for data, destination in core.datagrams_to_send(self.now):
            self._sent += 1
            heapq.heappush(self._queue, (self.now + DELAY, self._sent, destination, data, address))
        self.timers[address] = core.get_timer()

    def run_until(self, done: Callable[[], bool]) -> None:
        queue = self._queue
        while not done():
            due = [t for t in self.timers.values() if t is not None]
            if queue:
                due.append(queue[0][0])
            if not due:
                raise RuntimeError("nothing to send and no timer: the transfer is stuck")
            self.now = max(self.now, math.ceil(min(due) / TICK) * TICK)
            arrived: dict[Address, list[tuple[bytes, Address]]] = {}
            while queue and queue[0][0] <= self.now:
                _, _, destination, data, source = heapq.heappop(queue)
                arrived.setdefault(destination, []).append((data, source))
            for destination, batch in arrived.items():
                core = self.cores[destination]
                for data, source in batch:
                    self.datagrams += 1
                    core.receive_datagram(data, source, self.now)
                self.flush(destination)
            for address, core in self.cores.items():
                timer = self.timers[address]
                if timer is not None and timer <= self.now:
                    core.handle_timer(self.now)
                    self.flush(address)


def _cores(block_size: int) -> tuple[TransferCore, TransferCore]:
    local = LocalDomain(DOMAIN, master_key=bytes(32), rng=random.Random(1).randbytes)
    local.enrol(PROVIDER_ID, grant("p", interface=TRANSFER_IID))
    local.enrol(REQUESTOR_ID, grant("x", interface=TRANSFER_IID))
    provider = TransferCore(
        TransferConfig(oap=OapConfig(node=local.node_config(PROVIDER_ID))), rng=random.Random(1)
    )
    requestor = TransferCore(
        TransferConfig(
            oap=OapConfig(node=local.node_config(REQUESTOR_ID, local_authenticator=None)),
            receiver=ReceiverConfig(block_size=block_size),
        ),
        rng=random.Random(2),
    )
    return provider, requestor


def run(
    size: int = 4 << 20, block_size: int = DEFAULT_BLOCK_SIZE, *, calls: bool = False
) -> CpuResult:
    """Fetch ``size`` seeded bytes at ``block_size`` over a secure session in memory."""
    provider, requestor = _cores(block_size)
    data = random.Random(0).randbytes(size)
    manifest = provider.publish(data, 1024)
    link = InMemoryLink(provider, requestor)
    requestor.oap.node.secure_session(PROVIDER, link.now)
    link.flush(REQUESTOR)

    def established() -> bool:
        while (event := requestor.oap.next_event()) is not None:
            if isinstance(event, SecureSessionEstablished):
                return True
        return False

    link.run_until(established)
    events: list[object] = []

    def finished() -> bool:
        while (event := requestor.next_event()) is not None:
            events.append(event)
        return bool(events)

    requestor.fetch(manifest, [PROVIDER], link.now)
    link.flush(REQUESTOR)
    before = link.datagrams
    counted = [0]

    def count(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            counted[0] += 1

    if calls:
        # The collector may run a finalizer (a Python call) at any allocation:
        # off while counting, so that the count is the transfer's alone.
        gc.collect()
        gc.disable()
        sys.setprofile(count)
    start = time.process_time()
    try:
        link.run_until(finished)
    finally:
        cpu = time.process_time() - start
        sys.setprofile(None)
        if calls:
            gc.enable()
    if not isinstance(events[0], TransferCompleted):
        raise RuntimeError(f"the transfer did not complete: {events[0]}")
    if requestor.store.read(manifest.object_id, 0, size) != data:
        raise RuntimeError("the bytes fetched differ from the object")
    return CpuResult(size, block_size, link.datagrams - before, cpu, counted[0] if calls else None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=int, default=4 << 20, help="object bytes (default 4 MiB)")
    parser.add_argument("--block", type=int, default=DEFAULT_BLOCK_SIZE, help="block size")
    parser.add_argument("--calls", action="store_true", help="count Python function calls")
    args = parser.parse_args(argv)
    result = run(args.size, args.block, calls=args.calls)
    line = (
        f"block {result.block_size} B, {result.size} B: {result.datagrams} datagrams, "
        f"{result.cpu_seconds:.3f} s CPU ({result.megabytes_per_cpu_second:.1f} MB/s)"
    )
    if result.calls is not None:
        line += f", {result.calls} Python calls ({result.calls / result.datagrams:.1f} a datagram)"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
