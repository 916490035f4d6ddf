"""The device on the daemon framework, declared once as :data:`DEVICE`.

``dofpy device status --sim DIR`` shows a simulated device's slots, its two
record copies and its boot state, read without changing anything. The device
agent adds ``dofpy device run --sim DIR`` (:data:`DEVICE_COMMANDS` is where
the device's commands are listed).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from dofpy_services.daemon.cli import FORMATS, add_format_flag, print_records
from dofpy_services.daemon.config import DaemonConfig
from dofpy_services.daemon.service import Command, Service
from dofpy_services.device.simulated import inspect_device

__all__ = ["DEVICE", "DEVICE_COMMANDS", "DeviceConfig"]


@dataclass(frozen=True, slots=True)
class DeviceConfig(DaemonConfig):
    """The device's settings: the common ones."""


_SLOT_COLUMNS = ("slot", "state", "capacity", "version", "sequence", "size", "verifies", "digest")
_SUMMARY = (
    "layout",
    "booted",
    "accepted",
    "target",
    "boot_attempts",
    "max_boot_attempts",
    "rollback",
    "sequence",
)


def _status_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sim", metavar="DIR", required=True, help="the simulated device's folder")
    add_format_flag(parser, FORMATS)


def _status(args: argparse.Namespace) -> int:
    status = inspect_device(args.sim)
    if args.format == "json":
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
        return 0
    if args.format == "csv":
        print_records(status.get("slots", []), _SLOT_COLUMNS, "csv")
        return 0
    out = sys.stdout
    out.write(f"device {status['directory']}\n")
    for copy in status["records"]:
        state = f"sequence {copy['sequence']}" if copy["valid"] else f"invalid ({copy['reason']})"
        mark = " (current)" if copy["copy"] == status["current"] else ""
        out.write(f"record copy {copy['copy']}: {state}{mark}\n")
    if status["current"] is None:
        out.write("no valid record: the device cannot boot\n")
        return 1
    for key in _SUMMARY:
        value = status[key]
        out.write(f"{key}: {'-' if value is None else value}\n")
    out.write("\n")
    print_records(status["slots"], _SLOT_COLUMNS, "table")
    return 0


DEVICE_COMMANDS: tuple[Command, ...] = (
    Command(
        "status",
        "a simulated device's slots, record copies and boot state",
        "dofpy device status --sim devices/sensor-17 --json",
        _status_flags,
        _status,
    ),
)

DEVICE: Service[DeviceConfig] = Service(
    name="device",
    summary="the device side: its bootloader's slots and records, and the device agent",
    config=DeviceConfig,
    commands=DEVICE_COMMANDS,
    serve_example="dofpy device status --sim devices/sensor-17",
)
