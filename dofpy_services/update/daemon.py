"""``dofpy update serve``: the campaign engine as a daemon on the framework.

The daemon opens the campaign store, and in one task, every
``step_interval`` seconds: moves every active campaign on
(:meth:`CampaignWorker.step`, in a worker thread: never on the loop), pushes
each device the engine just notified its assignment if the device watches
for pushes here (:mod:`~dofpy_services.update.notify`; the others learn it
at their next poll), and each device watching here that another process
sharing the store notified since (:class:`NotifiedElsewhere`), and reads
what the Version registry (``version_db``) now says of every started
device of every active campaign, feeding it to the engine as an
observation: that is what counts a device succeeded, or failed after a
revert. Several daemons may share one PostgreSQL campaign store
(leases: docs/operations.md, "Scaling out").

The daemon's node provides the device interface (UPDATE_DEVICE on
UPDATE_OBJECT) backed by the same store and engine
(:mod:`~dofpy_services.update.campaign_devices`): devices in their secure
sessions ask for their assignment, are authorised per the engine's decision
and report their stages and signed install reports, every answer decided in
a worker thread; ``watch`` hands a device its notice object for pushes.
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from dofpy.errors import BadPacket
from dofpy.trio import DofNode
from dofpy.wire.oid import OID, parse_oid_text_untrusted
from dofpy_services.daemon.service import ServiceContext
from dofpy_services.image.keys import load_private_key, read_passphrase
from dofpy_services.store import Database, StoreError, open_database, open_database_sync
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.campaign import CampaignState
from dofpy_services.update.campaign_devices import CampaignDeviceProvider, CampaignDevices
from dofpy_services.update.device_interface import UPDATE_DEVICE, UPDATE_OBJECT, Assignment
from dofpy_services.update.engine import (
    FAILURE_STATES,
    PROGRESS_ORDER,
    Action,
    ActionKind,
    DeviceEvent,
    EventKind,
    device_event,
)
from dofpy_services.update.notify import AssignmentPushes, NoticeObjects
from dofpy_services.update.tracking import DeviceState
from dofpy_services.update.worker import CampaignWorker
from dofpy_services.version import store as version_store
from dofpy_services.version.store import SyncVersionStore

__all__ = ["attach_engine", "observe_versions", "open_campaign_store", "push_assignments"]

_OBSERVED_STATES = frozenset(PROGRESS_ORDER) | FAILURE_STATES
"""Started devices, and failed ones (their record keeps the version they run)."""
_INSTALLED = frozenset({DeviceState.INSTALLING, DeviceState.NORMAL_MODE})


@asynccontextmanager
async def open_campaign_store(config: Any) -> AsyncIterator[Database]:
    async with open_database(config.db, service=cs.SERVICE, migrations=cs.MIGRATIONS) as db:
        yield db


def observe_versions(worker: CampaignWorker, versions: SyncVersionStore, now: float) -> int:
    """Tell the engine what the Version registry says of each started,
    unsettled device of every active campaign (and of each failed device of
    a completed campaign before its deadline: it may boot the new image
    late); how many observations changed a row (blocking: run it in a
    thread). Only those devices' rows are read (the (campaign, state)
    index), and their records in one batched read: a step costs the devices
    in flight (and failed), not the campaign's population."""
    changed = 0
    unused = random.Random(0)  # an observation draws no back-off: device_event takes one
    watched = set(CampaignState) - {CampaignState.CREATED}
    for name in worker.db.read(partial(cs.campaign_names, states=watched)):
        campaign = worker.db.read(partial(cs.load_campaign, name=name))
        spec = campaign.spec
        completed = campaign.state is CampaignState.COMPLETED
        if completed and now > spec.terms.deadline:
            continue
        # A completed campaign, until its deadline: its failed devices
        # still, one may yet boot the new image (counted succeeded then).
        states = FAILURE_STATES if completed else _OBSERVED_STATES
        devices = worker.db.read(partial(cs.devices_in_states, campaign=name, states=states))
        identities: dict[str, OID] = {}
        for row, _ in devices:
            try:
                identities[row.device] = parse_oid_text_untrusted(row.device)
            except BadPacket:
                continue  # not an identity the registry could know
        records = versions.records(identities.values())
        for row, entered in devices:
            identity = identities.get(row.device)
            record = None if identity is None else records.get(identity)
            if record is None:
                continue
            if (
                row.state in _INSTALLED
                and record.version != spec.intended_version
                and record.last_seen < entered
            ):
                # Seen on its old version before it began installing: the
                # device has not reported since (it is rebooting into the new
                # image); that is no revert.
                continue
            event = DeviceEvent(
                EventKind.OBSERVED, version=record.version, accepted=record.boot.accepted
            )
            if device_event(campaign, row, event, now, unused)[0] is None:
                # Nothing to write for the row as read (most devices, most
                # steps: seen on the version already recorded): no write
                # transaction. Had the row moved since, the next step sees it.
                continue
            # (An observation sends nothing: handle's actions are always
            # empty; None means another process holds the device's lease.)
            if worker.handle(name, row.device, event, now=now) is not None:
                changed += 1
    return changed


NOTIFIED_OVERLAP = 10.0
"""Seconds each read of the other processes' notifications reaches back past
the latest it saw: a notification committed late (its time is when its
transaction began), or by a process whose clock is a little behind, is still
seen. A device is pushed at most once per notification."""


class NotifiedElsewhere:
    """The devices the other processes sharing the campaign store notified
    since the last read, as NOTIFY actions, each notification once: with
    several processes, the one whose step notifies a device is seldom the
    one the device watches at, and that one learns it here, at its next step,
    instead of the device at its next poll. Reads a range of the partial
    index of notifications (:func:`~dofpy_services.update.campaign_store.notified_elsewhere`);
    blocking: call it in a worker thread."""

    def __init__(self, owner: str, now: float) -> None:
        self.owner = owner
        self._latest = now
        self._seen: set[tuple[str, str, float]] = set()

    def read(self, worker: CampaignWorker) -> list[Action]:
        since = self._latest - NOTIFIED_OVERLAP
        rows = worker.db.read(partial(cs.notified_elsewhere, owner=self.owner, since=since))
        actions = []
        for campaign, device, at in rows:
            if (campaign, device, at) in self._seen:
                continue
            self._seen.add((campaign, device, at))
            self._latest = max(self._latest, at)
            actions.append(Action(ActionKind.NOTIFY, device, campaign))
        # What the next read cannot return again is forgotten.
        floor = self._latest - NOTIFIED_OVERLAP
        self._seen = {seen for seen in self._seen if seen[2] > floor}
        return actions


async def push_assignments(
    pushes: AssignmentPushes,
    devices: CampaignDevices,
    actions: list[Action],
    now: float,
    in_thread: Callable[..., Awaitable[Any]],
) -> int:
    """Push each watching device the engine just notified (``actions``), and
    each that watched lately, what its poll would answer now (read in one
    worker thread; nothing for a device with nothing to do); how many Change
    commands left."""
    wanted = pushes.objects.wanted(actions)
    if not wanted:
        return 0
    identities = [identity for identity, _ in wanted]
    answers: list[list[Assignment]] = await in_thread(_currents, devices, identities, now)
    sent = 0
    for (identity, notices), assignments in zip(wanted, answers, strict=True):
        if assignments:
            sent += pushes.push(identity, notices, assignments)
    return sent


def _currents(
    devices: CampaignDevices, identities: list[OID], now: float
) -> list[list[Assignment]]:
    return [devices.current(identity, now) for identity in identities]


def _open_versions(location: str) -> SyncVersionStore:
    return SyncVersionStore(
        open_database_sync(
            location, service=version_store.SERVICE, migrations=version_store.MIGRATIONS
        )
    )


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def attach_engine(
    context: ServiceContext,
    node: DofNode,
    nursery: trio.Nursery,
    *,
    clock: Callable[[], float] = time.time,
) -> None:
    """Start the engine's task (cancelled at the end of the drain)."""
    config = context.config
    passphrase = read_passphrase(config.passphrase_file) if config.passphrase_file else None
    key = load_private_key(config.service_key, passphrase)
    database: Database = context.store
    worker = CampaignWorker(
        database.sync,
        key,
        config.owner or _owner(),
        lease=config.lease,
    )
    devices = CampaignDevices(worker, retry_after=max(1.0, config.step_interval))
    # Each notice object is provided for its device's identity only; their
    # names are keyed by a secret of this process, so no one can compute
    # another device's (see notify.py). A restart forgets them and the
    # devices watch again when their subscriptions end.
    pushes = AssignmentPushes(
        node, NoticeObjects(secrets.token_bytes(32), max_devices=config.max_watched)
    )
    node.provide(
        UPDATE_OBJECT, UPDATE_DEVICE, CampaignDeviceProvider(devices, context, clock, pushes)
    )
    versions = (
        await trio.to_thread.run_sync(_open_versions, config.version_db)
        if config.version_db
        else None
    )

    elsewhere = NotifiedElsewhere(worker.owner, clock())

    async def drive() -> None:
        try:
            while True:
                now = clock()
                try:
                    actions = await context.in_thread(worker.step, now)
                    if len(pushes.objects):  # only devices watching here are pushed
                        actions += await context.in_thread(elsewhere.read, worker)
                    await push_assignments(pushes, devices, actions, now, context.in_thread)
                    if versions is not None:
                        await context.in_thread(observe_versions, worker, versions, now)
                except StoreError as exc:
                    # The store is down or busy: nothing was half-written; try
                    # again at the next step.
                    context.logger.warning("campaign step failed: %s", exc)
                await trio.sleep(config.step_interval)
        finally:
            if versions is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(versions.close)

    nursery.start_soon(drive)
