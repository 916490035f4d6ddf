"""Simulated devices for campaign tests: each plays the device side of an
update (the agent's states, a Version report after booting) with a chosen
behaviour, in simulated time, against a :class:`CampaignWorker`.

A fleet's own state (what each device runs, where it is in the update) is
kept apart from the campaign store, in a JSON file written atomically after
every tick, so that a test can kill the process that runs both and check the
store against the devices afterwards. Run as a module it is that process:
``python -m tests.update.campaign_sim DB FLEET SEED STEPS``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from dofpy_services.store import Transaction
from dofpy_services.update.engine import Action, ActionKind, DeviceEvent, EventKind
from dofpy_services.update.tracking import DeviceState, Stage
from dofpy_services.update.worker import CampaignWorker

CHUNK = 64 * 1024
FETCH_PER_TICK = CHUNK * 4
"""Image bytes a transferring device fetches per tick (its link's rate)."""


@dataclass
class SimDevice:
    """One device. ``behaviour``: ``normal``, ``silent`` (never comes back
    once notified), ``reverts`` (boots the new version, then falls back to
    the old one accepted), ``defers`` (its user defers to ``defer_until``),
    ``refuses``, ``flaky`` (its first transfer breaks, retryable),
    ``bad-image`` (verification fails, not retryable), ``ahead`` (an A/B
    device before its window: downloads and verifies before it is
    authorised, installs when allowed). ``live``: it has a
    session (told at once); else it polls every ``poll`` seconds."""

    name: str
    version: str = "1.0"
    accepted: bool = True
    phase: str = "idle"
    offset: int = 0
    behaviour: str = "normal"
    live: bool = True
    poll: float = 300.0
    next_poll: float = 0.0
    defer_until: float = 0.0
    offered: bool = False
    allowed: bool = False
    cancelled: bool = False
    failures: int = 0
    installed_at: float = -1.0
    reported_at: float = -1e18


@dataclass
class Fleet:
    campaign: str
    new_version: str
    image_size: int
    devices: dict[str, SimDevice]
    now: float = 0.0
    sent_bytes: list[tuple[float, int]] = field(default_factory=list)
    refused_events: int = 0

    def deliver(self, actions: list[Action]) -> None:
        for action in actions:
            device = self.devices.get(action.device)
            if device is None:
                continue
            if action.kind == ActionKind.NOTIFY and device.live:
                device.offered = True
            elif action.kind == ActionKind.ALLOW_INSTALL:
                device.allowed = True
            elif action.kind == ActionKind.CANCEL:
                device.cancelled = True

    def _send(self, worker: CampaignWorker, device: SimDevice, event: DeviceEvent) -> bool:
        actions = worker.handle(self.campaign, device.name, event, now=self.now)
        if actions is None:
            self.refused_events += 1
            return False
        for action in actions:
            if action.kind == ActionKind.NOTIFY:
                device.offered = True  # answered at check-in
        self.deliver(actions)
        return True

    def tick(self, worker: CampaignWorker, dt: float) -> None:
        """Every device acts once, then the worker steps; time moves ``dt``."""
        self.deliver(worker.step(self.now))
        for device in self.devices.values():
            self._act(worker, device)
        self.now += dt

    def _act(self, worker: CampaignWorker, device: SimDevice) -> None:
        now = self.now
        if device.behaviour == "silent" and device.phase != "idle":
            return
        if not device.live and now >= device.next_poll:
            device.next_poll = now + device.poll
            self._send(worker, device, DeviceEvent(EventKind.CHECK_IN))
        if device.cancelled and device.phase not in ("idle", "done"):
            device.phase, device.offset, device.allowed = "idle", 0, False
            device.cancelled = device.offered = False
            return
        progress = DeviceEvent
        # A report the worker refused (another process holds the device) is
        # not acknowledged: the device stays where it is and sends it again.
        if device.phase == "idle":
            if not device.offered:
                return
            if device.behaviour == "silent":
                device.phase = "gone"
                return
            if device.behaviour == "defers" and now < device.defer_until:
                if self._send(
                    worker, device, DeviceEvent(EventKind.DEFER, until=device.defer_until)
                ):
                    device.offered = False
                return
            if device.behaviour == "refuses":
                if self._send(worker, device, DeviceEvent(EventKind.REFUSE)):
                    device.offered = False
                return
            if device.behaviour == "ahead":
                # An A/B device before its window: downloads before it is
                # authorised (its install waits for ALLOW_INSTALL).
                device.phase, device.offered, device.offset = "transferring", False, 0
                return
            if self._send(worker, device, progress(EventKind.PROGRESS, DeviceState.AUTHORISED)):
                device.phase, device.offered, device.offset = "authorised", False, 0
            return
        if device.phase == "authorised":
            if self._send(worker, device, progress(EventKind.PROGRESS, DeviceState.REPROGRAM_MODE)):
                device.phase = "transferring"
            return
        if device.phase == "transferring":
            if device.behaviour == "flaky" and device.failures == 0 and device.offset > 0:
                failed = DeviceEvent(
                    EventKind.FAILED, stage=Stage.TRANSFER, reason="transfer-interrupted"
                )
                if self._send(worker, device, failed):
                    device.failures += 1
                    device.phase, device.offset = "idle", 0
                return
            if device.offset < self.image_size:
                # The device's own fetch rate: the providers and relays pace
                # nothing; the campaign's caps pace the starts.
                fetched = min(FETCH_PER_TICK, self.image_size - device.offset)
                self.sent_bytes.append((now, fetched))
                device.offset += fetched
            if device.offset >= self.image_size:
                if device.behaviour == "bad-image":
                    bad = DeviceEvent(EventKind.FAILED, stage=Stage.VERIFY, reason="bad-signature")
                    if self._send(worker, device, bad):
                        device.phase = "done"
                    return
                if self._send(
                    worker,
                    device,
                    progress(EventKind.PROGRESS, DeviceState.VERIFYING, device.offset),
                ):
                    device.phase = "verified"
            else:
                self._send(
                    worker,
                    device,
                    progress(EventKind.PROGRESS, DeviceState.TRANSFERRING, device.offset),
                )
            return
        if device.phase == "verified":
            if device.allowed:
                if self._send(worker, device, progress(EventKind.PROGRESS, DeviceState.INSTALLING)):
                    device.phase, device.installed_at = "installed", now
            else:
                # Repeating where it is keeps the device heard while it waits.
                self._send(
                    worker,
                    device,
                    progress(EventKind.PROGRESS, DeviceState.VERIFYING, device.offset),
                )
            return
        if device.phase == "installed":
            # Rebooted into the new image on trial; the report may be refused
            # and repeated, the reboot is not.
            device.version, device.accepted = self.new_version, False
            if self._send(worker, device, progress(EventKind.PROGRESS, DeviceState.NORMAL_MODE)):
                device.phase = "booted"
            return
        if device.phase == "booted":
            if device.behaviour == "reverts":
                device.version, device.accepted = "1.0", True
            else:
                device.accepted = True
            device.phase = "done"
        if device.phase == "done" and now - device.reported_at >= 60.0:
            # The Version service's view of the device, as its change feed
            # reports it (again each minute: a report the worker refused
            # while another process held the device comes back).
            observed = DeviceEvent(
                EventKind.OBSERVED, version=device.version, accepted=device.accepted
            )
            if self._send(worker, device, observed):
                device.reported_at = now

    # -- the fleet's own durable state --------------------------------------------------

    def save(self, path: Path) -> None:
        document = {
            "campaign": self.campaign,
            "new_version": self.new_version,
            "image_size": self.image_size,
            "now": self.now,
            "devices": [asdict(d) for d in self.devices.values()],
        }
        temporary = path.with_suffix(".tmp")
        with temporary.open("w", encoding="utf-8") as file:
            json.dump(document, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> Fleet:
        document = json.loads(path.read_text(encoding="utf-8"))
        devices = {d["name"]: SimDevice(**d) for d in document["devices"]}
        return cls(
            document["campaign"],
            document["new_version"],
            document["image_size"],
            devices,
            document["now"],
        )


def _main(argv: list[str]) -> int:
    """Run STEPS ticks of the fleet at FLEET against the store at DB,
    printing the tick after each (the killing test waits for them)."""
    from dofpy_services.store import open_database_sync  # noqa: PLC0415
    from dofpy_services.update.campaign_store import MIGRATIONS, SERVICE  # noqa: PLC0415
    from tests.image.signing_fixtures import ed25519_key  # noqa: PLC0415

    location, fleet_path, seed, steps = argv[0], Path(argv[1]), int(argv[2]), int(argv[3])
    key = ed25519_key(int(argv[4]))
    owner = f"sim-{os.getpid()}"
    with open_database_sync(location, service=SERVICE, migrations=MIGRATIONS) as db:
        worker = CampaignWorker(db, key, owner, lease=60.0, seed=seed)
        fleet = Fleet.load(fleet_path)
        for number in range(steps):
            fleet.now = db.write(partial(_shared_clock, mine=fleet.now, step=10.0))
            fleet.tick(worker, 10.0)
            fleet.save(fleet_path)
            print(f"tick {number} {fleet.now}", flush=True)
            if settled(worker, fleet.campaign):
                print("settled", flush=True)
                break
    return 0


def create_shared_clock(tx: Transaction) -> None:
    """The table of the processes' shared simulated clock (made before they start)."""
    tx.execute("CREATE TABLE sim_clock (id INTEGER PRIMARY KEY, now DOUBLE PRECISION)")
    tx.execute("INSERT INTO sim_clock (id, now) VALUES (1, 0)")


def _shared_clock(tx: Transaction, *, mine: float, step: float) -> float:
    """The simulated time this tick runs at: the later of this process's and
    the one every process shares through the store (advanced by ``step``),
    so that processes judge each other's leases by one clock, as real ones
    do by the wall clock."""
    row = tx.row(
        "SELECT now FROM sim_clock WHERE id = 1"
        + (" FOR UPDATE" if tx.dialect == "postgresql" else "")
    )
    assert row is not None, "create_shared_clock first"
    now = max(mine, float(row[0]))
    tx.execute("UPDATE sim_clock SET now = ? WHERE id = 1", (now + step,))
    return now


def settled(worker: CampaignWorker, campaign: str) -> bool:
    """Whether the campaign is over and every device in it settled."""
    from dofpy_services.update import campaign_store as cs  # noqa: PLC0415
    from dofpy_services.update.campaign import FINAL_CAMPAIGN_STATES  # noqa: PLC0415
    from dofpy_services.update.tracking import TERMINAL_STATES  # noqa: PLC0415

    def read(tx: object) -> bool:
        row = cs.load_campaign(tx, campaign)  # type: ignore[arg-type]
        devices = cs.load_devices(tx, campaign)  # type: ignore[arg-type]
        return row.state in FINAL_CAMPAIGN_STATES and all(
            d.state in TERMINAL_STATES for d in devices
        )

    return bool(worker.db.read(read))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
