"""The agent against a real Image provider: the assigned manifest fetched by
digest from an ImageProvider on a secure transfer node (127.0.0.1), checked
by the device's verifier, and the image fetched by the block transfer into
the simulated device's slot; a manifest the verifier refuses changes nothing."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dofpy import OID, TRANSFER_IID, Action, BindingPermission, PermissionSet, open_transfer_node
from dofpy.image.errors import Rollback
from dofpy.testing import LocalDomain
from dofpy_services.device.agent import AgentPorts, DeviceAgent, Installed, Rebooted
from dofpy_services.device.boot_records import Layout
from dofpy_services.device.images import ServiceImages
from dofpy_services.device.ports import InProcessUpdate
from dofpy_services.device.simulated import FirmwareImage, SimulatedBootloader
from dofpy_services.device.table import State
from dofpy_services.image.publish import add_image_file
from dofpy_services.image.serving import IMAGE_INTERFACE, IMAGE_OBJECT, ImageProvider
from dofpy_services.image.store import ImageBlockStore, ImageStore, ManifestSummary
from dofpy_services.update.device_interface import Assignment, InstallOutcome
from dofpy_services.update.device_provider import (
    DevicePlan,
    DeviceUpdates,
    EnrolledKeys,
    PlannedUpdate,
)
from tests.device.test_agent_update import Versions, accept, healthy
from tests.image._store_helpers import describe_test_manifest, stand_in_manifest
from tests.image.test_serve_image import _config

DOMAIN = OID(6, b"example.org")
SERVER = OID(3, b"image-server@example.org")
DEVICE = OID(3, b"device@example.org")
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
OLD = FirmwareImage(random.Random(1).randbytes(20_000), "1.1", 1)
NEW = random.Random(2).randbytes(30_000)


def domain() -> LocalDomain:
    fetch = BindingPermission(Action.EXECUTE, OID(0), TRANSFER_IID)
    ask = BindingPermission(Action.EXECUTE, OID(0), IMAGE_INTERFACE.iid)
    serve = (
        BindingPermission(Action.PROVIDE, OID(0), TRANSFER_IID),
        BindingPermission(Action.PROVIDE, OID(0), IMAGE_INTERFACE.iid),
    )
    local = LocalDomain(DOMAIN, rng=random.Random(5).randbytes)
    local.enrol(SERVER, PermissionSet(serve))
    local.enrol(DEVICE, PermissionSet((fetch, ask)))
    return local


def device_verifier() -> Callable[[bytes, Installed], ManifestSummary]:
    """The device's check, as the manifest helper's verifier does it for
    rollback (the stand-in manifests carry no signatures)."""

    def verify(data: bytes, installed: Installed) -> ManifestSummary:
        summary = describe_test_manifest(data)
        if summary.sequence <= installed.sequence:
            raise Rollback(
                f"sequence {summary.sequence} is not after {installed.sequence}",
                summary.sequence,
                installed.sequence,
            )
        return summary

    return verify


@pytest.mark.parametrize(("sequence", "refused"), [(2, False), (1, True)])
async def test_the_agent_installs_from_a_real_image_provider(
    tmp_path: Path, sequence: int, refused: bool
) -> None:
    local = domain()
    store = ImageStore(tmp_path / "store", describe_test_manifest)
    (tmp_path / "new.bin").write_bytes(NEW)
    prepared = add_image_file(store, tmp_path / "new.bin", 1024)
    manifest = stand_in_manifest(prepared.hashes.manifest, sequence=sequence, version="2.0")
    manifest_digest = store.add_manifest(manifest)
    assert manifest_digest == hashlib.sha256(manifest).digest()
    boot = SimulatedBootloader.provision(
        tmp_path / "dev", Layout.AB, normal=OLD, reprogram=FirmwareImage(b"r" * 3000, "r1", 1),
        normal_capacity=40_000, reprogram_capacity=4000,
    )  # fmt: skip
    before = boot.record()
    plan = DevicePlan()
    assignment = Assignment("c1", manifest_digest, "2.0", sequence + 10, 0.0, 1e12)
    plan.assign(
        DEVICE, PlannedUpdate(assignment, hashlib.sha256(NEW).digest(), OLD.slot_image().digest)
    )
    keys = EnrolledKeys()
    keys.enrol(DEVICE, KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    updates = DeviceUpdates(plan, keys)
    (tmp_path / "agent").mkdir()
    async with (
        open_transfer_node(config=_config(local, SERVER), store=ImageBlockStore(store)) as server,
        open_transfer_node(config=_config(local, DEVICE)) as node,
    ):
        provider = ImageProvider(store, server)
        server.node.provide(IMAGE_OBJECT, IMAGE_INTERFACE, provider)
        await provider.refresh()
        images = ServiceImages(node, [server.local_address], device_verifier())
        ports = AgentPorts(InProcessUpdate(updates, DEVICE), Versions(), images, healthy, accept)

        def done(agent: DeviceAgent) -> bool:
            progress = updates.progress.get(DEVICE)
            return (
                progress is not None
                and progress.report is not None
                and agent.machine.state is State.IDLE
            )

        with trio.fail_after(60):
            for _ in range(5):
                agent = DeviceAgent(
                    boot, ports, tmp_path / "agent", identity=DEVICE, key=KEY, device_class="sensor"
                )
                try:
                    await agent.run(until=done)
                except Rebooted:
                    boot.reboot()
                    continue
                break
    report = updates.progress[DEVICE].report
    assert report is not None
    booted = boot.booted()
    if refused:
        assert report.outcome is InstallOutcome.FAILED and "Rollback" in report.reason
        assert boot.record() == before
    else:
        assert report.outcome is InstallOutcome.SUCCEEDED
        assert (booted.image.version, booted.accepted) == ("2.0", True)
        assert booted.image.digest == hashlib.sha256(NEW).digest()
