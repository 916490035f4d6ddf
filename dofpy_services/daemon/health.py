"""A daemon's health, and the common daemon object every daemon provides.

:class:`Health` moves ``starting`` → ``ready`` → ``draining`` → ``stopped``;
the metrics endpoint answers ``/readyz`` from it, and every daemon's node
provides :data:`DAEMON_INTERFACE` on :data:`DAEMON_OBJECT` so that any OAP
client can read (or subscribe to) ``health``, and read ``version`` and
``service``.
"""

from __future__ import annotations

from collections.abc import Callable

from dofpy.oap.interface import Interface, Property, ValueType
from dofpy.trio import Provider
from dofpy.wire.oid import OID

__all__ = ["DAEMON_INTERFACE", "DAEMON_OBJECT", "HEALTH_STATES", "DaemonProvider", "Health"]

HEALTH_STATES = ("starting", "ready", "draining", "stopped")

DAEMON_INTERFACE = Interface.define(
    "[1:{01000D00}]",
    "Daemon",
    [
        Property(1, "health", ValueType.TEXT, observable=True),
        Property(2, "version", ValueType.TEXT),
        Property(3, "service", ValueType.TEXT),
    ],
)
DAEMON_OBJECT = OID(3, b"dofpy-daemon")
"""The object id of the daemon object, the same on every daemon's node."""


class Health:
    """Where a daemon is in its life; tells ``on_change`` listeners of each move."""

    def __init__(self) -> None:
        self._state = "starting"
        self._listeners: list[Callable[[str], None]] = []

    @property
    def state(self) -> str:
        return self._state

    def on_change(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def set(self, state: str) -> None:
        if state not in HEALTH_STATES:
            raise ValueError(f"health is one of {HEALTH_STATES}, not {state!r}")
        if state == self._state:
            return
        self._state = state
        for listener in self._listeners:
            listener(state)


class DaemonProvider(Provider):
    """The daemon object: health, version and service name."""

    def __init__(self, service: str, version: str, health: Health) -> None:
        self._service = service
        self._version = version
        self._health = health

    def get_health(self) -> str:
        return self._health.state

    def get_version(self) -> str:
        return self._version

    def get_service(self) -> str:
        return self._service
