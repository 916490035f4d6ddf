"""The device agent's full update on a simulated device (both layouts): the
agent's table run against the simulated bootloader, the Update service's
device provider in-process, and the real block transfer on the simulated
network writing into the slot; reboots happen as the platform does them (the
agent unwinds with Rebooted, the bootloader reboots, a fresh agent continues
from its state directory). Trio's MockClock (autojump) keeps time virtual."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dofpy.errors import DofError
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.testing.transfer import PROVIDER, REQUESTOR, make_object, run_to_event
from dofpy.transfer.core import TransferCompleted, TransferCore
from dofpy.transfer.receiver import LocalLeaves
from dofpy.wire.oid import OID
from dofpy_services.device.agent import (
    AgentPorts,
    DeviceAgent,
    ImageToInstall,
    Installed,
    ManifestRefused,
    Rebooted,
    UserAnswer,
)
from dofpy_services.device.boot_records import Layout, Slot
from dofpy_services.device.machine import AgentMachine, RetryPolicy
from dofpy_services.device.ports import InProcessUpdate
from dofpy_services.device.simulated import FirmwareImage, SimulatedBootloader
from dofpy_services.device.slot_store import SlotBlockStore
from dofpy_services.device.table import State
from dofpy_services.update.device_interface import Assignment, InstallOutcome, Stage
from dofpy_services.update.device_provider import (
    DevicePlan,
    DeviceUpdates,
    EnrolledKeys,
    PlannedUpdate,
)
from dofpy_services.version.interface import VersionReport

DEVICE = OID(3, b"device-1@example.org")
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x03" * 32)
OLD = FirmwareImage(make_object(30_000, 1), "1.0", 10)
NEW = FirmwareImage(make_object(36_000, 2), "2.0", 20)
RESCUE = FirmwareImage(make_object(6_000, 3), "r1", 1)
MANIFEST_DIGEST = hashlib.sha256(b"manifest of 2.0").digest()


class NetsimImages:
    """The ImagePort: the assigned image served by a real TransferCore on the
    simulated network (``loss``), fetched into the agent's slot store;
    ``refusal`` stands for the device's manifest check refusing."""

    def __init__(
        self, loss: float = 0.0, refusal: str = "", image: FirmwareImage | None = None
    ) -> None:
        self.image = image or NEW
        self.provider = TransferCore()
        self.manifest = self.provider.publish(self.image.data)
        self.loss = loss
        self.refusal = refusal
        self.transfers = 0

    async def verify(self, assignment: Assignment, installed: Installed) -> ImageToInstall:
        if self.refusal:
            raise ManifestRefused(self.refusal)
        return ImageToInstall(self.manifest, self.image.slot_image())

    async def transfer(
        self, image: ImageToInstall, store: SlotBlockStore, local: LocalLeaves | None = None
    ) -> None:
        self.transfers += 1
        net = Network(seed=self.transfers, default=LinkConditions(loss=self.loss, delay=0.01))
        requestor = TransferCore(store=store)
        net.add(self.provider, PROVIDER)
        net.add(requestor, REQUESTOR)
        requestor.fetch(image.transfer, [PROVIDER], net.now, local=local)
        net.wakeup(REQUESTOR)
        event = run_to_event(net, requestor)
        net.remove(PROVIDER)
        if not isinstance(event, TransferCompleted):
            raise DofError(f"transfer failed: {event}")


@dataclass
class Versions:
    reports: list[VersionReport] = field(default_factory=list)

    async def report(self, report: VersionReport) -> bool:
        self.reports.append(report)
        return True


@dataclass
class World:
    directory: Path
    boot: SimulatedBootloader
    updates: DeviceUpdates
    versions: Versions
    images: NetsimImages
    health: Callable[[], Awaitable[str]]
    user: Callable[[Assignment], Awaitable[tuple[UserAnswer, float]]]
    reboots: int = 0
    state_on_device: bool = False
    """The agent's files on the bootloader's own DeviceFs (power cuts hit
    them too) rather than in a directory beside the device."""
    content_key_private: X25519PrivateKey | None = None
    clock: Callable[[], float] = trio.current_time
    """The device's POSIX clock (the windows'): the test's MockClock too."""
    update_port: object = None
    """The agent's UpdatePort (None: the in-process one on ``updates``)."""
    progress_interval: float = 600.0

    def agent(self) -> DeviceAgent:
        ports = AgentPorts(
            self.update_port or InProcessUpdate(self.updates, DEVICE),  # type: ignore[arg-type]
            self.versions,
            self.images,
            self.health,
            self.user,
        )
        state = self.boot.fs if self.state_on_device else self.directory / "agent"
        return DeviceAgent(
            self.boot, ports, state, identity=DEVICE, key=KEY,
            device_class="sensor", content_key_private=self.content_key_private,
            machine=AgentMachine(RetryPolicy(base=1.0, cap=8.0, max_attempts=4)),
            clock=self.clock, progress_interval=self.progress_interval,
        )  # fmt: skip

    async def run_update(self) -> DeviceAgent:
        return await self.run_update_of("c1")

    async def run_update_of(self, campaign: str) -> DeviceAgent:
        """Run the agent (and reboot it) until it has sent its install report
        for ``campaign`` and is idle again."""

        def done(agent: DeviceAgent) -> bool:
            progress = self.updates.progress.get(DEVICE)
            report = None if progress is None else progress.report
            reported = report is not None and report.campaign == campaign
            return reported and agent.machine.state is State.IDLE

        for _ in range(20):
            agent = self.agent()
            try:
                await agent.run(until=done)
            except Rebooted:
                self.boot.reboot()
                self.reboots += 1
                continue
            return agent
        raise AssertionError("the update did not end within 20 boots")


async def healthy() -> str:
    return ""


async def accept(assignment: Assignment) -> tuple[UserAnswer, float]:
    return UserAnswer.ACCEPT, 0.0


def world(
    tmp_path: Path,
    layout: Layout,
    *,
    manual: bool = False,
    images: NetsimImages | None = None,
    health: Callable[[], Awaitable[str]] = healthy,
    user: Callable[[Assignment], Awaitable[tuple[UserAnswer, float]]] = accept,
    capacity: int = 64_000,
    versions: object = None,
    running: FirmwareImage = OLD,
) -> World:
    (tmp_path / "agent").mkdir()
    boot = SimulatedBootloader.provision(
        tmp_path / "dev", layout, normal=running, reprogram=RESCUE,
        normal_capacity=capacity, reprogram_capacity=8_000,
    )  # fmt: skip
    plan = DevicePlan()
    assignment = Assignment("c1", MANIFEST_DIGEST, "2.0", 20, 0.0, 1e9, manual=manual)
    plan.assign(DEVICE, PlannedUpdate(assignment, NEW.slot_image().digest, OLD.slot_image().digest))
    keys = EnrolledKeys()
    keys.enrol(DEVICE, KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    return World(
        tmp_path,
        boot,
        DeviceUpdates(plan, keys),
        versions or Versions(),  # type: ignore[arg-type]
        images or NetsimImages(),
        health,
        user,
    )


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB])
async def test_a_full_update_boots_the_new_image_accepted_and_reports_it(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    w = world(tmp_path, layout, images=NetsimImages(loss=0.05))
    await w.run_update()
    booted = w.boot.booted()
    assert (booted.image.version, booted.accepted, booted.slot.is_normal) == ("2.0", True, True)
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.running_version, report.failed_stage) == (
        InstallOutcome.SUCCEEDED, "2.0", None,
    )  # fmt: skip
    # Every byte of the new image came over the network (it shares no leaf
    # with the old one), counted once, through the reboots that followed.
    assert report.bytes_fetched == len(NEW.data)
    # The Version service's last record matches what the device runs.
    last = w.versions.reports[-1]
    assert (last.version, last.boot.accepted, last.image_digest) == (
        "2.0",
        True,
        NEW.slot_image().digest,
    )
    stages = [s.stage for s in w.updates.progress[DEVICE].stages]
    assert Stage.AUTHORISED in stages and Stage.TRANSFERRING in stages
    if layout is Layout.SEED:
        assert w.reboots == 2  # into Reprogram, into the new Normal image
        assert Stage.REPROGRAM_MODE in stages
    else:
        assert w.reboots == 1 and w.boot.rollback_slot() is Slot.NORMAL


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB])
async def test_a_refused_manifest_changes_nothing(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    w = world(tmp_path, layout, images=NetsimImages(refusal="wrong device class"))
    before = w.boot.record()
    await w.run_update()
    assert w.boot.record() == before and w.reboots == 0
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.failed_stage, report.reason) == (
        InstallOutcome.FAILED, Stage.NOTIFIED, "wrong device class",
    )  # fmt: skip
    assert report.bytes_fetched == 0


async def test_a_full_disk_is_refused_before_anything_changes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    w = world(tmp_path, Layout.SEED, capacity=32_000)  # the new image has 36,000 bytes
    before = w.boot.record()
    await w.run_update()
    assert w.boot.record() == before and w.images.transfers == 0
    report = w.updates.progress[DEVICE].report
    assert report is not None and report.outcome is InstallOutcome.FAILED
    assert "36000 bytes" in report.reason


async def test_a_health_check_failure_reverts_and_reports_stage_and_reason(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async def sick() -> str:
        return "service sensord did not start"

    w = world(tmp_path, Layout.AB, health=sick)
    await w.run_update()
    booted = w.boot.booted()
    assert (booted.image.version, booted.accepted) == ("1.0", True)
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.failed_stage, report.reason, report.running_version) == (
        InstallOutcome.FAILED, Stage.NORMAL_MODE, "service sensord did not start", "1.0",
    )  # fmt: skip
    assert w.versions.reports[-1].version == "1.0"


async def test_a_health_check_failure_on_the_seed_layout_goes_back_to_reprogram_mode(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The seed's layout has overwritten its previous image: the device goes
    back to its accepted Reprogram image, reports the failure, and the
    Version service sees it in Reprogram mode."""

    async def sick() -> str:
        return "watchdog fired"

    w = world(tmp_path, Layout.SEED, health=sick)
    await w.run_update()
    booted = w.boot.booted()
    assert (booted.slot, booted.accepted) == (Slot.REPROGRAM, True)
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.failed_stage, report.reason, report.running_version) == (
        InstallOutcome.FAILED, Stage.NORMAL_MODE, "watchdog fired", "r1",
    )  # fmt: skip
    last = w.versions.reports[-1]
    assert (last.version, last.boot.image_kind.value) == ("r1", "reprogram")


@pytest.mark.parametrize("answer", [UserAnswer.ACCEPT, UserAnswer.DEFER, UserAnswer.REFUSE])
async def test_a_manual_update_honours_the_user(
    tmp_path: Path, answer: UserAnswer, autojump_clock: trio.testing.MockClock
) -> None:
    asked: list[float] = []

    async def user(assignment: Assignment) -> tuple[UserAnswer, float]:
        asked.append(trio.current_time())
        if answer is UserAnswer.DEFER and len(asked) == 1:
            return UserAnswer.DEFER, trio.current_time() + 7200.0
        if answer is UserAnswer.REFUSE:
            return UserAnswer.REFUSE, 0.0
        return UserAnswer.ACCEPT, 0.0

    w = world(tmp_path, Layout.AB, manual=True, user=user)
    await w.run_update()
    report = w.updates.progress[DEVICE].report
    assert report is not None
    if answer is UserAnswer.REFUSE:
        assert report.outcome is InstallOutcome.REFUSED_BY_USER
        assert w.boot.booted().image.version == "1.0" and w.reboots == 0
    else:
        assert report.outcome is InstallOutcome.SUCCEEDED
        assert w.boot.booted().image.version == "2.0"
    if answer is UserAnswer.DEFER:
        assert len(asked) == 2 and asked[1] - asked[0] >= 7200.0
        assert Stage.DEFERRED in [s.stage for s in w.updates.progress[DEVICE].stages]


class LosesTheSession:
    """Wraps a port: the first call of each named method fails as a lost
    session would (DofError), the next one goes through."""

    def __init__(self, inner: object, lost: set[str]) -> None:
        self._inner = inner
        self.lost = set(lost)
        self.failed: list[str] = []

    def __getattr__(self, name: str) -> object:
        method = getattr(self._inner, name)

        async def call(*args: object) -> object:
            if name in self.lost:
                self.lost.discard(name)
                self.failed.append(name)
                raise DofError(f"session lost during {name}")
            return await method(*args)

        return call


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB])
async def test_the_session_lost_during_every_step_is_retried(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    w = world(tmp_path, layout)
    update_calls = {"poll", "authorise", "progress", "accept_booted", "install_report"}
    lossy_update = LosesTheSession(InProcessUpdate(w.updates, DEVICE), update_calls)
    lossy_version = LosesTheSession(w.versions, {"report"})
    lossy_images = LosesTheSession(w.images, {"verify", "transfer"})

    def agent() -> DeviceAgent:
        ports = AgentPorts(lossy_update, lossy_version, lossy_images, w.health, w.user)  # type: ignore[arg-type]
        return DeviceAgent(
            w.boot, ports, w.directory / "agent", identity=DEVICE, key=KEY, device_class="sensor",
            machine=AgentMachine(RetryPolicy(base=1.0, cap=8.0, max_attempts=4)),
        )  # fmt: skip

    w.agent = agent  # type: ignore[method-assign]
    await w.run_update()
    assert set(lossy_update.failed) == update_calls
    assert lossy_version.failed == ["report"]
    assert set(lossy_images.failed) == {"verify", "transfer"}
    booted = w.boot.booted()
    assert (booted.image.version, booted.accepted) == ("2.0", True)
    report = w.updates.progress[DEVICE].report
    assert report is not None and report.outcome is InstallOutcome.SUCCEEDED


class SlowImages(NetsimImages):
    """A transfer that takes ``seconds`` (a congested link) before it completes."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def transfer(
        self, image: ImageToInstall, store: SlotBlockStore, local: LocalLeaves | None = None
    ) -> None:
        await trio.sleep(self.seconds)
        await super().transfer(image, store, local)


async def test_a_long_transfer_repeats_its_progress_so_it_is_not_taken_for_silence(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    w = world(tmp_path, Layout.AB, images=SlowImages(35.0))
    w.progress_interval = 10.0
    await w.run_update()
    assert w.boot.booted().image.version == "2.0"
    at = [s.at for s in w.updates.progress[DEVICE].stages if s.stage is Stage.TRANSFERRING]
    # The transfer's first report, then one each 10 s of its 35 s: never a
    # silence as long as the interval.
    assert len(at) == 4
    assert [round(b - a, 6) for a, b in itertools.pairwise(at)] == [10.0, 10.0, 10.0]


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan")])
def test_a_progress_interval_must_be_positive(tmp_path: Path, interval: float) -> None:
    w = world(tmp_path, Layout.AB)
    w.progress_interval = interval
    with pytest.raises(ValueError, match="progress_interval"):
        w.agent()


class RepeatsFail:
    """An UpdatePort whose repeated TRANSFERRING progress is lost (the
    session drops it), the rest going through."""

    def __init__(self, inner: InProcessUpdate) -> None:
        self._inner = inner
        self.lost = 0
        self.transferring = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def progress(self, campaign: str, stage: Stage, reason: str) -> None:
        if stage is Stage.TRANSFERRING:
            self.transferring += 1
            if self.transferring > 1:
                self.lost += 1
                raise DofError("session lost during progress")
        await self._inner.progress(campaign, stage, reason)


async def test_a_repeated_progress_that_fails_does_not_stop_the_transfer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    w = world(tmp_path, Layout.SEED, images=SlowImages(25.0))
    w.progress_interval = 10.0
    port = RepeatsFail(InProcessUpdate(w.updates, DEVICE))
    w.update_port = port
    await w.run_update()
    assert port.lost == 2 and w.images.transfers == 1  # one transfer, never retried
    booted = w.boot.booted()
    assert (booted.image.version, booted.accepted) == ("2.0", True)
    report = w.updates.progress[DEVICE].report
    assert report is not None and report.outcome is InstallOutcome.SUCCEEDED


async def test_rollback_on_command_is_instant_on_ab(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    w = world(tmp_path, Layout.AB)
    await w.run_update()
    assert w.boot.booted().image.version == "2.0"
    reboots = w.reboots
    rollback = Assignment("c2", MANIFEST_DIGEST, "1.0", 10, 0.0, 1e9, rollback=True)
    w.updates.plan.assign(
        DEVICE, PlannedUpdate(rollback, OLD.slot_image().digest, OLD.slot_image().digest)
    )
    await w.run_update_of("c2")
    booted = w.boot.booted()
    assert (booted.image.version, booted.accepted, booted.slot) == ("1.0", True, Slot.NORMAL)
    assert w.reboots == reboots + 1  # one reboot into the kept slot: nothing transferred again
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.campaign, report.outcome, report.running_version) == (
        "c2", InstallOutcome.ROLLED_BACK, "1.0",
    )  # fmt: skip
    assert w.versions.reports[-1].version == "1.0"


async def test_rollback_on_the_seed_layout_reinstalls_the_previous_image(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """No previous image is kept: the rollback campaign's image (the old one)
    is installed again through Reprogram mode."""
    w = world(tmp_path, Layout.SEED)
    await w.run_update()
    assert w.boot.booted().image.version == "2.0"
    w.images.provider.publish(OLD.data)
    old_manifest = TransferCore().publish(OLD.data)

    async def verify_old(assignment: Assignment, installed: Installed) -> ImageToInstall:
        return ImageToInstall(old_manifest, OLD.slot_image())

    w.images.verify = verify_old  # type: ignore[method-assign]
    rollback = Assignment("c2", MANIFEST_DIGEST, "1.0", 10, 0.0, 1e9, rollback=True)
    w.updates.plan.assign(
        DEVICE, PlannedUpdate(rollback, OLD.slot_image().digest, NEW.slot_image().digest)
    )
    await w.run_update_of("c2")
    booted = w.boot.booted()
    assert (booted.image.version, booted.accepted) == ("1.0", True)
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.running_version) == (InstallOutcome.ROLLED_BACK, "1.0")


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB])
async def test_reports_carry_the_devices_posix_clock_not_trios(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    """``device_clock`` in a version report and ``at`` in the install report
    are the device's POSIX time (its ``clock``), not trio's monotonic clock
    (which in production counts from an arbitrary origin)."""
    w = world(tmp_path, layout)
    posix_origin = 1_800_000_000.0
    w.clock = lambda: posix_origin + trio.current_time()
    await w.run_update()
    assert w.versions.reports
    for sent in w.versions.reports:
        assert sent.device_clock >= posix_origin
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert posix_origin <= report.at <= posix_origin + trio.current_time()
