"""Step C on a simulated device: the real block transfer (TransferCore on the
simulated network) writes the new image straight into a bootloader slot
through SlotBlockStore: every leaf verified before it is written (corrupted
datagrams are dropped and refetched, never written), and a transfer cut short
resumes from the marked leaves with another provider."""

from __future__ import annotations

from pathlib import Path

from dofpy.testing.netsim import LinkConditions, Network
from dofpy.testing.transfer import PROVIDER, REQUESTOR, make_object, run_to_event
from dofpy.transfer.core import TransferCompleted, TransferCore
from dofpy_services.device.boot_records import Layout, Slot
from dofpy_services.device.bootloader import SlotWriter
from dofpy_services.device.simulated import FirmwareImage, SimulatedBootloader
from dofpy_services.device.slot_store import SlotBlockStore, forget_marks
from dofpy_services.device.state_file import read_framed

OLD = FirmwareImage(make_object(40_000, 1), "1.0", 10)
NEW = FirmwareImage(make_object(48_000, 2), "2.0", 20)
RESCUE = FirmwareImage(make_object(8_000, 3), "r1", 1)


def device(directory: Path, layout: Layout) -> SimulatedBootloader:
    return SimulatedBootloader.provision(
        directory, layout, normal=OLD, reprogram=RESCUE,
        normal_capacity=64_000, reprogram_capacity=16_000,
    )  # fmt: skip


class RecordingWriter:
    """A SlotWriter that keeps every (offset, bytes) written, to check that
    only the image's own bytes ever reach the slot."""

    def __init__(self, inner: SlotWriter) -> None:
        self.inner = inner
        self.writes: list[tuple[int, bytes]] = []

    @property
    def slot(self) -> Slot:
        return self.inner.slot

    @property
    def capacity(self) -> int:
        return self.inner.capacity

    def write(self, offset: int, data: bytes) -> None:
        self.writes.append((offset, bytes(data)))
        self.inner.write(offset, data)

    def read(self, offset: int, length: int) -> bytes:
        return self.inner.read(offset, length)

    def sync(self) -> None:
        self.inner.sync()

    def finish(self, image: object) -> None:
        self.inner.finish(image)  # type: ignore[arg-type]


def test_corrupted_blocks_are_refetched_never_written_and_the_image_boots(tmp_path: Path) -> None:
    boot = device(tmp_path / "dev", Layout.AB)
    slot = boot.free_normal_slot()
    assert slot is Slot.NORMAL_B
    provider = TransferCore()
    manifest = provider.publish(NEW.data)
    writer = RecordingWriter(boot.open_slot(slot))
    store = SlotBlockStore(writer, manifest, tmp_path / "marks")
    requestor = TransferCore(store=store)
    net = Network(seed=7)
    net.set_link(
        PROVIDER,
        REQUESTOR,
        LinkConditions(loss=0.05, corrupt=0.1, corrupt_bits=3, delay=0.01),
        LinkConditions(delay=0.01),
    )
    net.add(provider, PROVIDER)
    net.add(requestor, REQUESTOR)
    transfer = requestor.fetch(manifest, [PROVIDER], net.now)
    net.wakeup(REQUESTOR)
    assert isinstance(run_to_event(net, requestor), TransferCompleted)
    assert requestor.transfer_statistics(transfer, net.now).verification_failures > 0
    assert writer.writes  # and every byte written is the image's own
    for offset, data in writer.writes:
        assert data == NEW.data[offset : offset + len(data)]
    writer.finish(NEW.slot_image())
    boot.set_boot_target(slot)
    booted = boot.reboot()
    assert (booted.slot, booted.image.version, booted.accepted) == (slot, "2.0", False)
    boot.accept()
    assert boot.booted().accepted and boot.rollback_slot() is Slot.NORMAL


def test_a_transfer_cut_short_resumes_from_the_marked_leaves(tmp_path: Path) -> None:
    """Seed's layout, in Reprogram mode: the Normal slot is written, the device
    goes away mid-transfer, reboots, and the transfer resumes from another
    provider fetching only what was not marked."""
    boot = device(tmp_path / "dev", Layout.SEED)
    boot.set_boot_target(Slot.REPROGRAM)
    assert boot.reboot().slot is Slot.REPROGRAM
    boot.accept()
    first, second = TransferCore(), TransferCore()
    manifest = first.publish(NEW.data)
    second.publish(NEW.data)
    other = ("10.0.0.3", 3567)
    net = Network(seed=3, default=LinkConditions(loss=0.02, delay=0.01))
    store = SlotBlockStore(
        boot.open_slot(Slot.NORMAL), manifest, tmp_path / "marks", sync_bytes=4096
    )
    requestor = TransferCore(store=store)
    net.add(first, PROVIDER)
    net.add(second, other)
    net.add(requestor, REQUESTOR)
    requestor.fetch(manifest, [PROVIDER], net.now)
    net.wakeup(REQUESTOR)
    net.run_until(lambda: store.leaves_written >= 16, max_time=30)
    net.remove(REQUESTOR)
    net.remove(PROVIDER)
    store.close()
    kept = store.verified(manifest.object_id).count()
    assert 16 <= kept < manifest.leaf_count

    boot = SimulatedBootloader(tmp_path / "dev")  # power on again
    assert boot.booted().slot is Slot.REPROGRAM
    resumed = SlotBlockStore(boot.open_slot(Slot.NORMAL), manifest, tmp_path / "marks")
    assert resumed.verified(manifest.object_id).count() == kept
    restarted = TransferCore(store=resumed)
    net.add(restarted, REQUESTOR)
    restarted.fetch(manifest, [other], net.now)
    net.wakeup(REQUESTOR)
    assert isinstance(run_to_event(net, restarted), TransferCompleted)
    assert resumed.leaves_written == manifest.leaf_count - kept
    resumed.writer.finish(NEW.slot_image())
    forget_marks(resumed.fs, resumed.marks_name)
    assert read_framed(resumed.fs, resumed.marks_name) == b""  # forgotten: no leaf marked
    boot.set_boot_target(Slot.NORMAL)
    assert boot.reboot().image.version == "2.0"
