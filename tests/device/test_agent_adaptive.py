"""The agent's adaptive transfer, on both layouts: the new image differs from
the running one in 5 % of its leaves; the agent hands the receiver the
running image's slot as its local leaves (on the seed's layout, the Normal
slot it is overwriting in place), so only the changed leaves and the hash
chunks cross the network, and the device still boots exactly the new image."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from benchmarks.adaptive import images
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.testing.transfer import PROVIDER, REQUESTOR, run_to_event
from dofpy.transfer.core import TransferCompleted, TransferCore
from dofpy.transfer.receiver import LocalLeaves
from dofpy_services.device.agent import ImageToInstall, Installed
from dofpy_services.device.boot_records import Layout
from dofpy_services.device.simulated import FirmwareImage
from dofpy_services.device.slot_store import SlotBlockStore
from dofpy_services.update.device_interface import Assignment, InstallOutcome
from dofpy_services.update.device_provider import PlannedUpdate
from tests.device.test_agent_update import DEVICE, MANIFEST_DIGEST, NetsimImages, world

RUNNING, CHANGED, CHANGED_LEAVES = images(40_000, 0.05, seed=21)
OLD = FirmwareImage(RUNNING, "1.0", 10)
NEW = FirmwareImage(CHANGED, "2.0", 20)


class CountingImages(NetsimImages):
    """NEW (5 % different from OLD) served on the simulated network; counts
    the bytes the provider sent and the leaves the receiver copied."""

    def __init__(self) -> None:
        super().__init__(loss=0.02)
        self.manifest = self.provider.publish(NEW.data)
        self.sent = 0
        self.copied = 0
        self.copied_bytes = 0

    async def verify(self, assignment: Assignment, installed: Installed) -> ImageToInstall:
        return ImageToInstall(self.manifest, NEW.slot_image())

    async def transfer(
        self, image: ImageToInstall, store: SlotBlockStore, local: LocalLeaves | None = None
    ) -> None:
        self.transfers += 1
        net = Network(seed=self.transfers, default=LinkConditions(loss=self.loss, delay=0.01))
        requestor = TransferCore(store=store)
        net.add(self.provider, PROVIDER)
        net.add(requestor, REQUESTOR)
        transfer = requestor.fetch(image.transfer, [PROVIDER], net.now, local=local)
        receiver = requestor.receiver(transfer)
        net.wakeup(REQUESTOR)
        event = run_to_event(net, requestor)
        net.remove(PROVIDER)
        assert isinstance(event, TransferCompleted)
        self.sent += net.link_statistics(PROVIDER, REQUESTOR).bytes_sent
        self.copied += receiver.local_leaves
        self.copied_bytes += receiver.local_bytes


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB], ids=lambda layout: layout.name)
async def test_an_image_five_percent_different_moves_only_the_changed_leaves(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    counting = CountingImages()
    w = world(tmp_path, layout, images=counting, running=OLD)
    assignment = Assignment("c1", MANIFEST_DIGEST, "2.0", 20, 0.0, 1e9)
    w.updates.plan.assign(
        DEVICE, PlannedUpdate(assignment, NEW.slot_image().digest, OLD.slot_image().digest)
    )
    await w.run_update()
    booted = w.boot.booted()
    assert (booted.image, booted.accepted) == (NEW.slot_image(), True)
    assert w.boot.read_slot(booted.slot, 0, len(NEW.data)) == NEW.data
    report = w.updates.progress[DEVICE].report
    assert report is not None and report.outcome is InstallOutcome.SUCCEEDED
    leaves = counting.manifest.leaf_count
    assert counting.copied == leaves - CHANGED_LEAVES
    assert counting.sent < len(NEW.data) // 5  # the changed leaves and the hashes, not the image
    # The report counts the leaves that crossed the network, not the copies.
    assert report.bytes_fetched == len(NEW.data) - counting.copied_bytes
    assert 0 < report.bytes_fetched <= CHANGED_LEAVES * counting.manifest.leaf_size
