"""Many simulated devices in one process, each a real device agent
(:class:`~dofpy_services.device.agent.DeviceAgent`) on a simulated
bootloader, with its own node and secure sessions, against running services.

Faults, each drawn from the fleet's seed:

- ``loss``: every datagram between a device and the Version, Update and Image
  services is dropped with this probability in each direction (a seeded
  lossy UDP proxy in front of each service; the Authenticator is reached
  directly);
- ``power_cuts``: this share of the devices lose power at a random file
  operation of their update (the bootloader's :class:`PowerCutFs`: what was
  never fsync-ed is lost, then the device boots again from what is durable);
- ``offline``: this share check in once (so the campaign's population holds
  them) and then stay offline for the whole campaign;
- ``unhealthy``: this many devices fail the health check of any new Normal
  image (they roll back).

Each device first checks in (the Version service learns its version), then
checks in and polls the Update service every ``poll_interval`` seconds
(jittered) and updates when it is assigned, until :func:`run_fleet`'s
``done`` says the fleet may stop (the campaign settled) or ``duration``
passes.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import trio

from dofpy._core import Address
from dofpy.image.trust import TrustRoot
from dofpy.oap.core import OapConfig
from dofpy.transfer.core import TransferConfig
from dofpy.trio import open_transfer_node
from dofpy.wire.oid import OID
from dofpy_services.device.agent import AgentPorts, DeviceAgent, Rebooted, UserAnswer
from dofpy_services.device.fs import OsFs, PowerCut, PowerCutFs
from dofpy_services.device.images import ServiceImages
from dofpy_services.device.run import user_hook
from dofpy_services.device.simulated import SimulatedBootloader
from dofpy_services.device.table import State
from dofpy_services.device.update_client import UpdateDeviceClient
from dofpy_services.device.verifier import DeviceVerifier
from dofpy_services.fleet.enrol import EnrolledDevice, fleet_device_permissions
from dofpy_services.lossy_link import LossyLink
from dofpy_services.update.device_interface import InstallOutcome, InstallReport
from dofpy_services.version.client import VersionClient
from dofpy_services.version.interface import VersionReport

__all__ = ["DeviceOutcome", "FleetFaults", "FleetResult", "FleetServices", "run_fleet"]

_MAX_BOOTS = 40
_MAX_STEPS = 2000
_CUT_SPAN = 80
"""A power cut falls at one of the first this many file operations of an update
(counted from the device's authorisation: Reprogram mode, the slot's writes,
the records)."""
_WAITING = frozenset({State.IDLE, State.CHECK_IN, State.POLL})


@dataclass(frozen=True)
class FleetServices:
    """Where the services answer, and who they are (their sessions' identities).

    ``update``: one Update process's address, or several processes' (sharing
    one PostgreSQL campaign store, under one identity): device number ``n``
    talks to the ``n % len``-th only, for its polls, its pushes and every
    other call, as a device configured with one of a service's addresses
    does. ``images``: each device starts with the ``n % len``-th provider,
    the others its fallbacks."""

    version: Address
    update: Address | tuple[Address, ...]
    images: tuple[Address, ...]
    version_identity: OID | None = None
    update_identity: OID | None = None

    def __post_init__(self) -> None:
        if not self.updates:
            raise ValueError("at least one Update address")

    @property
    def updates(self) -> tuple[Address, ...]:
        """Every Update process's address."""
        if self.update and isinstance(self.update[0], str):
            return (self.update,)
        return self.update

    def update_for(self, number: int) -> Address:
        """The Update process device number ``number`` talks to."""
        updates = self.updates
        return updates[number % len(updates)]


@dataclass(frozen=True)
class FleetFaults:
    loss: float = 0.0
    power_cuts: float = 0.0
    offline: float = 0.0
    unhealthy: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("loss", "power_cuts", "offline"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} is a share in [0, 1)")
        if self.unhealthy < 0:
            raise ValueError("unhealthy is a number of devices >= 0")


@dataclass
class DeviceOutcome:
    """What one device did, seen from the device."""

    identity: OID
    offline: bool = False
    unhealthy: bool = False
    power_cuts: int = 0
    boots: int = 0
    reports: list[InstallReport] = field(default_factory=list)
    started_at: float | None = None
    """When its agent first left its check-in loop for an update (monotonic)."""
    finished_at: float | None = None
    error: str = ""

    @property
    def outcome(self) -> str:
        if self.offline:
            return "offline"
        if self.error:
            return "error"
        return self.reports[-1].outcome.value if self.reports else "not updated"


@dataclass
class FleetResult:
    devices: list[DeviceOutcome]
    started: float
    ended: float
    dropped: int = 0
    forwarded: int = 0

    def counts(self) -> Counter[str]:
        return Counter(d.outcome for d in self.devices)

    def update_span(self) -> float:
        """Seconds from the first device starting its update to the last one
        finishing (0 when none did)."""
        starts = [d.started_at for d in self.devices if d.started_at is not None]
        ends = [d.finished_at for d in self.devices if d.finished_at is not None]
        return max(0.0, max(ends) - min(starts)) if starts and ends else 0.0

    def updates_per_minute(self) -> float:
        """Devices that installed the new image, per minute of the update span."""
        done = [d for d in self.devices if d.outcome == InstallOutcome.SUCCEEDED.value]
        return 60.0 * len(done) / self.update_span() if done and self.update_span() else 0.0

    def lines(self) -> list[str]:
        counts = self.counts()
        return [
            f"devices: {len(self.devices)}, run time {self.ended - self.started:.1f} s",
            "device outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
            f"throughput: {self.updates_per_minute():.1f} updates/min"
            f" (over {self.update_span():.1f} s, first update started to last finished)",
            f"power cuts: {sum(d.power_cuts for d in self.devices)}, "
            f"datagrams dropped {self.dropped} of {self.dropped + self.forwarded}",
        ]


class _Version:
    def __init__(self, client: VersionClient) -> None:
        self.client = client

    async def report(self, report: VersionReport) -> bool:
        return await self.client.report(report, attempts=1)


def _power_cut(exc: BaseException) -> bool:
    if isinstance(exc, PowerCut):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_power_cut(e) for e in exc.exceptions)
    return False


@dataclass
class _Device:
    enrolled: EnrolledDevice
    outcome: DeviceOutcome
    cut_after: int | None
    """Operations into its update at which the device loses power (None: never)."""
    rng: random.Random
    class_id: uuid.UUID
    class_name: str
    updating: bool = False
    """Inside an update, as the device itself sees it (its agent past
    check-in and poll, not idle again yet)."""

    def open(self) -> SimulatedBootloader:
        # No fsync reaches the host's disk: a device's durability is
        # modelled (PowerCutFs: what a cut keeps), and a fleet's thousands of
        # state-file fsyncs would block the one loop running every device.
        folder = self.enrolled.directory
        if self.cut_after is not None:
            return SimulatedBootloader(folder, fs=PowerCutFs(folder, sync=False))
        return SimulatedBootloader(folder, fs=OsFs(folder, sync=False))

    def arm(self, boot: SimulatedBootloader, state: State) -> None:
        """Once the update begins, set the power cut's operation."""
        fs = boot.fs
        if (
            self.cut_after is not None
            and state not in _WAITING
            and isinstance(fs, PowerCutFs)
            and fs.cut_at is None
        ):
            fs.cut_at = len(fs.operations) + self.cut_after


def _settled(device: _Device, boot: SimulatedBootloader, agent: DeviceAgent) -> bool:
    """The agent's ``until``: idle again after a step (and the power cut armed
    once its update begins; the device marked :attr:`_Device.updating` from
    then until it is idle again)."""
    state = agent.machine.state
    device.arm(boot, state)
    if state not in _WAITING:
        device.updating = True
        if device.outcome.started_at is None:
            device.outcome.started_at = time.monotonic()
    settled = state is State.IDLE and bool(agent.machine.trail)
    if settled:
        device.updating = False
    return settled


def _checked_in(device: _Device, boot: SimulatedBootloader, agent: DeviceAgent) -> bool:
    """An offline device's first ``until``: its report reached the Version
    service (it is in the campaign's population) and it goes before it polls,
    so a campaign started at that moment cannot reach it."""
    return agent.machine.state is State.POLL or _settled(device, boot, agent)


async def _run_device(
    device: _Device,
    services: FleetServices,
    trust_root: TrustRoot,
    vendor_id: uuid.UUID,
    poll_interval: float,
    checked_in: Callable[[], None],
    stop: trio.Event,
    start_spread: float = 0.0,
    progress_interval: float = 10.0,
) -> None:
    if start_spread > 0:
        with trio.move_on_after(device.rng.uniform(0.0, start_spread)):
            await stop.wait()
    enrolled = device.enrolled
    outcome = device.outcome
    config = TransferConfig(
        oap=OapConfig(node=enrolled.credentials.node_config(fleet_device_permissions()))
    )
    first = SimulatedBootloader(enrolled.directory).booted().image.digest
    told = False
    boots = 0
    # One pass per power-on: a power cut, in whichever task it strikes (the
    # agent's, or the transfer node's writing blocks into the slot), switches
    # the whole device off; it then boots from what was durable.
    while boots < _MAX_BOOTS * 4:
        boot = device.open()

        async def health(boot: SimulatedBootloader = boot) -> str:
            booted = boot.booted()
            if outcome.unhealthy and booted.slot.is_normal and booted.image.digest != first:
                return "the new image failed its health check (simulated)"
            return ""

        try:
            async with open_transfer_node(("127.0.0.1", 0), config) as node:
                verifier = DeviceVerifier(trust_root, vendor_id, device.class_id, time.time)
                # Each device starts with its own provider of the list (relays
                # share the fleet between them); the others are its fallbacks.
                turn = enrolled.number % len(services.images)
                providers = [*services.images[turn:], *services.images[:turn]]
                update = UpdateDeviceClient(
                    node.node,
                    services.update_for(enrolled.number),
                    identity=services.update_identity,
                )
                ports = AgentPorts(
                    update,
                    _Version(
                        VersionClient(
                            node.node, services.version, identity=services.version_identity
                        )
                    ),
                    ServiceImages(node, providers, verifier),
                    health,
                    user_hook(UserAnswer.ACCEPT, 0.0),
                )
                while boots < _MAX_BOOTS * 4:
                    if stop.is_set():
                        return
                    boots += 1
                    agent = DeviceAgent(
                        boot,
                        ports,
                        boot.fs,
                        identity=enrolled.identity,
                        key=enrolled.report_key,
                        device_class=device.class_name,
                        progress_interval=progress_interval,
                    )
                    try:
                        until = _checked_in if outcome.offline and not told else _settled
                        await agent.run(until=partial(until, device, boot), max_steps=_MAX_STEPS)
                    except Rebooted:
                        outcome.reports.extend(agent.reports_sent)
                        outcome.boots += 1
                        boot.reboot()
                        continue
                    outcome.reports.extend(agent.reports_sent)
                    if agent.reports_sent:
                        outcome.finished_at = time.monotonic()
                    if not told:
                        told = True
                        checked_in()
                        if outcome.offline:
                            return  # checked in once, then gone for the whole campaign
                    # Until its next check-in, or until the Update service
                    # pushes it an assignment (then at once), or the end.
                    wait = poll_interval * device.rng.uniform(0.5, 1.5)
                    async with trio.open_nursery() as waiting:

                        async def stopped(scope: trio.CancelScope = waiting.cancel_scope) -> None:
                            await stop.wait()
                            scope.cancel()

                        waiting.start_soon(stopped)
                        await update.wait_for_assignment(trio.current_time() + wait)
                        waiting.cancel_scope.cancel()
        except (PowerCut, BaseExceptionGroup) as exc:
            if not _power_cut(exc):
                raise
            outcome.power_cuts += 1
            outcome.boots += 1
            device.cut_after = None  # one cut per device
    outcome.error = "did not settle within its boots"


async def run_fleet(
    devices: Sequence[EnrolledDevice],
    services: FleetServices,
    *,
    trust_root: TrustRoot,
    vendor_id: uuid.UUID,
    class_id: uuid.UUID,
    class_name: str,
    faults: FleetFaults = FleetFaults(),
    poll_interval: float = 1.0,
    duration: float = 600.0,
    done: Callable[[], bool] | None = None,
    on_checked_in: Callable[[], None] | None = None,
    check_every: float = 0.5,
    classes: Mapping[OID, tuple[uuid.UUID, str]] | None = None,
    updating: Collection[OID] | None = None,
    start_spread: float = 0.0,
    stop_grace: float = 30.0,
    progress_interval: float = 10.0,
) -> FleetResult:
    """Run ``devices`` until ``done()`` (checked every ``check_every`` seconds,
    in a worker thread: it may read a store) or ``duration`` seconds pass.
    ``on_checked_in``: called once every device has checked in once.
    ``classes``: a device's class (UUID, name) where it is not ``class_id``
    and ``class_name`` (a fleet of several classes). ``updating``: the
    devices that will update (a campaign's population): the unhealthy ones
    and those losing power are drawn from them, power cuts as a share of them
    (default: any online device, a share of the fleet). ``start_spread``:
    devices power on at random moments over this many seconds (a fleet never
    boots at one instant; all at once, a thousand handshakes queue at each
    service). ``stop_grace``: seconds a device still inside an agent step
    once the fleet stops is given to finish it. ``progress_interval``: a
    device's agent repeats its progress this often during a transfer (the
    campaign's silence timeout must exceed it).

    ``done`` is asked only while no device is inside an update on its own
    side: on a slow machine, a device the campaign has counted timed out may
    still be installing (the campaign's record then follows what it boots),
    and stopping the fleet there would leave it mid-update."""
    classes = classes or {}
    rng = random.Random(f"fleet:{faults.seed}")
    order = list(range(len(devices)))
    rng.shuffle(order)
    offline = set(order[: round(len(devices) * faults.offline)])
    rest = order[len(offline) :]
    pool = [n for n in rest if updating is None or devices[n].identity in updating]
    unhealthy = set(pool[: faults.unhealthy])
    pool = [n for n in pool if n not in unhealthy]
    cut = set(pool[: round(len(devices if updating is None else updating) * faults.power_cuts)])
    runs = [
        _Device(
            enrolled,
            DeviceOutcome(enrolled.identity, offline=n in offline, unhealthy=n in unhealthy),
            rng.randrange(1, _CUT_SPAN) if n in cut else None,
            random.Random(f"fleet:{faults.seed}:{n}"),
            *classes.get(enrolled.identity, (class_id, class_name)),
        )
        for n, enrolled in enumerate(devices)
    ]
    stop = trio.Event()
    pending = len(runs)

    def checked_in() -> None:
        nonlocal pending
        pending -= 1
        if pending == 0 and on_checked_in is not None:
            on_checked_in()

    links: list[LossyLink] = []
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        targets = services
        if faults.loss > 0:

            def link(address: Address, salt: int) -> Address:
                made = LossyLink(address, faults.loss, faults.seed * 7919 + salt, nursery)
                links.append(made)
                return made.address

            # Each link its own seed: the first Update link keeps salt 2 (one
            # address drops as it always did), further ones stay clear of
            # the Image links' 3 + n.
            targets = FleetServices(
                link(services.version, 1),
                tuple(link(a, 2 + 1000 * n) for n, a in enumerate(services.updates)),
                tuple(link(a, 3 + n) for n, a in enumerate(services.images)),
                services.version_identity,
                services.update_identity,
            )
        async with trio.open_nursery() as devices_nursery:
            for run in runs:
                devices_nursery.start_soon(
                    _guarded, run, targets, trust_root, vendor_id, poll_interval, checked_in,
                    stop, start_spread, progress_interval,
                )  # fmt: skip
            with trio.move_on_after(duration):
                while True:
                    await trio.sleep(check_every)
                    if any(run.updating for run in runs):
                        continue
                    if done is not None and await trio.to_thread.run_sync(done):
                        break
            stop.set()
            # Idle devices go at once; one still inside an agent step (a
            # check-in retrying against a service just restarted, say) gets a
            # grace, then is switched off where it is.
            devices_nursery.cancel_scope.deadline = trio.current_time() + stop_grace
        nursery.cancel_scope.cancel()  # the lossy links' loops
    for made in links:
        made.close()
    return FleetResult(
        [r.outcome for r in runs],
        started,
        time.monotonic(),
        dropped=sum(m.to_upstream.dropped + m.to_requestors.dropped for m in links),
        forwarded=sum(m.to_upstream.forwarded + m.to_requestors.forwarded for m in links),
    )


async def _guarded(run: _Device, *args: object) -> None:
    """One device; a device that breaks is counted, never the fleet's end."""
    try:
        await _run_device(run, *args)  # type: ignore[arg-type]
    except Exception as exc:
        run.outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        run.updating = False  # ended, however: nothing more to wait for
