"""End-to-end transfers on the seeded network simulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dofpy.errors import BrokenResourceError
from dofpy.testing.netsim import LinkConditions, Network, TraceKind
from dofpy.testing.transfer import PROVIDER, REQUESTOR, make_object, run_to_event
from dofpy.testing.tshark import Datagram, check_datagrams, require_tshark
from dofpy.transfer.core import TransferCompleted, TransferConfig, TransferCore, TransferFailed
from dofpy.transfer.receiver import ReceiverConfig
from dofpy.transfer.relay import RelayCore
from dofpy.transfer.sender import SenderConfig
from dofpy.transfer.store import FileStore, MemoryStore

SIZE = 256 * 1024 + 123


def _transfer(
    conditions: LinkConditions,
    backward: LinkConditions | None = None,
    *,
    seed: int = 1,
    size: int = SIZE,
    receiver: ReceiverConfig | None = None,
) -> tuple[TransferCore, TransferCore, Network, int, bytes]:
    data = make_object(size, seed)
    provider = TransferCore()
    manifest = provider.publish(data)
    requestor = TransferCore()
    net = Network(seed=seed, trace=False)
    net.set_link(PROVIDER, REQUESTOR, conditions, backward)
    net.add(provider, PROVIDER)
    net.add(requestor, REQUESTOR)
    tid = requestor.fetch(manifest, [PROVIDER], net.now, config=receiver)
    net.wakeup(REQUESTOR)
    event = run_to_event(net, requestor)
    assert isinstance(event, TransferCompleted), event
    store = requestor.store
    assert isinstance(store, MemoryStore)
    assert store.data(manifest.object_id) == data
    return provider, requestor, net, tid, data


@pytest.mark.parametrize("loss", [0.0, 0.01, 0.05, 0.10, 0.30])
def test_lossy_link_completes_byte_identical(loss: float) -> None:
    conditions = LinkConditions(loss=loss, delay=0.02, jitter=0.005)
    _provider, requestor, _net, tid, _data = _transfer(conditions)
    stats = requestor.transfer_statistics(tid, 0.0)
    assert stats.verification_failures == 0
    if loss == 0.0:
        assert stats.retransmissions <= stats.blocks_received // 20 and stats.timeouts == 0


@pytest.mark.parametrize("loss", [0.0, 0.01, 0.05, 0.10])
def test_retransmission_stays_proportional(loss: float) -> None:
    """Data bytes sent <= size x (1 + loss) + 32 blocks (see docs/protocol.md, section 6)."""
    provider, _req, _net, _tid, data = _transfer(
        LinkConditions(loss=loss, delay=0.02, jitter=0.002), seed=7, size=1 << 20
    )
    sent = provider.statistics().bytes_sent
    hash_bytes = 32 * (len(data) // 1024 + 1)
    assert sent <= len(data) * (1 + loss) + hash_bytes * (1 + loss) + 32 * 1024


def test_duplication_reordering_corruption_delay_jitter_asymmetric() -> None:
    forward = LinkConditions(
        loss=0.05,
        duplicate=0.05,
        reorder=0.05,
        corrupt=0.05,
        corrupt_bits=3,
        delay=0.03,
        jitter=0.01,
    )
    backward = LinkConditions(loss=0.2, duplicate=0.1, delay=0.01)
    _p, requestor, _net, tid, _data = _transfer(forward, backward, seed=3)
    stats = requestor.transfer_statistics(tid, 0.0)
    assert stats.verification_failures > 0  # corrupted blocks were caught...
    assert stats.duplicates > 0  # ...and duplicates ignored; the data still matched


def test_larger_blocks_on_a_lan() -> None:
    _p, requestor, _net, tid, _d = _transfer(
        LinkConditions(delay=0.0005), receiver=ReceiverConfig(block_size=8192)
    )
    assert requestor.transfer_statistics(tid, 0.0).blocks_received < SIZE // 4096


def test_block_size_negotiation_falls_back() -> None:
    data = make_object(64 * 1024)
    provider = TransferCore(TransferConfig(sender=SenderConfig(max_block_size=2048)))
    manifest = provider.publish(data)
    requestor = TransferCore()
    net = Network(seed=2, default=LinkConditions(delay=0.01))
    net.add(provider, PROVIDER)
    net.add(requestor, REQUESTOR)
    requestor.fetch(manifest, [PROVIDER], net.now, config=ReceiverConfig(block_size=8192))
    assert isinstance(run_to_event(net, requestor), TransferCompleted)
    assert provider.statistics().refusals_sent >= 1


def test_peer_gone_fails_with_clear_error() -> None:
    data = make_object(64 * 1024)
    provider = TransferCore()
    manifest = provider.publish(data)
    requestor = TransferCore()
    net = Network(seed=2, default=LinkConditions(delay=0.01))
    net.add(provider, PROVIDER)
    net.add(requestor, REQUESTOR)
    requestor.fetch(manifest, [PROVIDER], net.now)
    net.run_until(lambda: requestor.receiver(1).verified.count() > 10, max_time=10)
    net.remove(PROVIDER)
    event = run_to_event(net, requestor, max_time=120)
    assert isinstance(event, TransferFailed)
    assert isinstance(event.error, BrokenResourceError)
    assert "sent nothing" in str(event.error)


def test_unknown_object_is_refused() -> None:
    other = TransferCore()
    manifest = other.publish(make_object(4096))
    provider, requestor = TransferCore(), TransferCore()
    net = Network(seed=1, default=LinkConditions(delay=0.01))
    net.add(provider, PROVIDER)
    net.add(requestor, REQUESTOR)
    requestor.fetch(manifest, [PROVIDER], net.now)
    event = run_to_event(net, requestor)
    assert isinstance(event, TransferFailed) and "UNKNOWN_OBJECT" in str(event.error)


def test_rate_cap_is_respected() -> None:
    data = make_object(128 * 1024)
    provider = TransferCore(TransferConfig(sender=SenderConfig(rate_cap=100_000.0)))
    manifest = provider.publish(data)
    requestor = TransferCore()
    net = Network(seed=1, default=LinkConditions(delay=0.001))
    net.add(provider, PROVIDER)
    net.add(requestor, REQUESTOR)
    requestor.fetch(manifest, [PROVIDER], net.now)
    assert isinstance(run_to_event(net, requestor), TransferCompleted)
    # 128 KiB at 100 kB/s with a 64 KiB burst: at least ~0.6 s.
    assert net.now >= (len(data) - 64 * 1024) / 100_000.0


def test_resume_from_partial_file_store_with_another_provider(tmp_path: Path) -> None:
    data = make_object(SIZE, 5)
    first, second = TransferCore(), TransferCore()
    manifest = first.publish(data)
    second.publish(data)
    other = ("10.0.0.3", 3567)
    net = Network(seed=4, default=LinkConditions(loss=0.02, delay=0.01))
    requestor = TransferCore(store=FileStore(tmp_path))
    net.add(first, PROVIDER)
    net.add(second, other)
    net.add(requestor, REQUESTOR)
    requestor.fetch(manifest, [PROVIDER], net.now)
    net.run_until(lambda: requestor.receiver(1).verified.count() > 100, max_time=30)
    net.remove(REQUESTOR)  # crash
    store = requestor.store
    assert isinstance(store, FileStore)
    store.close()
    net.remove(PROVIDER)
    restarted = TransferCore(store=FileStore(tmp_path))
    net.add(restarted, REQUESTOR)
    resumed = restarted.fetch(manifest, [other], net.now)
    already = restarted.receiver(resumed).verified.count()
    assert already > 100
    assert isinstance(run_to_event(net, restarted), TransferCompleted)
    assert restarted.transfer_statistics(resumed, 0.0).blocks_received < manifest.leaf_count
    assert (tmp_path / f"{manifest.object_id.hex()}.data").read_bytes() == data


def test_relay_fetches_each_block_once_for_100_requestors() -> None:
    data = make_object(128 * 1024, 9)
    origin = TransferCore()
    manifest = origin.publish(data)
    relay_address = ("10.0.1.1", 3567)
    relay = RelayCore()
    relay.add_object(manifest, [PROVIDER])
    net = Network(seed=5, default=LinkConditions(delay=0.005, jitter=0.001))
    net.add(origin, PROVIDER)
    net.add(relay, relay_address)
    requestors = []
    for i in range(100):
        core = TransferCore()
        net.add(core, ("10.1.0.0", 40000 + i))
        core.fetch(manifest, [relay_address], net.now)
        requestors.append(core)
    finished: list[object] = []

    def all_done() -> bool:
        for core in requestors:
            event = core.next_event()
            if event is not None:
                finished.append(event)
        return len(finished) == 100

    assert net.run_until(all_done, max_time=300)
    assert all(isinstance(e, TransferCompleted) for e in finished)
    for core in requestors:
        store = core.store
        assert isinstance(store, MemoryStore) and store.data(manifest.object_id) == data
    upstream = origin.statistics()
    blocks = manifest.leaf_count + manifest.chunk_count
    assert upstream.blocks_sent == blocks  # each block fetched from upstream once
    assert relay.statistics().blocks_sent >= 100 * blocks


def test_untrusted_relay_cannot_inject_bytes() -> None:
    """A relay that corrupts every block it serves delivers nothing unverified."""
    data = make_object(32 * 1024)
    provider = TransferCore()
    manifest = provider.publish(data)
    requestor = TransferCore()
    net = Network(seed=1, default=LinkConditions(corrupt=1.0, corrupt_bits=1, delay=0.01))
    net.add(provider, PROVIDER)
    net.add(requestor, REQUESTOR)
    requestor.fetch(manifest, [PROVIDER], net.now)
    net.run_until(max_time=5)
    receiver = requestor.receiver(1)
    store = requestor.store
    assert isinstance(store, MemoryStore)
    written = store.data(manifest.object_id)
    for start, end in receiver.verified:
        span = slice(start * 1024, min(end * 1024, len(data)))
        assert written[span] == data[span]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 2**32),
    st.floats(0, 0.4),
    st.floats(0, 0.3),
    st.floats(0, 0.3),
    st.floats(0, 0.3),
)
def test_arbitrary_schedules_never_yield_a_wrong_byte(
    seed: int, loss: float, dup: float, reorder: float, corrupt: float
) -> None:
    data = make_object(24 * 1024 + 7, seed % 1000)
    provider = TransferCore()
    manifest = provider.publish(data)
    requestor = TransferCore()
    conditions = LinkConditions(
        loss=loss,
        duplicate=dup,
        reorder=reorder,
        corrupt=corrupt,
        corrupt_bits=2,
        delay=0.01,
        jitter=0.01,
    )
    net = Network(seed=seed, default=conditions)
    net.add(provider, PROVIDER)
    net.add(requestor, REQUESTOR)
    requestor.fetch(manifest, [PROVIDER], net.now)
    events: list[object] = []

    def done() -> bool:
        event = requestor.next_event()
        if event is not None:
            events.append(event)
        return bool(events)

    net.run_until(done, max_time=60)
    store = requestor.store
    assert isinstance(store, MemoryStore)
    written = store.data(manifest.object_id)
    for start, end in requestor.receiver(1).verified:
        span = slice(start * 1024, min(end * 1024, len(data)))
        assert written[span] == data[span]
    unverified = bytes(written)
    for start, end in requestor.receiver(1).verified:
        span = slice(start * 1024, min(end * 1024, len(data)))
        unverified = (
            unverified[: span.start] + bytes(span.stop - span.start) + unverified[span.stop :]
        )
    assert unverified == bytes(len(data))  # nothing but verified bytes was written
    if events and isinstance(events[0], TransferCompleted):
        assert written == data


def test_tshark_decodes_a_real_transfer() -> None:
    require_tshark()
    data = make_object(8 * 1024)
    provider = TransferCore()
    manifest = provider.publish(data)
    requestor = TransferCore()
    net = Network(seed=1, default=LinkConditions(delay=0.01), trace=True)
    net.add(provider, PROVIDER)
    net.add(requestor, REQUESTOR)
    requestor.fetch(manifest, [PROVIDER], net.now)
    assert isinstance(run_to_event(net, requestor), TransferCompleted)
    sent = [e for e in net.trace if e.kind is TraceKind.SEND]
    datagrams = [Datagram(e.data, from_client=e.src == REQUESTOR) for e in sent]
    result = check_datagrams(datagrams)
    assert result.problems == []
    assert {i.strip() for i in result.info} == {"OAP Invoke", "OAP Signal"}
