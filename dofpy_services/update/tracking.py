"""The per-device tracking record of a campaign: its state, intended and
actual version kept apart, and the log of its transitions.

This module defines the record and its JSON export; the durable, leased
table the campaign engine keeps it in is
:mod:`~dofpy_services.update.campaign_store` (``tracking_records`` builds
these records from it for ``dofpy update report``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = [
    "STARTED_STATES",
    "TERMINAL_STATES",
    "DeviceState",
    "Stage",
    "TrackingRecord",
    "Transition",
    "load_tracking_export",
    "write_tracking_export",
]


class DeviceState(Enum):
    """Where one device is in a campaign."""

    SCHEDULED = "scheduled"
    NOTIFIED = "notified"
    AUTHORISED = "authorised"
    REPROGRAM_MODE = "reprogram-mode"
    TRANSFERRING = "transferring"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    NORMAL_MODE = "normal-mode"
    SUCCEEDED = "succeeded"
    """Only once the Version service saw the device boot and accept the new version."""
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"
    TIMED_OUT = "timed-out"
    DEFERRED = "deferred"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset(
    {
        DeviceState.SUCCEEDED,
        DeviceState.FAILED,
        DeviceState.ROLLED_BACK,
        DeviceState.TIMED_OUT,
        DeviceState.CANCELLED,
    }
)

STARTED_STATES = frozenset(DeviceState) - {
    DeviceState.SCHEDULED,
    DeviceState.DEFERRED,
    DeviceState.CANCELLED,
}
"""States a device reaches only once the campaign has started on it: a device
whose log holds one of them counts as started (a device cancelled or deferred
before it was notified never started)."""


class Stage(Enum):
    """The stage a failure happened in (the state the device was in)."""

    NOTIFY = "notify"
    AUTHORISE = "authorise"
    REPROGRAM_MODE = "reprogram-mode"
    TRANSFER = "transfer"
    VERIFY = "verify"
    INSTALL = "install"
    BOOT = "boot"


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of state at ``time`` (POSIX seconds); a failure names its
    stage and reason."""

    time: float
    state: DeviceState
    stage: Stage | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.state is DeviceState.FAILED and self.stage is None:
            raise ValueError("a failure names its stage")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"time": self.time, "state": self.state.value}
        if self.stage is not None:
            out["stage"] = self.stage.value
        if self.reason:
            out["reason"] = self.reason
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Transition:
        stage = value.get("stage")
        return cls(
            float(value["time"]),
            DeviceState(value["state"]),
            Stage(stage) if stage is not None else None,
            str(value.get("reason", "")),
        )


@dataclass(frozen=True, slots=True)
class TrackingRecord:
    """One device in one campaign.

    ``intended_version`` is what the campaign installs; ``actual_version``
    what the Version service last saw the device running (``""``: not yet
    seen) — never inferred from the campaign's progress. ``wave`` is the
    device's wave (0: the canary); ``bytes_served`` the image bytes delivered
    to it, as the device reported them (its install report's
    ``bytes_fetched``)."""

    device: str
    wave: int
    intended_version: str
    actual_version: str = ""
    transitions: tuple[Transition, ...] = ()
    attempts: int = 0
    bytes_served: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> DeviceState:
        return self.transitions[-1].state if self.transitions else DeviceState.SCHEDULED

    @property
    def scheduled_at(self) -> float | None:
        return self.transitions[0].time if self.transitions else None

    def first(self, states: Iterable[DeviceState]) -> Transition | None:
        wanted = frozenset(states)
        return next((t for t in self.transitions if t.state in wanted), None)

    @property
    def started(self) -> bool:
        return self.first(STARTED_STATES) is not None

    @property
    def failure(self) -> Transition | None:
        """The last failed transition, if the device ended failed."""
        last = self.transitions[-1] if self.transitions else None
        return last if last is not None and last.state is DeviceState.FAILED else None

    def with_transition(self, transition: Transition) -> TrackingRecord:
        if self.transitions and transition.time < self.transitions[-1].time:
            raise ValueError("transitions are recorded in time order")
        return TrackingRecord(
            self.device,
            self.wave,
            self.intended_version,
            self.actual_version,
            (*self.transitions, transition),
            self.attempts,
            self.bytes_served,
            self.extra,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "wave": self.wave,
            "intended_version": self.intended_version,
            "actual_version": self.actual_version,
            "attempts": self.attempts,
            "bytes_served": self.bytes_served,
            "transitions": [t.to_json() for t in self.transitions],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> TrackingRecord:
        return cls(
            str(value["device"]),
            int(value["wave"]),
            str(value["intended_version"]),
            str(value.get("actual_version", "")),
            tuple(Transition.from_json(t) for t in value.get("transitions", ())),
            int(value.get("attempts", 0)),
            int(value.get("bytes_served", 0)),
        )


def write_tracking_export(
    path: str | os.PathLike[str], campaign: str, records: Sequence[TrackingRecord]
) -> None:
    """A campaign's records as one JSON file: ``{"campaign", "records"}``."""
    document = {"campaign": campaign, "records": [r.to_json() for r in records]}
    Path(path).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def load_tracking_export(path: str | os.PathLike[str]) -> tuple[str, list[TrackingRecord]]:
    """The campaign name and records of a tracking export; ``ValueError`` for
    a file that is not one."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        return str(document["campaign"]), [TrackingRecord.from_json(r) for r in document["records"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a tracking export: missing or malformed {exc}") from None
