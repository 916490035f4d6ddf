"""The device agent's machine: the table's current state, the attempts of a
retrying step and their back-off (sans-IO: it takes ``now`` and answers when
the next step runs).

Retries use capped exponential back-off with full jitter: before attempt
``n`` (1, 2, ...) the agent waits a uniformly random time in
``[0, min(cap, base * 2**(n-1))]``, so a fleet that lost its service at the
same moment does not come back at the same moment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from dofpy_services.device.table import STAGE_OF, Input, State, next_state
from dofpy_services.update.device_interface import Stage

__all__ = ["AgentMachine", "Failure", "RetryPolicy", "backoff_delay"]


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` runs of a step in a row that answer RETRY before the
    machine feeds GAVE_UP; ``base`` and ``cap`` bound the back-off (seconds);
    ``max_wait`` bounds any wait a step asks for (a service's retry_after, a
    deferral), so an answer of a year, infinity or NaN cannot park the device."""

    base: float = 1.0
    cap: float = 300.0
    max_attempts: int = 8
    max_wait: float = 7 * 86_400.0

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap <= self.max_wait) or self.max_attempts < 1:
            raise ValueError("need 0 < base <= cap <= max_wait and max_attempts >= 1")


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` (1 for the first retry): full jitter."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    ceiling = min(policy.cap, policy.base * 2.0 ** min(attempt - 1, 64))
    return rng.uniform(0.0, ceiling)


@dataclass(frozen=True)
class Failure:
    """Why an update failed: the stage it was in and the reason."""

    state: State
    stage: Stage
    reason: str


@dataclass
class AgentMachine:
    """The current state, when its step runs next, and the attempts so far."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    rng: random.Random = field(default_factory=random.Random)
    state: State = State.IDLE
    run_at: float = 0.0
    attempts: int = 0
    failure: Failure | None = None
    trail: list[tuple[State, Input, State]] = field(default_factory=list)

    def feed(self, event: Input, now: float, *, reason: str = "", wait: float = 0.0) -> State:
        """Take a step's outcome at ``now``; answer the next state (its step
        runs at :attr:`run_at`). ``reason`` explains a failure outcome (kept
        for the install report with its stage); ``wait`` is at least how long
        to wait before the next step (a deferral, the service's retry_after)."""
        if event is Input.GAVE_UP:
            raise ValueError("GAVE_UP is the machine's to feed, not a step's")
        # The wait may come from a service (NotNow's retry_after): NaN and
        # negative waits are none, and none is longer than max_wait.
        delay = min(wait, self.policy.max_wait) if wait > 0 else 0.0
        attempts = self.attempts
        if event is Input.RETRY:
            attempts += 1
            if attempts >= self.policy.max_attempts:
                event = Input.GAVE_UP
                reason = reason or f"gave up after {attempts} attempts"
        before = self.state
        after = next_state(before, event)  # NoTransition leaves the machine as it was
        if event is Input.RETRY:
            delay = max(delay, backoff_delay(attempts, self.policy, self.rng))
        if event in _FAILURES or event is Input.GAVE_UP:
            self.failure = Failure(before, STAGE_OF.get(before, Stage.NOTIFIED), reason)
        self.state = after
        self.attempts = attempts if event is Input.RETRY else 0
        if after is State.IDLE or (after is State.CHECK_IN and before is State.REPORT):
            self.failure = None  # reported, or nothing begun: the next update starts clean
        self.trail.append((before, event, after))
        self.run_at = now + delay
        return after


_FAILURES = frozenset(
    {
        Input.REFUSED,
        Input.NO_SPACE,
        Input.USER_REFUSED,
        Input.NOT_ACCEPTED,
        Input.HEALTH_FAILED,
    }
)
"""Outcomes that make the update a failure (reported with their stage)."""
