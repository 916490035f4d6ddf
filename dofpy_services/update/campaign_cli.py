"""``dofpy update campaign create|approve|start|pause|resume|stop|cancel|
status|list`` and ``dofpy update report NAME --db`` on the campaign store.

Every command that changes a campaign signs its audit entry with the Update
service's key (``--service-key``); ``approve --db`` keeps a party's signed
approval (made offline by ``campaign approve TERMS --key``) once it is
checked against the trust root; ``start`` checks the kept approvals against
the policy and resolves the population from the Version registry
(``--version-db``) then.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from dofpy.errors import BadPacket
from dofpy.image.cose import SigningKey
from dofpy.wire.oid import parse_oid_text_untrusted
from dofpy_services.daemon.cli import CliError, UsageError
from dofpy_services.image.keys import load_private_key, read_passphrase
from dofpy_services.image.signing import load_trust_root
from dofpy_services.store import StoreConflict, StoreError, SyncDatabase, open_database_sync
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.approvals import CampaignRefused, CampaignTerms
from dofpy_services.update.campaign import (
    CampaignSpec,
    DeadlineBehaviour,
    RetryPolicy,
    RunPolicy,
    Window,
)
from dofpy_services.update.planning import Urgency
from dofpy_services.update.tracking import TrackingRecord
from dofpy_services.update.worker import CampaignWorker
from dofpy_services.version.interface import QueryFilter
from dofpy_services.version.store import open_version_store

__all__ = [
    "STORE_ACTIONS",
    "add_store_actions",
    "load_records",
    "read_store_trail",
    "resolve_population",
    "run_store_action",
]

STORE_ACTIONS = ("create", "start", "pause", "resume", "stop", "cancel", "status", "list")


def _db_flags(parser: argparse.ArgumentParser, *, signing: bool) -> None:
    parser.add_argument("--db", required=True, help="the campaign store (SQLite file or URL)")
    if signing:
        parser.add_argument(
            "--service-key", required=True, help="the Update service's private key (audit)"
        )
        parser.add_argument("--passphrase-file")
        parser.add_argument("--actor", default="operator", help="who acts, for the audit trail")


def add_store_actions(actions: Any) -> None:
    """Add the store-backed actions to ``campaign``'s subparsers."""
    create = actions.add_parser("create", help="store a campaign (its terms and how it runs)")
    create.add_argument("terms", help="the campaign terms file (campaign terms)")
    _db_flags(create, signing=True)
    create.add_argument("--intended-version", required=True, help="the version devices boot")
    create.add_argument("--image-size", required=True, type=int, help="bytes one device fetches")
    create.add_argument("--policy", choices=[p.value for p in RunPolicy], default="automatic")
    create.add_argument(
        "--at-deadline",
        choices=[b.value for b in DeadlineBehaviour],
        default="skip",
        help="manual policy: a device still deferred at the deadline (default skip)",
    )
    create.add_argument(
        "--urgency",
        choices=[u.value for u in Urgency],
        default="convenience",
        help="urgent ignores --devices-per-minute (as fast as capacity allows), never"
        " --bytes-per-second",
    )
    create.add_argument(
        "--window", action="append", default=[], help="maintenance window, local HH:MM-HH:MM"
    )
    create.add_argument(
        "--devices-per-minute",
        type=float,
        default=0.0,
        help="attempts started a minute: the first notification of each device's attempt"
        " (a retry counts again, a deferred device asked again does not); 0: no cap",
    )
    create.add_argument(
        "--bytes-per-second",
        type=float,
        default=0.0,
        help="image bytes a second, enforced by admission: devices start at most"
        " bytes-per-second / image-size a second (each fetches the image once; the lesser"
        " of both caps; urgent too), shared by every Update process; 0: no cap",
    )
    create.add_argument("--canary-share", type=float, default=0.05)
    create.add_argument("--growth", type=float, default=2.0)
    create.add_argument("--success-threshold", type=float, default=0.95)
    create.add_argument("--failure-threshold", type=float, default=0.2)
    create.add_argument("--max-attempts", type=int, default=3)
    create.add_argument(
        "--retry-base",
        type=float,
        default=RetryPolicy().base,
        help="seconds: the first retry's back-off at most (doubling, capped, jittered)",
    )
    create.add_argument(
        "--retry-cap", type=float, default=RetryPolicy().cap, help="seconds: back-off at most"
    )
    create.add_argument("--silence-timeout", type=float, default=3600.0, help="seconds")
    create.add_argument(
        "--image-sequence", type=int, default=0, help="the manifest's sequence (device interface)"
    )
    create.add_argument(
        "--image-digest", default="", help="hex root digest of the image devices boot"
    )
    start = actions.add_parser("start", help="check approvals, resolve the population, run")
    start.add_argument("name")
    _db_flags(start, signing=True)
    start.add_argument("--trust-root", required=True)
    start.add_argument("--version-db", required=True, help="the Version registry")
    start.add_argument(
        "--utc-offsets", help="JSON {device: seconds east of UTC} for local maintenance windows"
    )
    for command in ("pause", "resume", "stop", "cancel"):
        sub = actions.add_parser(command, help=f"{command} a campaign")
        sub.add_argument("name")
        _db_flags(sub, signing=True)
    status = actions.add_parser("status", help="a campaign's state, wave and devices by state")
    status.add_argument("name")
    _db_flags(status, signing=False)
    status.add_argument("--json", action="store_true")
    listing = actions.add_parser("list", help="the stored campaigns")
    _db_flags(listing, signing=False)


def _open(location: str) -> SyncDatabase:
    try:
        return open_database_sync(location, service=cs.SERVICE, migrations=cs.MIGRATIONS)
    except StoreError as exc:
        raise CliError(str(exc)) from None


def _service_key(args: argparse.Namespace) -> SigningKey:
    passphrase = read_passphrase(args.passphrase_file) if args.passphrase_file else None
    return load_private_key(args.service_key, passphrase)


def resolve_population(
    version_db: str, terms: CampaignTerms, offsets: dict[str, int]
) -> list[tuple[str, int]]:
    """The devices the terms' population selects in the Version registry now:
    (identity text, UTC offset)."""
    population = terms.population
    unknown = set(population) - {"class", "not-version", "version"}
    if unknown:
        raise CliError(f"population fields not understood: {', '.join(sorted(unknown))}")
    try:
        identities = tuple(parse_oid_text_untrusted(d) for d in terms.devices)
    except BadPacket as exc:
        raise CliError(f"a device of the terms is not an identity: {exc}") from None
    query = QueryFilter(
        device_class=population.get("class"),
        version=population.get("version"),
        not_version=population.get("not-version"),
        identities=identities,
    )
    with open_version_store(version_db) as store:
        return [(str(r.identity), offsets.get(str(r.identity), 0)) for r in store.stream(query)]


def _spec(args: argparse.Namespace) -> CampaignSpec:
    try:
        terms = CampaignTerms.from_json(json.loads(Path(args.terms).read_text(encoding="utf-8")))
        return CampaignSpec(
            terms=terms,
            intended_version=args.intended_version,
            image_size=args.image_size,
            run_policy=RunPolicy(args.policy),
            deadline_behaviour=DeadlineBehaviour(args.at_deadline),
            urgency=Urgency(args.urgency),
            windows=tuple(Window.parse(w) for w in args.window),
            devices_per_minute=args.devices_per_minute,
            bytes_per_second=args.bytes_per_second,
            canary_share=args.canary_share,
            growth=args.growth,
            success_threshold=args.success_threshold,
            failure_threshold=args.failure_threshold,
            retry=RetryPolicy(
                max_attempts=args.max_attempts, base=args.retry_base, cap=args.retry_cap
            ),
            silence_timeout=args.silence_timeout,
            image_sequence=args.image_sequence,
            image_digest=bytes.fromhex(args.image_digest),
        )
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


def load_records(location: str, name: str) -> list[TrackingRecord]:
    with _open(location) as db:
        try:
            return db.read(lambda tx: cs.tracking_records(tx, name))
        except KeyError:
            raise CliError(f"no campaign {name!r} in {db.where}") from None


def read_store_trail(location: str) -> list[bytes]:
    """The audit trail kept in the campaign store at ``location``."""
    with _open(location) as db:
        return db.read(cs.audit_trail)


def _status(db: SyncDatabase, name: str, as_json: bool) -> int:
    try:
        campaign = db.read(lambda tx: cs.load_campaign(tx, name))
    except KeyError:
        raise CliError(f"no campaign {name!r} in {db.where}") from None
    devices = db.read(lambda tx: cs.load_devices(tx, name))
    states = Counter(d.state.value for d in devices)
    document = {
        "campaign": name,
        "state": campaign.state.value,
        "wave": campaign.wave,
        "waves": campaign.waves,
        "reason": campaign.reason,
        "devices": len(devices),
        "by_state": dict(sorted(states.items())),
    }
    if as_json:
        print(json.dumps(document, indent=1))
        return 0
    wave = f"wave {campaign.wave + 1} of {campaign.waves}" if campaign.waves else "no waves yet"
    print(f"campaign {name}: {campaign.state.value}, {wave}, {len(devices)} devices")
    if campaign.reason:
        print(f"  {campaign.reason}")
    for state, count in sorted(states.items()):
        print(f"  {state:<15} {count}")
    return 0


def run_store_action(args: argparse.Namespace, approvals: Sequence[str] = ()) -> int:
    """Run ``args.campaign_command`` (one of :data:`STORE_ACTIONS`, or
    ``approve`` with ``--db``: ``approvals`` are the files to keep)."""
    now = time.time()
    action = args.campaign_command
    with _open(args.db) as db:
        if action == "list":
            for name in db.read(cs.campaign_names):
                campaign = db.read(partial(cs.load_campaign, name=name))
                print(f"{name}  {campaign.state.value}  wave {campaign.wave + 1}/{campaign.waves}")
            return 0
        if action == "status":
            return _status(db, args.name, args.json)
        worker = CampaignWorker(db, _service_key(args), f"cli:{args.actor}")
        try:
            if action == "create":
                spec = _spec(args)
                try:
                    worker.create(spec, now=now, actor=args.actor)
                except StoreConflict:
                    raise CliError(f"a campaign named {spec.name!r} exists already") from None
                print(f"campaign {spec.name} created ({spec.terms.digest.hex()[:16]})")
                return 0
            if action == "approve":
                root = load_trust_root(args.trust_root, now)
                for path in approvals:
                    kept = worker.approve(
                        args.name, Path(path).read_bytes(), root, now=now, actor=args.actor
                    )
                    print(f"{path}: kept ({kept} approvals)")
                return 0
            if action == "start":
                root = load_trust_root(args.trust_root, now)
                offsets: dict[str, int] = {}
                if args.utc_offsets:
                    raw = json.loads(Path(args.utc_offsets).read_text(encoding="utf-8"))
                    offsets = {str(k): int(v) for k, v in raw.items()}
                count = worker.start(
                    args.name,
                    root,
                    lambda spec: resolve_population(args.version_db, spec.terms, offsets),
                    now=now,
                    actor=args.actor,
                )
                print(f"campaign {args.name} started: {count} devices")
                return 0
            state = worker.command(args.name, action, now=now, actor=args.actor)
            print(f"campaign {args.name}: {state.value}")
            return 0
        except CampaignRefused as refused:
            for line in refused.report.lines():
                print(f"  {line}")
            raise CliError(str(refused)) from None
        except KeyError:
            raise CliError(f"no campaign {getattr(args, 'name', '')!r} in {db.where}") from None
        except ValueError as exc:
            raise CliError(str(exc)) from None
