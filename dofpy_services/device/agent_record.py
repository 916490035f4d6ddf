"""What the device agent keeps across reboots and power cuts: one JSON
record (:data:`RECORD_FILE`) written atomically on the agent's
:class:`~dofpy_services.device.fs.DeviceFs`
(:func:`~dofpy_services.device.state_file.write_atomically`), beside the
transfer's marks (:data:`MARKS_FILE`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from dofpy_services.device.fs import DeviceFs
from dofpy_services.device.state_file import read_framed, write_atomically
from dofpy_services.device.table import State
from dofpy_services.update.device_interface import Assignment

__all__ = ["MARKS_FILE", "RECORD_FILE", "AgentRecord", "load_record", "save_record"]

RECORD_FILE = "agent.json"
MARKS_FILE = "transfer.marks"


@dataclass
class AgentRecord:
    """What survives a reboot (JSON in the state file :data:`RECORD_FILE`)."""

    state: str = State.IDLE.value
    assignment: dict[str, object] | None = None
    image_digest: str = ""
    previous_digest: str = ""
    installed_sequence: int = 0
    installed_digest: str = ""
    """The Normal image installed when the update began (:class:`Installed`)."""
    wrapped_key: str = ""
    """A confidential image's content key as the authorisation gave it: the
    key record, wrapped to the device's key (kept wrapped; unwrapped when
    the transfer needs it)."""
    failure: list[str] | None = None  # state, stage, reason
    switched: bool = False
    """The step switched the boot target and rebooted (it reads the result)."""
    fetched_campaign: str = ""
    bytes_fetched: int = 0
    """Image bytes fetched over the network for ``fetched_campaign``'s image,
    over every attempt at it (the install report's ``bytes_fetched``); not
    the leaves resumed from the marks nor those copied from the device's own
    slots. Added up at the end of each transfer step, so kept when this
    record is written after the step: a power cut during a transfer loses
    that attempt's count (it under-counts; never counts a byte twice)."""

    def current_assignment(self) -> Assignment | None:
        data = self.assignment
        if data is None:
            return None
        values = dict(data)
        values["manifest_digest"] = bytes.fromhex(str(values["manifest_digest"]))
        return Assignment(**values)  # type: ignore[arg-type]

    def remember(self, assignment: Assignment | None) -> None:
        if assignment is None:
            self.assignment = None
            return
        if assignment.campaign != self.fetched_campaign:
            # Another campaign's image: its count starts again. A retry of
            # the same campaign (assigned again after a failed attempt)
            # keeps adding to it, so the report covers every attempt.
            self.fetched_campaign, self.bytes_fetched = assignment.campaign, 0
        values: dict[str, object] = {
            name: getattr(assignment, name) for name in Assignment.__dataclass_fields__
        }
        values["manifest_digest"] = assignment.manifest_digest.hex()
        self.assignment = values


def load_record(fs: DeviceFs) -> AgentRecord:
    """The agent's record; a fresh one when there is none."""
    data = read_framed(fs, RECORD_FILE)
    if data is None:
        # Never written (or, written atomically, it cannot be torn; a rotten
        # one): from IDLE the agent checks in and polls again, and the steps
        # read the bootloader for what already happened.
        return AgentRecord()
    return AgentRecord(**json.loads(data))


def save_record(fs: DeviceFs, record: AgentRecord) -> None:
    write_atomically(fs, RECORD_FILE, json.dumps(record.__dict__).encode())
