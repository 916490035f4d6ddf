"""The device on the daemon framework, declared once as :data:`DEVICE`.

``dofpy device status --sim DIR`` shows a simulated device's slots, its two
record copies and its boot state, read without changing anything;
``dofpy device run --sim DIR`` runs its agent against real services
(:mod:`dofpy_services.device.run`) until it is idle again.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dofpy.credentials import parse_address
from dofpy.image.errors import ManifestRefused
from dofpy.wire.oid import OID
from dofpy_services.daemon.cli import (
    FORMATS,
    CliError,
    UsageError,
    add_format_flag,
    print_records,
)
from dofpy_services.daemon.config import DaemonConfig
from dofpy_services.daemon.service import Command, Service
from dofpy_services.device.agent import UserAnswer
from dofpy_services.device.run import SimulatedDevice, load_key_file, run_blocking
from dofpy_services.device.simulated import inspect_device
from dofpy_services.image.signing import load_trust_root

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


def _run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sim", metavar="DIR", required=True, help="the simulated device's folder")
    parser.add_argument("--credentials", required=True, help="the device's credentials file")
    parser.add_argument("--version", required=True, metavar="HOST:PORT", help="Version service")
    parser.add_argument("--version-identity", help="the Version service's identity")
    parser.add_argument("--update", required=True, metavar="HOST:PORT", help="Update service")
    parser.add_argument("--update-identity", help="the Update service's identity")
    parser.add_argument(
        "--image", required=True, action="append", metavar="HOST:PORT",
        help="an Image provider or relay (repeat: in order of preference)",
    )  # fmt: skip
    parser.add_argument("--trust-root", required=True, help="the vendor's signed trust root")
    parser.add_argument("--vendor", required=True, help="the vendor's UUID")
    parser.add_argument("--class", dest="class_id", required=True, help="the device class UUID")
    parser.add_argument("--class-name", default="", help="the class as the Version service says")
    parser.add_argument("--report-key", required=True, help="the device's Ed25519 key (PEM)")
    parser.add_argument("--content-key", help="the device's X25519 key for confidential images")
    parser.add_argument("--max-boots", type=int, default=20, help="boots at most (default 20)")
    parser.add_argument(
        "--progress-interval", type=_seconds, default=600.0, metavar="SECONDS",
        help="how often a transfer repeats its progress to the Update service, so a slow one "
        "is not taken for silence (default 600; keep it under the campaign's silence timeout)",
    )  # fmt: skip
    parser.add_argument(
        "--answer", default="accept", metavar="ANSWER",
        help="the user's answer to a manual campaign: accept (default), refuse, "
        "or defer=SECONDS (then accept)",
    )  # fmt: skip
    add_format_flag(parser, ("table", "json"))


def _oid(text: str | None) -> OID | None:
    if not text:
        return None
    try:
        return OID.from_text(text) if text.startswith("[") else OID(3, text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise UsageError(f"bad identity {text!r}: {exc}") from None


def _seconds(text: str) -> float:
    """A positive number of seconds (argparse's type for a duration)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"a positive number of seconds, not {text!r}")
    return seconds


def _answer(text: str) -> tuple[UserAnswer, float]:
    name, _, seconds = text.partition("=")
    try:
        answer = UserAnswer(name)
        delay = float(seconds) if answer is UserAnswer.DEFER else 0.0
    except ValueError:
        raise UsageError(f"--answer: accept, refuse or defer=SECONDS, not {text!r}") from None
    if (answer is UserAnswer.DEFER) != bool(seconds) or delay < 0:
        raise UsageError(f"--answer: accept, refuse or defer=SECONDS, not {text!r}")
    return answer, delay


def _run(args: argparse.Namespace) -> int:
    try:
        report_key = load_key_file(args.report_key)
        content_key = None if not args.content_key else load_key_file(args.content_key)
        addresses = [parse_address(a) for a in (args.version, args.update, *args.image)]
        vendor, class_id = uuid.UUID(args.vendor), uuid.UUID(args.class_id)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    answer, defer_seconds = _answer(args.answer)
    if not isinstance(report_key, ed25519.Ed25519PrivateKey):
        raise UsageError(f"{args.report_key} is not an Ed25519 key")
    if content_key is not None and not isinstance(content_key, X25519PrivateKey):
        raise UsageError(f"{args.content_key} is not an X25519 key")
    try:
        root = load_trust_root(args.trust_root, time.time())
    except ManifestRefused as exc:
        raise CliError(f"{args.trust_root}: {exc}") from None
    device = SimulatedDevice(
        directory=Path(args.sim),
        credentials=Path(args.credentials),
        version=addresses[0],
        update=addresses[1],
        images=tuple(addresses[2:]),
        trust_root=root,
        vendor_id=vendor,
        class_id=class_id,
        report_key=report_key,
        content_key=content_key,
        class_name=args.class_name,
        version_identity=_oid(args.version_identity),
        update_identity=_oid(args.update_identity),
        max_boots=args.max_boots,
        progress_interval=args.progress_interval,
        answer=answer,
        defer_seconds=defer_seconds,
    )
    ran = run_blocking(device)
    status = inspect_device(args.sim)
    reports: list[dict[str, Any]] = [
        {
            "campaign": r.campaign,
            "outcome": r.outcome.value,
            "version": r.running_version,
            "failed_stage": None if r.failed_stage is None else r.failed_stage.value,
            "reason": r.reason,
        }
        for r in ran.reports
    ]
    if args.format == "json":
        summary = {
            "boots": ran.boots,
            "state": ran.state.value,
            "booted": status["booted"],
            "accepted": status["accepted"],
            "reports": reports,
        }
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return 0
    sys.stdout.write(
        f"device {args.sim}: {ran.boots} boot(s), booted {status['booted']}, "
        f"accepted {status['accepted']}, agent {ran.state.value}\n"
    )
    for report in reports:
        failed = (
            f" ({report['failed_stage']}: {report['reason']})" if report["failed_stage"] else ""
        )
        sys.stdout.write(
            f"report {report['campaign']}: {report['outcome']}, running {report['version']}"
            f"{failed}\n"
        )
    return 0


DEVICE_COMMANDS: tuple[Command, ...] = (
    Command(
        "status",
        "a simulated device's slots, record copies and boot state",
        "dofpy device status --sim devices/sensor-17 --json",
        _status_flags,
        _status,
    ),
    Command(
        "run",
        "run a simulated device's agent against real services until it is idle again",
        "dofpy device run --sim devices/sensor-17 --credentials sensor-17.cred "
        "--version 10.0.0.2:3567 --update 10.0.0.3:3567 --image 10.0.0.4:3567 "
        "--trust-root root.cose --vendor UUID --class UUID --report-key sensor-17.pem",
        _run_flags,
        _run,
    ),
)

DEVICE: Service[DeviceConfig] = Service(
    name="device",
    summary="the device side: its bootloader's slots and records, and the device agent",
    config=DeviceConfig,
    commands=DEVICE_COMMANDS,
    serve_example="dofpy device status --sim devices/sensor-17",
)
