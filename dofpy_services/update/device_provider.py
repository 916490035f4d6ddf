"""The provider of the Update service's device interface.

This is the device interface on an in-memory plan (issue 14), for tests and
tools without a campaign store: a caller writes :class:`PlannedUpdate`
entries into its :class:`DevicePlan` and reads back what each device did
from :class:`DeviceProgress`. ``dofpy update serve`` answers the same
interface from its campaign store and engine instead
(:mod:`~dofpy_services.update.campaign_devices`, which shares this module's
:class:`NotNow` and :class:`Refused`). Its decisions:

- only the assigned device, in a secure session, may ask about its campaign
  (the identity is the session's; no argument names a device);
- ``authorise`` answers ``NotNow`` before the planned time or outside the
  window, ``Refused`` for a manifest other than the assigned one;
- ``accept_booted`` accepts the Reprogram image during an update and a
  Normal image only when it is the assigned image (or, after a revert or a
  rollback, the image the device ran before);
- ``install_report`` verifies the device's signature with the key registered
  for the device when it was enrolled (:class:`EnrolledKeys`, the Update
  service's device table) through the pure :func:`verify_install_report`;
- ``watch`` (given :class:`~dofpy_services.update.notify.AssignmentPushes`):
  the asking device's notice object, where :meth:`UpdateDeviceProvider.push`
  sends its assignment the moment the plan gives it one.

Every stage and failure reason is recorded per device, with its time, so a
device that goes silent shows the last stage it reached.

:class:`DeviceUpdates` is the sans-IO core (explicit identity and ``now``);
:class:`UpdateDeviceProvider` is its OAP face for :meth:`DofNode.provide`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dofpy.oap.errors import ProviderException
from dofpy.trio import Provider, current_request
from dofpy.wire.oid import OID
from dofpy_services.update.device_interface import (
    UPDATE_DEVICE,
    Assignment,
    Authorisation,
    InstallReport,
    InstallReportInvalid,
    Stage,
    verify_install_report,
)
from dofpy_services.update.notify import AssignmentPushes
from dofpy_services.version.interface import ImageKind

__all__ = [
    "DevicePlan",
    "DeviceProgress",
    "DeviceUpdates",
    "EnrolledKeys",
    "NotNow",
    "PlannedUpdate",
    "Refused",
    "UpdateDeviceProvider",
]


class NotNow(Exception):
    """Ask again after ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"not now: retry after {retry_after} s")
        self.retry_after = retry_after


class Refused(Exception):
    """Final for this campaign; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class PlannedUpdate:
    """What the campaign decided for one device.

    ``image_digest``: the root digest of the assigned image (what the device
    reports booting in step D); ``previous_digest``: the image it runs now (a
    revert or a rollback boots it again); ``authorise_from``: no authorisation
    before this time; ``authorisation_lifetime``: seconds an authorisation
    lasts; ``wrapped_key``: the content key wrapped to the device's class, for
    an encrypted image."""

    assignment: Assignment
    image_digest: bytes
    previous_digest: bytes = b""
    authorise_from: float = 0.0
    authorisation_lifetime: float = 3600.0
    wrapped_key: bytes = b""


@dataclass
class DevicePlan:
    """The assignments the Update service has made, by device identity."""

    updates: dict[OID, PlannedUpdate] = field(default_factory=dict)

    def assign(self, device: OID, update: PlannedUpdate) -> None:
        self.updates[device] = update

    def withdraw(self, device: OID) -> None:
        self.updates.pop(device, None)


@dataclass
class EnrolledKeys:
    """The Update service's device table's key column: each device's raw
    Ed25519 public key (32 bytes), registered when the device is enrolled. An
    install report from a device without a key is refused."""

    keys: dict[OID, bytes] = field(default_factory=dict)

    def enrol(self, device: OID, public_key: bytes) -> None:
        if len(public_key) != 32:
            raise ValueError("an Ed25519 public key has 32 bytes")
        self.keys[device] = public_key


@dataclass(frozen=True)
class StageEntry:
    at: float
    campaign: str
    stage: Stage
    reason: str


@dataclass(frozen=True)
class BootEntry:
    at: float
    campaign: str
    image_kind: ImageKind
    image_digest: bytes
    accepted: bool


@dataclass
class DeviceProgress:
    """What one device has told the service: its stages (failures with their
    reason), the boots it asked to have accepted, and its verified install
    report."""

    stages: list[StageEntry] = field(default_factory=list)
    boots: list[BootEntry] = field(default_factory=list)
    report: InstallReport | None = None
    refused_reports: list[str] = field(default_factory=list)

    @property
    def last_stage(self) -> Stage | None:
        return self.stages[-1].stage if self.stages else None

    @property
    def failures(self) -> list[StageEntry]:
        return [entry for entry in self.stages if entry.reason]


class DeviceUpdates:
    """The decisions of the device interface (sans-IO: explicit identity and now)."""

    def __init__(self, plan: DevicePlan, keys: EnrolledKeys, *, retry_after: float = 30.0) -> None:
        self.plan = plan
        self.keys = keys
        self.retry_after = retry_after
        self.progress: dict[OID, DeviceProgress] = {}

    def _progress(self, device: OID) -> DeviceProgress:
        return self.progress.setdefault(device, DeviceProgress())

    def _planned(self, device: OID, campaign: str) -> PlannedUpdate:
        planned = self.plan.updates.get(device)
        if planned is None or planned.assignment.campaign != campaign:
            raise Refused(f"this device is not in campaign {campaign!r}")
        return planned

    def poll(self, device: OID, now: float) -> list[Assignment]:
        planned = self.plan.updates.get(device)
        if planned is None:
            return []
        done = self.progress.get(device)
        report = None if done is None else done.report
        if report is not None and report.campaign == planned.assignment.campaign:
            return []  # reported: the campaign decides whether it tries again
        return [planned.assignment]

    def authorise(
        self, device: OID, campaign: str, manifest_digest: bytes, now: float
    ) -> Authorisation:
        planned = self._planned(device, campaign)
        assignment = planned.assignment
        if manifest_digest != assignment.manifest_digest:
            raise Refused("the manifest is not the campaign's")
        if now > assignment.window_end:
            raise Refused("the campaign's window has closed")
        start = max(planned.authorise_from, assignment.window_start)
        if now < start:
            raise NotNow(start - now)
        not_after = min(now + planned.authorisation_lifetime, assignment.window_end)
        self._progress(device).stages.append(StageEntry(now, campaign, Stage.AUTHORISED, ""))
        return Authorisation(campaign, manifest_digest, not_after, planned.wrapped_key)

    def record_progress(
        self, device: OID, campaign: str, stage_name: str, reason: str, now: float
    ) -> None:
        self._planned(device, campaign)
        try:
            stage = Stage(stage_name)
        except ValueError:
            raise Refused(f"no such stage {stage_name!r}") from None
        self._progress(device).stages.append(StageEntry(now, campaign, stage, reason[:200]))

    def accept_booted(
        self, device: OID, campaign: str, kind_name: str, image_digest: bytes, now: float
    ) -> bool:
        planned = self._planned(device, campaign)
        try:
            kind = ImageKind(kind_name)
        except ValueError:
            raise Refused(f"no such image kind {kind_name!r}") from None
        if kind is ImageKind.REPROGRAM:
            # Step B (and an updater update's new Reprogram image): the
            # Reprogram image is the device's own; the service accepts the
            # one it booted unless this campaign installs a Reprogram image,
            # which must then be the assigned one.
            accepted = not planned.assignment.updater or image_digest in (
                planned.image_digest,
                planned.previous_digest,
            )
        else:
            accepted = image_digest == planned.image_digest or (
                bool(planned.previous_digest) and image_digest == planned.previous_digest
            )
        self._progress(device).boots.append(BootEntry(now, campaign, kind, image_digest, accepted))
        return accepted

    def install_report(
        self, device: OID, data: bytes, signature: bytes, now: float
    ) -> InstallReport:
        progress = self._progress(device)
        key = self.keys.keys.get(device)
        if key is None:
            progress.refused_reports.append("no key enrolled for this device")
            raise Refused("no key is enrolled for this device")
        try:
            report = verify_install_report(key, device, data, signature)
        except InstallReportInvalid as exc:
            progress.refused_reports.append(exc.reason)
            raise Refused(exc.reason) from None
        self._planned(device, report.campaign)
        progress.report = report
        return report


class UpdateDeviceProvider(Provider):
    """UPDATE_DEVICE over OAP: who asks is the session's identity; a request
    in the clear is refused. ``clock()`` is the service's clock. With
    ``pushes``, ``watch`` hands the device its notice object and
    :meth:`push` tells a watching device its assignment at once; without,
    ``watch`` is Refused (the device polls)."""

    def __init__(
        self,
        updates: DeviceUpdates,
        clock: Callable[[], float],
        pushes: AssignmentPushes | None = None,
    ) -> None:
        self.updates = updates
        self._clock = clock
        self._pushes = pushes

    def push(self, device: OID) -> int:
        """Push ``device`` what its poll would answer now (after the plan
        changed); how many Change commands left (0: it does not watch here,
        or has nothing to do)."""
        if self._pushes is None:
            return 0
        found = self._pushes.objects.watched(str(device))
        assignments = self.updates.poll(device, self._clock())
        if found is None or not assignments:
            return 0
        return self._pushes.push(device, found[1], assignments)

    def watch(self) -> bytes:
        device = self._device()
        if self._pushes is None:
            raise self._exception(Refused("no pushes here: poll"))
        return self._pushes.watch(device).encode()

    @staticmethod
    def _device() -> OID:
        identity = current_request().identity
        if identity is None:
            raise ProviderException(
                UPDATE_DEVICE.exception("Refused"), ["the device interface needs a secure session"]
            )
        return identity

    @staticmethod
    def _exception(exc: NotNow | Refused) -> ProviderException:
        if isinstance(exc, NotNow):
            return ProviderException(UPDATE_DEVICE.exception("NotNow"), [exc.retry_after])
        return ProviderException(UPDATE_DEVICE.exception("Refused"), [exc.reason])

    def poll(self) -> list[Assignment]:
        return self.updates.poll(self._device(), self._clock())

    def authorise(self, campaign: str, manifest_digest: bytes) -> Authorisation:
        try:
            return self.updates.authorise(self._device(), campaign, manifest_digest, self._clock())
        except (NotNow, Refused) as exc:
            raise self._exception(exc) from None

    def progress(self, campaign: str, stage: str, reason: str) -> None:
        try:
            self.updates.record_progress(self._device(), campaign, stage, reason, self._clock())
        except Refused as exc:
            raise self._exception(exc) from None

    def accept_booted(self, campaign: str, image_kind: str, image_digest: bytes) -> bool:
        try:
            return self.updates.accept_booted(
                self._device(), campaign, image_kind, image_digest, self._clock()
            )
        except Refused as exc:
            raise self._exception(exc) from None

    def install_report(self, report: bytes, signature: bytes) -> None:
        try:
            self.updates.install_report(self._device(), report, signature, self._clock())
        except Refused as exc:
            raise self._exception(exc) from None
