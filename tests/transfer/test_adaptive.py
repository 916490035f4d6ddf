"""The adaptive transfer (the receiver's LocalLeaves hook): leaves the
requestor already holds, found by the leaf hash just proved against the
manifest's Merkle root, are copied instead of fetched, each checked like a
fetched leaf; a local source that lies about a leaf costs a fetch and never
writes its bytes. And the benchmark's figure: an image 5 % different from the
running one moves at most 10 % of its bytes, at 4 KiB blocks and at the 1 KiB
default (compact hashes), and its report says so."""

from __future__ import annotations

from benchmarks import adaptive
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.testing.transfer import PROVIDER, REQUESTOR, run_to_event
from dofpy.transfer.core import TransferCompleted, TransferCore
from dofpy.transfer.receiver import LocalLeaves
from dofpy.transfer.store import MemoryStore
from dofpy_services.device.local_leaves import SlotLeaves

SIZE = 200 * 1024 + 300  # a short last leaf


class RecordingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[int, bytes]] = []

    def write_verified(self, object_id: bytes, leaf: int, data: bytes) -> None:
        self.writes.append((leaf, bytes(data)))
        super().write_verified(object_id, leaf, data)


def fetch(new: bytes, local: LocalLeaves | None, loss: float = 0.0):  # type: ignore[no-untyped-def]
    provider = TransferCore()
    manifest = provider.publish(new)
    store = RecordingStore()
    requestor = TransferCore(store=store)
    net = Network(seed=4, default=LinkConditions(loss=loss, delay=0.005))
    net.add(provider, PROVIDER)
    net.add(requestor, REQUESTOR)
    receiver = requestor.receiver(requestor.fetch(manifest, [PROVIDER], net.now, local=local))
    net.wakeup(REQUESTOR)
    event = run_to_event(net, requestor)
    assert isinstance(event, TransferCompleted)
    data = store.read(manifest.object_id, 0, manifest.size)
    return data, receiver, store, net.link_statistics(PROVIDER, REQUESTOR).bytes_sent


def test_leaves_held_locally_are_copied_and_only_the_changed_ones_fetched() -> None:
    old, new, changed = adaptive.images(SIZE, 0.05, seed=3)
    local = SlotLeaves(lambda o, n: old[o : o + n], len(old), 1024)
    data, receiver, store, sent = fetch(new, local, loss=0.03)
    assert data == new
    manifest = receiver.manifest
    same = [
        leaf
        for leaf in range(manifest.leaf_count)
        if old[leaf * 1024 : (leaf + 1) * 1024] == new[leaf * 1024 : (leaf + 1) * 1024]
    ]
    assert receiver.local_leaves == len(same) == manifest.leaf_count - changed
    assert receiver.local_bytes == sum(manifest.span_length(leaf, leaf + 1) for leaf in same)
    fetched = {leaf for leaf, _ in store.writes} - set(same)
    assert len(fetched) == changed
    _, _, _, full = fetch(new, None)
    assert sent < full / 5


class LyingLeaves:
    """Answers every hash with bytes that are not the leaf."""

    def __init__(self) -> None:
        self.asked = 0

    def leaf(self, digest: bytes, length: int) -> bytes | None:
        self.asked += 1
        return bytes(length) if self.asked % 2 else b"short"


def test_a_local_source_that_lies_is_never_written_and_the_leaves_are_fetched() -> None:
    _, new, _ = adaptive.images(SIZE, 0.05, seed=5)
    lying = LyingLeaves()
    data, receiver, store, _ = fetch(new, lying)
    assert data == new
    assert lying.asked == receiver.manifest.leaf_count  # every proved hash was looked up
    assert receiver.local_leaves == 0
    for leaf, written in store.writes:  # only the image's own bytes reached the store
        assert written == new[leaf * 1024 : leaf * 1024 + len(written)]


def test_the_benchmark_moves_at_most_a_tenth_for_five_percent_changed() -> None:
    result = adaptive.measure(512 * 1024, 0.05, block_size=4096)
    assert result.changed_leaves == round(512 * 0.05)
    assert result.local_leaves == result.leaves - result.changed_leaves
    assert result.share <= adaptive.TARGET_SHARE
    assert result.full_wire_bytes > result.image_bytes
    default = adaptive.measure(512 * 1024, 0.05, block_size=1024)
    assert default.share <= adaptive.TARGET_SHARE
    text = adaptive.report(default)
    assert str(default.adaptive_wire_bytes) in text and str(default.image_bytes) in text
    assert ("NOT met" in text) is (default.share > adaptive.TARGET_SHARE)
