"""``dofpy device run --sim DIR``: one simulated device against real services.

The device is the simulated bootloader on ``DIR`` (made by
:meth:`~dofpy_services.device.simulated.SimulatedBootloader.provision`); its
agent keeps its state files in the same folder. It joins its domain with its
credentials file (the secure sessions' identity is the device's) and talks
OAP to the Version service (``report``), the Update service's device
interface (``UPDATE_DEVICE``) and one or more Image providers or relays (the
manifest by digest, the image by block transfer into the slot). Manifests
are checked by the device's own verifier against its trust root
(:class:`~dofpy_services.device.verifier.DeviceVerifier`); install reports
are signed with its Ed25519 key; confidential images open with its X25519
key. A reboot the agent asks for is the simulated bootloader's ``reboot``
and a fresh agent on the same folder.

It runs until the agent is idle again after at least one step (an update
finished and reported, or nothing assigned), or ``max_boots`` boots.
"""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dofpy._core import Address
from dofpy.credentials import load_credentials
from dofpy.image.trust import TrustRoot
from dofpy.oap.core import OapConfig
from dofpy.transfer.core import TransferConfig
from dofpy.transfer.messages import TRANSFER_IID
from dofpy.trio import open_transfer_node
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy_services.device.agent import AgentPorts, DeviceAgent, Rebooted, UserAnswer
from dofpy_services.device.images import ServiceImages
from dofpy_services.device.simulated import SimulatedBootloader
from dofpy_services.device.table import State
from dofpy_services.device.update_client import UpdateDeviceClient
from dofpy_services.device.verifier import DeviceVerifier
from dofpy_services.image.serving import IMAGE_INTERFACE
from dofpy_services.update.device_interface import UPDATE_DEVICE, Assignment, InstallReport
from dofpy_services.version.client import VersionClient
from dofpy_services.version.interface import VERSION_REPORT, VersionReport

__all__ = ["DeviceRun", "SimulatedDevice", "load_key_file", "run_simulated_device"]


def device_permissions() -> PermissionSet:
    """What the device asks for in its sessions: to report, to be updated,
    to ask for manifests and to fetch blocks."""
    return PermissionSet(
        tuple(
            BindingPermission(Action.EXECUTE, OID(0), iid)
            for iid in (VERSION_REPORT.iid, UPDATE_DEVICE.iid, IMAGE_INTERFACE.iid, TRANSFER_IID)
        )
    )


def load_key_file(path: str | os.PathLike[str]) -> ed25519.Ed25519PrivateKey | X25519PrivateKey:
    """An unencrypted PEM private key that only its owner may read (an
    Ed25519 report key or an X25519 content key)."""
    source = Path(path)
    mode = source.stat().st_mode
    if mode & 0o077:
        raise ValueError(f"{source} is accessible by group or others ({stat.S_IMODE(mode):04o})")
    key = serialization.load_pem_private_key(source.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | X25519PrivateKey):
        raise ValueError(f"{source} is neither an Ed25519 nor an X25519 private key")
    return key


@dataclass(frozen=True)
class SimulatedDevice:
    """Everything one simulated device needs to run."""

    directory: Path
    credentials: Path
    version: Address
    update: Address
    images: tuple[Address, ...]
    trust_root: TrustRoot
    vendor_id: uuid.UUID
    class_id: uuid.UUID
    report_key: ed25519.Ed25519PrivateKey
    content_key: X25519PrivateKey | None = None
    class_name: str = ""
    """The device class as the Version service records it (default: class_id)."""
    version_identity: OID | None = None
    update_identity: OID | None = None
    max_boots: int = 20
    max_steps: int = 1000
    progress_interval: float = 600.0
    """How often a transfer repeats its TRANSFERRING progress (the agent's)."""
    answer: UserAnswer = UserAnswer.ACCEPT
    """The simulated user's answer to a manual campaign (the manual-update
    hook): accept, refuse, or defer by ``defer_seconds`` (then accept)."""
    defer_seconds: float = 0.0


@dataclass
class DeviceRun:
    """How a run ended: the boots it took and the agent's install reports."""

    boots: int
    reports: list[InstallReport]
    state: State


class _Version:
    """The agent's VersionPort on a VersionClient: one attempt per step (the
    agent's machine retries with its own back-off)."""

    def __init__(self, client: VersionClient) -> None:
        self.client = client

    async def report(self, report: VersionReport) -> bool:
        return await self.client.report(report, attempts=1)


async def _healthy() -> str:
    return ""


def user_hook(
    answer: UserAnswer, defer_seconds: float
) -> Callable[[Assignment], Awaitable[tuple[UserAnswer, float]]]:
    """The manual-update hook of a simulated user who always answers
    ``answer`` (a deferral once, by ``defer_seconds``, then acceptance)."""
    deferred = False

    async def ask(assignment: Assignment) -> tuple[UserAnswer, float]:
        nonlocal deferred
        if answer is UserAnswer.DEFER and not deferred:
            deferred = True
            return UserAnswer.DEFER, trio.current_time() + defer_seconds
        if answer is UserAnswer.REFUSE:
            return UserAnswer.REFUSE, 0.0
        return UserAnswer.ACCEPT, 0.0

    return ask


async def run_simulated_device(device: SimulatedDevice) -> DeviceRun:
    """Run the device's agent (see the module docstring)."""
    credentials = load_credentials(device.credentials)
    config = TransferConfig(oap=OapConfig(node=credentials.node_config(device_permissions())))
    boot = SimulatedBootloader(device.directory)
    reports: list[InstallReport] = []
    async with open_transfer_node(("0.0.0.0", 0), config) as node:  # noqa: S104 any local address
        verifier = DeviceVerifier(device.trust_root, device.vendor_id, device.class_id, time.time)
        ports = AgentPorts(
            UpdateDeviceClient(node.node, device.update, identity=device.update_identity),
            _Version(VersionClient(node.node, device.version, identity=device.version_identity)),
            ServiceImages(node, list(device.images), verifier),
            _healthy,
            user_hook(device.answer, device.defer_seconds),
        )
        for boots in range(1, device.max_boots + 1):
            agent = DeviceAgent(
                boot,
                ports,
                device.directory,
                identity=credentials.identity,
                key=device.report_key,
                device_class=device.class_name or str(device.class_id),
                content_key_private=device.content_key,
                progress_interval=device.progress_interval,
            )

            def finished(agent: DeviceAgent) -> bool:
                return agent.machine.state is State.IDLE and bool(agent.machine.trail)

            try:
                await agent.run(until=finished, max_steps=device.max_steps)
            except Rebooted:
                reports.extend(agent.reports_sent)
                boot.reboot()
                continue
            reports.extend(agent.reports_sent)
            return DeviceRun(boots, reports, agent.machine.state)
    raise RuntimeError(f"the device did not settle within {device.max_boots} boots")


def run_blocking(device: SimulatedDevice) -> DeviceRun:
    return trio.run(run_simulated_device, device)
