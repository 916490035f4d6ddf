"""Telling devices about their update: at once through a live session, else
at the device's next check-in; and the jittered polling interval handed to
polling devices so that a fleet coming back from an outage does not check in
all at once.

The offer itself is durable: a device whose row is NOTIFIED is offered the
update at every check-in until it answers (the engine answers a CHECK_IN
with a NOTIFY), whichever process made the offer. What :class:`Notifier`
keeps in memory is only the sessions open to this process and the
permissions and cancellations waiting for a device without one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dofpy_services.update.engine import Action

__all__ = ["Notifier", "poll_interval"]

Send = Callable[[Action], None]


def poll_interval(base: float, jitter: float, rng: random.Random) -> float:
    """The seconds until a polling device's next check-in: ``base`` spread
    uniformly by ``±jitter`` of it (0 <= jitter < 1). Devices that all
    checked in together after an outage spread over ``2 * jitter * base``
    at their next check-in, and further at each one after."""
    if base <= 0 or not 0 <= jitter < 1:
        raise ValueError("a poll interval is > 0 and its jitter in [0, 1)")
    return rng.uniform(base * (1 - jitter), base * (1 + jitter))


@dataclass(slots=True)
class Notifier:
    """Where each action goes: the device's live session (``attach``ed) at
    once, or held for its next check-in."""

    base_poll: float = 300.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    _sessions: dict[str, Send] = field(default_factory=dict)
    _waiting: dict[str, list[Action]] = field(default_factory=dict)

    def attach(self, device: str, send: Send) -> None:
        """``device`` has a live session; anything held for it goes now."""
        self._sessions[device] = send
        for action in self._waiting.pop(device, []):
            send(action)

    def detach(self, device: str) -> None:
        self._sessions.pop(device, None)

    def deliver(self, actions: Iterable[Action]) -> list[Action]:
        """Send each action through its device's live session; the ones held
        for a check-in are returned."""
        held: list[Action] = []
        for action in actions:
            send = self._sessions.get(action.device)
            if send is not None:
                send(action)
                continue
            waiting = self._waiting.setdefault(action.device, [])
            if action not in waiting:
                waiting.append(action)
            held.append(action)
        return held

    def check_in(self, device: str, answered: Iterable[Action] = ()) -> tuple[list[Action], float]:
        """A polling device checked in: what it is told (held actions and
        ``answered``, the engine's answer to the check-in, each once) and the
        seconds until it should check in again."""
        told = self._waiting.pop(device, [])
        for action in answered:
            if action not in told:
                told.append(action)
        return told, poll_interval(self.base_poll, self.jitter, self.rng)
