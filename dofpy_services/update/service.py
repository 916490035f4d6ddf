"""The Update service on the daemon framework, declared once as :data:`UPDATE`.

``serve`` runs the campaign engine and answers devices from it
(:mod:`dofpy_services.update.daemon`). The commands: ``plan`` (the scale a
campaign needs to meet its deadline), ``report`` (a campaign's report from the
campaign store or a tracking export, in four formats), ``campaign
terms|approve|check`` (the terms parties approve, a party's signed approval,
and whether the approvals meet the policy), ``campaign create|approve
--db|start|pause|resume|stop|cancel|status|list`` on the campaign store
(:mod:`~dofpy_services.update.campaign_cli`), ``device enrol`` (a device's
report key) and ``audit verify`` (an audit trail, end to end).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from dofpy.errors import BadPacket
from dofpy.image.cose import decode_cose_untrusted
from dofpy.image.manifest import MANIFEST_CONTENT_TYPE
from dofpy.image.trust import Party
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy_services.daemon.cli import CliError, UsageError
from dofpy_services.daemon.config import (
    DURATION,
    INT,
    OPTIONAL_TEXT,
    PATH,
    ConfigError,
    DaemonConfig,
    mask_url_password,
    option,
)
from dofpy_services.daemon.service import Command, Service, ServiceContext
from dofpy_services.image.keys import (
    load_private_key,
    load_public_key,
    read_passphrase,
    write_document,
)
from dofpy_services.image.signing import load_trust_root, parse_time
from dofpy_services.update.approvals import (
    ApprovalPolicy,
    CampaignTerms,
    Decision,
    check_approvals,
    sign_approval,
)
from dofpy_services.update.audit import TrailTampered, read_trail, verify_trail
from dofpy_services.update.campaign_cli import (
    STORE_ACTIONS,
    add_store_actions,
    load_records,
    read_store_trail,
    run_store_action,
)
from dofpy_services.update.daemon import attach_engine, open_campaign_store
from dofpy_services.update.device_interface import UPDATE_DEVICE
from dofpy_services.update.device_keys import add_device_flags, run_device_command
from dofpy_services.update.planning import (
    DEFAULT_CAPACITY,
    CampaignPlan,
    Capacity,
    CapacityFigure,
    PlanRequest,
    Urgency,
    plan_campaign,
)
from dofpy_services.update.reports import FORMATS, build_report, render_report
from dofpy_services.update.tracking import load_tracking_export
from dofpy_services.version.interface import QueryFilter
from dofpy_services.version.store import open_version_store

__all__ = ["UPDATE", "UpdateConfig", "plan_lines"]


@dataclass(frozen=True, slots=True)
class UpdateConfig(DaemonConfig):
    """The Update service's settings: the common ones (``db``: the campaign
    store) and the engine's."""

    RETIRED: ClassVar[Mapping[str, str]] = {
        "bytes_share": "each campaign's bytes/s cap paces its device starts, in the"
        " campaign's row shared by every process (no per-process share)",
    }

    service_key: str | None = option(
        PATH, "the Update service's private key: signs the audit trail", default=None
    )
    passphrase_file: str | None = option(PATH, "the service key's passphrase file", default=None)
    version_db: str | None = option(
        OPTIONAL_TEXT,
        "the Version registry whose reports count devices succeeded (SQLite file or URL)",
        default=None,
        mask=mask_url_password,
    )
    step_interval: float = option(DURATION, "seconds between campaign steps", default=10.0)
    lease: float = option(
        DURATION, "seconds a device stays this process's without being touched", default=60.0
    )
    owner: str | None = option(
        OPTIONAL_TEXT, "this process's name in leases (default host:pid)", default=None
    )
    max_watched: int = option(
        INT,
        "devices this process keeps a notice object for (pushes; the rest poll)",
        default=65_536,
    )


def _check(config: UpdateConfig) -> None:
    if not config.db:
        raise ConfigError("dofpy update serve needs db: the campaign store")
    if not config.service_key:
        raise ConfigError("dofpy update serve needs service_key: it signs the audit trail")
    if config.step_interval <= 0 or config.lease <= config.step_interval:
        raise ConfigError("step_interval must be > 0 and lease longer than it")
    if config.max_watched < 1:
        raise ConfigError("max_watched must be >= 1")


# -- sizes and durations ----------------------------------------------------------------

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_SPAN_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """``4GiB``, ``300MB``, ``1024`` -> bytes."""
    match = _SIZE.match(text.strip())
    if not match:
        raise UsageError(f"bad size {text!r}: e.g. 300MB, 4GiB or bytes")
    unit = (match.group(2) or "B").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_span(text: str) -> float:
    """``7d``, ``36h``, ``90m``, ``3600`` -> seconds."""
    match = _SPAN.match(text.strip())
    if not match:
        raise UsageError(f"bad duration {text!r}: e.g. 7d, 36h, 90m or seconds")
    return float(match.group(1)) * _SPAN_UNITS[match.group(2)]


# -- plan ---------------------------------------------------------------------------------


def _plan_flags(sub: argparse.ArgumentParser) -> None:
    who = sub.add_mutually_exclusive_group(required=True)
    who.add_argument("--population", type=int, help="how many devices")
    who.add_argument(
        "--db", help="count the population in this Version registry (SQLite file or URL)"
    )
    sub.add_argument("--class", dest="device_class", help="with --db: devices of this class")
    sub.add_argument("--not-version", help="with --db: devices not running this version")
    sub.add_argument("--image-size", required=True, help="the image's size: 300MB, 4GiB, bytes")
    sub.add_argument("--deadline", required=True, help="time from start to deadline: 7d, 36h")
    sub.add_argument("--urgency", choices=[u.value for u in Urgency], default="convenience")
    sub.add_argument("--no-relays", action="store_true", help="devices fetch from the providers")
    sub.add_argument("--provider-rate", help="bytes/s one Image provider serves (e.g. 40MB)")
    sub.add_argument("--relay-rate", help="bytes/s one relay serves")
    sub.add_argument("--device-rate", help="bytes/s one device fetches and installs")
    sub.add_argument("--version-rate", type=float, help="reports/s one Version process records")
    sub.add_argument("--canary-share", type=float, default=0.01, help="default 0.01")
    sub.add_argument("--wave-growth", type=float, default=4.0, help="default 4")
    sub.add_argument("--wave-soak", default="1h", help="wait between waves (default 1h)")
    sub.add_argument("--max-nodes", type=int, help="Image providers plus relays at most")
    sub.add_argument("--max-server-rate", help="the server's uplink at most, bytes/s (e.g. 1GB)")
    sub.add_argument("--price-node-hour", type=float, default=0.10, help="default 0.10")
    sub.add_argument("--price-gb", type=float, default=0.05, help="per 10^9 bytes; default 0.05")
    sub.add_argument("--json", action="store_true", help="print the plan as JSON")


def _figure(default: CapacityFigure, given: str | float | None) -> CapacityFigure:
    if given is None:
        return default
    value = float(given) if isinstance(given, float) else float(parse_size(given))
    if value <= 0 or not math.isfinite(value):
        raise UsageError("a capacity must be > 0")
    return CapacityFigure(value, default.unit, "given on the command line")


def _population(args: argparse.Namespace) -> int:
    if args.population is not None:
        if args.device_class or args.not_version:
            raise UsageError("--class and --not-version go with --db, not --population")
        return int(args.population)
    query = QueryFilter(device_class=args.device_class, not_version=args.not_version)
    with open_version_store(args.db) as store:
        return store.count(query)


def _bytes_rate(value: float) -> str:
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B/s"


def plan_lines(plan: CampaignPlan) -> list[str]:
    """The plan as the lines ``dofpy update plan`` prints."""
    request = plan.request
    capacity = request.capacity
    lines = [
        f"population        {request.population} devices",
        f"image size        {request.image_size} bytes",
        f"window            {request.window:.0f} s ({request.urgency.value})",
        f"rate              {plan.rate:.3f} devices/s ({plan.rate * 60:.1f}/min)",
        f"duration          {plan.duration:.0f} s (waves and soaks)",
        f"concurrent        {plan.concurrent_devices} devices transferring at once",
        f"waves             {len(plan.waves)}",
    ]
    lines += [
        f"  wave {w.index:<3}       {w.devices} devices from {w.start:.0f} s for {w.duration:.0f} s"
        for w in plan.waves
    ]
    lines += [
        f"image providers   {plan.provider_nodes}",
        f"relays            {plan.relay_nodes}",
        f"version nodes     {plan.version_nodes}",
        f"device traffic    {_bytes_rate(plan.device_bytes_per_second)}",
        f"server bandwidth  {_bytes_rate(plan.server_bytes_per_second)} "
        f"({plan.server_bytes} bytes)",
        # The campaign's caps that hold it to the plan's rate; urgent ignores
        # the first, never the second (both pace starts: see engine.start_rate).
        f"campaign caps     --devices-per-minute {plan.rate * 60:.2f}"
        f" --bytes-per-second {plan.device_bytes_per_second:.0f}",
        f"cost              {plan.cost:.2f} = {plan.node_hours:.2f} node-hours x "
        f"{request.price_node_hour} + {plan.server_bytes / 1e9:.3f} GB x {request.price_gb}",
        "capacity per node:",
    ]
    for name in ("provider", "relay", "device", "version"):
        figure: CapacityFigure = getattr(
            capacity,
            {
                "provider": "provider_bytes_per_second",
                "relay": "relay_bytes_per_second",
                "device": "device_bytes_per_second",
                "version": "version_reports_per_second",
            }[name],
        )
        lines.append(f"  {name:<9} {figure.value:,.1f} {figure.unit}  ({figure.source})")
    lines += [f"WARNING: {w}" for w in plan.warnings]
    if plan.meets_deadline:
        lines.append("the deadline can be met")
    return lines


def _plan_json(plan: CampaignPlan) -> dict[str, Any]:
    return {
        "rate": plan.rate,
        "duration": plan.duration,
        "waves": [
            {"index": w.index, "devices": w.devices, "start": w.start, "duration": w.duration}
            for w in plan.waves
        ],
        "concurrent_devices": plan.concurrent_devices,
        "provider_nodes": plan.provider_nodes,
        "relay_nodes": plan.relay_nodes,
        "version_nodes": plan.version_nodes,
        "device_bytes_per_second": plan.device_bytes_per_second,
        "server_bytes_per_second": plan.server_bytes_per_second,
        "server_bytes": plan.server_bytes,
        "campaign_caps": {
            "devices_per_minute": plan.rate * 60,
            "bytes_per_second": plan.device_bytes_per_second,
        },
        "node_hours": plan.node_hours,
        "cost": plan.cost,
        "meets_deadline": plan.meets_deadline,
        "warnings": list(plan.warnings),
    }


def _plan(args: argparse.Namespace) -> int:
    capacity = Capacity(
        _figure(DEFAULT_CAPACITY.provider_bytes_per_second, args.provider_rate),
        _figure(DEFAULT_CAPACITY.relay_bytes_per_second, args.relay_rate),
        _figure(DEFAULT_CAPACITY.device_bytes_per_second, args.device_rate),
        _figure(DEFAULT_CAPACITY.version_reports_per_second, args.version_rate),
    )
    try:
        request = PlanRequest(
            population=_population(args),
            image_size=parse_size(args.image_size),
            window=parse_span(args.deadline),
            urgency=Urgency(args.urgency),
            capacity=capacity,
            relays=not args.no_relays,
            canary_share=args.canary_share,
            wave_growth=args.wave_growth,
            wave_soak=parse_span(args.wave_soak),
            max_nodes=args.max_nodes,
            max_server_bytes_per_second=(
                None if args.max_server_rate is None else float(parse_size(args.max_server_rate))
            ),
            price_node_hour=args.price_node_hour,
            price_gb=args.price_gb,
        )
        plan = plan_campaign(request)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(_plan_json(plan), indent=2))
    else:
        print("\n".join(plan_lines(plan)))
    return 0 if plan.meets_deadline else 3


# -- report -------------------------------------------------------------------------------


def _report_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "campaign",
        metavar="CAMPAIGN",
        help="the campaign's name in the store given by --db, or a tracking export (JSON)",
    )
    sub.add_argument("--db", help="the campaign store (SQLite file or URL)")
    sub.add_argument("--format", choices=FORMATS, default="table", help="default table")
    sub.add_argument("--out", help="write to this file instead of standard output")


def _report(args: argparse.Namespace) -> int:
    if args.db:
        campaign, records = args.campaign, load_records(args.db, args.campaign)
    else:
        campaign, records = load_tracking_export(args.campaign)
    text = render_report(build_report(campaign, records), args.format)
    if args.out:
        write_document(args.out, text.encode("utf-8"), overwrite=True)
    else:
        sys.stdout.write(text)
    return 0


# -- campaign terms / approve / check ------------------------------------------------------


def _manifest_digest(path: str) -> bytes:
    data = Path(path).read_bytes()
    try:
        message = decode_cose_untrusted(data)
    except BadPacket as exc:
        raise CliError(f"{path} is not a signed manifest: {exc}") from None
    if message.content_type != MANIFEST_CONTENT_TYPE:
        raise CliError(f"{path} is not a manifest")
    # The manifest's digest: its payload's, however many parties signed it.
    return hashlib.sha256(message.payload).digest()


def _load_terms(path: str) -> CampaignTerms:
    try:
        return CampaignTerms.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not a campaign terms file: {exc}") from None


def _campaign_flags(sub: argparse.ArgumentParser) -> None:
    actions = sub.add_subparsers(dest="campaign_command", required=True, metavar="ACTION")
    terms = actions.add_parser("terms", help="write the terms parties approve (a JSON file)")
    terms.add_argument("--name", required=True)
    terms.add_argument("--manifest", required=True, help="the signed image manifest")
    terms.add_argument("--class", dest="device_class", help="population: devices of this class")
    terms.add_argument("--not-version", help="population: devices not running this version")
    terms.add_argument("--device", action="append", default=[], help="an explicit device")
    terms.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="PARTY=N",
        help="N keys of PARTY must approve (repeatable): manufacturer, service-provider, operator",
    )
    terms.add_argument("--per-device", action="store_true", help="each --device approves too")
    terms.add_argument("--start", required=True, help="POSIX seconds, ISO time or 1d from now")
    terms.add_argument("--deadline", required=True, help="POSIX seconds, ISO time or 7d from now")
    terms.add_argument("--out", required=True)
    approve = actions.add_parser(
        "approve",
        help="sign a party's approval offline (TERMS --key), or keep signed approvals in "
        "the campaign store (NAME --db --approval FILE)",
    )
    approve.add_argument("terms", help="the campaign terms file; with --db, the campaign's name")
    approve.add_argument("--key", help="the party's private key file (offline signing)")
    approve.add_argument("--db", help="the campaign store to keep --approval files in")
    approve.add_argument(
        "--approval", action="append", default=[], metavar="FILE", help="with --db (repeatable)"
    )
    approve.add_argument("--trust-root", help="with --db: the signed trust root")
    approve.add_argument("--service-key", help="with --db: the Update service's private key")
    approve.add_argument("--actor", default="operator", help="with --db: who acts")
    approve.add_argument("--passphrase-file")
    approve.add_argument("--party", help="the party the key signs for")
    approve.add_argument("--signer", default="", help="who signs, for people")
    approve.add_argument("--reject", action="store_true", help="sign a rejection instead")
    approve.add_argument("--out", help="the approval file to write")
    check = actions.add_parser("check", help="whether approvals meet the campaign's policy")
    check.add_argument("terms", help="the campaign terms file")
    check.add_argument(
        "--approval", action="append", default=[], metavar="FILE", help="an approval (repeatable)"
    )
    check.add_argument("--trust-root", required=True, help="the signed trust root")
    add_store_actions(actions)


def _campaign(args: argparse.Namespace) -> int:
    now = time.time()
    if args.campaign_command in STORE_ACTIONS:
        return run_store_action(args)
    if args.campaign_command == "approve" and args.db:
        if not (args.approval and args.trust_root and args.service_key):
            raise UsageError("approve --db needs --approval, --trust-root and --service-key")
        args.name = args.terms
        return run_store_action(args, args.approval)
    if args.campaign_command == "approve" and not (args.key and args.party and args.out):
        raise UsageError("approve TERMS needs --key, --party and --out (or --db to keep approvals)")
    if args.campaign_command == "terms":
        thresholds: dict[Party, int] = {}
        for entry in args.require:
            party, _, count = entry.partition("=")
            if not count.isdigit():
                raise UsageError(f"bad --require {entry!r}: expected PARTY=N")
            try:
                thresholds[Party.parse(party)] = int(count)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        population = {
            k: v for k, v in (("class", args.device_class), ("not-version", args.not_version)) if v
        }
        try:
            terms = CampaignTerms(
                name=args.name,
                manifest_digest=_manifest_digest(args.manifest),
                population=population,
                policy=ApprovalPolicy(thresholds, args.per_device),
                start=parse_time(args.start, now),
                deadline=parse_time(args.deadline, now),
                devices=tuple(args.device),
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        document = json.dumps(terms.to_json(), indent=2) + "\n"
        write_document(args.out, document.encode("utf-8"))
        print(f"campaign {terms.name}: digest {terms.digest.hex()}")
        return 0
    if args.campaign_command == "approve":
        terms = _load_terms(args.terms)
        passphrase = read_passphrase(args.passphrase_file) if args.passphrase_file else None
        key = load_private_key(args.key, passphrase)
        try:
            party = Party.parse(args.party)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        decision = Decision.REJECT if args.reject else Decision.APPROVE
        signed = sign_approval(terms, key, party, now=now, decision=decision, signer=args.signer)
        write_document(args.out, signed)
        print(
            f"{party.label} {decision.value}s campaign {terms.name} "
            f"({terms.digest.hex()[:16]}) with key {key.public_key.fingerprint}"
        )
        return 0
    terms = _load_terms(args.terms)
    root = load_trust_root(args.trust_root, now)
    approvals = [Path(p).read_bytes() for p in args.approval]
    report = check_approvals(terms, approvals, root)
    print(f"campaign {terms.name} ({terms.digest.hex()[:16]}): policy {terms.policy.describe()}")
    for line in report.lines():
        print(f"  {line}")
    if not report.met:
        raise CliError(f"campaign {terms.name!r} may not start: its approvals are not met")
    print("approved: the campaign may start")
    return 0


# -- audit verify -------------------------------------------------------------------------


def _audit_flags(sub: argparse.ArgumentParser) -> None:
    actions = sub.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = actions.add_parser("verify", help="verify an audit trail file end to end")
    verify.add_argument(
        "trail",
        metavar="TRAIL",
        help="the audit trail file (one entry a line), or with --db the campaign store",
    )
    verify.add_argument("--db", action="store_true", help="TRAIL is a campaign store")
    verify.add_argument("--service-key", required=True, help="the Update service's public key")
    verify.add_argument(
        "--checkpoint", help="a signed checkpoint: detects a trail cut short at its end"
    )
    verify.add_argument("--trust-root", help="check carried approvals against this trust root")


def _audit(args: argparse.Namespace) -> int:
    key = load_public_key(args.service_key)
    checkpoint = Path(args.checkpoint).read_bytes() if args.checkpoint else None
    root = load_trust_root(args.trust_root, time.time()) if args.trust_root else None
    try:
        trail = read_store_trail(args.trail) if args.db else read_trail(args.trail)
        report = verify_trail(trail, key, checkpoint=checkpoint, root=root)
    except TrailTampered as exc:
        raise CliError(str(exc)) from None
    print(
        f"{args.trail}: {len(report.entries)} entries verified, head {report.head.hex()}, "
        f"{len(report.approvals)} approvals carried"
        + ("" if checkpoint else " (no checkpoint given: a cut-off end is not detected)")
    )
    return 0


COMMANDS = (
    Command(
        name="plan",
        help="the scale a campaign needs to meet its deadline (exit 3 if it cannot)",
        example="dofpy update plan --population 100000 --image-size 300MB --deadline 7d",
        add_arguments=_plan_flags,
        run=_plan,
    ),
    Command(
        name="report",
        help="a campaign's report from the campaign store: table, json, csv or html",
        example="dofpy update report spring --db campaigns.db --format html --out report.html",
        add_arguments=_report_flags,
        run=_report,
        description=(
            "A campaign's report (counts over time and per wave, failure reasons by stage, "
            "time-to-update percentiles, bytes served), read from the campaign store (--db) "
            "or from a tracking export file (JSON)."
        ),
    ),
    Command(
        name="campaign",
        help="campaign terms, approvals, and campaigns in the store: create, start, pause, "
        "resume, stop, cancel, status, list",
        example="dofpy update campaign approve terms.json --key operator.key "
        "--party operator --out operator.approval",
        add_arguments=_campaign_flags,
        run=_campaign,
    ),
    Command(
        name="device",
        help="the device table: enrol a device's install-report key",
        example="dofpy update device enrol sensor-1@example.org --report-key sensor-1.pub "
        "--db campaigns.db",
        add_arguments=add_device_flags,
        run=run_device_command,
    ),
    Command(
        name="audit",
        help="verify an audit trail end to end (against a checkpoint: its end too)",
        example="dofpy update audit verify audit.log --service-key update.pub "
        "--checkpoint audit.checkpoint",
        add_arguments=_audit_flags,
        run=_audit,
    ),
)


def _permissions(_context: ServiceContext) -> PermissionSet:
    """What the service's node asks for: to provide the device interface."""
    return PermissionSet((BindingPermission(Action.PROVIDE, OID(0), UPDATE_DEVICE.iid),))


UPDATE: Service[UpdateConfig] = Service(
    name="update",
    summary="firmware update campaigns: approvals, audit trail, the engine, planning, reports",
    config=UpdateConfig,
    open_store=open_campaign_store,
    attach=attach_engine,
    permissions=_permissions,
    check=_check,
    commands=COMMANDS,
    serve_example="dofpy update serve --db /var/lib/dofpy/campaigns.db --service-key update.key "
    "--version-db /var/lib/dofpy/version.db",
)
