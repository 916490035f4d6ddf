"""``make demo``: the whole reprogramming process on a simulated fleet.

Embedded defaults only (SQLite, a temporary folder, loopback). The demo

1. creates a domain, the services' identities and grants, the vendor's
   signing parties and their trust root, and **publishes** a signed image
   (two manufacturer signatures) for one of three device classes;
2. starts the Authenticator, Image (and caching relays), Version and Update
   services as real daemons (``dofpy <service> serve``, one process each);
3. enrols a fleet of simulated devices (three classes on three versions) and
   runs every device's real agent against those daemons, with faults: lossy
   links, power cuts mid-update, devices offline for the whole campaign, one
   device whose new image fails its health check;
4. **finds the targets** (``dofpy version query``), **plans** the campaign
   (``dofpy update plan``), has the parties **approve** its terms and starts
   it: a canary wave, then growing waves, each device authorised, switched
   to its Reprogram image, fed the image through a relay block by block
   (verified), switched back to Normal and counted only once the Version
   service sees it boot and accept the new version, with a live progress
   line;
5. prints the campaign's **report** and writes the HTML one, and checks
   every device against the records: it exits 1 if any device's campaign
   record or registry entry differs from what the device runs.

``python -m dofpy_services.fleet.demo --help`` for sizes and faults.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import trio

from dofpy.transfer.messages import TRANSFER_IID
from dofpy.wire.oid import OID
from dofpy_services.authenticator.grants import parse_domain
from dofpy_services.authenticator.store import open_store
from dofpy_services.cli import main as dofpy_main
from dofpy_services.device.boot_records import Slot
from dofpy_services.device.simulated import FirmwareImage, SimulatedBootloader
from dofpy_services.fleet.enrol import EnrolledDevice, Firmware, enrol_fleet
from dofpy_services.fleet.simulate import FleetFaults, FleetResult, FleetServices, run_fleet
from dofpy_services.image.serving import IMAGE_INTERFACE
from dofpy_services.image.signing import load_trust_root
from dofpy_services.store import Transaction, open_database_sync
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.campaign import CampaignState
from dofpy_services.update.device_interface import UPDATE_DEVICE
from dofpy_services.update.engine import CampaignRow
from dofpy_services.update.tracking import TERMINAL_STATES, DeviceState
from dofpy_services.version import VERSION_CHANGES, VERSION_QUERY, VERSION_REPORT
from dofpy_services.version.interface import QueryFilter
from dofpy_services.version.store import open_version_store

__all__ = ["DemoOptions", "DemoOutcome", "check_fleet", "main", "run_demo"]

T = TypeVar("T")

DOMAIN = "example.org"
CAMPAIGN = "sensor-2.0"
VENDOR = uuid.UUID("6f1c0a4e-3b7d-4c2a-9e51-0d8f6a2b7c10")
CLASSES = ("sensor", "meter", "valve")
"""The fleet's device classes; the campaign updates the first."""
VERSIONS = (("1.0", 10), ("1.1", 11), ("1.2", 12))
"""What the fleet runs (version, sequence), spread evenly over each class."""
NEW_VERSION = ("2.0", 20)
_FIRMWARE_SIZE = 24 * 1024
_RESCUE_SIZE = 8 * 1024
_SETTLED = frozenset(
    {CampaignState.COMPLETED, CampaignState.HALTED, CampaignState.STOPPED, CampaignState.CANCELLED}
)


_UNDER_WAY = frozenset(
    s.value
    for s in DeviceState
    if s not in TERMINAL_STATES
    and s not in (DeviceState.SCHEDULED, DeviceState.NOTIFIED, DeviceState.DEFERRED)
)
"""Devices in these states are being updated (authorised, not finished): the
fleet runs until none is (a notified device of a halted campaign waits, it
has not begun)."""


def class_id(name: str) -> uuid.UUID:
    return uuid.uuid5(VENDOR, name)


@dataclass(frozen=True)
class DemoOptions:
    devices: int = 1000
    image_size: int = 1 << 20
    loss: float = 0.02
    power_cuts: float = 0.05
    offline: float = 0.01
    unhealthy: int = 1
    relays: int = 2
    seed: int = 1
    poll_interval: float = 8.0
    devices_per_minute: float = 0.0
    """The campaign's start rate (0: the plan's for ``deadline``)."""
    success_threshold: float = 0.75
    failure_threshold: float = 0.25
    """A wave's share succeeded to go on, failed to halt the campaign (which
    devices a wave holds follows the campaign's digest: a small fleet's
    canary may hold its unhealthy and offline devices)."""
    deadline: str = "2m"
    """The deadline the campaign is planned to (``dofpy update plan``)."""
    kill_every: float = 0.0
    """Soak: on average every this many seconds of the campaign, one of the
    Update, Version, Image or relay daemons is killed (SIGKILL) and started
    again (0: never)."""
    silence_timeout: float = 30.0
    canary_share: float = 0.05
    growth: float = 4.0
    duration: float = 1800.0
    """The fleet's run at most (seconds): a bound for a stuck run, not a
    pace. 1,000 devices settle in about 4 minutes on two cores, and in 9 on
    one (``taskset -c 0``, 2026-12-06)."""
    directory: Path | None = None
    report: Path = Path("out/demo-report.html")
    quiet: bool = False


@dataclass
class Daemon:
    """One ``dofpy <service> serve`` process, configured by a TOML file."""

    name: str
    service: str
    config: Path
    ready: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    address: tuple[str, int] = ("127.0.0.1", 0)
    cpu_before: float = 0.0

    def start(self, wait: float = 30.0) -> None:
        self.ready.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                [
                    sys.executable,
                    "-m",
                    "dofpy_services.cli",
                    self.service,
                    "serve",
                    "--config",
                    str(self.config),
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + wait
        while not self.ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-2000:]
                raise DemoError(f"{self.name} did not start (log {self.log}):\n{tail}")
            time.sleep(0.05)
        udp: str = json.loads(self.ready.read_text())["udp"]
        host, _, port = udp.rpartition(":")
        self.address = (host, int(port))

    def pin(self) -> None:
        """Listen on the address bound now at every later start (a daemon
        restarted after a crash is where its devices know it)."""
        text = self.config.read_text()
        lines = [line for line in text.splitlines() if not line.startswith("listen = ")]
        lines.insert(0, f'listen = "{self.address[0]}:{self.address[1]}"')
        self.config.write_text("\n".join(lines) + "\n")

    def restart_killed(self) -> None:
        """SIGKILL, then start again on the same address."""
        self.cpu_before = self.cpu_seconds()
        self.kill()
        self.restarts += 1
        self.start()

    def cpu_seconds(self) -> float:
        """CPU time (user and system) of the running process, from /proc
        (0 where there is none); a restarted daemon's earlier lives are in
        ``cpu_before``."""
        if self.process is None or self.process.poll() is not None:
            return self.cpu_before
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return self.cpu_before
        ticks = os.sysconf("SC_CLK_TCK")
        return self.cpu_before + (int(fields[11]) + int(fields[12])) / ticks

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class DemoError(Exception):
    """A step of the demo failed: the message says which and why."""


@dataclass
class _Say:
    quiet: bool
    started: float = field(default_factory=time.monotonic)

    def __call__(self, text: str = "") -> None:
        if not self.quiet:
            print(text, flush=True)

    def step(self, number: int, title: str) -> None:
        self(f"\n[{time.monotonic() - self.started:6.1f} s] {number}. {title}")


def _dofpy(say: _Say, argv: Sequence[str], *, show: int = 0, expect: int | None = 0) -> str:
    """Run one ``dofpy`` command in this process (the same code as the
    command line); print it and the first ``show`` lines of its output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = dofpy_main(list(argv))
    if show:
        say("  $ dofpy " + " ".join(shlex.quote(_short(a)) for a in argv))
        lines = (out.getvalue() or err.getvalue()).rstrip("\n").splitlines()
        for line in lines[:show]:
            say("    " + line)
        if len(lines) > show:
            say(f"    ... ({len(lines) - show} more lines)")
    if expect is not None and status != expect:
        raise DemoError(
            f"dofpy {' '.join(argv)} exited {status}:\n{err.getvalue()}{out.getvalue()}"
        )
    return out.getvalue()


def _short(arg: str) -> str:
    """Paths inside the demo's folder, shown relative to it."""
    base = os.environ.get("DOFPY_DEMO_DIR", "")
    return arg[len(base) + 1 :] if base and arg.startswith(base + "/") else arg


def _blob(label: str, size: int) -> bytes:
    return random.Random(label).randbytes(size)


@dataclass
class _World:
    """Files and names the steps share."""

    root: Path
    auth_db: Path
    versions: Path
    campaigns: Path
    images: Path
    trust_root: Path
    service_key: Path
    manifest: Path
    new_image: bytes
    daemons: dict[str, Daemon] = field(default_factory=dict)

    def cred(self, name: str) -> Path:
        return self.root / "credentials" / f"{name}.cred"


def _setup_domain(say: _Say, w: _World) -> None:
    say.step(1, "a domain, its services and the vendor's signing parties")
    node = ["--db", str(w.auth_db), "--domain", DOMAIN]
    _dofpy(say, ["authenticator", "init-domain", "--db", str(w.auth_db), DOMAIN], show=2)
    (w.root / "credentials").mkdir()
    _dofpy(
        say,
        [
            "authenticator",
            "add-node",
            *node,
            f"as@{DOMAIN}",
            "--credentials-out",
            str(w.cred("as")),
        ],
        show=1,
    )


def _add_services(say: _Say, w: _World, authenticator: tuple[str, int], relays: int) -> None:
    node = ["--db", str(w.auth_db), "--domain", DOMAIN]
    at = f"{authenticator[0]}:{authenticator[1]}"
    relay_names = [f"relay-{n + 1}" for n in range(relays)]
    for name in ("version", "image", "update", *relay_names):
        _dofpy(
            say,
            [
                "authenticator",
                "add-node",
                *node,
                f"{name}@{DOMAIN}",
                "--credentials-out",
                str(w.cred(name)),
                "--authenticator",
                at,
                "--authenticator-identity",
                f"as@{DOMAIN}",
            ],
            show=1 if name in ("version", "relay-1") else 0,
        )
    serving = (IMAGE_INTERFACE.iid, TRANSFER_IID)
    grants: list[tuple[str, str, object]] = [
        *((f"version@{DOMAIN}", "p", iid) for iid in (VERSION_REPORT.iid, VERSION_QUERY.iid)),
        (f"version@{DOMAIN}", "p", VERSION_CHANGES.iid),
        *((f"image@{DOMAIN}", "p", iid) for iid in serving),
        (f"update@{DOMAIN}", "p", UPDATE_DEVICE.iid),
    ]
    for relay in relay_names:
        # A relay provides what the Image service provides, and fetches from it.
        grants += [(f"{relay}@{DOMAIN}", action, iid) for action in "px" for iid in serving]
    for name, action, iid in grants:
        _dofpy(say, ["authenticator", "grant", *node, name, "--actions", action,
                     "--interface", str(iid)])  # fmt: skip
    say(f"  {len(grants)} grants: services provide their interfaces; relays provide and fetch")


def _signing(say: _Say, w: _World) -> None:
    keys = w.root / "keys"
    keys.mkdir()
    for name in ("m1", "m2", "sp", "op", "update"):
        _dofpy(say, ["image", "keygen", str(keys / name)], show=1 if name == "m1" else 0)
    _dofpy(
        say,
        [
            "image",
            "trust-root",
            "init",
            "--vendor",
            str(VENDOR),
            "--key",
            f"{keys / 'm1.pub'}:manufacturer:m1",
            "--key",
            f"{keys / 'm2.pub'}:manufacturer:m2",
            "--key",
            f"{keys / 'sp.pub'}:service-provider:acme-cloud",
            "--key",
            f"{keys / 'op.pub'}:operator:fleet-ops",
            "--threshold",
            "manufacturer=2",
            "--root-threshold",
            "manufacturer=2",
            "--expires",
            "30d",
            "--out",
            str(w.trust_root),
        ],
        show=3,
    )
    for key in ("m1", "m2"):
        _dofpy(say, ["image", "trust-root", "sign", str(w.trust_root), "--key", str(keys / key)])
    _dofpy(say, ["image", "trust-root", "verify", str(w.trust_root)], show=2)


def _publish(say: _Say, w: _World) -> None:
    say.step(2, f"publish the signed image: {CLASSES[0]} {NEW_VERSION[0]}")
    keys = w.root / "keys"
    image_file = w.root / "sensor-2.0.bin"
    image_file.write_bytes(w.new_image)
    _dofpy(say, ["image", "publish", "--trust-root", str(w.trust_root), "--store", str(w.images)])
    _dofpy(
        say,
        [
            "image",
            "publish",
            str(image_file),
            "--store",
            str(w.images),
            "--class",
            str(class_id(CLASSES[0])),
            "--version",
            NEW_VERSION[0],
            "--sequence",
            str(NEW_VERSION[1]),
            "--expires",
            "30d",
            "--key",
            str(keys / "m1"),
            "--out",
            str(w.manifest),
        ],
        show=3,
    )
    _dofpy(say, ["image", "sign", str(w.manifest), "--key", str(keys / "m2"),
                 "--trust-root", str(w.trust_root)])  # fmt: skip
    _dofpy(say, ["image", "publish", "--manifest", str(w.manifest), "--store", str(w.images)],
           show=3)  # fmt: skip


def _config(w: _World, name: str, service: str, lines: dict[str, object]) -> Daemon:
    folder = w.root / "daemons"
    folder.mkdir(exist_ok=True)
    ready = folder / f"{name}.ready"
    settings = {
        "listen": "127.0.0.1:0",
        "ready_file": str(ready),
        "log_format": "json",
        **lines,
    }
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    (folder / f"{name}.toml").write_text(text)
    return Daemon(name, service, folder / f"{name}.toml", ready, folder / f"{name}.log")


def _start_daemons(say: _Say, w: _World, relays: int) -> None:
    say.step(3, "start the services as daemons (one process each)")
    daemons = [
        _config(
            w, "version", "version", {"db": str(w.versions), "credentials": str(w.cred("version"))}
        ),
        _config(w, "image", "image", {"store": str(w.images), "credentials": str(w.cred("image"))}),
        _config(
            w,
            "update",
            "update",
            {
                "db": str(w.campaigns),
                "credentials": str(w.cred("update")),
                "service_key": str(w.service_key),
                "version_db": str(w.versions),
                "step_interval": 1.0,
                "lease": 30.0,
                "owner": "update-1",
            },
        ),
    ]
    for daemon in daemons:
        daemon.start()
        w.daemons[daemon.name] = daemon
    upstream = "{}:{}".format(*w.daemons["image"].address)
    for n in range(relays):
        name = f"relay-{n + 1}"
        relay = _config(
            w, name, "image",
            {"store": str(w.root / name), "credentials": str(w.cred(name)), "upstream": upstream},
        )  # fmt: skip
        relay.start()
        w.daemons[name] = relay
    for daemon in w.daemons.values():
        assert daemon.process is not None
        say(
            f"  {daemon.name:<14} dofpy {daemon.service} serve   udp {daemon.address[0]}:"
            f"{daemon.address[1]}   pid {daemon.process.pid}   log {_short(str(daemon.log))}"
        )


def _firmware(device_class: str, version: tuple[str, int], capacity: int) -> Firmware:
    return Firmware(
        FirmwareImage(_blob(f"{device_class} {version[0]}", _FIRMWARE_SIZE), *version),
        FirmwareImage(_blob(f"{device_class} rescue", _RESCUE_SIZE), "r1", 1),
        capacity,
        _RESCUE_SIZE * 4,
    )


def _enrol(
    say: _Say, w: _World, count: int, seed: int
) -> tuple[list[EnrolledDevice], dict[OID, tuple[uuid.UUID, str]]]:
    say.step(4, f"enrol a fleet of {count} simulated devices")
    authenticator = w.daemons["as"].address
    capacity = len(w.new_image) + 64 * 1024
    groups = [(c, v) for c in CLASSES for v in VERSIONS]
    devices: list[EnrolledDevice] = []
    classes: dict[OID, tuple[uuid.UUID, str]] = {}
    store = open_store(str(w.auth_db))
    try:
        with open_database_sync(
            str(w.campaigns), service=cs.SERVICE, migrations=cs.MIGRATIONS
        ) as campaigns:
            # Device n is of group n % 9: classes and versions interleaved.
            first = 0
            for index, (device_class, version) in enumerate(groups):
                numbers = range(index, count, len(groups))
                for number in numbers:
                    enrolled = enrol_fleet(
                        store, campaigns, domain=parse_domain(DOMAIN), domain_name=DOMAIN,
                        count=1, directory=w.root / "fleet", authenticator=authenticator,
                        authenticator_identity=OID(3, f"as@{DOMAIN}".encode()),
                        firmware=_firmware(device_class, version, capacity), prefix="dev",
                        seed=seed, first=number,
                    )  # fmt: skip
                    devices.extend(enrolled)
                    classes[enrolled[0].identity] = (class_id(device_class), device_class)
                first += len(numbers)
    finally:
        store.close()
    devices.sort(key=lambda d: d.number)
    spread = Counter((classes[d.identity][1], _version_of(d)) for d in devices)
    for device_class in CLASSES:
        say(
            f"  {device_class:<7}"
            + "  ".join(f"{v}: {spread[(device_class, v)]:>4}" for v, _ in VERSIONS)
        )
    return devices, classes


def _version_of(device: EnrolledDevice) -> str:
    return SimulatedBootloader(device.directory).booted().image.version


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dofpy_services.fleet.demo",
        description="the whole reprogramming process on a simulated fleet, on loopback",
    )
    defaults = DemoOptions()
    parser.add_argument("--devices", type=int, default=defaults.devices)
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="bytes")
    parser.add_argument("--loss", type=float, default=defaults.loss, help="datagram loss each way")
    parser.add_argument("--power-cuts", type=float, default=defaults.power_cuts, help="share")
    parser.add_argument("--offline", type=float, default=defaults.offline, help="share")
    parser.add_argument("--unhealthy", type=int, default=defaults.unhealthy, help="devices")
    parser.add_argument("--relays", type=int, default=defaults.relays)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--poll-interval", type=float, default=defaults.poll_interval)
    parser.add_argument("--duration", type=float, default=defaults.duration, help="seconds at most")
    parser.add_argument(
        "--dir", type=Path, help="keep everything here (default: a temporary folder)"
    )
    parser.add_argument("--report", type=Path, default=defaults.report, help="the HTML report")
    parser.add_argument(
        "--silence-timeout", type=float, default=defaults.silence_timeout, help="seconds"
    )
    parser.add_argument(
        "--deadline", default=defaults.deadline, help="the campaign's planned deadline (2m, 1h)"
    )
    parser.add_argument(
        "--devices-per-minute",
        type=float,
        default=defaults.devices_per_minute,
        help="the campaign's start rate (default: the plan's)",
    )
    parser.add_argument(
        "--kill-every",
        type=float,
        default=defaults.kill_every,
        help="soak: SIGKILL and restart a service every this many seconds on average (0: never)",
    )
    args = parser.parse_args(argv)
    options = DemoOptions(
        devices=args.devices, image_size=args.image_size, loss=args.loss,
        power_cuts=args.power_cuts, offline=args.offline, unhealthy=args.unhealthy,
        relays=args.relays, seed=args.seed, poll_interval=args.poll_interval,
        duration=args.duration, directory=args.dir, report=args.report,
        silence_timeout=args.silence_timeout, kill_every=args.kill_every,
        deadline=args.deadline, devices_per_minute=args.devices_per_minute,
    )  # fmt: skip
    try:
        outcome = run_demo(options)
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0 if outcome.ok else 1


@dataclass
class DemoOutcome:
    ok: bool
    campaign_state: str
    devices_by_state: dict[str, int]
    mismatches: list[str]
    fleet: FleetResult
    report_html: Path
    seconds: float
    restarts: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    updates_per_provider_core_minute: float = 0.0


def run_demo(options: DemoOptions) -> DemoOutcome:
    if options.directory is not None:
        options.directory.mkdir(parents=True, exist_ok=True)
        return _run_in(options.directory, options)
    # Memory, where there is a tmpfs: a thousand devices' flash files and state
    # files, renamed at every step of their updates, stall on a disk.
    shm = "/dev/shm"  # noqa: S108 (a private 0700 folder is made in it)
    memory = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="dofpy-demo-", dir=memory) as folder:
        return _run_in(Path(folder), options)


def _run_in(root: Path, options: DemoOptions) -> DemoOutcome:
    say = _Say(options.quiet)
    os.environ["DOFPY_DEMO_DIR"] = str(root)
    (root / "daemons").mkdir(exist_ok=True)
    # The simulated devices' warnings (handshakes refused busy, retried) go to
    # a file beside the daemons' logs, not between the progress lines.
    fleet_log = logging.FileHandler(root / "daemons" / "fleet.log")
    fleet_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    dofpy_logger = logging.getLogger("dofpy")
    dofpy_logger.addHandler(fleet_log)
    dofpy_logger.propagate = False
    w = _World(
        root=root,
        auth_db=root / "authenticator.db",
        versions=root / "version.db",
        campaigns=root / "campaigns.db",
        images=root / "images",
        trust_root=root / "trust-root.cose",
        service_key=root / "keys" / "update",
        manifest=root / "sensor-2.0.manifest",
        new_image=_blob("sensor 2.0", options.image_size),
    )
    say(f"dofpy demo: the reprogramming process on {options.devices} simulated devices")
    say(f"  everything in {root} (SQLite, loopback)")
    try:
        _setup_domain(say, w)
        authenticator = _config(
            w, "as", "authenticator", {"db": str(w.auth_db), "credentials": str(w.cred("as"))}
        )
        authenticator.start()
        w.daemons["as"] = authenticator
        _add_services(say, w, authenticator.address, options.relays)
        _signing(say, w)
        _publish(say, w)
        _start_daemons(say, w, options.relays)
        devices, classes = _enrol(say, w, options.devices, options.seed)
        return trio.run(_campaign, say, w, options, devices, classes)
    finally:
        for daemon in reversed(list(w.daemons.values())):
            daemon.stop()
        dofpy_logger.removeHandler(fleet_log)
        dofpy_logger.propagate = True
        fleet_log.close()


async def _campaign(
    say: _Say,
    w: _World,
    options: DemoOptions,
    devices: list[EnrolledDevice],
    classes: dict[OID, tuple[uuid.UUID, str]],
) -> DemoOutcome:
    started = time.monotonic()
    checked_in = trio.Event()
    settled_at: list[float] = []

    def fleet_done() -> bool:
        """The campaign settled with no device left mid-update (a halted or
        stopped campaign lets its running devices finish), and every online
        device has had time to check in once more since (so the registry
        holds its last state)."""
        if not settled_at:
            try:
                row, by_state = _states(w)
            except KeyError:
                return False
            if row.state not in _SETTLED or any(s in _UNDER_WAY for s in by_state):
                return False
            settled_at.append(time.monotonic())
        return time.monotonic() - settled_at[0] > 1.6 * options.poll_interval

    services = FleetServices(
        w.daemons["version"].address,
        w.daemons["update"].address,
        tuple(w.daemons[f"relay-{n + 1}"].address for n in range(options.relays))
        or (w.daemons["image"].address,),
        OID(3, f"version@{DOMAIN}".encode()),
        OID(3, f"update@{DOMAIN}".encode()),
    )
    root = load_trust_root(str(w.trust_root), time.time())
    faults = FleetFaults(
        options.loss, options.power_cuts, options.offline, options.unhealthy, options.seed
    )
    say(
        f"  faults: {options.loss:.0%} datagram loss each way, {options.power_cuts:.0%} of devices"
        f" lose power mid-update, {options.offline:.0%} offline throughout,"
        f" {options.unhealthy} with a new image failing its health check"
    )
    result: list[FleetResult] = []
    # The campaign's targets: the faults of an update are drawn among them.
    eligible = {
        d.identity
        for d in devices
        if classes[d.identity][1] == CLASSES[0] and _version_of(d) != NEW_VERSION[0]
    }
    async with trio.open_nursery() as nursery:

        async def fleet() -> None:
            result.append(
                await run_fleet(
                    devices, services, trust_root=root, vendor_id=VENDOR,
                    class_id=class_id(CLASSES[0]), class_name=CLASSES[0], faults=faults,
                    poll_interval=options.poll_interval, duration=options.duration,
                    done=fleet_done, on_checked_in=checked_in.set, check_every=1.0,
                    classes=classes, updating=eligible,
                    start_spread=options.devices / 40.0,
                )
            )  # fmt: skip
            nursery.cancel_scope.cancel()  # the progress line

        nursery.start_soon(fleet)
        with trio.move_on_after(options.duration) as waiting:
            await checked_in.wait()
        if waiting.cancelled_caught:
            raise DemoError("the fleet did not check in within the demo's duration")
        say(
            f"  every device checked in"
            f" ({time.monotonic() - started:.1f} s after the fleet started)"
        )
        await trio.to_thread.run_sync(_prepare_campaign, say, w, options)
        nursery.start_soon(_progress, say, w)
        if options.kill_every > 0:
            nursery.start_soon(_kill_at_random, say, w, options)
    if settled_at:
        say(f"  the campaign settled {settled_at[0] - started:.1f} s after the fleet started")
    else:
        say(f"  the campaign did not settle within {options.duration:.0f} s")
    return await trio.to_thread.run_sync(
        _finish, say, w, devices, classes, result[0], options.report, say.started
    )


def _read(w: _World, query: Callable[[Transaction], T]) -> T:
    with open_database_sync(str(w.campaigns), service=cs.SERVICE, migrations=cs.MIGRATIONS) as db:
        return db.read(query)


def _prepare_campaign(say: _Say, w: _World, options: DemoOptions) -> None:
    """Steps 5 to 7, while the fleet runs (blocking: the commands)."""
    population = ["--class", CLASSES[0], "--not-version", NEW_VERSION[0]]
    say.step(5, "find the eligible devices (the Version registry)")
    _dofpy(say, ["version", "stats", "--db", str(w.versions), "--class", CLASSES[0]], show=6)
    count = _dofpy(
        say, ["version", "query", "--db", str(w.versions), *population, "--count"], show=2
    )
    say.step(6, "plan the campaign to its deadline")
    plan = [
        "update",
        "plan",
        "--db",
        str(w.versions),
        *population,
        "--image-size",
        str(len(w.new_image)),
        "--deadline",
        options.deadline,
        "--urgency",
        "convenience",
        "--canary-share",
        str(options.canary_share),
        "--wave-growth",
        str(options.growth),
        "--wave-soak",
        "0s",
    ]
    _dofpy(say, plan, show=40)
    # The campaign starts devices at the plan's rate (unless told a rate).
    rate = options.devices_per_minute or 60.0 * float(
        json.loads(_dofpy(say, [*plan, "--json"], expect=None))["rate"]
    )
    say(f"  the campaign starts devices at {rate:.0f} a minute")
    say.step(7, "approve and start the campaign")
    keys = w.root / "keys"
    terms = w.root / "campaign.terms.json"
    _dofpy(
        say,
        [
            "update",
            "campaign",
            "terms",
            "--name",
            CAMPAIGN,
            "--manifest",
            str(w.manifest),
            *population,
            "--require",
            "manufacturer=1",
            "--require",
            "service-provider=1",
            "--require",
            "operator=1",
            "--start",
            str(int(time.time()) - 60),
            "--deadline",
            "1d",
            "--out",
            str(terms),
        ],
        show=2,
    )
    approvals: list[str] = []
    for key, party in (("m1", "manufacturer"), ("sp", "service-provider"), ("op", "operator")):
        approval = w.root / f"{party}.approval"
        _dofpy(say, ["update", "campaign", "approve", str(terms), "--key", str(keys / key),
                     "--party", party, "--out", str(approval)], show=1)  # fmt: skip
        approvals += ["--approval", str(approval)]
    service = ["--db", str(w.campaigns), "--service-key", str(w.service_key)]
    _dofpy(
        say,
        [
            "update",
            "campaign",
            "create",
            str(terms),
            *service,
            "--actor",
            "operator",
            "--intended-version",
            NEW_VERSION[0],
            "--image-size",
            str(len(w.new_image)),
            "--urgency",
            "convenience",
            "--devices-per-minute",
            f"{rate:.1f}",
            "--canary-share",
            str(options.canary_share),
            "--growth",
            str(options.growth),
            "--success-threshold",
            str(options.success_threshold),
            "--failure-threshold",
            str(options.failure_threshold),
            "--max-attempts",
            "2",
            "--retry-base",
            "5",
            "--silence-timeout",
            str(options.silence_timeout),
            "--image-sequence",
            str(NEW_VERSION[1]),
            "--image-digest",
            hashlib.sha256(w.new_image).hexdigest(),
        ],
        show=2,
    )
    _dofpy(
        say,
        [
            "update",
            "campaign",
            "approve",
            CAMPAIGN,
            *service,
            "--trust-root",
            str(w.trust_root),
            *approvals,
        ],
        show=4,
    )
    _dofpy(
        say,
        [
            "update",
            "campaign",
            "start",
            CAMPAIGN,
            *service,
            "--trust-root",
            str(w.trust_root),
            "--version-db",
            str(w.versions),
        ],
        show=6,
    )
    say(f"  population: {count.strip()} devices")
    say.step(8, "reprogram: the Update service drives each device through its waves")


async def _progress(say: _Say, w: _World) -> None:
    """A line of progress every few seconds: the wave and devices by state."""
    last = ""
    quiet_for = 0
    while True:
        await trio.sleep(2.0)
        try:
            row, by_state = await trio.to_thread.run_sync(_states, w)
        except KeyError:
            continue
        line = (
            f"  [{time.monotonic() - say.started:6.1f} s] {row.state.value:<9} wave "
            f"{row.wave + 1}/{row.waves}  "
            + "  ".join(f"{state} {n}" for state, n in by_state.items())
        )
        quiet_for += 1
        if line.split("]", 1)[1] != last or quiet_for >= 5:
            say(line)
            last, quiet_for = line.split("]", 1)[1], 0


async def _kill_at_random(say: _Say, w: _World, options: DemoOptions) -> None:
    """SIGKILL one of the services at random moments (seeded), and start it
    again where it was: the campaign must lose nothing."""
    rng = random.Random(f"kills:{options.seed}")
    victims = sorted(name for name in w.daemons if name != "as")
    for daemon in w.daemons.values():
        daemon.pin()
    while True:
        await trio.sleep(rng.expovariate(1.0 / options.kill_every))
        daemon = w.daemons[rng.choice(victims)]
        await trio.to_thread.run_sync(daemon.restart_killed)
        say(
            f"  [{time.monotonic() - say.started:6.1f} s] killed {daemon.name} (SIGKILL), restarted"
        )


def _states(w: _World) -> tuple[CampaignRow, dict[str, int]]:
    def read(tx: Transaction) -> tuple[CampaignRow, dict[str, int]]:
        row = cs.load_campaign(tx, CAMPAIGN)
        counts = Counter(d.state.value for d in cs.load_devices(tx, CAMPAIGN))
        return row, {s.value: counts[s.value] for s in DeviceState if counts[s.value]}

    return _read(w, read)


def _finish(
    say: _Say,
    w: _World,
    devices: list[EnrolledDevice],
    classes: dict[OID, tuple[uuid.UUID, str]],
    fleet: FleetResult,
    report: Path,
    started: float,
) -> DemoOutcome:
    say.step(9, "report")
    _dofpy(say, ["update", "report", CAMPAIGN, "--db", str(w.campaigns)], show=80)
    report.parent.mkdir(parents=True, exist_ok=True)
    _dofpy(say, ["update", "report", CAMPAIGN, "--db", str(w.campaigns), "--format", "html",
                 "--out", str(report)])  # fmt: skip
    _dofpy(
        say,
        ["update", "audit", "verify", str(w.campaigns), "--db",
         "--service-key", str(w.service_key) + ".pub", "--trust-root", str(w.trust_root)],
        show=2,
    )  # fmt: skip
    cpu = {name: daemon.cpu_seconds() for name, daemon in w.daemons.items()}
    say("  service CPU: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cpu.items()))
    provider_cpu = sum(v for k, v in cpu.items() if k == "image" or k.startswith("relay-"))
    succeeded = sum(1 for d in fleet.devices if d.outcome == "succeeded")
    per_core = 60.0 * succeeded / provider_cpu if provider_cpu else 0.0
    say(
        f"  fleet updates per provider core: {per_core:.0f} a minute ({succeeded} updates"
        f" of {len(w.new_image)} bytes for {provider_cpu:.1f} s of Image and relay CPU)"
    )
    say("  the fleet, as the devices saw it:")
    for line in fleet.lines():
        say("    " + line)
    mismatches = check_fleet(w.campaigns, w.versions, devices, classes, w.new_image)
    row, by_state = _states(w)
    seconds = time.monotonic() - started
    say(f"\n  campaign {CAMPAIGN}: {row.state.value}; " + ", ".join(
        f"{state} {n}" for state, n in by_state.items()))  # fmt: skip
    say(f"  HTML report: {report.resolve()}")
    if mismatches:
        say(f"  {len(mismatches)} devices differ from their records:")
        for line in mismatches[:20]:
            say("    " + line)
    else:
        say(
            f"  every device's campaign record and registry entry match what it runs"
            f" ({len(devices)} devices checked)"
        )
    restarts = {d.name: d.restarts for d in w.daemons.values() if d.restarts}
    if restarts:
        say(
            f"  survived: {sum(restarts.values())} services killed (SIGKILL) and restarted ("
            + ", ".join(f"{name} {n}" for name, n in sorted(restarts.items()))
            + f"), {sum(d.power_cuts for d in fleet.devices)} power cuts,"
            f" {fleet.dropped} datagrams lost, {len(devices)} devices: "
            + ("nothing lost" if not mismatches else f"{len(mismatches)} records wrong")
        )
    say(f"  demo finished in {seconds:.1f} s")
    return DemoOutcome(
        not mismatches and row.state is CampaignState.COMPLETED,
        row.state.value,
        by_state,
        mismatches,
        fleet,
        report,
        seconds,
        restarts,
        cpu,
        per_core,
    )


def check_fleet(
    campaigns: Path,
    versions: Path,
    devices: Sequence[EnrolledDevice],
    classes: dict[OID, tuple[uuid.UUID, str]],
    new_image: bytes,
) -> list[str]:
    """Every device against its records: what it booted (its simulated
    bootloader's durable records) against the Version registry's entry and,
    for the campaign's devices, the campaign's record. One line per
    difference."""
    new_digest = hashlib.sha256(new_image).digest()
    with open_database_sync(str(campaigns), service=cs.SERVICE, migrations=cs.MIGRATIONS) as db:
        rows = {r.device: r for r in db.read(lambda tx: cs.load_devices(tx, CAMPAIGN))}
    with open_version_store(str(versions)) as store:
        registry = {str(r.identity): r for r in store.stream(QueryFilter())}
    wrong: list[str] = []
    for device in devices:
        name = str(device.identity)
        booted = SimulatedBootloader(device.directory).booted()
        runs_new = (
            booted.slot is Slot.NORMAL and booted.image.digest == new_digest and booted.accepted
        )
        entry = registry.get(name)
        if entry is None:
            wrong.append(f"{name}: not in the Version registry")
        elif (entry.device_class, entry.version, entry.image_digest, entry.boot.accepted) != (
            classes[device.identity][1], booted.image.version, booted.image.digest,
            booted.accepted,
        ):  # fmt: skip
            wrong.append(
                f"{name}: registry says {entry.version} (accepted {entry.boot.accepted}),"
                f" the device runs {booted.image.version} (accepted {booted.accepted})"
            )
        row = rows.get(name)
        if row is None:
            if booted.image.digest == new_digest:
                wrong.append(f"{name}: runs the new image but was not in the campaign")
            continue
        if row.state is DeviceState.SUCCEEDED:
            if not runs_new or row.actual_version != NEW_VERSION[0]:
                wrong.append(
                    f"{name}: recorded succeeded ({row.actual_version}), the device runs"
                    f" {booted.image.version} in {booted.slot.name} (accepted {booted.accepted})"
                )
        elif runs_new:
            wrong.append(f"{name}: recorded {row.state.value}, the device runs the new image")
        elif not booted.accepted:
            # Failed, timed out or cancelled: on its old image, or (the seed
            # layout, its Normal image half overwritten) in Reprogram mode;
            # never on a trial boot nobody will confirm.
            wrong.append(
                f"{name}: recorded {row.state.value}, the device is left on a trial boot"
                f" of {booted.image.version} in {booted.slot.name}"
            )
    return wrong


if __name__ == "__main__":
    raise SystemExit(main())
