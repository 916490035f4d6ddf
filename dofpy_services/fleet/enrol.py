"""Enrolling a simulated fleet: each device an identity in the domain (the
Authenticator's store), the grants a device needs, a report key registered
in the Update service's device table, and a simulated bootloader flashed
with the fleet's current firmware.

Keys and identities are derived from the fleet's seed, so a fleet enrolled
again with the same seed is the same fleet (its folders are reused when
they hold a device already).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dofpy.credentials import NodeCredentials
from dofpy.transfer.messages import TRANSFER_IID
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy_services.authenticator.store import AuthenticatorStore, StoreError
from dofpy_services.device.boot_records import Layout
from dofpy_services.device.simulated import RECORDS_FILE, FirmwareImage, SimulatedBootloader
from dofpy_services.image.serving import IMAGE_INTERFACE
from dofpy_services.store import SyncDatabase, Transaction
from dofpy_services.update import device_keys as dk
from dofpy_services.update.device_interface import UPDATE_DEVICE
from dofpy_services.version.interface import VERSION_REPORT

__all__ = [
    "DEVICE_INTERFACES",
    "EnrolledDevice",
    "Firmware",
    "enrol_fleet",
    "fleet_device_permissions",
    "report_key",
]

DEVICE_INTERFACES = (VERSION_REPORT.iid, UPDATE_DEVICE.iid, IMAGE_INTERFACE.iid, TRANSFER_IID)
"""What a device executes: its check-ins, the device interface, manifests, blocks."""


def _actions(iid: object) -> Action:
    # The device interface's pushes (its assignment, the moment it is
    # notified) need subscribe too.
    return Action.EXECUTE | Action.SUBSCRIBE if iid == UPDATE_DEVICE.iid else Action.EXECUTE


def fleet_device_permissions() -> PermissionSet:
    """What an enrolled fleet device is granted and asks for in its sessions
    (a node asking for more than it was granted is refused its ticket)."""
    return PermissionSet(
        tuple(BindingPermission(_actions(iid), OID(0), iid) for iid in DEVICE_INTERFACES)
    )


@dataclass(frozen=True)
class Firmware:
    """What every device of the fleet is flashed with."""

    normal: FirmwareImage
    reprogram: FirmwareImage
    normal_capacity: int
    reprogram_capacity: int
    layout: Layout = Layout.SEED


@dataclass(frozen=True)
class EnrolledDevice:
    number: int
    identity: OID
    credentials: NodeCredentials
    report_key: ed25519.Ed25519PrivateKey
    directory: Path


def report_key(seed: int, number: int) -> ed25519.Ed25519PrivateKey:
    """Device ``number``'s install-report key (derived: a simulation's only)."""
    return ed25519.Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"dofpy fleet {seed}:{number}".encode()).digest()
    )


def device_name(prefix: str, number: int, domain_name: str) -> str:
    return f"{prefix}-{number:05d}@{domain_name}"


def enrol_fleet(
    authenticators: AuthenticatorStore,
    campaigns: SyncDatabase,
    *,
    domain: OID,
    domain_name: str,
    count: int,
    directory: Path,
    firmware: Firmware,
    authenticator: tuple[str, int],
    authenticator_identity: OID | None = None,
    prefix: str = "sim",
    seed: int = 0,
    first: int = 0,
) -> list[EnrolledDevice]:
    """Enrol ``count`` devices numbered from ``first`` (blocking: the
    stores). A device enrolled before keeps its identity and grants; its
    folder is flashed only once."""
    now = time.time()
    devices: list[EnrolledDevice] = []
    keys: list[tuple[str, bytes]] = []
    for number in range(first, first + count):
        identity = OID(3, device_name(prefix, number, domain_name).encode())
        with suppress(StoreError):  # enrolled by an earlier run of the same fleet
            authenticators.add_node(domain, identity, now)
        for permission in fleet_device_permissions().permissions:
            with suppress(StoreError):  # held already
                authenticators.grant(domain, identity, permission, now)
        credential = authenticators.domain(domain).credential_for(identity, 0)
        credentials = NodeCredentials(
            domain,
            identity,
            credential.secret,
            authenticator,
            authenticator_identity=authenticator_identity,
        )
        folder = directory / f"{prefix}-{number:05d}"
        if not (folder / RECORDS_FILE).exists():
            folder.mkdir(parents=True, exist_ok=True)
            SimulatedBootloader.provision(
                folder,
                firmware.layout,
                normal=firmware.normal,
                reprogram=firmware.reprogram,
                normal_capacity=firmware.normal_capacity,
                reprogram_capacity=firmware.reprogram_capacity,
            )
        key = report_key(seed, number)
        keys.append((str(identity), key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)))
        devices.append(EnrolledDevice(number, identity, credentials, key, folder))
    campaigns.write(lambda tx: _enrol_keys(tx, keys, now))
    return devices


def _enrol_keys(tx: Transaction, keys: Sequence[tuple[str, bytes]], now: float) -> None:
    for device, public in keys:
        dk.enrol_key(tx, device, public, now=now)
