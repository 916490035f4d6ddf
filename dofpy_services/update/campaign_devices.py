"""The Update service's device interface backed by the campaign store: what
``dofpy update serve`` answers a device asking in its secure session
(UPDATE_DEVICE, docs/protocol.md §11), decided by the campaign engine.

- ``poll``: the device's assignment in the first active campaign whose row
  for it is started (NOTIFIED and on: the engine notified it, in its wave,
  under the devices-per-minute cap); a check-in for the engine (a silent
  device's deadline moves on). Nothing for a scheduled, deferred or settled
  device.
- ``authorise``: the engine's permission to install, given **only when the
  install may start**: the campaign runs (a device authorised before a
  pause, a stop or a halt finishes; one not yet authorised waits, NotNow,
  while paused or halted, and a stop cancels it: Refused),
  the approved time frame has begun, and the device's local time is inside
  a maintenance window (NotNow until the next one opens; the device's silence
  deadline then counts from that opening, or the time frame's start, as it
  was told to wait until then). On the seed's
  layout the download happens in Reprogram mode, so it is the install:
  authorising at the window's start holds both. An A/B device may download
  ahead (its row TRANSFERRING or VERIFYING, marked ahead by the engine):
  not yet authorised, it waits while paused or halted as a NOTIFIED one
  does. The device's row moves to AUTHORISED (one that downloaded ahead
  keeps its stage, its mark cleared). Cancelled, settled or past the
  deadline: Refused.
- ``progress``: each stage moves the row on (stale or repeated stages change
  nothing); a stage with a reason is a failure (the engine's retry policy).
- ``accept_booted``: the Reprogram image is accepted (no campaign here
  updates the updater); a Normal image only when it is the campaign's image
  (``CampaignSpec.image_digest``), which moves the row to NORMAL_MODE.
  Success is **not** decided here: only the Version service seeing the new
  version booted and accepted counts a device succeeded.
- ``install_report``: verified against the report key enrolled for the
  device (:mod:`~dofpy_services.update.device_keys`), kept as sent; a failed
  outcome fails the row with its stage and reason, a user's refusal cancels
  it; a success report changes no state. Whatever the outcome, the report's
  ``bytes_fetched`` raises the row's ``bytes_served`` (the largest reported
  wins: a repeated report changes nothing), even on a settled row.
- ``watch``: the asking device's notice object
  (:mod:`~dofpy_services.update.notify`), where the daemon pushes what
  ``poll`` would answer (:meth:`CampaignDevices.current`) the moment the
  engine notifies the device.

:class:`CampaignDevices` is blocking (the store): the daemon's
:class:`CampaignDeviceProvider` calls it in a worker thread, never on the
trio loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

from dofpy.oap.core import IncomingRequest
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.trio import Provider, current_request
from dofpy.wire.oid import OID
from dofpy_services.daemon.service import ServiceContext
from dofpy_services.update import campaign_store as cs
from dofpy_services.update import device_keys as dk
from dofpy_services.update.campaign import DAY, CampaignSpec, CampaignState, RunPolicy, in_window
from dofpy_services.update.device_interface import (
    UPDATE_DEVICE,
    Assignment,
    Authorisation,
    InstallOutcome,
    InstallReportInvalid,
    verify_install_report,
)
from dofpy_services.update.device_interface import Stage as DeviceStage
from dofpy_services.update.device_provider import NotNow, Refused
from dofpy_services.update.engine import (
    PROGRESS_ORDER,
    CampaignRow,
    DeviceEvent,
    DeviceRow,
    EventKind,
)
from dofpy_services.update.engine import authorised as engine_authorised
from dofpy_services.update.notify import AssignmentPushes
from dofpy_services.update.tracking import TERMINAL_STATES, DeviceState, Stage
from dofpy_services.update.worker import CampaignWorker
from dofpy_services.version.interface import ImageKind

__all__ = ["CampaignDeviceProvider", "CampaignDevices", "window_bounds"]

_STATE_OF_STAGE = {
    DeviceStage.AUTHORISED: DeviceState.AUTHORISED,
    DeviceStage.REPROGRAM_MODE: DeviceState.REPROGRAM_MODE,
    DeviceStage.TRANSFERRING: DeviceState.TRANSFERRING,
    DeviceStage.VERIFYING: DeviceState.VERIFYING,
    DeviceStage.INSTALLING: DeviceState.INSTALLING,
    DeviceStage.NORMAL_MODE: DeviceState.NORMAL_MODE,
    DeviceStage.SUCCEEDED: DeviceState.NORMAL_MODE,
}
_FAILED_STAGE = {
    DeviceStage.NOTIFIED: Stage.NOTIFY,
    DeviceStage.AUTHORISED: Stage.AUTHORISE,
    DeviceStage.REPROGRAM_MODE: Stage.REPROGRAM_MODE,
    DeviceStage.TRANSFERRING: Stage.TRANSFER,
    DeviceStage.VERIFYING: Stage.VERIFY,
    DeviceStage.INSTALLING: Stage.INSTALL,
    DeviceStage.NORMAL_MODE: Stage.BOOT,
    DeviceStage.SUCCEEDED: Stage.BOOT,
    DeviceStage.ROLLED_BACK: Stage.BOOT,
    DeviceStage.DEFERRED: Stage.AUTHORISE,
    DeviceStage.REFUSED_BY_USER: Stage.AUTHORISE,
}
_STARTED = frozenset(PROGRESS_ORDER)
_FINISHING = frozenset({CampaignState.PAUSED, CampaignState.STOPPING, CampaignState.HALTED})
"""Campaign states in which devices authorised already finish and others wait."""


def window_bounds(spec: CampaignSpec, now: float, utc_offset: int) -> tuple[float, float]:
    """The POSIX bounds of the maintenance window a device may install in:
    the one it is in at ``now``, else the next; no windows: the time frame.
    Both are within the campaign's time frame."""
    start, deadline = float(spec.terms.start), float(spec.terms.deadline)
    if not spec.windows:
        return start, deadline
    at = max(now, start)
    # Openings counted from the device's local midnight (whole seconds, as
    # window starts and offsets are), the day before, that day and the next.
    midnight = math.floor((at + utc_offset) / DAY) * DAY - utc_offset
    best: tuple[float, float] | None = None
    for window in spec.windows:
        length = float(window.end - window.start)
        if length <= 0:
            length += DAY  # wraps past midnight
        for day in (-1, 0, 1):
            opens = midnight + day * DAY + window.start
            closes = opens + length
            if closes <= at:
                continue
            if best is None or opens < best[0]:
                best = (opens, closes)
    assert best is not None
    return max(best[0], start), min(best[1], deadline)


class CampaignDevices:
    """The device interface's decisions on the campaign store (blocking)."""

    def __init__(self, worker: CampaignWorker, *, retry_after: float = 30.0) -> None:
        self.worker = worker
        self.db = worker.db
        self.retry_after = retry_after

    # -- reads ----------------------------------------------------------------------------

    def _active(self, device: str) -> tuple[CampaignRow, DeviceRow] | None:
        """The device's first started row in a campaign that still moves."""

        def read(tx: Any) -> tuple[CampaignRow, DeviceRow] | None:
            for name, state in cs.device_campaigns(tx, device):
                if state not in _STARTED:
                    continue
                campaign = cs.load_campaign(tx, name)
                if campaign.state is CampaignState.CREATED:
                    continue
                row = cs.find_device(tx, name, device)
                if row is not None:
                    return campaign, row
            return None

        return self.db.read(read)

    def _row(self, device: str, campaign: str) -> tuple[CampaignRow, DeviceRow]:
        def read(tx: Any) -> tuple[CampaignRow, DeviceRow] | None:
            row = cs.find_device(tx, campaign, device)
            return None if row is None else (cs.load_campaign(tx, campaign), row)

        found = self.db.read(read)
        if found is None:
            raise Refused(f"this device is not in campaign {campaign!r}")
        return found

    def _event(self, campaign: str, device: str, event: DeviceEvent, now: float) -> bool:
        """Hand the device's own ``event`` to the engine, its lease moving to
        this process if another holds it (the device talks to this one);
        False when its row is gone (the device asks again)."""
        return self.worker.handle(campaign, device, event, now=now, from_device=True) is not None

    # -- the interface --------------------------------------------------------------------

    def poll(self, identity: OID, now: float) -> list[Assignment]:
        device = str(identity)
        found = self._active(device)
        if found is None:
            return []
        campaign, row = found
        self._event(campaign.spec.name, device, DeviceEvent(EventKind.CHECK_IN), now)
        return [_assignment(campaign.spec, row, now)]

    def current(self, identity: OID, now: float) -> list[Assignment]:
        """What ``poll`` would answer ``identity`` now, without the check-in
        (a push tells the device; only the device asking counts as heard)."""
        found = self._active(str(identity))
        if found is None:
            return []
        campaign, row = found
        return [_assignment(campaign.spec, row, now)]

    def authorise(
        self, identity: OID, campaign: str, manifest_digest: bytes, now: float
    ) -> Authorisation:
        device = str(identity)
        found, row = self._row(device, campaign)
        spec = found.spec
        if manifest_digest != spec.terms.manifest_digest:
            raise Refused("the manifest is not the campaign's")
        if row.state in TERMINAL_STATES or found.state is CampaignState.CANCELLED:
            raise Refused(f"the device's update is {row.state.value}")
        if now >= spec.terms.deadline:
            raise Refused("the campaign's deadline has passed")
        if row.state not in _STARTED:
            raise NotNow(self.retry_after)  # scheduled or deferred: not its turn yet
        # One that downloaded ahead of its window has not been authorised:
        # held while paused or halted, as a NOTIFIED device.
        authorised = engine_authorised(row)
        if not authorised and found.state in _FINISHING:
            raise NotNow(self.retry_after)
        if now < spec.terms.start:
            self._told_to_wait(campaign, device, spec.terms.start, now)
            raise NotNow(spec.terms.start - now)
        if not in_window(spec.windows, now, row.utc_offset):
            opens, _ = window_bounds(spec, now, row.utc_offset)
            self._told_to_wait(campaign, device, opens, now)
            raise NotNow(max(1.0, opens - now))
        if not authorised:
            event = DeviceEvent(EventKind.PROGRESS, state=DeviceState.AUTHORISED)
            if not self._event(campaign, device, event, now):
                raise NotNow(self.retry_after)
        _, end = window_bounds(spec, now, row.utc_offset)
        not_after = min(now + spec.silence_timeout, max(end, now))
        return Authorisation(campaign, manifest_digest, not_after)

    def _told_to_wait(self, campaign: str, device: str, until: float, now: float) -> None:
        """A started device told to ask again at ``until`` (its window, the
        time frame): heard, and silent only from then, so one notified hours
        before its window does not time out waiting for it. Best effort: a
        lease held elsewhere leaves the deadline as it was."""
        self._event(campaign, device, DeviceEvent(EventKind.CHECK_IN, until=until), now)

    def progress(
        self, identity: OID, campaign: str, stage_name: str, reason: str, now: float
    ) -> None:
        device = str(identity)
        self._row(device, campaign)
        try:
            stage = DeviceStage(stage_name)
        except ValueError:
            raise Refused(f"no such stage {stage_name!r}") from None
        if reason:
            event = DeviceEvent(EventKind.FAILED, stage=_FAILED_STAGE[stage], reason=reason[:200])
        elif stage is DeviceStage.DEFERRED:
            # The device keeps its own deferral; the row waits until the
            # device asks again (a re-offer meanwhile is harmless).
            event = DeviceEvent(EventKind.DEFER, until=now)
        elif stage is DeviceStage.REFUSED_BY_USER:
            event = DeviceEvent(EventKind.REFUSE)
        elif stage in _STATE_OF_STAGE:
            event = DeviceEvent(EventKind.PROGRESS, state=_STATE_OF_STAGE[stage])
        else:
            event = DeviceEvent(EventKind.CHECK_IN)
        if not self._event(campaign, device, event, now):
            raise NotNow(self.retry_after)

    def accept_booted(
        self, identity: OID, campaign: str, kind_name: str, image_digest: bytes, now: float
    ) -> bool:
        device = str(identity)
        found, _ = self._row(device, campaign)
        try:
            kind = ImageKind(kind_name)
        except ValueError:
            raise Refused(f"no such image kind {kind_name!r}") from None
        if kind is ImageKind.REPROGRAM:
            return True  # the device's own updater (no campaign here replaces it)
        expected = found.spec.image_digest
        if expected and image_digest != expected:
            return False
        event = DeviceEvent(EventKind.PROGRESS, state=DeviceState.NORMAL_MODE)
        self._event(campaign, device, event, now)
        return True

    def install_report(self, identity: OID, data: bytes, signature: bytes, now: float) -> None:
        device = str(identity)
        key = self.db.read(lambda tx: dk.device_key(tx, device))
        if key is None:
            raise Refused("no report key is enrolled for this device")
        try:
            report = verify_install_report(key, identity, data, signature)
        except InstallReportInvalid as exc:
            raise Refused(exc.reason) from None
        self._row(device, report.campaign)
        self.db.write(
            partial(
                _keep, campaign=report.campaign, device=device, data=data, signature=signature,
                now=now,
            )
        )  # fmt: skip
        delivered = report.bytes_fetched
        if report.outcome is InstallOutcome.FAILED:
            stage = report.failed_stage
            event = DeviceEvent(
                EventKind.FAILED,
                stage=None if stage is None else _FAILED_STAGE.get(stage),
                reason=report.reason or "failed",
                bytes_delivered=delivered,
            )
        elif report.outcome is InstallOutcome.REFUSED_BY_USER:
            event = DeviceEvent(EventKind.REFUSE, bytes_delivered=delivered)
        elif delivered:
            # Success counts only from the Version service: the report adds
            # only the bytes the device fetched.
            event = DeviceEvent(EventKind.DELIVERED, bytes_delivered=delivered)
        else:
            return
        if not self._event(report.campaign, device, event, now):
            raise NotNow(self.retry_after)


def _assignment(spec: CampaignSpec, row: DeviceRow, now: float) -> Assignment:
    start, end = window_bounds(spec, now, row.utc_offset)
    return Assignment(
        spec.name,
        spec.terms.manifest_digest,
        spec.intended_version,
        spec.image_sequence,
        start,
        max(start, end),
        manual=spec.run_policy is RunPolicy.MANUAL,
    )


def _keep(
    tx: Any, *, campaign: str, device: str, data: bytes, signature: bytes, now: float
) -> bool:
    return dk.keep_install_report(tx, campaign, device, data, signature, now=now)


class CampaignDeviceProvider(Provider):
    """UPDATE_DEVICE over OAP for ``dofpy update serve``: the asker is the
    session's identity (in the clear: Refused); every answer is decided in a
    worker thread; BUSY once the daemon drains. ``pushes``: the notice
    objects ``watch`` hands out (None: this service pushes nothing, and
    ``watch`` is Refused: poll)."""

    def __init__(
        self,
        devices: CampaignDevices,
        context: ServiceContext,
        clock: Any,
        pushes: AssignmentPushes | None = None,
    ) -> None:
        self.devices = devices
        self._context = context
        self._clock = clock
        self._pushes = pushes

    async def handle(self, request: IncomingRequest) -> Sequence[Any]:
        if self._context.draining:
            raise OapError(OapErrorCode.BUSY, "the daemon is shutting down")
        with self._context.in_flight.track():
            return await super().handle(request)

    async def _call(self, method: Any, *args: Any) -> Any:
        identity = current_request().identity
        if identity is None:
            raise ProviderException(
                UPDATE_DEVICE.exception("Refused"), ["the device interface needs a secure session"]
            )
        try:
            return await self._context.in_thread(method, identity, *args, self._clock())
        except NotNow as exc:
            raise ProviderException(UPDATE_DEVICE.exception("NotNow"), [exc.retry_after]) from None
        except Refused as exc:
            raise ProviderException(UPDATE_DEVICE.exception("Refused"), [exc.reason]) from None

    async def poll(self) -> list[Assignment]:
        result: list[Assignment] = await self._call(self.devices.poll)
        return result

    async def authorise(self, campaign: str, manifest_digest: bytes) -> Authorisation:
        result: Authorisation = await self._call(self.devices.authorise, campaign, manifest_digest)
        return result

    async def progress(self, campaign: str, stage: str, reason: str) -> None:
        await self._call(self.devices.progress, campaign, stage, reason)

    async def accept_booted(self, campaign: str, image_kind: str, image_digest: bytes) -> bool:
        return bool(
            await self._call(self.devices.accept_booted, campaign, image_kind, image_digest)
        )

    async def install_report(self, report: bytes, signature: bytes) -> None:
        await self._call(self.devices.install_report, report, signature)

    async def watch(self) -> bytes:
        identity = current_request().identity
        if identity is None:
            raise ProviderException(
                UPDATE_DEVICE.exception("Refused"), ["the device interface needs a secure session"]
            )
        if self._pushes is None:
            raise ProviderException(UPDATE_DEVICE.exception("Refused"), ["no pushes here: poll"])
        return self._pushes.watch(identity).encode()
