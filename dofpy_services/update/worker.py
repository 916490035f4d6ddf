"""One Update service process's share of the campaigns: it applies the
engine's decisions (:mod:`~dofpy_services.update.engine`) to the campaign
store (:mod:`~dofpy_services.update.campaign_store`), one transaction per
decision batch, and hands back the actions to send.

:class:`CampaignWorker` is blocking (CLI commands, simulations, and the
daemon, which calls it through ``trio.to_thread``: never on the event loop).
Any number of workers, in any number of processes, may share one PostgreSQL
database: each device is driven by the one holding its lease. Time is always
passed in (``now``), so a simulation runs it as fast as it likes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from dofpy.image.cose import SigningKey
from dofpy.image.trust import TrustRoot
from dofpy_services.store import StoreConflict, SyncDatabase, Transaction
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.approvals import CampaignRefused, check_approvals, require_approvals
from dofpy_services.update.campaign import (
    CampaignSpec,
    CampaignState,
    wave_sizes,
)
from dofpy_services.update.engine import (
    Action,
    Command,
    DeviceEvent,
    apply_command,
    campaign_step,
    device_event,
    device_step,
)

__all__ = ["CampaignWorker", "Resolver", "assign_waves"]

T = TypeVar("T")

Resolver = Callable[[CampaignSpec], Sequence[tuple[str, int]]]
"""Resolves a campaign's population when it starts: (device, UTC offset in
seconds of its local time) for every device the Version query selects."""

_RETRIES = 8  # a decision re-read and re-made at most this often (another writer moved first)


def assign_waves(
    spec: CampaignSpec, devices: Sequence[tuple[str, int]]
) -> list[list[tuple[str, int]]]:
    """The population split into waves, in an order fixed by the campaign's
    digest (a spread sample for the canary, the same on every run)."""
    digest = spec.terms.digest
    ordered = sorted(
        dict(devices).items(), key=lambda d: hashlib.sha256(digest + d[0].encode()).digest()
    )
    waves: list[list[tuple[str, int]]] = []
    taken = 0
    for size in wave_sizes(len(ordered), spec.canary_share, spec.growth):
        waves.append(ordered[taken : taken + size])
        taken += size
    return waves


@dataclass(slots=True)
class CampaignWorker:
    """``owner`` names this process in leases and the transition log;
    ``lease``: how long a claimed device stays this worker's without being
    touched again (a killed process's devices pass to the others after it).
    Both rate caps, devices per minute and image bytes per second, are
    enforced by admission: a device starts only with a token of its
    campaign's start bucket (:func:`~dofpy_services.update.engine.start_tokens`,
    in the campaign's row, shared by every process)."""

    db: SyncDatabase
    key: SigningKey
    owner: str
    lease: float = 60.0
    batch: int = 200
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.seed}:{self.owner}")

    def _write(self, fn: Callable[[Transaction], T], kind: str) -> T:
        for attempt in range(_RETRIES):
            try:
                return self.db.write(fn, kind=kind)
            except (cs.StaleRow, StoreConflict):
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    # -- operator commands --------------------------------------------------------------

    def create(self, spec: CampaignSpec, *, now: float, actor: str) -> None:
        self.db.write(lambda tx: cs.create_campaign(tx, spec, self.key, now=now, actor=actor))

    def approve(self, name: str, signed: bytes, root: TrustRoot, *, now: float, actor: str) -> int:
        """Keep one party's signed approval of ``name``; how many are kept.
        One that would not count (malformed, for other terms, signed by a key
        the trust root does not list for the party it claims, a rejection) is
        not kept: the refusal is audited and :class:`CampaignRefused` raised."""

        def run(tx: Transaction) -> int:
            campaign = cs.load_campaign(tx, name, lock=True)
            report = check_approvals(campaign.spec.terms, [signed], root)
            (check,) = report.checks
            if not check.counted:
                raise CampaignRefused(f"approval of {name!r} not counted: {check.reason}", report)
            return cs.add_approval(tx, name, signed, self.key, now=now, actor=actor)

        try:
            return self._write(run, "approve")
        except CampaignRefused as refused:
            self._audit(now, actor, "approval-refused", {"campaign": name, "reason": str(refused)})
            raise

    def _audit(self, now: float, actor: str, action: str, payload: dict[str, object]) -> None:
        self._write(
            lambda tx: cs.append_audit(
                tx, self.key, now=now, actor=actor, action=action, payload=payload
            ),
            "audit",
        )

    def start(
        self, name: str, root: TrustRoot, resolve: Resolver, *, now: float, actor: str
    ) -> int:
        """Start ``name`` if its stored approvals meet its policy: resolve the
        population, split it into waves, and run. The refusal is audited too
        (then :class:`CampaignRefused`); the number of devices, else."""

        def start(tx: Transaction) -> int:
            campaign = cs.load_campaign(tx, name, lock=True)
            apply_command(campaign.state, Command.START)
            report = require_approvals(campaign.spec.terms, cs.approvals(tx, name), root)
            waves = assign_waves(campaign.spec, resolve(campaign.spec))
            cs.populate(tx, campaign.spec, waves, now=now, owner=self.owner)
            counted = [c.key.describe() for c in report.checks if c.counted and c.key]
            cs.set_campaign_state(
                tx,
                campaign,
                CampaignState.RUNNING,
                0,
                f"approved by {', '.join(counted)}",
                self.key,
                now=now,
                actor=actor,
                action="start",
                waves=len(waves),
            )
            return sum(len(w) for w in waves)

        try:
            return self._write(start, "start")
        except CampaignRefused as refused:
            self._audit(now, actor, "start-refused", {"campaign": name, "reason": str(refused)})
            raise

    def command(self, name: str, command: str, *, now: float, actor: str) -> CampaignState:
        """Pause, resume, stop or cancel ``name`` (``ValueError`` when the
        command does not apply to its state)."""

        def run(tx: Transaction) -> CampaignState:
            campaign = cs.load_campaign(tx, name, lock=True)
            target = apply_command(campaign.state, command)
            cs.set_campaign_state(
                tx,
                campaign,
                target,
                campaign.wave,
                f"{command} by {actor}",
                self.key,
                now=now,
                actor=actor,
                action=command,
            )
            return target

        return self._write(run, command)

    # -- driving devices ----------------------------------------------------------------

    def step(self, now: float) -> list[Action]:
        """Move every active campaign on at ``now``: its own state (waves,
        halts, completion), then the devices this worker can claim."""
        actions: list[Action] = []
        # A stopped or cancelled campaign still settles its devices here.
        names = self.db.read(
            lambda tx: cs.campaign_names(
                tx, set(CampaignState) - {CampaignState.CREATED, CampaignState.COMPLETED}
            )
        )
        for name in names:
            self._write(partial(self._campaign_step, name=name, now=now), "campaign")
            actions += self._write(partial(self._devices_step, name=name, now=now), "step")
        return actions

    def _campaign_step(self, tx: Transaction, name: str, now: float) -> None:
        campaign = cs.load_campaign(tx, name)
        cs.fold_wave_counts(tx, name)  # keeps the changes wave_counts adds up few
        for _ in range(campaign.waves + 2):  # a wave may settle and the next with it
            decided = campaign_step(campaign, cs.wave_counts(tx, name, campaign.waves), now)
            if decided is None:
                return
            state, wave, reason = decided
            action = "advance-wave" if state is campaign.state else state.value
            campaign = cs.set_campaign_state(
                tx,
                campaign,
                state,
                wave,
                reason,
                self.key,
                now=now,
                actor=self.owner,
                action=action,
            )

    def _devices_step(self, tx: Transaction, name: str, now: float) -> list[Action]:
        campaign = cs.load_campaign(tx, name)
        every = campaign.state in (
            CampaignState.CANCELLED,
            CampaignState.STOPPING,
            CampaignState.STOPPED,
        )
        rows = cs.claim_devices(
            tx,
            name,
            self.owner,
            now=now,
            lease=self.lease,
            limit=self.batch,
            max_wave=campaign.waves if every else campaign.wave,
            every=every,
        )
        actions: list[Action] = []
        for row in rows:
            change, sent = device_step(campaign, row, now, self.rng)
            if change is not None:
                if change.starts and not cs.take_start_token(tx, campaign, now):
                    continue  # the start rate cap (devices/min, bytes/s): this one waits
                cs.apply_change(tx, name, row, change, self.owner, now=now)
            actions += sent
        return actions

    def handle(
        self, name: str, device: str, event: DeviceEvent, *, now: float, from_device: bool = False
    ) -> list[Action] | None:
        """One report from or about ``device``; the actions it causes, or
        ``None`` when the device is not in the campaign, or, for a report
        about it (an observation), when another process holds its lease (that
        process observes it). ``from_device``: the device itself reported to
        this process, which takes its lease from any holder: each device talks
        to one process, and another renewing the lease (its steps' claims and
        observations) must not keep that process from driving it."""

        def run(tx: Transaction) -> list[Action] | None:
            campaign = cs.load_campaign(tx, name)
            row = cs.load_device(
                tx, name, device, self.owner, now=now, lease=self.lease, take=from_device
            )
            if row is None:
                return None
            change, actions = device_event(campaign, row, event, now, self.rng)
            if change is not None:
                cs.apply_change(tx, name, row, change, self.owner, now=now)
            return actions

        return self._write(run, "event")
