"""The campaign's pure rules: windows in local time (wrapping midnight),
capped exponential back-off with full jitter, wave sizes, operator commands,
the spec's JSON form, and the engine's refusal to double-count a repeated
report (its state, or the image bytes it reports), and the start bucket's
rate caps (devices per minute, image bytes per second)."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dofpy_services.update.campaign import (
    CampaignSpec,
    CampaignState,
    RetryPolicy,
    Window,
    backoff_delay,
    in_window,
    next_window_open,
    wave_sizes,
)
from dofpy_services.update.engine import (
    AHEAD,
    HELD_AHEAD,
    CampaignRow,
    Command,
    DeviceEvent,
    DeviceRow,
    EventKind,
    apply_command,
    authorised,
    device_event,
    device_step,
    start_burst,
    start_rate,
    start_tokens,
)
from dofpy_services.update.planning import Urgency
from dofpy_services.update.tracking import DeviceState
from tests.update.campaign_fixtures import make_spec

windows = (
    st.tuples(st.integers(0, 86_399), st.integers(1, 86_400))
    .filter(lambda t: t[0] != t[1])
    .map(lambda t: Window(*t))
)


def test_a_window_wraps_past_midnight() -> None:
    night = Window.parse("22:00-04:00")
    day = 86_400
    assert in_window((night,), 23 * 3600, 0) and in_window((night,), 3 * 3600, 0)
    assert not in_window((night,), 12 * 3600, 0)
    # 12:00 UTC is 23:00 at UTC+11.
    assert in_window((night,), day + 12 * 3600, 11 * 3600)
    assert next_window_open((night,), 12 * 3600, 0) == 22 * 3600
    with pytest.raises(ValueError):
        Window.parse("25:00-26:00")


@given(st.lists(windows, min_size=1, max_size=3), st.floats(0, 1e9), st.integers(-50_000, 50_000))
@example([Window(0, 1)], 0.8, -1)  # now + a float wait rounded to just before the window
def test_the_next_opening_is_inside_a_window_and_within_a_day(
    chosen: list[Window], now: float, offset: int
) -> None:
    opens = next_window_open(chosen, now, offset)
    assert now <= opens < now + 86_400
    assert in_window(chosen, opens, offset)


@given(st.integers(1, 20), st.integers(0, 2**32))
def test_backoff_is_full_jitter_under_a_cap(retry: int, seed: int) -> None:
    policy = RetryPolicy(max_attempts=5, base=10.0, cap=300.0)
    delay = backoff_delay(policy, retry, random.Random(seed))
    assert 0.0 <= delay <= min(300.0, 10.0 * 2 ** (retry - 1))


@given(st.integers(0, 10_000), st.floats(0.001, 1.0), st.floats(1.0, 8.0))
def test_waves_cover_the_population_canary_first(
    population: int, share: float, growth: float
) -> None:
    sizes = wave_sizes(population, share, growth)
    assert sum(sizes) == population
    if population:
        assert sizes[0] == min(population, max(1, math.ceil(population * share)))
        # Each wave at least as big as the one before, but the last (the rest).
        assert all(b >= a for a, b in itertools.pairwise(sizes[:-1]))


def test_commands_apply_only_where_they_make_sense() -> None:
    assert apply_command(CampaignState.CREATED, Command.START) is CampaignState.RUNNING
    assert apply_command(CampaignState.HALTED, Command.STOP) is CampaignState.STOPPING
    for state, command in (
        (CampaignState.RUNNING, Command.START),
        (CampaignState.RUNNING, Command.RESUME),
        (CampaignState.COMPLETED, Command.CANCEL),
        (CampaignState.CANCELLED, Command.PAUSE),
    ):
        with pytest.raises(ValueError):
            apply_command(state, command)


def test_the_spec_round_trips_through_json() -> None:
    spec = make_spec(windows=(Window.parse("01:00-03:30"),), devices_per_minute=12.5)
    assert CampaignSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError):
        CampaignSpec.from_json({"intended_version": "2.0"})


def test_a_repeated_or_stale_report_changes_no_state() -> None:
    campaign = CampaignRow(make_spec(), CampaignState.RUNNING, 0, 1)
    row = DeviceRow("dev", 0, DeviceState.INSTALLING, revision=5, attempts=1, due=1e12)
    rng = random.Random(0)
    for state in (DeviceState.INSTALLING, DeviceState.TRANSFERRING, DeviceState.AUTHORISED):
        change, _ = device_event(campaign, row, DeviceEvent(EventKind.PROGRESS, state), 100.0, rng)
        assert change is None or change.state is None
    change, _ = device_event(
        campaign, row, DeviceEvent(EventKind.PROGRESS, DeviceState.NORMAL_MODE), 100.0, rng
    )
    assert change is not None and change.state is DeviceState.NORMAL_MODE


def test_the_devices_per_minute_cap_counts_each_attempt_started_and_nothing_else() -> None:
    """A first notification takes a start token, a retry's too (a new attempt
    that fetches again); asking a deferred device again does not (its
    attempt started when it was first notified), nor does any later step."""
    campaign = CampaignRow(make_spec(devices_per_minute=6.0), CampaignState.RUNNING, 0, 1)
    rng = random.Random(0)
    now = campaign.spec.terms.start + 10.0
    first = DeviceRow("dev", 0, DeviceState.SCHEDULED)
    retry = DeviceRow("dev", 0, DeviceState.SCHEDULED, attempts=1, due=now - 1.0)
    for row in (first, retry):
        change, actions = device_step(campaign, row, now, rng)
        assert change is not None and change.state is DeviceState.NOTIFIED and change.starts
        assert (change.attempts, [a.kind for a in actions]) == (row.attempts + 1, ["notify"])
    deferred = DeviceRow("dev", 0, DeviceState.DEFERRED, attempts=1, due=now - 1.0)
    change, _ = device_step(campaign, deferred, now, rng)
    assert change is not None and change.state is DeviceState.NOTIFIED and not change.starts
    notified = DeviceRow("dev", 0, DeviceState.NOTIFIED, attempts=1, due=now + 100.0)
    for event in (
        DeviceEvent(EventKind.CHECK_IN),
        DeviceEvent(EventKind.PROGRESS, DeviceState.AUTHORISED),
        DeviceEvent(EventKind.PROGRESS, DeviceState.TRANSFERRING),
    ):
        change, _ = device_event(campaign, notified, event, now, rng)
        assert change is None or not change.starts


@pytest.mark.parametrize(
    "state", [DeviceState.INSTALLING, DeviceState.SUCCEEDED, DeviceState.FAILED]
)
def test_bytes_a_device_reports_are_kept_at_the_largest_whatever_its_state(
    state: DeviceState,
) -> None:
    """The install report's count of image bytes raises ``bytes_served``
    (settled rows too: the report comes after the Version service saw the
    success), never lowers it, and a repeat changes nothing."""
    campaign = CampaignRow(make_spec(), CampaignState.RUNNING, 0, 1)
    row = DeviceRow("dev", 0, state, revision=5, attempts=1, due=1e12, bytes_served=1000)
    rng = random.Random(0)
    for kind in (EventKind.DELIVERED, EventKind.FAILED):
        event = DeviceEvent(kind, reason="disk full", bytes_delivered=4000)
        change, _ = device_event(campaign, row, event, 100.0, rng)
        assert change is not None and change.bytes_served == 4000
        if kind == EventKind.DELIVERED or state is not DeviceState.INSTALLING:
            assert (change.state, change.stage, change.reason) == (None, row.stage, row.reason)
        else:
            assert change.state is DeviceState.FAILED  # the failure itself still counts
    for fewer in (1000, 999, 0):
        event = DeviceEvent(EventKind.DELIVERED, bytes_delivered=fewer)
        assert device_event(campaign, row, event, 100.0, rng) == (None, [])


@pytest.mark.parametrize(
    "state", [DeviceState.TIMED_OUT, DeviceState.FAILED, DeviceState.ROLLED_BACK]
)
def test_a_device_counted_failed_then_seen_on_the_intended_version_succeeds(
    state: DeviceState,
) -> None:
    """Timed out while slow (not silent for good), then seen by the Version
    service booted and accepted on the intended version: the record follows
    what the device runs (the demo's check found such devices counted timed
    out while running the new image). Unaccepted, or another version, keeps
    the failure."""
    spec = make_spec()
    campaign = CampaignRow(spec, CampaignState.COMPLETED, 0, 1)
    row = DeviceRow("dev", 0, state, revision=7, attempts=2, actual_version="1.0")
    rng = random.Random(0)
    seen = DeviceEvent(EventKind.OBSERVED, version=spec.intended_version, accepted=True)
    change, actions = device_event(campaign, row, seen, 100.0, rng)
    assert change is not None and change.state is DeviceState.SUCCEEDED and actions == []
    assert change.actual_version == spec.intended_version
    assert change.reason == f"succeeded after it was counted {state.value}"
    for kept in (
        DeviceEvent(EventKind.OBSERVED, version=spec.intended_version, accepted=False),
        DeviceEvent(EventKind.OBSERVED, version="1.0", accepted=True),
    ):
        change, _ = device_event(campaign, row, kept, 100.0, rng)
        assert change is None or change.state is None
    cancelled = DeviceRow("dev", 0, DeviceState.CANCELLED, revision=7, attempts=1)
    change, _ = device_event(campaign, cancelled, seen, 100.0, rng)
    assert change is None or change.state is None


@given(
    rate=st.floats(min_value=1.0, max_value=6000.0),
    step=st.floats(min_value=0.5, max_value=15.0),
)
def test_the_start_bucket_meets_its_rate_when_steps_are_far_apart(rate: float, step: float) -> None:
    """Steps seconds apart still start ``rate`` devices a minute, never more
    than ``rate * T / 60`` plus one burst; a long pause ends in one burst of
    at most 15 s worth, not a flood."""
    spec = make_spec(devices_per_minute=rate)
    tokens, at, started, now = 0.0, 0.0, 0, 0.0
    burst = start_burst(spec, step) + 1.0
    for _ in range(200):
        now += step
        tokens, at = start_tokens(spec, tokens, at, now)
        while tokens >= 1.0:  # each step starts what its tokens allow
            tokens, at = start_tokens(spec, tokens - 1.0, at, now)  # same step: unchanged
            started += 1
    assert rate * now / 60.0 - 1.0 - 1e-6 <= started <= rate * now / 60.0 + burst
    after_pause, _ = start_tokens(spec, tokens, at, now + 86_400.0)
    assert after_pause == max(1.0, rate * 15.0 / 60.0) + 1.0


def test_a_download_before_the_authorisation_is_marked_ahead_until_it_comes() -> None:
    """Reported from NOTIFIED, TRANSFERRING and VERIFYING mark the row ahead
    (not authorised: a stop cancels it); the authorisation clears the mark;
    a device authorised first is never marked."""
    window = Window.parse("02:00-03:00")
    spec = make_spec(windows=(window,))
    running = CampaignRow(spec, CampaignState.RUNNING, 0, 1)
    stopping = CampaignRow(spec, CampaignState.STOPPING, 0, 1)
    rng = random.Random(0)
    outside = 86_400.0 * 100 + 3600 * 12  # noon UTC
    notified = DeviceRow("dev", 0, DeviceState.NOTIFIED, attempts=1, due=outside + 900)

    def progress(row: DeviceRow, state: DeviceState, now: float) -> DeviceRow:
        change, _ = device_event(running, row, DeviceEvent(EventKind.PROGRESS, state), now, rng)
        assert change is not None
        return replace(
            row,
            state=change.state or row.state,
            due=change.due,
            reason=change.reason,
            stage=change.stage,
        )

    transferring = progress(notified, DeviceState.TRANSFERRING, outside)
    assert (transferring.state, transferring.reason) == (DeviceState.TRANSFERRING, AHEAD)
    assert not authorised(transferring)
    held = progress(transferring, DeviceState.VERIFYING, outside + 1)
    assert (held.reason, held.due) == (HELD_AHEAD, next_window_open((window,), outside, 0))
    assert not authorised(held)
    change, actions = device_step(stopping, held, outside + 2, rng)
    assert change is not None and change.state is DeviceState.CANCELLED and actions
    inside = held.due + 60
    authorised_now = progress(held, DeviceState.AUTHORISED, inside)
    assert (authorised_now.state, authorised_now.reason) == (DeviceState.VERIFYING, "")
    assert authorised(authorised_now) and authorised_now.due == inside + spec.silence_timeout
    # Authorised first: never ahead, and a stop lets it finish.
    first = progress(notified, DeviceState.AUTHORISED, outside)
    first = progress(first, DeviceState.TRANSFERRING, outside + 1)
    assert (first.reason, authorised(first)) == ("", True)
    assert device_step(stopping, first, outside + 2, rng) == (None, [])


MIB = 2**20


def test_the_start_rate_is_the_lesser_cap_and_urgent_keeps_the_bytes_cap() -> None:
    # Bytes only: 100 KiB/s of a 1 MiB image is a start every 10.24 s.
    bytes_only = make_spec(image_size=MIB, bytes_per_second=100 * 1024.0)
    assert start_rate(bytes_only) == pytest.approx(60.0 / 10.24)
    # Devices only.
    assert start_rate(make_spec(image_size=MIB, devices_per_minute=7.0)) == 7.0
    # Both: the lesser.
    both = make_spec(image_size=MIB, bytes_per_second=100 * 1024.0, devices_per_minute=3.0)
    assert start_rate(both) == 3.0
    both = make_spec(image_size=MIB, bytes_per_second=100 * 1024.0, devices_per_minute=600.0)
    assert start_rate(both) == pytest.approx(60.0 / 10.24)
    # Urgent: devices per minute ignored, the bytes/s cap kept.
    urgent = make_spec(
        image_size=MIB,
        bytes_per_second=100 * 1024.0,
        devices_per_minute=3.0,
        urgency=Urgency.URGENT,
    )
    assert start_rate(urgent) == pytest.approx(60.0 / 10.24)
    assert start_rate(make_spec(devices_per_minute=3.0, urgency=Urgency.URGENT)) == 0.0
    # No cap, or no image size to count bytes by: uncapped, one token always.
    for uncapped in (make_spec(), make_spec(image_size=0, bytes_per_second=1000.0)):
        assert start_rate(uncapped) == 0.0
        assert start_tokens(uncapped, 0.0, 0.0, 5.0) == (1.0, 5.0)


@given(
    # Up to 50 starts a second: the loop below starts each one.
    starts_per_second=st.floats(min_value=0.001, max_value=50.0),
    image_size=st.integers(1, 8 * 2**30),
    devices_per_minute=st.sampled_from([0.0, 1.0, 60.0, 600.0]),
    urgency=st.sampled_from(list(Urgency)),
    step=st.floats(min_value=0.5, max_value=15.0),
)
@example(100 / 1024, MIB, 0.0, Urgency.CONVENIENCE, 10.0)
def test_the_bytes_started_in_any_window_stay_under_the_stated_bound(
    starts_per_second: float,
    image_size: int,
    devices_per_minute: float,
    urgency: Urgency,
    step: float,
) -> None:
    """Bytes started (a start, one image) in any T seconds: at most
    ``B * T + max(S, 15 * B) + S``, whatever the steps and the other cap."""
    bytes_per_second = starts_per_second * image_size
    spec = make_spec(
        image_size=image_size,
        bytes_per_second=bytes_per_second,
        devices_per_minute=devices_per_minute,
        urgency=urgency,
    )
    slack = max(image_size, 15.0 * bytes_per_second) + image_size
    tokens, at, now = 0.0, 0.0, 0.0
    steps: list[tuple[float, int]] = []  # (time, devices started then)
    for _ in range(120):
        now += step
        tokens, at = start_tokens(spec, tokens, at, now)
        started = 0
        while tokens >= 1.0 - 1e-9 and started <= 15 * 50 + 1:  # bounded: more fails below
            tokens, at = start_tokens(spec, tokens - 1.0, at, now)
            started += 1
        steps.append((now, started))
    # The cap is reached, not only respected: as many as the rate allows.
    total = sum(n for _, n in steps)
    assert total >= start_rate(spec) * now / 60.0 - 1.0 - 1e-6
    for first, (begin, _) in enumerate(steps):
        started = 0
        for end, count in steps[first:]:
            started += count
            span = end - begin
            assert started * image_size <= bytes_per_second * span + slack * (1 + 1e-9), (
                begin,
                span,
            )
