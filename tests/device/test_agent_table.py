"""The device agent's (state, input) table and its machine: the table's
shape (every state reachable from IDLE and IDLE reachable from every state,
every retrying state says where giving up leads, the update's refusals end
before the device changes anything), and the machine's bounded, fully
jittered retries and failure stages."""

from __future__ import annotations

import random
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy_services.device.machine import AgentMachine, RetryPolicy, backoff_delay
from dofpy_services.device.table import (
    RETRYING,
    TRANSITIONS,
    Input,
    NoTransition,
    State,
    next_state,
)
from dofpy_services.update.device_interface import Stage


def reachable(start: State) -> set[State]:
    seen = {start}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in seen:
                seen.add(target)
                queue.append(target)
    return seen


def test_every_state_is_reachable_from_idle_and_leads_back_to_it() -> None:
    assert reachable(State.IDLE) == set(State)
    for state in State:
        assert State.IDLE in reachable(state), state


def test_every_retrying_state_says_where_giving_up_leads() -> None:
    assert RETRYING  # the table has retrying steps at all
    for state in RETRYING:
        assert (state, Input.GAVE_UP) in TRANSITIONS, state
    # and a state that never retries never gives up
    for state, event in TRANSITIONS:
        if event is Input.GAVE_UP:
            assert state in RETRYING


# The states before the device changes anything (no boot target switched, no slot written).
BEFORE_ANY_CHANGE = {
    State.IDLE,
    State.CHECK_IN,
    State.POLL,
    State.VERIFY_MANIFEST,
    State.CHECK_SPACE,
    State.ASK_USER,
    State.DEFERRED,
    State.AUTHORISE,
}


def test_refusals_before_reprogram_mode_go_straight_to_the_report() -> None:
    """A refused manifest, a full disk, a user's or the service's refusal end
    the update without passing through a state that changes the device."""
    for state, event in [
        (State.VERIFY_MANIFEST, Input.REFUSED),
        (State.CHECK_SPACE, Input.NO_SPACE),
        (State.ASK_USER, Input.USER_REFUSED),
        (State.AUTHORISE, Input.REFUSED),
    ]:
        assert next_state(state, event) is State.REPORT
    # Reprogram mode is entered from AUTHORISE only, after every check.
    entering = {s for (s, _), t in TRANSITIONS.items() if t is State.ENTER_REPROGRAM}
    assert entering == {State.AUTHORISE, State.ENTER_REPROGRAM}
    assert reachable(State.IDLE) - BEFORE_ANY_CHANGE  # the other states exist


# Writes only the free Normal slot of an A/B device while the accepted image
# runs: never the boot target (until ENTER_NORMAL, after AUTHORISE), so giving
# up leaves what boots as it was.
AHEAD_OF_THE_WINDOW = {State.DOWNLOAD_AHEAD}


def test_failures_after_the_switch_revert_or_retry_never_idle() -> None:
    """Once in Reprogram mode, no outcome leads to IDLE or CHECK_IN without
    passing REPORT: a revert is always reported."""
    changed = set(State) - BEFORE_ANY_CHANGE - AHEAD_OF_THE_WINDOW - {State.REPORT}
    for (state, _), target in TRANSITIONS.items():
        if state in changed:
            assert target not in {State.IDLE, State.CHECK_IN}, (state, target)


def test_downloading_ahead_leads_to_the_authorisation_and_switches_nothing() -> None:
    """DOWNLOAD_AHEAD is entered only from ASK_USER (every check passed) and
    leads only to AUTHORISE, itself, or (given up) IDLE: the install still
    waits for the authorisation."""
    entering = {s for (s, _), t in TRANSITIONS.items() if t is State.DOWNLOAD_AHEAD}
    assert entering == {State.ASK_USER, State.DOWNLOAD_AHEAD}
    leaving = {t for (s, _), t in TRANSITIONS.items() if s is State.DOWNLOAD_AHEAD}
    assert leaving == {State.AUTHORISE, State.DOWNLOAD_AHEAD, State.IDLE}
    assert next_state(State.DOWNLOAD_AHEAD, Input.GAVE_UP) is State.IDLE


def test_an_unlisted_pair_is_an_error_not_a_default() -> None:
    with pytest.raises(NoTransition, match="idle on health_failed"):
        next_state(State.IDLE, Input.HEALTH_FAILED)


@given(st.integers(1, 80), st.integers(0, 2**32))
def test_backoff_is_full_jitter_under_the_cap(attempt: int, seed: int) -> None:
    policy = RetryPolicy(base=0.5, cap=60.0)
    delay = backoff_delay(attempt, policy, random.Random(seed))
    assert 0.0 <= delay <= min(60.0, 0.5 * 2 ** (attempt - 1))


def test_backoff_spreads_over_its_whole_range() -> None:
    """Full jitter: draws for the same attempt cover [0, ceiling], not a band near it."""
    rng = random.Random(3)
    policy = RetryPolicy(base=1.0, cap=8.0)
    delays = [backoff_delay(10, policy, rng) for _ in range(2000)]
    assert min(delays) < 0.5 and max(delays) > 7.5
    with pytest.raises(ValueError):
        backoff_delay(0, policy, rng)


def test_a_step_that_keeps_failing_gives_up_after_max_attempts() -> None:
    machine = AgentMachine(RetryPolicy(base=1.0, cap=4.0, max_attempts=3), random.Random(1))
    machine.state = State.TRANSFER
    now = 0.0
    waits = []
    for _ in range(2):
        assert machine.feed(Input.RETRY, now, reason="session lost") is State.TRANSFER
        waits.append(machine.run_at - now)
        now = machine.run_at
    assert all(0 <= w <= 4.0 for w in waits)
    assert machine.feed(Input.RETRY, now, reason="session lost") is State.REVERT
    assert machine.failure is not None
    assert (machine.failure.stage, machine.failure.reason) == (Stage.TRANSFERRING, "session lost")
    assert machine.attempts == 0
    with pytest.raises(ValueError, match="GAVE_UP"):
        machine.feed(Input.GAVE_UP, now)


def test_a_health_failure_is_reported_with_its_stage_and_reason() -> None:
    machine = AgentMachine(rng=random.Random(2))
    path = [
        (Input.TICK, State.CHECK_IN),
        (Input.OK, State.POLL),
        (Input.ASSIGNED, State.VERIFY_MANIFEST),
        (Input.OK, State.CHECK_SPACE),
        (Input.OK, State.ASK_USER),
        (Input.ACCEPT, State.AUTHORISE),
        (Input.OK, State.ENTER_REPROGRAM),
        (Input.BOOTED_REPROGRAM, State.CONFIRM_REPROGRAM),
        (Input.OK, State.TRANSFER),
        (Input.OK, State.VERIFY_IMAGE),
        (Input.CORRUPT, State.TRANSFER),  # refetched
        (Input.OK, State.VERIFY_IMAGE),
        (Input.OK, State.ENTER_NORMAL),
        (Input.BOOTED_NORMAL, State.HEALTH_CHECK),
        (Input.HEALTH_FAILED, State.REVERT),
        (Input.BOOTED_NORMAL, State.REPORT),
    ]
    for n, (event, expected) in enumerate(path):
        reason = "service did not start" if event is Input.HEALTH_FAILED else ""
        assert machine.feed(event, float(n), reason=reason) is expected
    assert machine.failure is not None
    assert (machine.failure.state, machine.failure.stage) == (State.HEALTH_CHECK, Stage.NORMAL_MODE)
    assert machine.failure.reason == "service did not start"
    assert machine.feed(Input.OK, 99.0) is State.CHECK_IN
    assert machine.failure is None  # reported: the next update starts clean
    assert len(machine.trail) == len(path) + 1


def test_a_deferral_waits_until_the_time_given() -> None:
    machine = AgentMachine(rng=random.Random(4))
    machine.state = State.ASK_USER
    assert machine.feed(Input.DEFER, 10.0, wait=3600.0) is State.DEFERRED
    assert machine.run_at == 3610.0
    assert machine.feed(Input.TICK, 3610.0) is State.ASK_USER


@given(st.lists(st.sampled_from(list(Input)), max_size=60), st.integers(0, 1000))
def test_any_outcome_sequence_stays_in_the_table_or_is_refused(
    events: list[Input], seed: int
) -> None:
    """Random outcomes: each either follows the table or raises NoTransition
    leaving the state unchanged; retries never wait beyond the cap."""
    policy = RetryPolicy(base=1.0, cap=30.0, max_attempts=4)
    machine = AgentMachine(policy, random.Random(seed))
    now = 0.0
    for event in events:
        before, attempts = machine.state, machine.attempts
        if event is Input.GAVE_UP:
            with pytest.raises(ValueError):
                machine.feed(event, now)
            continue
        listed = (before, event) in TRANSITIONS
        try:
            after = machine.feed(event, now)
        except NoTransition:
            assert not listed and (machine.state, machine.attempts) == (before, attempts)
            continue
        assert listed
        assert machine.run_at - now <= policy.cap
        assert machine.attempts < policy.max_attempts
        if event is not Input.RETRY:
            assert after is TRANSITIONS[(before, event)]
        now = machine.run_at


def test_the_documented_table_lists_every_transition() -> None:
    """docs/architecture.md's state table has a row per state naming each of
    its inputs and the state each leads to (the docs stay true)."""
    text = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
    section = text.split("## The device agent's state table", 1)[1].split("\n## ", 1)[0]
    rows = {
        line.split("|")[1].strip().strip("`"): line.split("|")[3]
        for line in section.splitlines()
        if line.startswith("| `")
    }
    assert set(rows) == {state.value for state in State}
    for (state, event), target in TRANSITIONS.items():
        row = rows[state.value]
        assert event.value in row, (state, event)
        assert f"`{target.value}`" in row, (state, event, target)
