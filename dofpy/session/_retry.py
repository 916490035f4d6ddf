"""Retransmission of commands: when to send the next copy, when to give up.

A command is sent, then re-sent with exponential back-off (initial timeout,
factor, cap) until a response arrives, the attempts run out or the overall
deadline passes. Each copy carries the DPP retry byte (0 for the first send),
so the provider can tell a retry from a new command and answer it from its
duplicate cache instead of executing it twice.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RetryPolicy", "RetryState"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a command is retransmitted. Times are in seconds.

    The defaults suit a LAN or a good WAN path: first retry after 0.5 s, then
    1, 2, 4 (capped at 4 s), and give up after 8 attempts or 15 s.
    """

    initial_timeout: float = 0.5
    backoff: float = 2.0
    max_timeout: float = 4.0
    max_attempts: int = 8
    total_timeout: float = 15.0

    def __post_init__(self) -> None:
        if self.initial_timeout <= 0 or self.max_timeout < self.initial_timeout:
            raise ValueError("need 0 < initial_timeout <= max_timeout")
        if self.backoff < 1.0:
            raise ValueError("backoff must be >= 1")
        if not 1 <= self.max_attempts <= 256:
            raise ValueError("max_attempts must be within 1..256 (the retry byte)")
        if self.total_timeout <= 0:
            raise ValueError("total_timeout must be > 0")


@dataclass(slots=True)
class RetryState:
    """Where one command is in its retransmission schedule."""

    policy: RetryPolicy
    started: float
    attempts: int = 1  # copies sent so far
    next_send: float = 0.0
    timeout: float = 0.0

    @classmethod
    def start(cls, policy: RetryPolicy, now: float) -> RetryState:
        state = cls(policy, now)
        state.timeout = policy.initial_timeout
        state.next_send = now + state.timeout
        return state

    @property
    def deadline(self) -> float:
        return self.started + self.policy.total_timeout

    @property
    def retry_byte(self) -> int:
        return min(self.attempts - 1, 0xFF)

    def next_timer(self) -> float:
        return min(self.next_send, self.deadline)

    def expired(self, now: float) -> bool:
        """True when no further copy may be sent and the wait is over."""
        if now >= self.deadline:
            return True
        return self.attempts >= self.policy.max_attempts and now >= self.next_send

    def due(self, now: float) -> bool:
        return not self.expired(now) and now >= self.next_send

    def record_send(self, now: float) -> None:
        """A retransmission was sent at ``now``: back off."""
        self.attempts += 1
        self.timeout = min(self.timeout * self.policy.backoff, self.policy.max_timeout)
        self.next_send = now + self.timeout
