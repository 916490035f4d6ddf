"""The device-facing provider of the Update service: its decisions from the
plan (sans-IO, explicit identity and time), and the same over OAP in secure
sessions, where who asks is the session's identity."""

from __future__ import annotations

import random

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dofpy.oap.errors import ProviderException
from dofpy.testing.domain import LocalDomain
from dofpy.testing.secure import DOMAIN_OID, open_secure_node
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy_services.device.agent import NotNow as AgentNotNow
from dofpy_services.device.agent import Refused as AgentRefused
from dofpy_services.device.update_client import UpdateDeviceClient
from dofpy_services.update.device_interface import (
    UPDATE_DEVICE,
    UPDATE_OBJECT,
    Assignment,
    InstallOutcome,
    InstallReport,
    Stage,
    sign_install_report,
)
from dofpy_services.update.device_provider import (
    DevicePlan,
    DeviceUpdates,
    EnrolledKeys,
    NotNow,
    PlannedUpdate,
    Refused,
    UpdateDeviceProvider,
)
from dofpy_services.version.interface import ImageKind
from tests.services.test_daemon_runner import WAIT

DEVICE = OID(3, b"device-1@example.org")
STRANGER = OID(3, b"device-2@example.org")
SERVICE = OID(3, b"update@example.org")
MANIFEST = b"\x0a" * 32
NEW = b"\x02" * 32
OLD = b"\x01" * 32
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x05" * 32)
PUBLIC = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def updates(*, updater: bool = False, authorise_from: float = 0.0) -> DeviceUpdates:
    plan = DevicePlan()
    assignment = Assignment("c1", MANIFEST, "2.0", 20, 100.0, 200.0, updater=updater)
    plan.assign(DEVICE, PlannedUpdate(assignment, NEW, OLD, authorise_from, 30.0, b"wrapped"))
    keys = EnrolledKeys()
    keys.enrol(DEVICE, PUBLIC)
    return DeviceUpdates(plan, keys)


def report(
    device: OID = DEVICE, outcome: InstallOutcome = InstallOutcome.SUCCEEDED
) -> InstallReport:
    return InstallReport(device, "c1", NEW, "2.0", NEW, "2.0", outcome, 150.0)


def test_only_the_assigned_device_learns_of_the_campaign() -> None:
    service = updates()
    (assignment,) = service.poll(DEVICE, 50.0)
    assert (assignment.campaign, assignment.window_start) == ("c1", 100.0)
    assert service.poll(STRANGER, 50.0) == []
    with pytest.raises(Refused, match="not in campaign"):
        service.authorise(STRANGER, "c1", MANIFEST, 150.0)


def test_authorisation_waits_for_the_window_and_binds_the_manifest() -> None:
    service = updates(authorise_from=120.0)
    with pytest.raises(NotNow) as early:
        service.authorise(DEVICE, "c1", MANIFEST, 50.0)
    assert early.value.retry_after == 70.0  # until authorise_from, the later of the two
    with pytest.raises(Refused, match="not the campaign's"):
        service.authorise(DEVICE, "c1", b"\x0b" * 32, 150.0)
    granted = service.authorise(DEVICE, "c1", MANIFEST, 150.0)
    assert (granted.not_after, granted.wrapped_key) == (180.0, b"wrapped")
    assert service.authorise(DEVICE, "c1", MANIFEST, 190.0).not_after == 200.0  # the window's end
    with pytest.raises(Refused, match="closed"):
        service.authorise(DEVICE, "c1", MANIFEST, 201.0)
    assert service.progress[DEVICE].last_stage is Stage.AUTHORISED


def test_boots_are_accepted_only_for_the_assigned_or_previous_image() -> None:
    service = updates()
    assert service.accept_booted(DEVICE, "c1", "reprogram", b"\x09" * 32, 1.0) is True
    assert service.accept_booted(DEVICE, "c1", "normal", NEW, 2.0) is True
    assert service.accept_booted(DEVICE, "c1", "normal", OLD, 3.0) is True  # a revert
    assert service.accept_booted(DEVICE, "c1", "normal", b"\x09" * 32, 4.0) is False
    with pytest.raises(Refused, match="image kind"):
        service.accept_booted(DEVICE, "c1", "bootloader", NEW, 5.0)
    boots = service.progress[DEVICE].boots
    assert [(b.at, b.accepted) for b in boots] == [
        (1.0, True),
        (2.0, True),
        (3.0, True),
        (4.0, False),
    ]
    # Updating the updater: only the assigned Reprogram image is accepted.
    updater = updates(updater=True)
    assert updater.accept_booted(DEVICE, "c1", "reprogram", NEW, 1.0) is True
    assert updater.accept_booted(DEVICE, "c1", "reprogram", b"\x09" * 32, 1.0) is False


def test_stages_and_failure_reasons_are_recorded_per_device() -> None:
    service = updates()
    service.record_progress(DEVICE, "c1", "transferring", "", 10.0)
    service.record_progress(DEVICE, "c1", "normal_mode", "health check failed: no network", 20.0)
    progress = service.progress[DEVICE]
    assert progress.last_stage is Stage.NORMAL_MODE
    assert [(f.stage, f.reason) for f in progress.failures] == [
        (Stage.NORMAL_MODE, "health check failed: no network")
    ]
    with pytest.raises(Refused, match="no such stage"):
        service.record_progress(DEVICE, "c1", "flying", "", 30.0)


def test_an_install_report_is_kept_only_when_it_verifies() -> None:
    service = updates()
    data, signature = sign_install_report(KEY, report())
    assert service.install_report(DEVICE, data, signature, 1.0) == report()
    assert service.progress[DEVICE].report == report()
    forged = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x06" * 32)
    fresh = updates()
    data, signature = sign_install_report(forged, report())
    with pytest.raises(Refused, match="not the device's"):
        fresh.install_report(DEVICE, data, signature, 1.0)
    data, signature = sign_install_report(KEY, report(STRANGER))
    with pytest.raises(Refused, match="another device"):
        fresh.install_report(DEVICE, data, signature, 1.0)
    with pytest.raises(Refused, match="no key"):
        fresh.install_report(STRANGER, data, signature, 1.0)
    assert fresh.progress[DEVICE].report is None
    assert fresh.progress[DEVICE].refused_reports == [
        "the signature is not the device's",
        "the report names another device",
    ]


def domain() -> LocalDomain:
    local = LocalDomain(DOMAIN_OID, rng=random.Random(13).randbytes)
    local.enrol(
        SERVICE, PermissionSet((BindingPermission(Action.parse("p"), OID(0), UPDATE_DEVICE.iid),))
    )
    grant = PermissionSet((BindingPermission(Action.parse("x"), OID(0), UPDATE_DEVICE.iid),))
    local.enrol(DEVICE, grant)
    local.enrol(STRANGER, grant)
    return local


async def test_over_oap_the_session_identity_is_the_device() -> None:
    local = domain()
    service = updates(authorise_from=120.0)
    clock = [150.0]
    async with (
        open_secure_node(local, SERVICE) as node,
        open_secure_node(local, DEVICE) as device,
        open_secure_node(local, STRANGER) as stranger,
    ):
        node.provide(UPDATE_OBJECT, UPDATE_DEVICE, UpdateDeviceProvider(service, lambda: clock[0]))
        peer = node.local_address
        with trio.fail_after(WAIT):
            (mine,) = await device.invoke(
                peer, UPDATE_OBJECT, UPDATE_DEVICE, "poll", identity=SERVICE
            )
            assert [a.campaign for a in mine] == ["c1"]
            (theirs,) = await stranger.invoke(
                peer, UPDATE_OBJECT, UPDATE_DEVICE, "poll", identity=SERVICE
            )
            assert list(theirs) == []
            (granted,) = await device.invoke(
                peer, UPDATE_OBJECT, UPDATE_DEVICE, "authorise", "c1", MANIFEST, identity=SERVICE
            )
            assert granted.wrapped_key == b"wrapped"
            clock[0] = 50.0
            with pytest.raises(ProviderException) as early:
                await device.invoke(
                    peer,
                    UPDATE_OBJECT,
                    UPDATE_DEVICE,
                    "authorise",
                    "c1",
                    MANIFEST,
                    identity=SERVICE,
                )
            assert early.value.definition.name == "NotNow"
            assert list(early.value.values) == [70.0]
            with pytest.raises(ProviderException) as refused:
                await stranger.invoke(
                    peer,
                    UPDATE_OBJECT,
                    UPDATE_DEVICE,
                    "authorise",
                    "c1",
                    MANIFEST,
                    identity=SERVICE,
                )
            assert refused.value.definition.name == "Refused"
            await device.invoke(
                peer, UPDATE_OBJECT, UPDATE_DEVICE, "progress", "c1", "transferring", "",
                identity=SERVICE,
            )  # fmt: skip
            (accepted,) = await device.invoke(
                peer, UPDATE_OBJECT, UPDATE_DEVICE, "accept_booted", "c1", "normal", NEW,
                identity=SERVICE,
            )  # fmt: skip
            assert accepted is True
            data, signature = sign_install_report(KEY, report())
            await device.invoke(
                peer, UPDATE_OBJECT, UPDATE_DEVICE, "install_report", data, signature,
                identity=SERVICE,
            )  # fmt: skip
    progress = service.progress[DEVICE]
    assert progress.report == report()
    assert [s.stage for s in progress.stages] == [Stage.AUTHORISED, Stage.TRANSFERRING]
    assert STRANGER not in service.progress or service.progress[STRANGER].stages == []


async def test_the_agents_client_maps_the_services_answers() -> None:
    """UpdateDeviceClient (the agent's UpdatePort over OAP): NotNow and
    Refused arrive as the agent's exceptions; a signed report is kept."""
    local = domain()
    service = updates(authorise_from=120.0)
    clock = [50.0]
    async with (
        open_secure_node(local, SERVICE) as node,
        open_secure_node(local, DEVICE) as device,
        open_secure_node(local, STRANGER) as stranger,
    ):
        node.provide(UPDATE_OBJECT, UPDATE_DEVICE, UpdateDeviceProvider(service, lambda: clock[0]))
        mine = UpdateDeviceClient(device, node.local_address, identity=SERVICE)
        theirs = UpdateDeviceClient(stranger, node.local_address, identity=SERVICE)
        with trio.fail_after(WAIT):
            assert [a.manifest_digest for a in await mine.poll()] == [MANIFEST]
            with pytest.raises(AgentNotNow) as early:
                await mine.authorise("c1", MANIFEST)
            assert early.value.retry_after == 70.0
            with pytest.raises(AgentRefused, match="not in campaign"):
                await theirs.authorise("c1", MANIFEST)
            clock[0] = 150.0
            assert (await mine.authorise("c1", MANIFEST)).not_after == 180.0
            await mine.progress("c1", Stage.TRANSFERRING, "")
            assert await mine.accept_booted("c1", ImageKind.NORMAL, NEW) is True
            data, signature = sign_install_report(KEY, report())
            await mine.install_report(data, signature)
            with pytest.raises(AgentRefused, match="no key"):
                await theirs.install_report(data, signature)
    assert service.progress[DEVICE].report == report()
