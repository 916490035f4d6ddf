"""A confidential image through the agent, on both layouts: the signed
manifest carries the encryption parameters (AES-256-CTR), the Update
service's authorisation carries the content key wrapped to the device's
X25519 key (an Image service key record), the ciphertext is fetched and
verified leaf by leaf against its Merkle root and written into the slot
decrypted; the slot's image is the signed plaintext. A content key that does
not open with the device's key, or a device without a key, is refused at
authorisation, before anything on the device changes."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dofpy_services.device.agent import ImageToInstall, Installed
from dofpy_services.device.boot_records import Layout
from dofpy_services.device.images import check_manifest
from dofpy_services.device.verifier import DeviceVerifier
from dofpy_services.image.encryption import ContentKey, EncryptionInfo, wrap_content_key
from dofpy_services.update.device_interface import Assignment, InstallOutcome, Stage
from dofpy_services.update.device_provider import PlannedUpdate
from tests.device.test_agent_manifest_checks import KEYS, ROOT, device_bytes
from tests.device.test_agent_update import (
    DEVICE,
    MANIFEST_DIGEST,
    NEW,
    OLD,
    NetsimImages,
    World,
    world,
)
from tests.image.signing_fixtures import DEVICE_CLASS, NOW, VENDOR, fully_signed, make_manifest

CONTENT = ContentKey(bytes(range(32)), bytes(range(100, 116)))
DEVICE_KEY = X25519PrivateKey.from_private_bytes(b"\x07" * 32)
OTHER_KEY = X25519PrivateKey.from_private_bytes(b"\x08" * 32)
CIPHERTEXT = b"".join(CONTENT.apply([NEW.data]))


def key_record(recipient: X25519PrivateKey) -> bytes:
    return wrap_content_key(
        CONTENT,
        [recipient.public_key()],
        ephemeral=lambda: X25519PrivateKey.from_private_bytes(b"\x05" * 32),
    )


class ConfidentialImages(NetsimImages):
    """The ciphertext served on the simulated network; the signed manifest
    names it and the plaintext's size and digest."""

    def __init__(self) -> None:
        super().__init__(loss=0.03)
        self.manifest = self.provider.publish(CIPHERTEXT)
        info = EncryptionInfo(
            CONTENT.iv, len(NEW.data), hashlib.sha256(NEW.data).digest(), (b"\x01" * 32,)
        )
        signed = make_manifest(
            image=self.manifest, version="2.0", sequence=NEW.sequence, encryption=info.to_cbor_map()
        )
        self.signed = fully_signed(KEYS, signed)
        self.check = DeviceVerifier(ROOT, VENDOR, DEVICE_CLASS, lambda: NOW + trio.current_time())

    async def verify(self, assignment: Assignment, installed: Installed) -> ImageToInstall:
        return check_manifest(self.check, self.signed, installed)


def confidential_world(
    tmp_path: Path,
    layout: Layout,
    wrapped_to: X25519PrivateKey,
    device_key: X25519PrivateKey | None,
) -> World:
    w = world(tmp_path, layout, images=ConfidentialImages())
    w.content_key_private = device_key
    assignment = Assignment("c1", MANIFEST_DIGEST, "2.0", NEW.sequence, 0.0, 1e9)
    w.updates.plan.assign(
        DEVICE,
        PlannedUpdate(
            assignment,
            NEW.slot_image().digest,
            OLD.slot_image().digest,
            wrapped_key=key_record(wrapped_to),
        ),
    )
    return w


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB], ids=lambda layout: layout.name)
async def test_a_confidential_image_is_decrypted_into_the_slot(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    w = confidential_world(tmp_path, layout, DEVICE_KEY, DEVICE_KEY)
    await w.run_update()
    booted = w.boot.booted()
    assert (booted.image, booted.accepted) == (NEW.slot_image(), True)
    assert w.boot.read_slot(booted.slot, 0, len(NEW.data)) == NEW.data  # the plaintext
    assert NEW.data != CIPHERTEXT
    report = w.updates.progress[DEVICE].report
    assert report is not None and report.outcome is InstallOutcome.SUCCEEDED
    assert w.versions.reports[-1].image_digest == hashlib.sha256(NEW.data).digest()


@pytest.mark.parametrize(
    ("wrapped_to", "device_key", "reason"),
    [
        (OTHER_KEY, DEVICE_KEY, "no recipient with key id"),
        (DEVICE_KEY, None, "no key to open confidential images"),
    ],
    ids=["wrapped to another device", "no device key"],
)
async def test_a_content_key_the_device_cannot_open_is_refused_before_anything_changes(
    tmp_path: Path,
    wrapped_to: X25519PrivateKey,
    device_key: X25519PrivateKey | None,
    reason: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    w = confidential_world(tmp_path, Layout.SEED, wrapped_to, device_key)
    before = device_bytes(w.boot.directory)
    await w.run_update()
    assert device_bytes(w.boot.directory) == before
    assert (w.reboots, w.images.transfers) == (0, 0)
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.failed_stage) == (InstallOutcome.FAILED, Stage.AUTHORISED)
    assert reason in report.reason, report.reason


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB], ids=lambda layout: layout.name)
async def test_a_content_key_of_another_image_is_refused_and_never_booted(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    """A key record that opens with the device's key, with the manifest's
    counter block, but another key: every ciphertext leaf verifies, the
    plaintext does not; the slot never becomes valid, the device goes back
    to its accepted image, and the failure is reported."""
    w = confidential_world(tmp_path, layout, DEVICE_KEY, DEVICE_KEY)
    planned = w.updates.plan.updates[DEVICE]
    other = ContentKey(bytes(range(1, 33)), CONTENT.iv)
    substituted = wrap_content_key(
        other,
        [DEVICE_KEY.public_key()],
        ephemeral=lambda: X25519PrivateKey.from_private_bytes(b"\x05" * 32),
    )
    w.updates.plan.assign(DEVICE, dataclasses.replace(planned, wrapped_key=substituted))
    await w.run_update()
    booted = w.boot.booted()
    assert booted.accepted and booted.image != NEW.slot_image()
    assert NEW.slot_image() not in {w.boot.slot_record(s).image for s in w.boot.slots()}
    if layout is Layout.AB:
        assert booted.image == OLD.slot_image()
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.failed_stage) == (InstallOutcome.FAILED, Stage.VERIFYING)
    assert "not the signed one" in report.reason
    assert w.images.transfers == 1  # not fetched again
