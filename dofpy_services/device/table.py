"""The device agent's states and transitions, as one explicit table.

The agent is a loop: in each state it performs that state's one step (talk to
a service, to the bootloader, to the user), the step's outcome is an
:class:`Input`, and :data:`TRANSITIONS` alone says which state follows. A
(state, input) pair the table does not list is a defect and raises
:class:`NoTransition`: nothing happens by default. docs/architecture.md draws
this table; tests/device/test_agent_table.py checks it (every state reachable
from IDLE, IDLE reachable from every state, every retryable step bounded by
GAVE_UP).

Steps that can fail for a transient reason (the session lost, ``NotNow``, a
reboot that came back in the wrong image) answer :attr:`Input.RETRY`; the
machine (:mod:`dofpy_services.device.machine`) counts the attempts in the
state, waits a capped, fully jittered exponential back-off before the step
runs again, and once the attempts are spent feeds :attr:`Input.GAVE_UP`
instead. So every retry is bounded and every state that retries says where
giving up leads.
"""

from __future__ import annotations

import enum

from dofpy_services.update.device_interface import Stage

__all__ = ["RETRYING", "STAGE_OF", "TRANSITIONS", "Input", "NoTransition", "State", "next_state"]


class State(enum.Enum):
    """Where the agent is. The letters are the issue's steps (A..D)."""

    IDLE = "idle"
    """Normal image, nothing to do: wait for the next check-in."""
    CHECK_IN = "check_in"
    """Report version, slot and boot state to the Version service."""
    POLL = "poll"
    """Ask the Update service for an assignment (the update window)."""
    VERIFY_MANIFEST = "verify_manifest"
    """Fetch and verify the assigned manifest (class, rollback, expiry,
    signatures): a refusal ends the update before anything changes."""
    CHECK_SPACE = "check_space"
    """Free space for the image (and its resume state), before anything changes."""
    ASK_USER = "ask_user"
    """A manual campaign: the hook answers accept, defer until, or refuse
    (an automatic campaign accepts at once)."""
    DEFERRED = "deferred"
    """The user deferred: wait until the time they gave, then ask again."""
    DOWNLOAD_AHEAD = "download_ahead"
    """Before the window opens, on A/B (a free Normal slot), a plain image
    that is not the updater's: transfer it into the free slot and check it
    whole while the accepted image runs (resumable, as TRANSFER), then wait
    for the window and ask for the authorisation to install (the switch)."""
    AUTHORISE = "authorise"
    """A. The Update service's authorisation (and the wrapped content key)."""
    ENTER_REPROGRAM = "enter_reprogram"
    """B. Switch the boot target to Reprogram atomically and reboot."""
    CONFIRM_REPROGRAM = "confirm_reprogram"
    """B. Reconnected in Reprogram mode: the Update service accepts the booted image."""
    TRANSFER = "transfer"
    """C. Block by block, each verified before it is written; resumes from
    the verified blocks after any interruption or reboot."""
    VERIFY_IMAGE = "verify_image"
    """C. The whole written image against the manifest's root digest."""
    ENTER_NORMAL = "enter_normal"
    """D. Switch the boot target to the new Normal image atomically and reboot."""
    HEALTH_CHECK = "health_check"
    """D. The new image runs its health check."""
    CONFIRM_NORMAL = "confirm_normal"
    """D. The Update service accepts the booted image; then the bootloader does."""
    REVERT = "revert"
    """Back to the previous image (instant on A/B); on the seed's layout,
    whose previous image is gone, back to Reprogram mode."""
    TRANSFER_UPDATER = "transfer_updater"
    """Updating the updater: the new Reprogram image written into the
    Reprogram slot while the accepted Normal image runs (the safety net),
    block by block, verified, resumable; then checked whole."""
    TRY_UPDATER = "try_updater"
    """Boot the new Reprogram image on trial (the bootloader falls back to
    the accepted Normal image if it does not come up)."""
    CONFIRM_UPDATER = "confirm_updater"
    """In the new Reprogram image: its health check, the Update service
    accepts it, then the bootloader does."""
    LEAVE_UPDATER = "leave_updater"
    """Back to the Normal image (accepted again once booted)."""
    REPORT = "report"
    """The signed install report (success or failure, stage and reason)."""


class Input(enum.Enum):
    """The outcome of a state's step."""

    TICK = "tick"
    """A wait ended (the check-in interval, a deferral)."""
    OK = "ok"
    NOTHING = "nothing"
    """No assignment."""
    ASSIGNED = "assigned"
    ROLLBACK = "rollback"
    """The assignment orders a rollback to the previous image."""
    REFUSED = "refused"
    """Final refusal: a manifest the device refuses, a campaign the service refuses."""
    NO_SPACE = "no_space"
    ACCEPT = "accept"
    ACCEPT_AHEAD = "accept_ahead"
    """Accepted before the window opens, on a device that can download the
    image without installing it (A/B, a plain image): download it first."""
    DEFER = "defer"
    USER_REFUSED = "user_refused"
    BOOTED_REPROGRAM = "booted_reprogram"
    BOOTED_NORMAL = "booted_normal"
    UPDATER = "updater"
    """Authorised to update the Reprogram image (not the Normal one)."""
    NOT_ACCEPTED = "not_accepted"
    CORRUPT = "corrupt"
    HEALTH_FAILED = "health_failed"
    RETRY = "retry"
    """A transient failure: the machine waits and runs the same step again."""
    GAVE_UP = "gave_up"
    """RETRY once the attempts are spent (never produced by a step)."""


class NoTransition(Exception):
    """A (state, input) pair the table does not list: a defect, never a default."""


S, On = State, Input

TRANSITIONS: dict[tuple[State, Input], State] = {
    (S.IDLE, On.TICK): S.CHECK_IN,
    (S.CHECK_IN, On.OK): S.POLL,
    (S.CHECK_IN, On.RETRY): S.CHECK_IN,
    (S.CHECK_IN, On.GAVE_UP): S.IDLE,
    (S.POLL, On.NOTHING): S.IDLE,
    (S.POLL, On.ASSIGNED): S.VERIFY_MANIFEST,
    (S.POLL, On.ROLLBACK): S.REVERT,
    (S.POLL, On.RETRY): S.POLL,
    (S.POLL, On.GAVE_UP): S.IDLE,
    (S.VERIFY_MANIFEST, On.OK): S.CHECK_SPACE,
    (S.VERIFY_MANIFEST, On.REFUSED): S.REPORT,
    (S.VERIFY_MANIFEST, On.RETRY): S.VERIFY_MANIFEST,
    (S.VERIFY_MANIFEST, On.GAVE_UP): S.IDLE,
    (S.CHECK_SPACE, On.OK): S.ASK_USER,
    (S.CHECK_SPACE, On.NO_SPACE): S.REPORT,
    # After a reboot the manifest is fetched and checked again, here too.
    (S.CHECK_SPACE, On.RETRY): S.CHECK_SPACE,
    (S.CHECK_SPACE, On.GAVE_UP): S.IDLE,
    (S.ASK_USER, On.ACCEPT): S.AUTHORISE,
    (S.ASK_USER, On.ACCEPT_AHEAD): S.DOWNLOAD_AHEAD,
    (S.ASK_USER, On.DEFER): S.DEFERRED,
    (S.ASK_USER, On.USER_REFUSED): S.REPORT,
    # A deferral is reported to the service, which may fail.
    (S.ASK_USER, On.RETRY): S.ASK_USER,
    (S.ASK_USER, On.GAVE_UP): S.IDLE,
    (S.DEFERRED, On.TICK): S.ASK_USER,
    # Downloaded and checked whole before the window: the step's wait lasts
    # until the window opens, then the authorisation is asked for. A lost
    # session or an image that does not check (its marks forgotten) is
    # retried, bounded; giving up changed nothing that boots (the free slot
    # is never the boot target until ENTER_NORMAL): back to IDLE, and the
    # next poll begins again, resuming from the verified blocks (inside the
    # window, through AUTHORISE and TRANSFER as on any device).
    (S.DOWNLOAD_AHEAD, On.OK): S.AUTHORISE,
    (S.DOWNLOAD_AHEAD, On.RETRY): S.DOWNLOAD_AHEAD,
    (S.DOWNLOAD_AHEAD, On.GAVE_UP): S.IDLE,
    (S.AUTHORISE, On.OK): S.ENTER_REPROGRAM,
    (S.AUTHORISE, On.UPDATER): S.TRANSFER_UPDATER,
    (S.AUTHORISE, On.REFUSED): S.REPORT,
    (S.AUTHORISE, On.RETRY): S.AUTHORISE,
    (S.AUTHORISE, On.GAVE_UP): S.IDLE,
    # B: a switch that fails, or a reboot that comes back in Normal, changed
    # nothing: try again; giving up leaves the device as it was.
    (S.ENTER_REPROGRAM, On.BOOTED_REPROGRAM): S.CONFIRM_REPROGRAM,
    (S.ENTER_REPROGRAM, On.RETRY): S.ENTER_REPROGRAM,
    (S.ENTER_REPROGRAM, On.GAVE_UP): S.REPORT,
    (S.CONFIRM_REPROGRAM, On.OK): S.TRANSFER,
    (S.CONFIRM_REPROGRAM, On.NOT_ACCEPTED): S.REVERT,
    (S.CONFIRM_REPROGRAM, On.RETRY): S.CONFIRM_REPROGRAM,
    (S.CONFIRM_REPROGRAM, On.GAVE_UP): S.REVERT,
    # C: a lost session or a reboot resumes from the verified blocks.
    (S.TRANSFER, On.OK): S.VERIFY_IMAGE,
    (S.TRANSFER, On.RETRY): S.TRANSFER,
    (S.TRANSFER, On.GAVE_UP): S.REVERT,
    (S.VERIFY_IMAGE, On.OK): S.ENTER_NORMAL,
    (S.VERIFY_IMAGE, On.CORRUPT): S.TRANSFER,
    # A confidential image whose plaintext is not the signed one (a content
    # key of another image): never bootable, not fetched again.
    (S.VERIFY_IMAGE, On.REFUSED): S.REVERT,
    (S.VERIFY_IMAGE, On.RETRY): S.VERIFY_IMAGE,
    (S.VERIFY_IMAGE, On.GAVE_UP): S.REVERT,
    # D: a boot of the new image that falls back to Reprogram retries.
    (S.ENTER_NORMAL, On.BOOTED_NORMAL): S.HEALTH_CHECK,
    (S.ENTER_NORMAL, On.RETRY): S.ENTER_NORMAL,
    (S.ENTER_NORMAL, On.GAVE_UP): S.REVERT,
    (S.HEALTH_CHECK, On.OK): S.CONFIRM_NORMAL,
    (S.HEALTH_CHECK, On.HEALTH_FAILED): S.REVERT,
    (S.CONFIRM_NORMAL, On.OK): S.REPORT,
    (S.CONFIRM_NORMAL, On.NOT_ACCEPTED): S.REVERT,
    (S.CONFIRM_NORMAL, On.RETRY): S.CONFIRM_NORMAL,
    (S.CONFIRM_NORMAL, On.GAVE_UP): S.REVERT,
    (S.REVERT, On.BOOTED_NORMAL): S.REPORT,
    # The seed's layout keeps no previous image: back in Reprogram mode (its
    # accepted fallback), reported; the Update service assigns what to install.
    (S.REVERT, On.BOOTED_REPROGRAM): S.REPORT,
    (S.REVERT, On.RETRY): S.REVERT,
    # The seed's layout cannot revert without its Normal image: it stays in
    # Reprogram mode and keeps trying (the device is never left with neither).
    (S.REVERT, On.GAVE_UP): S.REVERT,
    # Updating the updater: Normal stays accepted until the new Reprogram
    # image is, so a failure anywhere boots Normal and is reported.
    (S.TRANSFER_UPDATER, On.OK): S.TRY_UPDATER,
    (S.TRANSFER_UPDATER, On.RETRY): S.TRANSFER_UPDATER,
    (S.TRANSFER_UPDATER, On.GAVE_UP): S.REPORT,
    (S.TRY_UPDATER, On.BOOTED_REPROGRAM): S.CONFIRM_UPDATER,
    (S.TRY_UPDATER, On.HEALTH_FAILED): S.REPORT,
    # The manifest (checked again after the trial boot) or the progress
    # message failed: giving up goes back to the Normal image, from wherever
    # the device booted.
    (S.TRY_UPDATER, On.RETRY): S.TRY_UPDATER,
    (S.TRY_UPDATER, On.GAVE_UP): S.LEAVE_UPDATER,
    (S.CONFIRM_UPDATER, On.OK): S.LEAVE_UPDATER,
    (S.CONFIRM_UPDATER, On.HEALTH_FAILED): S.LEAVE_UPDATER,
    (S.CONFIRM_UPDATER, On.NOT_ACCEPTED): S.LEAVE_UPDATER,
    (S.CONFIRM_UPDATER, On.RETRY): S.CONFIRM_UPDATER,
    (S.CONFIRM_UPDATER, On.GAVE_UP): S.LEAVE_UPDATER,
    (S.LEAVE_UPDATER, On.BOOTED_NORMAL): S.REPORT,
    (S.LEAVE_UPDATER, On.RETRY): S.LEAVE_UPDATER,
    # The Normal image does not come back: the (accepted) Reprogram image
    # runs, as after a failed write on the seed's layout; reported.
    (S.LEAVE_UPDATER, On.GAVE_UP): S.REPORT,
    (S.REPORT, On.OK): S.CHECK_IN,
    (S.REPORT, On.RETRY): S.REPORT,
    (S.REPORT, On.GAVE_UP): S.CHECK_IN,
}
"""(state, input) -> next state: the whole of the agent's behaviour."""

RETRYING: frozenset[State] = frozenset(s for (s, i) in TRANSITIONS if i is Input.RETRY)
"""The states whose step may answer RETRY (each also lists GAVE_UP)."""

STAGE_OF: dict[State, Stage] = {
    State.POLL: Stage.NOTIFIED,
    State.VERIFY_MANIFEST: Stage.NOTIFIED,
    State.CHECK_SPACE: Stage.NOTIFIED,
    State.ASK_USER: Stage.NOTIFIED,
    State.DEFERRED: Stage.DEFERRED,
    State.DOWNLOAD_AHEAD: Stage.TRANSFERRING,
    State.AUTHORISE: Stage.AUTHORISED,
    State.ENTER_REPROGRAM: Stage.REPROGRAM_MODE,
    State.CONFIRM_REPROGRAM: Stage.REPROGRAM_MODE,
    State.TRANSFER: Stage.TRANSFERRING,
    State.VERIFY_IMAGE: Stage.VERIFYING,
    State.ENTER_NORMAL: Stage.INSTALLING,
    State.HEALTH_CHECK: Stage.NORMAL_MODE,
    State.CONFIRM_NORMAL: Stage.NORMAL_MODE,
    State.REVERT: Stage.ROLLED_BACK,
    State.TRANSFER_UPDATER: Stage.TRANSFERRING,
    State.TRY_UPDATER: Stage.INSTALLING,
    State.CONFIRM_UPDATER: Stage.REPROGRAM_MODE,
    State.LEAVE_UPDATER: Stage.NORMAL_MODE,
}
"""The stage (as the Update service counts them) each state belongs to: a
failure in a state is reported with its stage."""


def next_state(state: State, event: Input) -> State:
    """The state after ``event`` in ``state``; :class:`NoTransition` if unlisted."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise NoTransition(f"no transition from {state.value} on {event.value}") from None
