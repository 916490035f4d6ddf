"""``dofpy fleet simulate --devices N``: a simulated fleet against running
services (issue 15), declared as :data:`FLEET`.

The command enrols its devices itself (identities and grants in the
Authenticator's store, report keys in the Update service's device table,
simulated bootloaders flashed with ``--firmware`` in ``--dir``), runs every
device's real agent in this process (:mod:`~dofpy_services.fleet.simulate`)
with the faults asked for, and stops when ``--campaign`` settles in the
campaign store (completed, halted, stopped or cancelled) or after
``--duration`` seconds. It prints the device-side outcomes, the throughput
(updates per minute), the faults done and, with ``--campaign``, the
campaign's devices by state. The campaign itself is the operator's (``dofpy
update campaign start`` once the fleet has checked in: the population is
resolved from the Version registry then).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from dofpy.credentials import parse_address
from dofpy.image.errors import ManifestRefused
from dofpy.wire.oid import OID
from dofpy_services.authenticator.grants import parse_domain
from dofpy_services.authenticator.store import open_store
from dofpy_services.daemon.cli import CliError, UsageError, add_format_flag
from dofpy_services.daemon.config import DaemonConfig
from dofpy_services.daemon.service import Command, Service
from dofpy_services.device.boot_records import Layout
from dofpy_services.device.simulated import FirmwareImage
from dofpy_services.fleet.enrol import Firmware, enrol_fleet
from dofpy_services.fleet.simulate import FleetFaults, FleetResult, FleetServices, run_fleet
from dofpy_services.image.signing import load_trust_root
from dofpy_services.store import open_database_sync
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.campaign import CampaignState

__all__ = ["FLEET", "FleetConfig"]

_SETTLED = frozenset(
    {
        CampaignState.COMPLETED,
        CampaignState.HALTED,
        CampaignState.STOPPED,
        CampaignState.CANCELLED,
    }
)


@dataclass(frozen=True, slots=True)
class FleetConfig(DaemonConfig):
    """The fleet simulator's settings: the common ones."""


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"a share in [0, 1), not {text}")
    return value


def _simulate_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, required=True, help="how many devices")
    parser.add_argument("--dir", required=True, help="the fleet's folder (one per device)")
    parser.add_argument("--authenticator-db", required=True, help="the Authenticator's store")
    parser.add_argument("--domain", required=True, help="the domain the devices join")
    parser.add_argument("--authenticator", required=True, metavar="HOST:PORT")
    parser.add_argument("--campaign-db", required=True, help="the Update service's store")
    parser.add_argument("--campaign", help="stop once this campaign settles")
    parser.add_argument("--version", required=True, metavar="HOST:PORT")
    parser.add_argument("--version-identity")
    parser.add_argument(
        "--update",
        required=True,
        action="append",
        metavar="HOST:PORT",
        help="an Update process (repeatable: processes sharing one PostgreSQL campaign store,"
        " device n talks to the (n mod count)-th)",
    )
    parser.add_argument("--update-identity")
    parser.add_argument("--image", required=True, action="append", metavar="HOST:PORT")
    parser.add_argument("--trust-root", required=True, help="the vendor's signed trust root")
    parser.add_argument("--vendor", required=True, help="the vendor's UUID")
    parser.add_argument("--class", dest="class_id", required=True, help="the device class UUID")
    parser.add_argument("--class-name", required=True, help="the class as devices report it")
    parser.add_argument("--firmware", required=True, help="the Normal image devices run now")
    parser.add_argument("--firmware-version", required=True)
    parser.add_argument("--firmware-sequence", type=int, required=True)
    parser.add_argument("--reprogram", required=True, help="the Reprogram image (updater)")
    parser.add_argument("--reprogram-version", default="r1")
    parser.add_argument("--normal-capacity", type=int, required=True, help="bytes")
    parser.add_argument("--reprogram-capacity", type=int, required=True, help="bytes")
    parser.add_argument("--layout", choices=["seed", "ab"], default="seed")
    parser.add_argument("--prefix", default="sim", help="device names: PREFIX-00001@DOMAIN")
    parser.add_argument("--loss", type=_share, default=0.0, help="datagram loss, each way")
    parser.add_argument("--power-cuts", type=_share, default=0.0, help="share losing power")
    parser.add_argument("--offline", type=_share, default=0.0, help="share offline throughout")
    parser.add_argument("--unhealthy", type=int, default=0, help="devices failing health checks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds (jittered)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds at most")
    add_format_flag(parser, ("table", "json"))


def _oid(text: str | None) -> OID | None:
    return None if not text else OID(3, text.encode("ascii"))


def _campaign_states(location: str, name: str) -> tuple[str, dict[str, int]]:
    with open_database_sync(location, service=cs.SERVICE, migrations=cs.MIGRATIONS) as db:
        campaign = db.read(lambda tx: cs.load_campaign(tx, name))
        rows = db.read(lambda tx: cs.load_devices(tx, name))
    return campaign.state.value, dict(sorted(Counter(r.state.value for r in rows).items()))


def _simulate(args: argparse.Namespace) -> int:
    if args.devices < 1:
        raise UsageError("--devices: at least one")
    try:
        services = FleetServices(
            parse_address(args.version),
            tuple(parse_address(a) for a in args.update),
            tuple(parse_address(a) for a in args.image),
            _oid(args.version_identity),
            _oid(args.update_identity),
        )
        authenticator = parse_address(args.authenticator)
        vendor, class_id = uuid.UUID(args.vendor), uuid.UUID(args.class_id)
        faults = FleetFaults(args.loss, args.power_cuts, args.offline, args.unhealthy, args.seed)
        firmware = Firmware(
            FirmwareImage(
                Path(args.firmware).read_bytes(), args.firmware_version, args.firmware_sequence
            ),
            FirmwareImage(Path(args.reprogram).read_bytes(), args.reprogram_version, 1),
            args.normal_capacity,
            args.reprogram_capacity,
            Layout.SEED if args.layout == "seed" else Layout.AB,
        )
        domain = parse_domain(args.domain)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    try:
        root = load_trust_root(args.trust_root, time.time())
    except ManifestRefused as exc:
        raise CliError(f"{args.trust_root}: {exc}") from None
    store = open_store(args.authenticator_db)
    try:
        with open_database_sync(
            args.campaign_db, service=cs.SERVICE, migrations=cs.MIGRATIONS
        ) as campaigns:
            devices = enrol_fleet(
                store, campaigns, domain=domain, domain_name=args.domain.strip(),
                count=args.devices, directory=Path(args.dir), firmware=firmware,
                authenticator=authenticator, prefix=args.prefix, seed=args.seed,
            )  # fmt: skip
    finally:
        store.close()
    print(f"enrolled {len(devices)} devices in {args.dir}", file=sys.stderr, flush=True)

    def settled() -> bool:
        if not args.campaign:
            return False
        try:
            state, _ = _campaign_states(args.campaign_db, args.campaign)
        except KeyError:
            return False  # not created yet
        return CampaignState(state) in _SETTLED

    result: FleetResult = trio.run(
        lambda: run_fleet(
            devices, services, trust_root=root, vendor_id=vendor, class_id=class_id,
            class_name=args.class_name, faults=faults, poll_interval=args.poll_interval,
            duration=args.duration, done=settled,
            on_checked_in=lambda: print("every device checked in", file=sys.stderr, flush=True),
        )
    )  # fmt: skip
    document: dict[str, Any] = {
        "devices": len(result.devices),
        "seconds": round(result.ended - result.started, 3),
        "outcomes": dict(sorted(result.counts().items())),
        "updates_per_minute": round(result.updates_per_minute(), 2),
        "update_span_seconds": round(result.update_span(), 3),
        "power_cuts": sum(d.power_cuts for d in result.devices),
        "datagrams_dropped": result.dropped,
        "datagrams_forwarded": result.forwarded,
        "errors": [f"{d.identity}: {d.error}" for d in result.devices if d.error],
    }
    lines = result.lines()
    if args.campaign:
        state, by_state = _campaign_states(args.campaign_db, args.campaign)
        document["campaign"] = {"name": args.campaign, "state": state, "devices": by_state}
        lines.append(
            f"campaign {args.campaign}: {state}; devices "
            + ", ".join(f"{k} {v}" for k, v in by_state.items())
        )
    if args.format == "json":
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write("\n".join(lines + document["errors"]) + "\n")
    return 0


FLEET: Service[FleetConfig] = Service(
    name="fleet",
    summary="simulated fleets of real device agents against running services",
    config=FleetConfig,
    commands=(
        Command(
            "simulate",
            "run N simulated devices (real agents) against running services, with faults",
            "dofpy fleet simulate --devices 100 --dir fleet --loss 0.02 --power-cuts 0.05 ...",
            _simulate_flags,
            _simulate,
        ),
    ),
    serve_example="dofpy fleet simulate --devices 100 --dir fleet ...",
)
