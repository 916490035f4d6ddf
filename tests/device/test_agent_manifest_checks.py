"""The device's own manifest check through the agent: signed manifests
(dofpy.image COSE, the vendor's trust root) checked by DeviceVerifier, i.e.
dofpy.image.verify_manifest, before Reprogram mode. A wrong-class, rolled
back (older or equal sequence), expired or under-signed manifest is refused
and reported with its stage and reason, and the device's slots and records
are byte for byte what they were (no transfer, no reboot, no authorisation
asked); a full slot likewise. A well-signed manifest installs, so the
refusals are the check's doing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio
import trio.testing

from dofpy.image import ImageManifest, Party
from dofpy_services.device.agent import ImageToInstall, Installed
from dofpy_services.device.boot_records import Layout
from dofpy_services.device.images import check_manifest
from dofpy_services.device.verifier import DeviceVerifier
from dofpy_services.update.device_interface import Assignment, InstallOutcome, Stage
from tests.device.test_agent_update import DEVICE, NEW, OLD, NetsimImages, world
from tests.image.signing_fixtures import (
    DAY,
    DEVICE_CLASS,
    NOW,
    OTHER_CLASS,
    VENDOR,
    Keys,
    fully_signed,
    make_manifest,
    make_root,
    sign,
)

KEYS = Keys.make()
ROOT = make_root(KEYS)


class SignedImages(NetsimImages):
    """The ImagePort with a signed manifest of NEW, checked by the device's
    verifier at the device's time (NOW plus the virtual clock)."""

    def __init__(self, signed: bytes | None = None, **changes: object) -> None:
        super().__init__()
        manifest = new_manifest(self, **changes)
        self.signed = signed if signed is not None else fully_signed(KEYS, manifest)
        self.check = DeviceVerifier(ROOT, VENDOR, DEVICE_CLASS, lambda: NOW + trio.current_time())
        self.checked: list[Installed] = []

    async def verify(self, assignment: Assignment, installed: Installed) -> ImageToInstall:
        self.checked.append(installed)
        return check_manifest(self.check, self.signed, installed)


def new_manifest(images: NetsimImages, **changes: object) -> ImageManifest:
    base = make_manifest(image=images.manifest, version="2.0", sequence=NEW.sequence)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def device_bytes(directory: Path) -> dict[str, bytes]:
    """Every file of the simulated device (slots and record copies)."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def under_signed() -> bytes:
    images = NetsimImages()
    # One manufacturer key where the class needs two.
    return sign(
        new_manifest(images), (KEYS.m1, Party.MANUFACTURER), (KEYS.sp, Party.SERVICE_PROVIDER)
    )


def unknown_signer() -> bytes:
    images = NetsimImages()
    return sign(
        new_manifest(images),
        (KEYS.m1, Party.MANUFACTURER),
        (KEYS.outsider, Party.MANUFACTURER),
        (KEYS.sp, Party.SERVICE_PROVIDER),
    )


REFUSALS = {
    "wrong class": (lambda: SignedImages(device_class=OTHER_CLASS), "WrongClass"),
    "older sequence": (lambda: SignedImages(sequence=OLD.sequence - 3), "Rollback"),
    "equal sequence": (lambda: SignedImages(sequence=OLD.sequence), "Rollback"),
    "expired": (
        lambda: SignedImages(created=NOW - 10 * DAY, expires=NOW - DAY),
        "Expired",
    ),
    "under-signed": (lambda: SignedImages(under_signed()), "BelowThreshold"),
    "unknown signer": (lambda: SignedImages(unknown_signer()), "UnknownKey"),
}


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB])
@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_a_manifest_the_device_refuses_changes_nothing(
    tmp_path: Path, layout: Layout, case: str, autojump_clock: trio.testing.MockClock
) -> None:
    make, refusal = REFUSALS[case]
    images = make()
    w = world(tmp_path, layout, images=images)
    before = device_bytes(w.boot.directory)
    await w.run_update()
    assert device_bytes(w.boot.directory) == before
    assert (w.reboots, images.transfers) == (0, 0)
    assert images.checked[0] == Installed(OLD.sequence, OLD.slot_image().digest)
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.failed_stage) == (InstallOutcome.FAILED, Stage.NOTIFIED)
    assert report.reason.startswith(refusal + ": "), report.reason
    stages = [s.stage for s in w.updates.progress[DEVICE].stages]
    assert Stage.AUTHORISED not in stages and Stage.REPROGRAM_MODE not in stages
    booted = w.boot.booted()
    assert (booted.image, booted.accepted) == (OLD.slot_image(), True)
    assert w.versions.reports[-1].image_digest == OLD.slot_image().digest


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB])
async def test_a_well_signed_manifest_installs_checked_against_what_ran_before(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    images = SignedImages()
    w = world(tmp_path, layout, images=images)
    await w.run_update()
    booted = w.boot.booted()
    assert (booted.image, booted.accepted) == (NEW.slot_image(), True)
    report = w.updates.progress[DEVICE].report
    assert report is not None and report.outcome is InstallOutcome.SUCCEEDED
    # Checked again after every reboot, always against the image installed
    # when the update began (the seed's layout overwrote it meanwhile).
    assert len(images.checked) == 1 + w.reboots
    assert set(images.checked) == {Installed(OLD.sequence, OLD.slot_image().digest)}


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB])
async def test_a_full_slot_is_refused_before_anything_changes(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    images = SignedImages()
    w = world(tmp_path, layout, images=images, capacity=32_000)  # NEW has 36,000 bytes
    before = device_bytes(w.boot.directory)
    await w.run_update()
    assert device_bytes(w.boot.directory) == before
    assert (w.reboots, images.transfers) == (0, 0)
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.failed_stage) == (InstallOutcome.FAILED, Stage.NOTIFIED)
    assert "36000 bytes" in report.reason and "32000" in report.reason
    assert Stage.AUTHORISED not in [s.stage for s in w.updates.progress[DEVICE].stages]
