"""The campaign engine, sans-IO: given a campaign, one device's row, an event
or just ``now``, it returns the device's next state (or nothing) and the
actions to send; given a campaign's per-wave counts, the campaign's next
state. It never reads a clock, a database or a socket: the store
(:mod:`~dofpy_services.update.campaign_store`) applies what it decides, in
the transaction that read the row, and the worker
(:mod:`~dofpy_services.update.worker`) sends the actions.

A device moves forward only: NOTIFIED, AUTHORISED, REPROGRAM_MODE,
TRANSFERRING, VERIFYING, INSTALLING, NORMAL_MODE. A report of a state it
already passed changes nothing (devices repeat themselves after a reconnect:
a transition is never recorded twice). It counts SUCCEEDED only when the
Version service sees it running the intended version *accepted*; seen
running another version once it installed, it failed at boot (it reverted).

An A/B device may download ahead of its window: it reports TRANSFERRING and
VERIFYING while NOTIFIED, before it was authorised (only the switch is the
install there). Its row moves forward as any, marked by its reason
(:data:`AHEAD`, :data:`HELD_AHEAD`) until the authorisation clears the mark:
it has not begun to install, so a stop cancels it and a pause or a halt holds
it, as a NOTIFIED device (see :func:`authorised`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from dofpy_services.update.campaign import (
    FINAL_CAMPAIGN_STATES,
    CampaignSpec,
    CampaignState,
    DeadlineBehaviour,
    RunPolicy,
    backoff_delay,
    in_window,
    next_window_open,
)
from dofpy_services.update.planning import Urgency
from dofpy_services.update.tracking import TERMINAL_STATES, DeviceState, Stage

__all__ = [
    "AHEAD",
    "FAILURE_STATES",
    "HELD",
    "HELD_AHEAD",
    "PROGRESS_ORDER",
    "Action",
    "ActionKind",
    "CampaignRow",
    "Command",
    "DeviceChange",
    "DeviceEvent",
    "DeviceRow",
    "EventKind",
    "WaveCounts",
    "apply_command",
    "authorised",
    "campaign_step",
    "device_event",
    "device_step",
    "start_burst",
    "start_rate",
    "start_tokens",
]

PROGRESS_ORDER = (
    DeviceState.NOTIFIED,
    DeviceState.AUTHORISED,
    DeviceState.REPROGRAM_MODE,
    DeviceState.TRANSFERRING,
    DeviceState.VERIFYING,
    DeviceState.INSTALLING,
    DeviceState.NORMAL_MODE,
)
_RANK = {state: rank for rank, state in enumerate(PROGRESS_ORDER)}
_STAGE_OF = {
    DeviceState.NOTIFIED: Stage.NOTIFY,
    DeviceState.AUTHORISED: Stage.AUTHORISE,
    DeviceState.REPROGRAM_MODE: Stage.REPROGRAM_MODE,
    DeviceState.TRANSFERRING: Stage.TRANSFER,
    DeviceState.VERIFYING: Stage.VERIFY,
    DeviceState.INSTALLING: Stage.INSTALL,
    DeviceState.NORMAL_MODE: Stage.BOOT,
}
FAILURE_STATES = frozenset({DeviceState.FAILED, DeviceState.ROLLED_BACK, DeviceState.TIMED_OUT})


@dataclass(frozen=True, slots=True)
class CampaignRow:
    """A campaign as stored: its spec, state, current wave and why it is in
    that state (a halt's reason)."""

    spec: CampaignSpec
    state: CampaignState
    wave: int
    waves: int
    revision: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One device's row. ``due`` depends on the state: SCHEDULED, not before
    (a retry's back-off); DEFERRED, until; a started state, the silence
    deadline."""

    device: str
    wave: int
    state: DeviceState = DeviceState.SCHEDULED
    revision: int = 0
    attempts: int = 0
    due: float = 0.0
    utc_offset: int = 0
    actual_version: str = ""
    bytes_served: int = 0
    stage: Stage | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DeviceChange:
    """What to write: the device's next state (``None``: the state stays and
    only counters change, no transition is logged) and its fields."""

    state: DeviceState | None
    due: float
    attempts: int
    actual_version: str
    bytes_served: int
    stage: Stage | None = None
    reason: str = ""
    starts: bool = False
    """A first notification of this attempt: takes a devices-per-minute token."""


class ActionKind:
    NOTIFY = "notify"
    """Offer the update (live session: now; polling device: at its next check-in)."""
    ALLOW_INSTALL = "allow-install"
    """The device may install now (inside its window)."""
    CANCEL = "cancel"
    """Abort the update on the device."""


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    device: str
    campaign: str
    mandatory: bool = False


class EventKind:
    PROGRESS = "progress"
    FAILED = "failed"
    DEFER = "defer"
    REFUSE = "refuse"
    CHECK_IN = "check-in"
    """The device was heard; ``until``: it was told to come back then (its
    window's opening), so its silence counts from then."""
    OBSERVED = "observed"
    """The Version service saw the device: ``version``, ``accepted``."""
    DELIVERED = "delivered"
    """The device's count of image bytes delivered (``bytes_delivered``)
    and nothing else: a successful install report (success itself counts
    only from the Version service)."""


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One report from or about a device. ``bytes_delivered``: the image
    bytes delivered to the device for this campaign so far, as it counts
    them (its install report's ``bytes_fetched``; 0: not told); the row keeps
    the largest it heard, whatever the event does to its state."""

    kind: str
    state: DeviceState | None = None
    bytes_delivered: int = 0
    stage: Stage | None = None
    reason: str = ""
    until: float = 0.0
    version: str = ""
    accepted: bool = False


@dataclass(frozen=True, slots=True)
class WaveCounts:
    """One wave's devices by state."""

    size: int
    by_state: Mapping[DeviceState, int]

    def count(self, *states: DeviceState) -> int:
        return sum(self.by_state.get(s, 0) for s in states)


def _change(row: DeviceRow, state: DeviceState | None, **fields: object) -> DeviceChange:
    # A change of counters only keeps the row's stage and reason.
    stage, reason = (row.stage, row.reason) if state is None else (None, "")
    base = DeviceChange(
        state, row.due, row.attempts, row.actual_version, row.bytes_served, stage, reason
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def _starts_allowed(campaign: CampaignRow) -> bool:
    return campaign.state is CampaignState.RUNNING


SILENCE = "timeout"
"""The retry policy's name (``RetryPolicy.retryable``) for a started device
silent past the campaign's silence timeout."""


def silence_reason(spec: CampaignSpec) -> str:
    """What a silent device's row records as its reason: how long it was
    silent (its stage records the state it went silent in)."""
    return f"silent for {spec.silence_timeout:g} s"


def _fail_or_retry(
    spec: CampaignSpec,
    row: DeviceRow,
    stage: Stage,
    reason: str,
    now: float,
    rng: random.Random,
    recorded: str = "",
) -> DeviceChange:
    """A failed attempt: scheduled again after a back-off when the reason is
    retryable and attempts remain (and the retry can start before the
    deadline), else failed (timed out, for :data:`SILENCE`). ``reason`` is
    the retry policy's name for the failure; ``recorded`` what the row says
    (default: ``reason``)."""
    retry = spec.retry
    recorded = recorded or reason
    if (
        reason in retry.retryable
        and row.attempts < retry.max_attempts
        and now < spec.terms.deadline
    ):
        delay = backoff_delay(retry, row.attempts, rng)
        return _change(row, DeviceState.SCHEDULED, due=now + delay, stage=stage, reason=recorded)
    final = DeviceState.TIMED_OUT if reason == SILENCE else DeviceState.FAILED
    return _change(row, final, stage=stage, reason=recorded)


HELD = "waiting for the maintenance window"
"""The reason a verified device's row shows while its install is held: its
``due`` is then when the window opens (not a silence deadline)."""
AHEAD = "downloading ahead of its authorisation"
"""The reason of a device that reported its download before it was
authorised (an A/B device before its window), until it is."""
HELD_AHEAD = "downloaded ahead, waiting for the maintenance window"
"""Both: downloaded ahead and verified, held until the window opens."""
_HELD = frozenset({HELD, HELD_AHEAD})
_AHEAD = frozenset({AHEAD, HELD_AHEAD})
_DOWNLOAD = frozenset({DeviceState.TRANSFERRING, DeviceState.VERIFYING})
"""The stages an A/B device reports while downloading ahead."""


def authorised(row: DeviceRow) -> bool:
    """Whether the device has been authorised to install: started, past
    NOTIFIED, and not downloading ahead of its authorisation."""
    return row.state in _RANK and row.state is not DeviceState.NOTIFIED and row.reason not in _AHEAD


def _verified(
    campaign: CampaignRow, row: DeviceRow, now: float, *, ahead: bool
) -> tuple[DeviceChange, list[Action]]:
    """A device that holds a verified image: allowed to install inside its
    window (and silent past ``now`` + the timeout then times out), else held
    until the window opens. ``ahead``: it has not been authorised yet (it
    downloaded ahead), and the row keeps saying so; such a device is also
    held while the campaign does not run (paused, halted), as a NOTIFIED one
    is not authorised then."""
    spec = campaign.spec
    state = DeviceState.VERIFYING if row.state is not DeviceState.VERIFYING else None
    inside = in_window(spec.windows, now, row.utc_offset)
    if inside and (not ahead or _starts_allowed(campaign)):
        change = _change(
            row,
            state,
            due=now + spec.silence_timeout,
            reason=AHEAD if ahead else "",
        )
        return change, [Action(ActionKind.ALLOW_INSTALL, row.device, spec.name)]
    # Inside the window, only a pause or a halt holds it: looked at again at
    # every step (device_step), allowed once the campaign runs.
    due = now if inside else next_window_open(spec.windows, now, row.utc_offset)
    reason = HELD_AHEAD if ahead else HELD
    return _change(row, state, due=due, reason=reason), []


def device_step(
    campaign: CampaignRow, row: DeviceRow, now: float, rng: random.Random
) -> tuple[DeviceChange | None, list[Action]]:
    """What the passing of time does to one device (and what to send it)."""
    spec = campaign.spec
    name = spec.name
    state = row.state
    if state in TERMINAL_STATES:
        return None, []
    started = state in _RANK
    if campaign.state is CampaignState.CANCELLED:
        actions = [Action(ActionKind.CANCEL, row.device, name)] if started else []
        return _change(row, DeviceState.CANCELLED, reason="campaign cancelled"), actions
    if campaign.state in (CampaignState.STOPPING, CampaignState.STOPPED):
        if not started:
            return _change(row, DeviceState.CANCELLED, reason="campaign stopped"), []
        if not authorised(row):
            # Told, but not authorised: it has not begun (the Update service
            # authorises only when the install may start; one that downloaded
            # ahead has not installed), so it does not.
            actions = [Action(ActionKind.CANCEL, row.device, name)]
            return _change(row, DeviceState.CANCELLED, reason="campaign stopped"), actions
    deadline = spec.terms.deadline
    if state is DeviceState.SCHEDULED:
        if now >= deadline:
            return _change(row, DeviceState.CANCELLED, reason="not started before the deadline"), []
        if not _starts_allowed(campaign) or row.wave > campaign.wave or now < row.due:
            return None, []
        if now < spec.terms.start:
            return None, []  # the approved time frame has not begun
        change = _change(
            row,
            DeviceState.NOTIFIED,
            due=now + spec.silence_timeout,
            attempts=row.attempts + 1,
            starts=True,
        )
        return change, [Action(ActionKind.NOTIFY, row.device, name)]
    if state is DeviceState.DEFERRED:
        if now >= deadline:
            if spec.deadline_behaviour is DeadlineBehaviour.SKIP:
                return _change(row, DeviceState.CANCELLED, reason="deferred past deadline"), []
            if spec.deadline_behaviour is DeadlineBehaviour.FAIL:
                return _change(
                    row, DeviceState.FAILED, stage=Stage.AUTHORISE, reason="deferred past deadline"
                ), []
            # INSTALL: asked again, now as a mandatory update.
        elif now < row.due:
            return None, []
        if not _starts_allowed(campaign):
            return None, []
        mandatory = now >= deadline
        change = _change(row, DeviceState.NOTIFIED, due=now + spec.silence_timeout)
        return change, [Action(ActionKind.NOTIFY, row.device, name, mandatory=mandatory)]
    if now < row.due:
        return None, []
    if state is DeviceState.VERIFYING and row.reason in _HELD:
        if row.reason == HELD_AHEAD and not _starts_allowed(campaign):
            return None, []  # downloaded ahead, never authorised: held while paused or halted
        # Its window opened.
        return _verified(campaign, row, now, ahead=row.reason in _AHEAD)
    # A started device silent past its deadline.
    silent = silence_reason(spec)
    return _fail_or_retry(spec, row, _STAGE_OF[state], SILENCE, now, rng, silent), []


def device_event(
    campaign: CampaignRow, row: DeviceRow, event: DeviceEvent, now: float, rng: random.Random
) -> tuple[DeviceChange | None, list[Action]]:
    """What one report from (or about) a device does to its row."""
    change, actions = _state_event(campaign, row, event, now, rng)
    served = row.bytes_served if change is None else change.bytes_served
    if event.bytes_delivered > served:
        # Bytes delivered stay delivered: counted even when the report is
        # stale or the row has settled (an install report arrives after the
        # Version service saw the success). The largest count wins, so a
        # report repeated changes nothing.
        base = _change(row, None) if change is None else change
        change = replace(base, bytes_served=event.bytes_delivered)
    return change, actions


def _state_event(
    campaign: CampaignRow, row: DeviceRow, event: DeviceEvent, now: float, rng: random.Random
) -> tuple[DeviceChange | None, list[Action]]:
    """What ``event`` does to the row's state (its bytes aside)."""
    spec = campaign.spec
    state = row.state
    if event.kind == EventKind.DELIVERED:
        return None, []
    if event.kind == EventKind.OBSERVED:
        return _observed(spec, row, event, now)
    if state in TERMINAL_STATES:
        # A cancelled device still in the middle of it is told again.
        if state is DeviceState.CANCELLED and event.kind == EventKind.PROGRESS:
            return None, [Action(ActionKind.CANCEL, row.device, spec.name)]
        return None, []
    started = state in _RANK
    if event.kind == EventKind.CHECK_IN:
        heard = _heard(spec, row, max(now, event.until))
        if state is DeviceState.NOTIFIED:
            return heard, [Action(ActionKind.NOTIFY, row.device, spec.name)]
        return (heard if started else None), []
    if not started:
        return None, []  # a report from an attempt that ended (timed out, retrying)
    if event.kind == EventKind.PROGRESS and event.state is not None:
        ahead = state is DeviceState.NOTIFIED or row.reason in _AHEAD
        if event.state is DeviceState.AUTHORISED and state is not DeviceState.NOTIFIED and ahead:
            # Downloaded ahead, and now authorised: no longer marked so (its
            # row stays where the download brought it).
            if state is DeviceState.VERIFYING:
                return _verified(campaign, row, now, ahead=False)
            return _change(row, None, due=now + spec.silence_timeout, reason=""), []
        if event.state not in _RANK or _RANK[event.state] < _RANK[state]:
            return None, []  # stale: from before a state already recorded
        if event.state is DeviceState.VERIFYING:
            # Reached, or repeated while it waits: the permission is repeated
            # too (one sent by another process may not have reached it).
            return _verified(campaign, row, now, ahead=ahead)
        if event.state is state:
            return _heard(spec, row, now), []
        # A download reported before the authorisation (NOTIFIED, or already
        # ahead): ahead of it, until it comes. Any other stage comes after it.
        still_ahead = ahead and event.state in _DOWNLOAD
        change = _change(
            row,
            event.state,
            due=now + spec.silence_timeout,
            reason=AHEAD if still_ahead else "",
        )
        return change, []
    if event.kind == EventKind.FAILED:
        stage = event.stage or _STAGE_OF[state]
        return _fail_or_retry(spec, row, stage, event.reason or "unspecified", now, rng), []
    if spec.run_policy is RunPolicy.MANUAL and state is DeviceState.NOTIFIED:
        if event.kind == EventKind.DEFER:
            # Capped at the deadline, where the deadline behaviour decides.
            until = min(max(now, event.until), float(spec.terms.deadline))
            return _change(row, DeviceState.DEFERRED, due=until, reason="deferred by the user"), []
        if event.kind == EventKind.REFUSE:
            return _change(row, DeviceState.CANCELLED, reason="refused by the user"), []
    return None, []


def _heard(spec: CampaignSpec, row: DeviceRow, now: float) -> DeviceChange:
    if row.reason in _HELD:
        return _change(row, None)  # due is the window's opening
    return _change(row, None, due=max(row.due, now + spec.silence_timeout))


def _observed(
    spec: CampaignSpec, row: DeviceRow, event: DeviceEvent, now: float
) -> tuple[DeviceChange | None, list[Action]]:
    state = row.state
    if state in FAILURE_STATES and event.version == spec.intended_version and event.accepted:
        # Counted failed (timed out, most often: slow, not silent for good),
        # and since seen booted and accepted on the intended version: the
        # record follows what the device runs.
        return _change(
            row,
            DeviceState.SUCCEEDED,
            actual_version=event.version,
            reason=f"succeeded after it was counted {state.value}",
        ), []
    if state in TERMINAL_STATES or row.attempts == 0:
        # Kept for the record (actual version), never a transition.
        if event.version == row.actual_version:
            return None, []
        return _change(row, None, actual_version=event.version), []
    if event.version == spec.intended_version and event.accepted:
        return _change(row, DeviceState.SUCCEEDED, actual_version=event.version), []
    installed = state in _RANK and _RANK[state] >= _RANK[DeviceState.INSTALLING]
    if installed and event.version != spec.intended_version and event.accepted:
        return _change(
            row,
            DeviceState.FAILED,
            actual_version=event.version,
            stage=Stage.BOOT,
            reason=f"reverted to {event.version}",
        ), []
    if event.version != row.actual_version:
        return _change(row, None, actual_version=event.version), []
    return None, []


START_WINDOW = (2.0, 15.0)
"""The start bucket holds one step's worth of starts (the time since the
last refill, kept within these seconds; at least one start): steps come
every second or more (ten by default), so a bucket of one would cap any rate
at one start per step (the fleet demo's 600 a minute ran at 30), and an
unbounded one would let a long pause end in a flood."""


def start_rate(spec: CampaignSpec) -> float:
    """Devices a minute the campaign may start (``0``: uncapped): the lesser
    of its devices-per-minute cap and its bytes/s cap over the image size.
    Each started device fetches the image at most once, so pacing the starts
    paces the image bytes wherever the devices fetch them (the providers and
    relays know nothing of campaigns). An URGENT campaign ignores the
    devices-per-minute cap (as fast as capacity allows) but not the bytes/s
    cap: that one protects the uplink, and the operator set it explicitly."""
    rates = []
    if spec.devices_per_minute > 0 and spec.urgency is not Urgency.URGENT:
        rates.append(spec.devices_per_minute)
    if spec.bytes_per_second > 0 and spec.image_size > 0:
        rates.append(spec.bytes_per_second * 60.0 / spec.image_size)
    return min(rates, default=0.0)


def start_burst(spec: CampaignSpec, elapsed: float) -> float:
    """The start bucket's size after ``elapsed`` seconds without a refill."""
    window = min(max(elapsed, START_WINDOW[0]), START_WINDOW[1])
    return max(1.0, start_rate(spec) * window / 60.0)


def start_tokens(spec: CampaignSpec, tokens: float, at: float, now: float) -> tuple[float, float]:
    """The start bucket refilled to ``now``: (tokens, now). The time since
    ``at`` adds :func:`start_rate` (``rate``) a minute, up to
    :func:`start_burst` plus one: in any ``T`` seconds at most
    ``rate * T / 60`` plus one burst of at most 15 s worth (and one) start,
    the rate is met however far apart the steps, and a long pause ends in one
    burst. In image bytes, with a bytes/s cap ``B`` and an image of ``S``
    bytes (each start fetching at most ``S``): at most
    ``B * T + max(S, 15 * B) + S`` bytes started in any ``T`` seconds.
    Uncapped: always one."""
    rate = start_rate(spec)
    if rate <= 0:
        return 1.0, now
    elapsed = now - at
    if elapsed <= 0:
        return tokens, at  # the same step (or a clock gone back): nothing more
    # One start more than the burst: a fraction left over is never lost to
    # the cap (4 a minute at 4 s steps would start 3.75).
    refilled = tokens + elapsed * rate / 60.0
    return min(refilled, start_burst(spec, elapsed) + 1.0), now


def campaign_step(
    campaign: CampaignRow, waves: Sequence[WaveCounts], now: float
) -> tuple[CampaignState, int, str] | None:
    """The campaign's next (state, wave, reason), from each wave's counts;
    ``None`` when it stays."""
    state = campaign.state
    if state in FINAL_CAMPAIGN_STATES or state is CampaignState.CREATED:
        return None
    live = sum(w.count(*PROGRESS_ORDER) for w in waves)
    unsettled = sum(w.size - w.count(*TERMINAL_STATES) for w in waves)
    if state is CampaignState.STOPPING:
        return (CampaignState.STOPPED, campaign.wave, campaign.reason) if live == 0 else None
    if state is not CampaignState.RUNNING:
        return None
    if unsettled == 0:
        return CampaignState.COMPLETED, campaign.wave, "every device settled"
    current = waves[campaign.wave]
    failures = current.count(*FAILURE_STATES)
    if current.size and failures / current.size > campaign.spec.failure_threshold:
        return (
            CampaignState.HALTED,
            campaign.wave,
            f"wave {campaign.wave}: {failures} of {current.size} failed, above the"
            f" failure threshold {campaign.spec.failure_threshold:.0%}",
        )
    settled = current.count(*TERMINAL_STATES, DeviceState.DEFERRED)
    if settled < current.size or campaign.wave + 1 >= len(waves):
        return None
    counted = current.size - current.count(DeviceState.CANCELLED, DeviceState.DEFERRED)
    share = current.count(DeviceState.SUCCEEDED) / counted if counted else 1.0
    if share + 1e-9 < campaign.spec.success_threshold:
        return (
            CampaignState.HALTED,
            campaign.wave,
            f"wave {campaign.wave}: {share:.0%} succeeded, below the success threshold"
            f" {campaign.spec.success_threshold:.0%}",
        )
    return CampaignState.RUNNING, campaign.wave + 1, f"wave {campaign.wave} succeeded {share:.0%}"


class Command:
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    CANCEL = "cancel"


_COMMANDS: dict[str, tuple[frozenset[CampaignState], CampaignState]] = {
    Command.START: (frozenset({CampaignState.CREATED}), CampaignState.RUNNING),
    Command.PAUSE: (frozenset({CampaignState.RUNNING}), CampaignState.PAUSED),
    Command.RESUME: (frozenset({CampaignState.PAUSED}), CampaignState.RUNNING),
    Command.STOP: (
        frozenset({CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.HALTED}),
        CampaignState.STOPPING,
    ),
    Command.CANCEL: (
        frozenset(CampaignState) - FINAL_CAMPAIGN_STATES,
        CampaignState.CANCELLED,
    ),
}


def apply_command(state: CampaignState, command: str) -> CampaignState:
    """The state an operator's ``command`` moves a campaign to; ``ValueError``
    when it does not apply (resume a running one, start one twice, ...)."""
    try:
        allowed, target = _COMMANDS[command]
    except KeyError:
        raise ValueError(f"unknown campaign command {command!r}") from None
    if state not in allowed:
        raise ValueError(f"cannot {command} a campaign that is {state.value}")
    return target
