"""``dofpy device run --sim DIR`` against real services on 127.0.0.1: the
domain's Authenticator, the Version daemon and the Image daemon (run in
process by the daemon runner, on real sockets, with their own credentials),
and the Update service's device interface (UpdateDeviceProvider, the
in-memory plan, on a secure node; the Update daemon serving it from its
campaign store is tests/fleet/test_update_end_to_end.py). The device is a
simulated one on the seed's layout; the command runs its agent through
Reprogram mode to the new image, signed manifest checked against the
vendor's trust root, and reports. Afterwards the Version store records what
the device runs and the Update service holds its verified install report."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dofpy.credentials import load_credentials
from dofpy.image import Party
from dofpy.oap.core import OapConfig
from dofpy.transfer.messages import TRANSFER_IID
from dofpy.trio import open_node
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy_services.authenticator.service import AUTHENTICATOR, AuthenticatorConfig
from dofpy_services.cli import main
from dofpy_services.daemon.cli import UsageError
from dofpy_services.device.agent import UserAnswer
from dofpy_services.device.boot_records import Layout, Slot
from dofpy_services.device.service import _answer, _seconds
from dofpy_services.device.simulated import FirmwareImage, SimulatedBootloader, inspect_device
from dofpy_services.image.commands import open_image_store
from dofpy_services.image.publish import add_image_file
from dofpy_services.image.service import IMAGE, ImageConfig
from dofpy_services.image.serving import IMAGE_INTERFACE
from dofpy_services.update.device_interface import (
    UPDATE_DEVICE,
    UPDATE_OBJECT,
    Assignment,
    InstallOutcome,
)
from dofpy_services.update.device_provider import (
    DevicePlan,
    DeviceUpdates,
    EnrolledKeys,
    PlannedUpdate,
    UpdateDeviceProvider,
)
from dofpy_services.version import (
    VERSION_CHANGES,
    VERSION_QUERY,
    VERSION_REPORT,
    open_version_store,
)
from dofpy_services.version.service import VERSION, VersionConfig
from tests.image.signing_fixtures import (
    DEVICE_CLASS,
    VENDOR,
    Keys,
    fully_signed,
    make_manifest,
    make_root,
    sign_root,
)
from tests.services.test_daemon_runner import WAIT, running
from tests.services.test_version_daemon import cli, with_authenticator

KEYS = Keys.make()
OLD = FirmwareImage(random.Random(31).randbytes(30_000), "1.0", 10)
NEW = random.Random(32).randbytes(36_000)
RESCUE = FirmwareImage(random.Random(33).randbytes(6_000), "r1", 1)
DEVICE_NAME = "sensor-1@example.org"
REPORT_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)


def enrol(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    db = str(tmp_path / "as.db")
    node = ["--db", db, "--domain", "example.org"]
    cli(capsys, "authenticator", "init-domain", "--db", db, "example.org")
    for name in ("as", "version", "image", "update", "sensor-1"):
        cred = str(tmp_path / f"{name}.cred")
        cli(capsys, "authenticator", "add-node", *node, f"{name}@example.org",
            "--credentials-out", cred)  # fmt: skip
    grants = {
        "version@example.org": ("p", (VERSION_REPORT.iid, VERSION_QUERY.iid, VERSION_CHANGES.iid)),
        "image@example.org": ("p", (IMAGE_INTERFACE.iid, TRANSFER_IID)),
        "update@example.org": ("p", (UPDATE_DEVICE.iid,)),
        DEVICE_NAME: (
            "x",
            (VERSION_REPORT.iid, UPDATE_DEVICE.iid, IMAGE_INTERFACE.iid, TRANSFER_IID),
        ),
    }
    for name, (actions, iids) in grants.items():
        for iid in iids:
            cli(capsys, "authenticator", "grant", *node, name, "--actions", actions,
                "--interface", str(iid))  # fmt: skip
    return db


def publish(tmp_path: Path) -> bytes:
    """NEW in an image store with its signed manifest; the manifest's digest."""
    store = open_image_store(tmp_path / "images")
    (tmp_path / "new.bin").write_bytes(NEW)
    prepared = add_image_file(store, tmp_path / "new.bin", 1024)
    manifest = make_manifest(image=prepared.hashes.manifest, version="2.0", sequence=20)
    return store.add_manifest(fully_signed(KEYS, manifest))


def private_file(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return str(path)


@pytest.mark.parametrize(
    ("manual", "answer"), [(False, "accept"), (True, "refuse")], ids=["automatic", "user refuses"]
)
async def test_device_run_updates_a_simulated_device_against_real_services(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], manual: bool, answer: str
) -> None:
    auth_db = enrol(tmp_path, capsys)
    manifest_digest = publish(tmp_path)
    device_dir = tmp_path / "sensor-1"
    SimulatedBootloader.provision(
        device_dir, Layout.SEED, normal=OLD, reprogram=RESCUE,
        normal_capacity=64_000, reprogram_capacity=8_000,
    )  # fmt: skip
    root_file = tmp_path / "root.cose"
    root_file.write_bytes(
        sign_root(make_root(KEYS), (KEYS.m1, Party.MANUFACTURER), (KEYS.m2, Party.MANUFACTURER))
    )
    key_file = private_file(
        tmp_path / "sensor-1.pem",
        REPORT_KEY.private_bytes(
            Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    device = OID(3, DEVICE_NAME.encode())
    plan = DevicePlan()
    assignment = Assignment("c1", manifest_digest, "2.0", 20, 0.0, 4e9, manual=manual)
    plan.assign(
        device,
        PlannedUpdate(assignment, hashlib.sha256(NEW).digest(), OLD.slot_image().digest),
    )
    keys = EnrolledKeys()
    keys.enrol(device, REPORT_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    updates = DeviceUpdates(plan, keys)
    version_db = str(tmp_path / "version.db")
    settings = AuthenticatorConfig(
        listen=("127.0.0.1", 0), db=auth_db, credentials=str(tmp_path / "as.cred")
    )
    async with running(AUTHENTICATOR, settings) as authenticator:
        at = authenticator.udp

        def cred(name: str) -> str:
            return str(with_authenticator(tmp_path, name, at))

        version_settings = VersionConfig(
            listen=("127.0.0.1", 0), db=version_db, credentials=cred("version")
        )
        image_settings = ImageConfig(
            listen=("127.0.0.1", 0), credentials=cred("image"), store=str(tmp_path / "images")
        )
        update_credentials = load_credentials(cred("update"))
        provide = PermissionSet((BindingPermission(Action.PROVIDE, OID(0), UPDATE_DEVICE.iid),))
        async with (
            running(VERSION, version_settings) as version,
            running(IMAGE, image_settings) as image,
            open_node(
                ("127.0.0.1", 0), OapConfig(node=update_credentials.node_config(provide))
            ) as update_node,
        ):
            update_node.provide(
                UPDATE_OBJECT, UPDATE_DEVICE, UpdateDeviceProvider(updates, trio.current_time)
            )
            update_at = update_node.local_address
            argv = [
                "device", "run", "--sim", str(device_dir), "--credentials", cred("sensor-1"),
                "--version", f"127.0.0.1:{version.udp[1]}", "--version-identity",
                "version@example.org",
                "--update", f"127.0.0.1:{update_at[1]}", "--update-identity", "update@example.org",
                "--image", f"127.0.0.1:{image.udp[1]}",
                "--trust-root", str(root_file), "--vendor", str(VENDOR),
                "--class", str(DEVICE_CLASS), "--class-name", "sensor",
                "--report-key", key_file, "--answer", answer, "--format", "json",
                "--progress-interval", "30",
            ]  # fmt: skip
            with trio.fail_after(6 * WAIT):
                status = await trio.to_thread.run_sync(main, argv)
            await version.signals.send(15)  # SIGTERM: the daemons drain and stop
            await image.signals.send(15)
        await authenticator.signals.send(15)
    out, err = capsys.readouterr()
    assert status == 0, err
    summary = json.loads(out)
    report = updates.progress[device].report
    assert report is not None
    with open_version_store(version_db) as store:
        record, _ = store.show(device, 1)
    assert record is not None
    boot = SimulatedBootloader(device_dir)
    if answer == "refuse":
        # The manual-update hook said no: nothing changed, reported as such.
        assert summary["boots"] == 1
        assert [(r["outcome"], r["version"]) for r in summary["reports"]] == [
            ("refused_by_user", "1.0")
        ]
        assert report.outcome is InstallOutcome.REFUSED_BY_USER
        assert (boot.booted().image, record.version) == (OLD.slot_image(), "1.0")
        return
    assert summary["boots"] == 3  # Normal, Reprogram mode, the new Normal image
    assert [(r["campaign"], r["outcome"], r["version"]) for r in summary["reports"]] == [
        ("c1", "succeeded", "2.0")
    ]
    shown = inspect_device(device_dir)
    assert (shown["booted"], shown["accepted"]) == ("normal", "normal")
    assert boot.booted().image.digest == hashlib.sha256(NEW).digest()
    assert boot.read_slot(Slot.NORMAL, 0, len(NEW)) == NEW
    assert report.outcome is InstallOutcome.SUCCEEDED
    # What the Version service records is what the device runs.
    assert (record.version, record.image_digest, record.boot.accepted) == (
        "2.0",
        hashlib.sha256(NEW).digest(),
        True,
    )


def test_the_answer_flag_reads_accept_refuse_and_defer() -> None:
    assert _answer("accept") == (UserAnswer.ACCEPT, 0.0)
    assert _answer("refuse") == (UserAnswer.REFUSE, 0.0)
    assert _answer("defer=90") == (UserAnswer.DEFER, 90.0)
    for bad in ("maybe", "defer", "defer=-1", "accept=3", "defer=soon"):
        with pytest.raises(UsageError):
            _answer(bad)


def test_the_progress_interval_flag_takes_positive_seconds_only() -> None:
    assert _seconds("30") == 30.0
    assert _seconds("0.5") == 0.5
    for bad in ("0", "-5", "nan", "inf", "soon", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="positive number of seconds"):
            _seconds(bad)
