"""The device agent: runs the table of :mod:`dofpy_services.device.table`
against the bootloader, the services and the user.

Each state's step is one method here that answers an :class:`Input`; the
machine picks the next state. What the agent must remember across a reboot
or a power cut (the state it is in, the assignment, the authorisation, the
failure to report, the image bytes fetched so far) is an
:class:`AgentRecord` written atomically
(:func:`~dofpy_services.device.state_file.write_atomically`) to the agent's
state files after every step and before every reboot, so a freshly started
agent (after :class:`Rebooted` unwound the old one) continues where the
record says; the reboot-steps read :meth:`Bootloader.booted` to learn what
the reboot did. The services and the image source are ports (protocols) so
the agent is the same against the real OAP clients and in-process providers.

Idle, the agent waits its check-in interval, jittered (so a fleet that came
back together does not poll together); an Update port that can be pushed to
(:class:`PushedAssignments`, such as the OAP client) ends that wait the
moment the service pushes an assignment, and the agent checks in and polls
at once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import trio
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dofpy.errors import BadPacket, DofError
from dofpy.trio import lone_exceptions_unwrapped
from dofpy.wire.oid import OID
from dofpy_services.device.agent_ports import (
    AgentPorts,
    ImageToInstall,
    Installed,
    ManifestRefused,
    NotNow,
    Rebooted,
    Refused,
    UserAnswer,
)
from dofpy_services.device.agent_record import (
    MARKS_FILE,
    RECORD_FILE,
    AgentRecord,
    load_record,
    save_record,
)
from dofpy_services.device.boot_records import Slot, SlotState
from dofpy_services.device.bootloader import Bootloader, SlotWriter, WrongImage
from dofpy_services.device.fs import DeviceFs, OsFs
from dofpy_services.device.local_leaves import SlotLeaves
from dofpy_services.device.machine import AgentMachine, Failure
from dofpy_services.device.slot_store import SlotBlockStore, forget_marks
from dofpy_services.device.table import Input, State
from dofpy_services.image.encryption import (
    ContentKey,
    DecryptionError,
    unwrap_content_key_untrusted,
)
from dofpy_services.update.device_interface import (
    MAX_REASON,
    Assignment,
    InstallOutcome,
    InstallReport,
    Stage,
    poll_interval,
    sign_install_report,
)
from dofpy_services.version.interface import ImageKind, VersionReport

__all__ = [
    "MARKS_FILE",
    "RECORD_FILE",
    "AgentPorts",
    "DeviceAgent",
    "ImageToInstall",
    "Installed",
    "ManifestRefused",
    "NotNow",
    "PushedAssignments",
    "Rebooted",
    "Refused",
    "UserAnswer",
]


_TRANSIENT = (DofError, OSError, NotNow, trio.TooSlowError)


@runtime_checkable
class PushedAssignments(Protocol):
    """An Update port that can wake an idle agent: waits until trio time
    ``deadline`` or until the service pushes an assignment (then returns it
    at once; ``[]`` at the deadline). It must not raise for a service that
    pushes nothing: it waits to the deadline instead."""

    async def wait_for_assignment(self, deadline: float) -> list[Assignment]: ...


def _clip_reason(reason: str) -> str:
    """``reason`` within the report's MAX_REASON UTF-8 bytes (it may quote a
    service's or a hook's text), cut at a character boundary."""
    return reason.encode()[:MAX_REASON].decode("utf-8", "ignore")


class DeviceAgent:
    """One device's agent on ``bootloader``; ``identity`` is its enrolled
    identity and ``key`` its Ed25519 key (the install report's signer);
    ``content_key_private`` the X25519 key confidential images' content keys
    are wrapped to (None: the device installs only images in the clear).

    ``state`` holds the agent's files (:data:`RECORD_FILE`, :data:`MARKS_FILE`):
    a :class:`~dofpy_services.device.fs.DeviceFs` (on the simulator, the
    bootloader's own, so power cuts hit them too) or a directory.

    ``clock`` is the device's POSIX clock, which an assignment's window is
    in (trio's clock, which the agent waits on, is monotonic and need not
    be; the tests run both on one MockClock).

    ``progress_interval``: while a transfer runs, its TRANSFERRING progress
    is repeated this often (seconds), so that a long transfer is not taken
    for silence; a campaign's silence timeout must exceed it."""

    def __init__(
        self,
        bootloader: Bootloader,
        ports: AgentPorts,
        state: DeviceFs | str | os.PathLike[str],
        *,
        identity: OID,
        key: ed25519.Ed25519PrivateKey,
        device_class: str,
        content_key_private: X25519PrivateKey | None = None,
        machine: AgentMachine | None = None,
        check_in_interval: float = 3600.0,
        check_in_jitter: float = 0.5,
        clock: Callable[[], float] = time.time,
        progress_interval: float = 600.0,
    ) -> None:
        if not progress_interval > 0:  # also refuses NaN
            raise ValueError("progress_interval must be positive")
        self.boot = bootloader
        self.ports = ports
        self.fs: DeviceFs = OsFs(state) if isinstance(state, (str, os.PathLike)) else state
        self.identity = identity
        self.key = key
        self.device_class = device_class
        self.content_key_private = content_key_private
        self.machine = machine or AgentMachine()
        self.check_in_interval = check_in_interval
        self.check_in_jitter = check_in_jitter
        self.clock = clock
        self.progress_interval = progress_interval
        poll_interval(check_in_interval, check_in_jitter, self.machine.rng)  # checks them
        self.record = self._load()
        self.machine.state = State(self.record.state)
        if self.record.failure is not None:
            state, stage, reason = self.record.failure
            self.machine.failure = Failure(State(state), Stage(stage), reason)
        self._image: ImageToInstall | None = None
        self.reports_sent: list[InstallReport] = []

    # -- persistence -----------------------------------------------------------------------------

    def _load(self) -> AgentRecord:
        return load_record(self.fs)

    def _save(self) -> None:
        failure = self.machine.failure
        self.record.state = self.machine.state.value
        self.record.failure = (
            None if failure is None else [failure.state.value, failure.stage.value, failure.reason]
        )
        save_record(self.fs, self.record)

    @property
    def assignment(self) -> Assignment | None:
        return self.record.current_assignment()

    def _remember(self, assignment: Assignment | None) -> None:
        self.record.remember(assignment)
        # Nothing of the previous update carries over (its report may have
        # been given up on, so REPORT did not end it): not the image verified
        # for its manifest, nor a switch its last reboot left recorded.
        self._image = None
        self.record.switched = False
        if assignment is None:
            self.record.wrapped_key = ""

    # -- the loop --------------------------------------------------------------------------------

    async def run(self, *, until: Callable[[DeviceAgent], bool], max_steps: int = 10_000) -> None:
        """Run steps until ``until(self)`` (checked before each step); at most
        ``max_steps``. :class:`Rebooted` propagates (the caller reboots)."""
        for _ in range(max_steps):
            if until(self):
                return
            await self._wait_until(self.machine.run_at)
            state = self.machine.state
            event, reason, wait = await self._step(state)
            self.machine.feed(event, trio.current_time(), reason=reason, wait=wait)
            self._save()
        raise RuntimeError(f"the agent did not finish in {max_steps} steps")

    async def _wait_until(self, at: float) -> None:
        update = self.ports.update
        if (
            self.machine.state is State.IDLE
            and at > trio.current_time()
            and isinstance(update, PushedAssignments)
        ):
            # A push ends the wait early; the check-in and poll that follow
            # learn the assignment from the service itself.
            await update.wait_for_assignment(at)
            return
        await trio.sleep_until(max(at, trio.current_time()))

    def _idle_wait(self) -> float:
        return poll_interval(self.check_in_interval, self.check_in_jitter, self.machine.rng)

    async def _step(self, state: State) -> tuple[Input, str, float]:
        step = getattr(self, f"_step_{state.value}")
        try:
            result: tuple[Input, str, float] = await step()
        except NotNow as exc:
            return Input.RETRY, "not now", exc.retry_after
        except Refused as exc:
            # Refused where the step does not expect it (AUTHORISE does): a
            # progress, boot or report the service will not take (the
            # campaign no longer lists the device). Retried, bounded like any
            # failure, and giving up leads where the table says: the device
            # is never left mid-update by it.
            return Input.RETRY, exc.reason, 0.0
        except ManifestRefused as exc:
            # Refused again after a reboot, past VERIFY_MANIFEST (it expired
            # during a long transfer, say): never installed; the retries end
            # in GAVE_UP, which leads back to the accepted image.
            return Input.RETRY, exc.reason, 0.0
        except _TRANSIENT as exc:
            return Input.RETRY, f"{type(exc).__name__}: {exc}", 0.0
        return result

    # -- steps -----------------------------------------------------------------------------------

    async def _step_idle(self) -> tuple[Input, str, float]:
        return Input.TICK, "", 0.0

    def _version_report(self) -> VersionReport:
        booted = self.boot.booted()
        return VersionReport(
            self.device_class,
            booted.image.version,
            booted.image.sequence,
            booted.image.digest,
            booted.boot_state(),
            # Room for a new image: the slot it would be written to.
            self.boot.slot_record(self._target_slot()).capacity,
            self.clock(),  # device_clock: POSIX time, not trio's monotonic clock
        )

    async def _step_check_in(self) -> tuple[Input, str, float]:
        await self.ports.version.report(self._version_report())
        return Input.OK, "", 0.0

    async def _step_poll(self) -> tuple[Input, str, float]:
        assignments = await self.ports.update.poll()
        if not assignments:
            return Input.NOTHING, "", self._idle_wait()
        assignment = assignments[0]
        running = self.boot.booted().image
        updater = self.boot.slot_record(Slot.REPROGRAM).image if assignment.updater else None
        current = updater if assignment.updater else running
        if (
            not assignment.rollback
            and current is not None
            and current.sequence >= assignment.sequence
        ):
            # Already has it (or later): nothing to install; the check-in
            # told the Version service so.
            return Input.NOTHING, "", self._idle_wait()
        self._remember(assignment)
        self.record.previous_digest = running.digest.hex()
        installed = self._installed_now()
        if assignment.updater:
            # The manifest is checked against the Reprogram image it replaces.
            installed = (
                Installed() if updater is None else Installed(updater.sequence, updater.digest)
            )
        self.record.installed_sequence = installed.sequence
        self.record.installed_digest = "" if installed.digest is None else installed.digest.hex()
        if assignment.rollback:
            # Back to the image accepted before this one: REVERT boots the
            # slot holding previous_digest (A/B: kept in its slot).
            kept = self.boot.rollback_slot()
            image = None if kept is None else self.boot.slot_record(kept).image
            if image is None:
                # The seed's layout keeps no previous image: the rollback
                # campaign's manifest is the previous image, installed
                # through Reprogram mode like any update.
                return Input.ASSIGNED, "", 0.0
            self.record.previous_digest = self.record.image_digest = image.digest.hex()
            return Input.ROLLBACK, "", 0.0
        return Input.ASSIGNED, "", 0.0

    def _current(self) -> Assignment:
        assignment = self.assignment
        if assignment is None:
            raise RuntimeError("a step that needs the assignment ran without one")
        return assignment

    def _installed_now(self) -> Installed:
        """The Normal image installed now: the running one, or (running the
        Reprogram image) the newest a Normal slot holds."""
        booted = self.boot.booted()
        if booted.slot.is_normal:
            return Installed(booted.image.sequence, booted.image.digest)
        images = [
            entry.image
            for slot in self.boot.slots()
            if slot.is_normal and (entry := self.boot.slot_record(slot)).image is not None
        ]
        if not images:
            return Installed()
        newest = max(images, key=lambda image: image.sequence)
        return Installed(newest.sequence, newest.digest)

    @property
    def installed(self) -> Installed:
        digest = self.record.installed_digest
        return Installed(self.record.installed_sequence, bytes.fromhex(digest) if digest else None)

    async def _image_of(self) -> ImageToInstall:
        if self._image is None:
            self._image = await self.ports.images.verify(self._current(), self.installed)
            self.record.image_digest = self._image.slot_image.digest.hex()
        return self._image

    async def _step_verify_manifest(self) -> tuple[Input, str, float]:
        if self._current().updater and not self.boot.booted().slot.is_normal:
            # The Reprogram slot is written from a running, accepted Normal
            # image (its safety net), never while it is the image running.
            return Input.REFUSED, "the Reprogram image is updated from the Normal image", 0.0
        try:
            await self._image_of()
        except ManifestRefused as exc:
            return Input.REFUSED, exc.reason, 0.0
        return Input.OK, "", 0.0

    def _target_slot(self) -> Slot:
        """The slot the new image goes to: the free Normal slot on A/B, the
        Normal slot (written from Reprogram mode) on the seed's layout; the
        Reprogram slot when the update is the updater's."""
        assignment = self.assignment
        if assignment is not None and assignment.updater:
            return Slot.REPROGRAM
        free = self.boot.free_normal_slot()
        return free if free is not None else Slot.NORMAL

    async def _step_check_space(self) -> tuple[Input, str, float]:
        image = await self._image_of()
        capacity = self.boot.slot_record(self._target_slot()).capacity
        if image.slot_image.size > capacity:
            return Input.NO_SPACE, f"{image.slot_image.size} bytes, the slot holds {capacity}", 0.0
        return Input.OK, "", 0.0

    async def _step_ask_user(self) -> tuple[Input, str, float]:
        assignment = self._current()
        accepted = Input.ACCEPT_AHEAD if await self._downloads_ahead() else Input.ACCEPT
        if not assignment.manual:
            return accepted, "", 0.0
        answer, until = await self.ports.ask_user(assignment)
        if answer is UserAnswer.ACCEPT:
            return accepted, "", 0.0
        if answer is UserAnswer.DEFER:
            await self._progress(Stage.DEFERRED, "")
            return Input.DEFER, "", max(0.0, until - trio.current_time())
        return Input.USER_REFUSED, "the user refused", 0.0

    async def _step_deferred(self) -> tuple[Input, str, float]:
        return Input.TICK, "", 0.0

    async def _downloads_ahead(self) -> bool:
        """Whether the image is downloaded before the window opens: only the
        switch to it is the install on an A/B device (the free Normal slot
        is written while the accepted image runs), so the download need not
        wait for the authorisation. Not on the seed's layout (the download
        is written in Reprogram mode over the old image: it is the install),
        not for the updater's image (written over the Reprogram slot), not a
        rollback, and not a confidential image (its content key comes only
        with the authorisation), nor once the window has opened."""
        assignment = self._current()
        if assignment.updater or assignment.rollback or self.boot.free_normal_slot() is None:
            return False
        if self.clock() >= assignment.window_start:
            return False
        return (await self._image_of()).encryption is None

    async def _step_download_ahead(self) -> tuple[Input, str, float]:
        """TRANSFER and VERIFY_IMAGE's work into the free slot, before the
        window; then a wait until the window opens before AUTHORISE asks (so
        the wait is no NotNow counted against the attempts). TRANSFER and
        VERIFY_IMAGE after the authorisation find the slot valid and go on."""
        fetched = await self._transfer()
        if fetched[0] is not Input.OK:
            return fetched
        checked, reason, _ = await self._check_image()
        if checked is not Input.OK:
            # Its marks are forgotten: fetched again, bounded by the attempts
            # (a fault that keeps corrupting the slot gives up, to IDLE).
            return Input.RETRY, reason, 0.0
        await self._progress(Stage.VERIFYING, "")
        return Input.OK, "", max(0.0, self._current().window_start - self.clock())

    async def _progress(self, stage: Stage, reason: str) -> None:
        await self.ports.update.progress(self._current().campaign, stage, reason)

    async def _step_authorise(self) -> tuple[Input, str, float]:
        assignment = self._current()
        try:
            authorisation = await self.ports.update.authorise(
                assignment.campaign, assignment.manifest_digest
            )
        except Refused as exc:
            return Input.REFUSED, exc.reason, 0.0
        image = await self._image_of()
        if image.encryption is not None:
            # The content key comes with the authorisation: checked here,
            # before anything changes, that it opens with this device's key.
            self.record.wrapped_key = authorisation.wrapped_key.hex()
            try:
                key = self._content_key(image)
            except (DecryptionError, BadPacket) as exc:
                self.record.wrapped_key = ""
                return Input.REFUSED, f"the content key: {exc}", 0.0
            if key is None or key.iv != image.encryption.iv:
                self.record.wrapped_key = ""
                return Input.REFUSED, "the content key is not the manifest's", 0.0
        await self._progress(Stage.AUTHORISED, "")
        return (Input.UPDATER if assignment.updater else Input.OK), "", 0.0

    def _reboot(self) -> None:
        """Remember that the boot target was switched, then hand the reboot to
        the platform (the state stays: the step runs again after the boot)."""
        self.record.switched = True
        self._save()
        raise Rebooted()

    async def _step_enter_reprogram(self) -> tuple[Input, str, float]:
        booted = self.boot.booted()
        if booted.slot is Slot.REPROGRAM:
            self.record.switched = False
            return Input.BOOTED_REPROGRAM, "", 0.0
        if self.boot.free_normal_slot() is not None:
            # A/B: the new image goes to the free slot while Normal runs; the
            # running, accepted image is the safety net, as Reprogram is on
            # the seed's layout, so there is nothing to switch.
            return Input.BOOTED_REPROGRAM, "", 0.0
        if self.record.switched:
            # Switched and rebooted, and the bootloader fell back to Normal:
            # nothing changed; try again (bounded by the machine's attempts).
            self.record.switched = False
            return Input.RETRY, "the Reprogram image did not come up", 0.0
        self.boot.set_boot_target(Slot.REPROGRAM)
        self._reboot()
        raise AssertionError("unreachable")

    async def _step_confirm_reprogram(self) -> tuple[Input, str, float]:
        booted = self.boot.booted()
        if booted.slot is Slot.REPROGRAM and not booted.accepted:
            accepted = await self.ports.update.accept_booted(
                self._current().campaign, ImageKind.REPROGRAM, booted.image.digest
            )
            if not accepted:
                return Input.NOT_ACCEPTED, "the service did not accept the Reprogram image", 0.0
            self.boot.accept()
        await self._progress(Stage.REPROGRAM_MODE, "")
        return Input.OK, "", 0.0

    async def _step_transfer(self) -> tuple[Input, str, float]:
        return await self._transfer()

    async def _transfer(self) -> tuple[Input, str, float]:
        """The image into the target slot (TRANSFER's step, and DOWNLOAD_AHEAD's first half)."""
        image = await self._image_of()
        slot = self._target_slot()
        entry = self.boot.slot_record(slot)
        if entry.state is SlotState.VALID and entry.image == image.slot_image:
            return Input.OK, "", 0.0  # written and recorded before a reboot
        await self._progress(Stage.TRANSFERRING, "")
        store = self._slot_store(self.boot.open_slot(slot), image)
        await self._fetch(image, store, self._local_leaves(slot, image))
        if not store.complete:
            return Input.RETRY, "the transfer ended before the image was whole", 0.0
        return Input.OK, "", 0.0

    async def _fetch(
        self, image: ImageToInstall, store: SlotBlockStore, local: SlotLeaves | None
    ) -> None:
        """The image port's transfer into ``store``, then the store closed;
        however the transfer ends (whole, or the session lost), the bytes it
        verified that came over the network (not resumed from the marks, not
        copied from ``local``) are added to the record's count, which the
        step's record write keeps."""
        resumed = store.verified_bytes
        try:
            await self._reporting_progress(self.ports.images.transfer(image, store, local))
        finally:
            copied = 0 if local is None else local.bytes_copied
            self.record.bytes_fetched += store.verified_bytes - resumed - copied
            store.close()

    async def _reporting_progress(self, transfer: Awaitable[None]) -> None:
        """Await ``transfer``, repeating the TRANSFERRING progress every
        :attr:`progress_interval` seconds meanwhile: the campaign's silence
        timeout counts from a device's last report, and a transfer that is
        slow (a congested link, a busy relay) is not a device gone silent. A
        repeat that fails is skipped: the transfer is what matters, and the
        step's next call to the service tells it the rest."""

        async def keep_reporting() -> None:
            while True:
                await trio.sleep(self.progress_interval)
                with contextlib.suppress(*_TRANSIENT, Refused):
                    await self._progress(Stage.TRANSFERRING, "")

        # The repeats raise nothing of their own: the transfer's exception
        # leaves as itself, as the step (and a power cut's handler) expects it.
        with lone_exceptions_unwrapped():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_reporting)
                await transfer
                nursery.cancel_scope.cancel()

    def _local_leaves(
        self, target: Slot, image: ImageToInstall, *, in_place: bool = False
    ) -> SlotLeaves | None:
        """The adaptive transfer's source: the running Normal image (A/B), or
        on the seed's layout, in Reprogram mode, the Normal slot itself --
        the old image until the new one overwrites it, each copy verified
        (``in_place``: the target slot itself, as for the updater's). None for
        a confidential image: its leaf hashes are of ciphertext under a new
        key, which no held bytes match."""
        if image.encryption is not None:
            return None
        booted = self.boot.booted()
        if booted.slot.is_normal and not in_place:
            source, size = booted.slot, booted.image.size
        else:
            source, size = target, min(self.boot.slot_record(target).capacity, image.transfer.size)
        leaf_size = image.transfer.leaf_size
        return SlotLeaves(
            lambda offset, length: self.boot.read_slot(source, offset, length), size, leaf_size
        )

    def _content_key(self, image: ImageToInstall) -> ContentKey | None:
        """The confidential image's content key (None for an image in the
        clear); DecryptionError or BadPacket when it does not unwrap."""
        if image.encryption is None:
            return None
        if self.content_key_private is None:
            raise DecryptionError("this device has no key to open confidential images with")
        if not self.record.wrapped_key:
            raise DecryptionError("the authorisation carried no content key")
        return unwrap_content_key_untrusted(
            bytes.fromhex(self.record.wrapped_key), self.content_key_private
        )

    def _slot_store(self, writer: SlotWriter, image: ImageToInstall) -> SlotBlockStore:
        return SlotBlockStore(
            writer, image.transfer, MARKS_FILE, fs=self.fs, content_key=self._content_key(image)
        )

    async def _step_verify_image(self) -> tuple[Input, str, float]:
        return await self._check_image()

    async def _check_image(self) -> tuple[Input, str, float]:
        """The written image checked whole (VERIFY_IMAGE's step, and
        DOWNLOAD_AHEAD's second half)."""
        image = await self._image_of()
        slot = self._target_slot()
        entry = self.boot.slot_record(slot)
        if not (entry.state is SlotState.VALID and entry.image == image.slot_image):
            try:
                self.boot.open_slot(slot).finish(image.slot_image)
            except WrongImage as exc:
                forget_marks(self.fs, MARKS_FILE)
                if image.encryption is not None:
                    # Every ciphertext leaf verified, yet the plaintext is not
                    # the signed one: the content key is another image's.
                    # Fetching again cannot help; the slot never became valid.
                    return Input.REFUSED, f"the decrypted image is not the signed one: {exc}", 0.0
                return Input.CORRUPT, str(exc), 0.0
        forget_marks(self.fs, MARKS_FILE)
        return Input.OK, "", 0.0

    async def _step_enter_normal(self) -> tuple[Input, str, float]:
        image = await self._image_of()
        booted = self.boot.booted()
        if booted.slot.is_normal and booted.image == image.slot_image:
            self.record.switched = False
            return Input.BOOTED_NORMAL, "", 0.0
        if self.record.switched:
            # Switched and rebooted, and the bootloader fell back: retry.
            self.record.switched = False
            return Input.RETRY, "the new image did not boot", 0.0
        slot = next(
            s
            for s in self.boot.slots()
            if s.is_normal and self.boot.slot_record(s).image == image.slot_image
        )
        await self._progress(Stage.INSTALLING, "")
        self.boot.set_boot_target(slot)
        self._reboot()
        raise AssertionError("unreachable")

    async def _step_health_check(self) -> tuple[Input, str, float]:
        problem = await self.ports.health_check()
        if problem:
            return Input.HEALTH_FAILED, problem, 0.0
        return Input.OK, "", 0.0

    async def _step_confirm_normal(self) -> tuple[Input, str, float]:
        booted = self.boot.booted()
        if not booted.accepted:
            accepted = await self.ports.update.accept_booted(
                self._current().campaign, ImageKind.NORMAL, booted.image.digest
            )
            if not accepted:
                return Input.NOT_ACCEPTED, "the service did not accept the booted image", 0.0
            self.boot.accept()
        return Input.OK, "", 0.0

    async def _step_revert(self) -> tuple[Input, str, float]:
        booted = self.boot.booted()
        previous = bytes.fromhex(self.record.previous_digest)
        if booted.slot.is_normal and booted.image.digest == previous and booted.accepted:
            return Input.BOOTED_NORMAL, "", 0.0
        for slot in self.boot.slots():
            entry = self.boot.slot_record(slot)
            if slot.is_normal and entry.image is not None and entry.image.digest == previous:
                if booted.slot is slot:
                    self.boot.accept()
                    return Input.BOOTED_NORMAL, "", 0.0
                self.boot.set_boot_target(slot)
                self._reboot()
        # The previous image is gone (the seed's layout): back to the accepted
        # Reprogram image, which reports and waits for what to install.
        if booted.slot is Slot.REPROGRAM:
            self.record.switched = False
            if not booted.accepted:
                self.boot.accept()
            return Input.BOOTED_REPROGRAM, "", 0.0
        self.boot.set_boot_target(Slot.REPROGRAM)
        self._reboot()
        raise AssertionError("unreachable")

    # -- updating the updater (the Reprogram image; Normal is the safety net) --------------------

    async def _step_transfer_updater(self) -> tuple[Input, str, float]:
        image = await self._image_of()
        entry = self.boot.slot_record(Slot.REPROGRAM)
        if entry.state is SlotState.VALID and entry.image == image.slot_image:
            return Input.OK, "", 0.0  # written and checked before a reboot
        await self._progress(Stage.TRANSFERRING, "")
        writer = self.boot.open_slot(Slot.REPROGRAM)
        store = self._slot_store(writer, image)
        await self._fetch(image, store, self._local_leaves(Slot.REPROGRAM, image, in_place=True))
        if not store.complete:
            return Input.RETRY, "the transfer ended before the image was whole", 0.0
        try:
            writer.finish(image.slot_image)
        except WrongImage as exc:
            forget_marks(self.fs, MARKS_FILE)
            return Input.RETRY, str(exc), 0.0
        forget_marks(self.fs, MARKS_FILE)
        return Input.OK, "", 0.0

    async def _step_try_updater(self) -> tuple[Input, str, float]:
        image = await self._image_of()
        booted = self.boot.booted()
        if booted.slot is Slot.REPROGRAM and booted.image == image.slot_image:
            self.record.switched = False
            return Input.BOOTED_REPROGRAM, "", 0.0
        if self.record.switched:
            # Tried and the bootloader fell back to the accepted Normal image.
            self.record.switched = False
            return Input.HEALTH_FAILED, "the new Reprogram image did not boot", 0.0
        await self._progress(Stage.INSTALLING, "")
        self.boot.set_boot_target(Slot.REPROGRAM)
        self._reboot()
        raise AssertionError("unreachable")

    async def _step_confirm_updater(self) -> tuple[Input, str, float]:
        booted = self.boot.booted()
        if booted.slot is Slot.REPROGRAM and not booted.accepted:
            problem = await self.ports.health_check()
            if problem:
                return Input.HEALTH_FAILED, problem, 0.0
            accepted = await self.ports.update.accept_booted(
                self._current().campaign, ImageKind.REPROGRAM, booted.image.digest
            )
            if not accepted:
                return Input.NOT_ACCEPTED, "the service did not accept the Reprogram image", 0.0
            self.boot.accept()
        await self._progress(Stage.REPROGRAM_MODE, "")
        return Input.OK, "", 0.0

    async def _step_leave_updater(self) -> tuple[Input, str, float]:
        booted = self.boot.booted()
        previous = bytes.fromhex(self.record.previous_digest)
        if booted.slot.is_normal:
            self.record.switched = False
            if not booted.accepted:
                self.boot.accept()
            return Input.BOOTED_NORMAL, "", 0.0
        if self.record.switched:
            self.record.switched = False
            return Input.RETRY, "the Normal image did not come back", 0.0
        slot = next(
            (
                s
                for s in self.boot.slots()
                if s.is_normal
                and (image := self.boot.slot_record(s).image) is not None
                and image.digest == previous
            ),
            Slot.NORMAL,
        )
        self.boot.set_boot_target(slot)
        self._reboot()
        raise AssertionError("unreachable")

    async def _step_report(self) -> tuple[Input, str, float]:
        assignment = self._current()
        booted = self.boot.booted()
        failure = self.machine.failure
        intended = bytes.fromhex(self.record.image_digest)
        if failure is None:
            outcome = (
                InstallOutcome.ROLLED_BACK if assignment.rollback else InstallOutcome.SUCCEEDED
            )
        elif failure.reason == "the user refused":
            outcome = InstallOutcome.REFUSED_BY_USER
        else:
            outcome = InstallOutcome.FAILED
        report = InstallReport(
            self.identity,
            assignment.campaign,
            intended,
            assignment.version,
            booted.image.digest,
            booted.image.version,
            outcome,
            self.clock(),  # when, in POSIX time
            None if failure is None else failure.stage,
            "" if failure is None else _clip_reason(failure.reason),
            bytes_fetched=self.record.bytes_fetched,
        )
        data, signature = sign_install_report(self.key, report)
        await self.ports.update.install_report(data, signature)
        self.reports_sent.append(report)
        self._remember(None)
        self._image = None
        return Input.OK, "", 0.0
