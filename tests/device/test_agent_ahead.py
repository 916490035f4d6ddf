"""Downloading ahead of the maintenance window (A/B devices): assigned an
update whose window opens in two hours, an A/B device transfers the image
into its free Normal slot and checks it whole at once, while the accepted
image runs, and switches to it (the install) only once the window has opened,
after the authorisation. The seed's layout (its download is written in
Reprogram mode over the old image: it is the install) and a confidential
image (its content key comes only with the authorisation) download inside
the window, as before. A power cut anywhere in the download ahead resumes
and ends the same. Against the campaign engine's own device interface, the
row is held for the window and follows the device. Trio's MockClock is the
device's clock too."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio
import trio.testing
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dofpy.errors import DofError
from dofpy.transfer.receiver import LocalLeaves
from dofpy_services.device.agent import (
    AgentPorts,
    DeviceAgent,
    ImageToInstall,
    NotNow,
    Rebooted,
    Refused,
)
from dofpy_services.device.boot_records import Layout, Slot, SlotRecord, SlotState
from dofpy_services.device.fs import cut_points
from dofpy_services.device.machine import AgentMachine, RetryPolicy
from dofpy_services.device.simulated import SimulatedBootloader
from dofpy_services.device.slot_store import SlotBlockStore
from dofpy_services.device.table import State
from dofpy_services.update import campaign_store as cs
from dofpy_services.update import device_keys as dk
from dofpy_services.update import device_provider as provider
from dofpy_services.update.campaign import Window, next_window_open
from dofpy_services.update.campaign_devices import CampaignDevices
from dofpy_services.update.device_interface import (
    Assignment,
    Authorisation,
    InstallOutcome,
    Stage,
)
from dofpy_services.update.device_provider import StageEntry
from dofpy_services.update.engine import HELD_AHEAD, DeviceRow
from dofpy_services.update.tracking import DeviceState
from dofpy_services.update.worker import CampaignWorker
from dofpy_services.version.interface import ImageKind
from dofpy_services.version.store import open_version_store
from tests.device.test_agent_confidential import DEVICE_KEY, confidential_world
from tests.device.test_agent_power_cuts import check_end, fresh, update_with_cuts
from tests.device.test_agent_update import DEVICE, KEY, NEW, OLD, NetsimImages, World, world
from tests.image.signing_fixtures import NOW
from tests.update.campaign_fixtures import (
    ROOT,
    SERVICE_KEY,
    full_approvals,
    make_spec,
    opened,
    records,
)

T = TypeVar("T")

OPENS = 7200.0
"""The window opens two hours after the test starts (MockClock time 0)."""
CLOSES = OPENS + 3600.0


def in_two_hours(w: World, start: float = 0.0) -> World:
    """``w``'s assignment, its window moved to [start + OPENS, start + CLOSES)."""
    planned = w.updates.plan.updates[DEVICE]
    assignment = dataclasses.replace(
        planned.assignment, window_start=start + OPENS, window_end=start + CLOSES
    )
    w.updates.plan.assign(DEVICE, dataclasses.replace(planned, assignment=assignment))
    return w


def stages(w: World, stage: Stage) -> list[StageEntry]:
    return [entry for entry in w.updates.progress[DEVICE].stages if entry.stage is stage]


def watch_switches(boot: SimulatedBootloader) -> list[tuple[float, Slot]]:
    """Every boot target the agent sets on ``boot``, with its time."""
    switches: list[tuple[float, Slot]] = []
    original = boot.set_boot_target

    def set_boot_target(slot: Slot) -> None:
        switches.append((trio.current_time(), slot))
        original(slot)

    boot.set_boot_target = set_boot_target  # type: ignore[method-assign]
    return switches


def watch_verified(w: World) -> list[tuple[float, SlotRecord, Slot]]:
    """At each VERIFYING report: the time, the free slot's record, the boot target."""
    seen: list[tuple[float, SlotRecord, Slot]] = []
    original = w.updates.record_progress

    def record_progress(device: object, campaign: str, stage: str, reason: str, now: float) -> None:
        if stage == Stage.VERIFYING.value:
            seen.append((now, w.boot.slot_record(Slot.NORMAL_B), w.boot.record().target))
        original(device, campaign, stage, reason, now)  # type: ignore[arg-type]

    w.updates.record_progress = record_progress  # type: ignore[method-assign,assignment]
    return seen


def assert_succeeded(w: World) -> None:
    booted = w.boot.booted()
    assert (booted.image, booted.accepted, booted.slot.is_normal) == (NEW.slot_image(), True, True)
    report = w.updates.progress[DEVICE].report
    assert report is not None
    assert (report.outcome, report.running_version) == (InstallOutcome.SUCCEEDED, "2.0")


async def test_an_ab_device_downloads_before_the_window_and_installs_inside_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    w = in_two_hours(world(tmp_path, Layout.AB))
    switches = watch_switches(w.boot)
    verified = watch_verified(w)
    asked: list[float] = []
    authorise = w.updates.authorise

    def counted(*args: object) -> object:
        asked.append(trio.current_time())
        return authorise(*args)  # type: ignore[arg-type]

    w.updates.authorise = counted  # type: ignore[method-assign,assignment]
    await w.run_update()
    assert_succeeded(w)
    # Downloaded and checked whole before the window opened, the accepted
    # old image still the boot target.
    ((at, slot, target),) = verified
    assert at < OPENS
    assert (slot.state, slot.image, target) == (SlotState.VALID, NEW.slot_image(), Slot.NORMAL)
    assert all(entry.at < OPENS for entry in stages(w, Stage.TRANSFERRING))
    # The switch (the install) only after the window opened, once, into that slot.
    assert [slot for _, slot in switches] == [Slot.NORMAL_B]
    assert all(OPENS <= at < CLOSES for at, _ in switches)
    # The agent waited for the window itself: asked once (no NotNow spent an
    # attempt), and was authorised.
    assert len(asked) == 1 and OPENS <= asked[0] < CLOSES
    authorised = stages(w, Stage.AUTHORISED)
    assert authorised and all(OPENS <= entry.at < CLOSES for entry in authorised)
    assert all(entry.at >= OPENS for entry in stages(w, Stage.INSTALLING))
    assert w.images.transfers == 1  # not fetched again inside the window
    assert w.reboots == 1 and w.boot.rollback_slot() is Slot.NORMAL


async def test_the_seed_layout_downloads_only_inside_the_window(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    w = in_two_hours(world(tmp_path, Layout.SEED))
    before = w.boot.slot_record(Slot.NORMAL)
    switches = watch_switches(w.boot)
    await w.run_update()
    assert_succeeded(w)
    transferring = stages(w, Stage.TRANSFERRING)
    assert transferring and all(entry.at >= OPENS for entry in transferring)
    # Nothing switched or written before the window: into Reprogram mode first.
    assert switches and all(at >= OPENS for at, _ in switches)
    assert switches[0][1] is Slot.REPROGRAM
    assert before.image == OLD.slot_image()


async def test_a_confidential_image_is_not_downloaded_ahead(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Its content key comes only with the authorisation, inside the window."""
    w = in_two_hours(confidential_world(tmp_path, Layout.AB, DEVICE_KEY, DEVICE_KEY))
    await w.run_update()
    assert_succeeded(w)
    transferring = stages(w, Stage.TRANSFERRING)
    assert transferring and all(entry.at >= OPENS for entry in transferring)
    assert all(entry.at >= OPENS for entry in stages(w, Stage.AUTHORISED))


async def test_inside_the_window_an_ab_device_is_authorised_first(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The window already open: authorised before anything is transferred."""
    w = world(tmp_path, Layout.AB)
    await w.run_update()
    assert_succeeded(w)
    kinds = [entry.stage for entry in w.updates.progress[DEVICE].stages]
    assert kinds.index(Stage.AUTHORISED) < kinds.index(Stage.TRANSFERRING)
    assert Stage.VERIFYING not in kinds


async def test_a_power_cut_anywhere_in_the_download_ahead_resumes_and_ends_the_same(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Every operation of the download ahead (each write also torn after its
    first byte and half way) cut in turn: the device boots its accepted image
    meanwhile, the download resumes (or begins again), and the update ends
    installed inside the window, recorded as it runs."""

    def ahead(directory: Path, store: object) -> tuple[World, list[tuple[float, int]]]:
        # Each run's window two hours after it starts (the clock runs on).
        w = in_two_hours(fresh(directory, Layout.AB, store), trio.current_time())  # type: ignore[arg-type]
        # At each VERIFYING report: the time and the operations done so far.
        marks: list[tuple[float, int]] = []
        original = w.updates.record_progress

        def record_progress(
            device: object, campaign: str, stage: str, reason: str, now: float
        ) -> None:
            if stage == Stage.VERIFYING.value:
                # (A device switched on after a cut counts none.)
                done = getattr(w.boot.fs, "operations", [])
                marks.append((now, len(done)))
            original(device, campaign, stage, reason, now)  # type: ignore[arg-type]

        w.updates.record_progress = record_progress  # type: ignore[method-assign,assignment]
        return w, marks

    with open_version_store(tmp_path / "uncut.sqlite") as store:
        w, marks = ahead(tmp_path / "uncut", store)
        operations, _ = await update_with_cuts(w, [], count=True)
        check_end(w, store)
    ((_, downloaded),) = marks
    sizes = {n: op.size for n, op in enumerate(operations)}
    points = [
        p for p in cut_points(operations[:downloaded]) if p.torn_bytes in (0, 1, sizes[p.at] // 2)
    ]
    assert any(op.kind == "write" and op.name.startswith("slot") for op in operations[:downloaded])
    for n, point in enumerate(points):
        run = tmp_path / f"run-{n}"
        with open_version_store(tmp_path / f"run-{n}.sqlite") as store:
            opens = trio.current_time() + OPENS
            w, marks = ahead(run, store)
            _, fell = await update_with_cuts(w, [point])
            assert fell == 1, point
            check_end(w, store)
            # Verified before the window (once, or again after the cut), and
            # switched to inside it.
            assert marks and all(at < opens for at, _ in marks), point
            installing = stages(w, Stage.INSTALLING)
            assert installing and all(entry.at >= opens for entry in installing), point
        shutil.rmtree(run)
        (tmp_path / f"run-{n}.sqlite").unlink()


class CampaignUpdate:
    """The agent's UpdatePort on the campaign store's device interface in the
    same process (what ``dofpy update serve`` answers), at the device's
    POSIX time ``clock()``; its exceptions as the OAP client raises them."""

    def __init__(self, devices: CampaignDevices, clock: Callable[[], float]) -> None:
        self.devices = devices
        self.clock = clock
        self.authorise_calls: list[float] = []

    async def _call(self, method: Callable[..., T], *args: object) -> T:
        try:
            return method(DEVICE, *args, self.clock())
        except provider.NotNow as exc:
            raise NotNow(exc.retry_after) from None
        except provider.Refused as exc:
            raise Refused(exc.reason) from None

    async def poll(self) -> list[Assignment]:
        return await self._call(self.devices.poll)

    async def authorise(self, campaign: str, manifest_digest: bytes) -> Authorisation:
        self.authorise_calls.append(self.clock())
        return await self._call(self.devices.authorise, campaign, manifest_digest)

    async def progress(self, campaign: str, stage: Stage, reason: str) -> None:
        await self._call(self.devices.progress, campaign, stage.value, reason)

    async def accept_booted(self, campaign: str, kind: ImageKind, digest: bytes) -> bool:
        return await self._call(self.devices.accept_booted, campaign, kind.value, digest)

    async def install_report(self, data: bytes, signature: bytes) -> None:
        await self._call(self.devices.install_report, data, signature)


async def test_an_ab_device_downloads_ahead_against_the_campaign_engine(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The agent against the Update service's own decisions (the campaign
    store and engine, the worker stepping every minute): notified at 08:00
    UTC for a 02:00-04:00 window, it downloads and verifies at once (its row
    held for the window, not timed out over 18 hours), is authorised at
    02:00, installs then, and its row follows."""
    spec = make_spec(
        windows=(Window.parse("02:00-04:00"),),
        canary_share=1.0,
        image_sequence=NEW.sequence,
        image_digest=NEW.slot_image().digest,
    )

    def posix() -> float:
        return float(NOW) + trio.current_time()

    opens = next_window_open(spec.windows, float(NOW), 0)
    w = world(tmp_path, Layout.AB)
    switches = watch_switches(w.boot)
    with opened(str(tmp_path / "campaigns.db")) as db:
        worker = CampaignWorker(db, SERVICE_KEY, "update-1", lease=30.0)
        worker.create(spec, now=NOW, actor="operator")
        for signed in full_approvals(spec.terms):
            worker.approve(spec.name, signed, ROOT, now=NOW, actor="operator")
        worker.start(spec.name, ROOT, lambda _s: [(str(DEVICE), 0)], now=NOW, actor="operator")
        public = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        db.write(lambda tx: dk.enrol_key(tx, str(DEVICE), public, now=NOW))
        update = CampaignUpdate(CampaignDevices(worker, retry_after=5.0), posix)
        held: list[DeviceRow] = []

        def row() -> DeviceRow:
            found = db.read(lambda tx: cs.find_device(tx, spec.name, str(DEVICE)))
            assert found is not None
            return found

        async def steps() -> None:
            while True:
                worker.step(posix())
                if posix() < opens and row().state is DeviceState.VERIFYING:
                    held.append(row())
                await trio.sleep(60.0)

        def agent() -> DeviceAgent:
            ports = AgentPorts(update, w.versions, w.images, w.health, w.user)
            return DeviceAgent(
                w.boot, ports, w.directory / "agent", identity=DEVICE, key=KEY,
                device_class="sensor", clock=posix,
                machine=AgentMachine(RetryPolicy(base=1.0, cap=8.0, max_attempts=4)),
            )  # fmt: skip

        def done(agent: DeviceAgent) -> bool:
            return bool(agent.reports_sent) and agent.machine.state is State.IDLE

        async with trio.open_nursery() as nursery:
            nursery.start_soon(steps)
            for _ in range(10):
                last = agent()
                try:
                    await last.run(until=done)
                except Rebooted:
                    w.boot.reboot()
                    continue
                break
            nursery.cancel_scope.cancel()
        booted = w.boot.booted()
        assert (booted.image, booted.accepted) == (NEW.slot_image(), True)
        (report,) = last.reports_sent
        assert (report.outcome, report.running_version) == (InstallOutcome.SUCCEEDED, "2.0")
        # Held (downloaded ahead, verified) through the 18 hours to the window.
        assert held and held[-1].state is DeviceState.VERIFYING
        assert {r.reason for r in held} == {HELD_AHEAD}
        assert posix() >= opens and held[-1].due == opens
        assert all(at >= opens for at in update.authorise_calls)
        assert switches and all(float(NOW) + at >= opens for at, _ in switches)
        log = records(db, spec.name)[str(DEVICE)]
        transferring = log.first([DeviceState.TRANSFERRING])
        installing = log.first([DeviceState.INSTALLING])
        assert transferring is not None and transferring.time < opens
        assert installing is not None and installing.time >= opens
        assert row().state is DeviceState.NORMAL_MODE  # succeeded once the Version service sees it


class FailingImages(NetsimImages):
    """Loses the session in its first ``lost`` transfers; with ``flash_fault``
    the first whole transfer leaves one byte of the slot wrong (after its
    leaf verified), so the whole-image check fails."""

    def __init__(self, lost: int = 0, flash_fault: bool = False) -> None:
        super().__init__()
        self.lost = lost
        self.flash_fault = flash_fault

    async def transfer(
        self, image: ImageToInstall, store: SlotBlockStore, local: LocalLeaves | None = None
    ) -> None:
        if self.lost:
            self.lost -= 1
            self.transfers += 1
            raise DofError("session lost during the transfer")
        await super().transfer(image, store, local)
        if self.flash_fault:
            self.flash_fault = False
            wrong = store.writer.read(100, 1)[0] ^ 0xFF
            store.writer.write(100, bytes((wrong,)))


async def test_a_download_ahead_that_keeps_failing_gives_up_to_idle_and_begins_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Every attempt of the download ahead loses its session (4, the
    machine's attempts): given up, back to IDLE with nothing changed that
    boots and no failure reported; the next poll, still before the window,
    downloads ahead again, and the update ends installed inside the window."""
    w = in_two_hours(world(tmp_path, Layout.AB, images=FailingImages(lost=4)))
    switches = watch_switches(w.boot)
    verified = watch_verified(w)
    await w.run_update()
    assert_succeeded(w)
    assert w.images.transfers == 5
    ((at, slot, _),) = verified
    assert at < OPENS and slot.image == NEW.slot_image()
    assert switches and all(at >= OPENS for at, _ in switches)


async def test_an_image_that_does_not_check_whole_is_fetched_again_ahead(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A byte of flash gone bad after its leaf verified: the whole-image check
    fails, the marks are forgotten, and the download ahead fetches it again
    (a retry, bounded), still before the window."""
    w = in_two_hours(world(tmp_path, Layout.AB, images=FailingImages(flash_fault=True)))
    verified = watch_verified(w)
    await w.run_update()
    assert_succeeded(w)
    assert w.images.transfers == 2
    ((at, slot, _),) = verified
    assert at < OPENS and slot.image == NEW.slot_image()


async def test_restarted_while_waiting_for_the_window_it_asks_once_and_waits(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The wait for the window is not kept across a restart: the agent asks
    at once, and the service's NotNow until the opening is its one retry."""
    w = in_two_hours(world(tmp_path, Layout.AB))
    asked: list[float] = []
    authorise = w.updates.authorise

    def counted(*args: object) -> object:
        asked.append(trio.current_time())
        return authorise(*args)  # type: ignore[arg-type]

    w.updates.authorise = counted  # type: ignore[method-assign,assignment]
    await w.agent().run(until=lambda agent: agent.machine.state is State.AUTHORISE)
    assert not asked and trio.current_time() < OPENS  # downloaded; the wait not begun
    await w.run_update()  # a fresh agent, as after a power cut
    assert_succeeded(w)
    assert len(asked) == 2 and asked[0] < OPENS <= asked[1] < CLOSES
