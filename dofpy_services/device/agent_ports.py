"""The device agent's contracts with the world around it: the ports it talks
through (the Update service's device interface, the Version service, the
image source, the device's hooks), what they answer and raise, and the
reboot it asks the platform for. :mod:`dofpy_services.device.agent` runs
its table against them; :mod:`~dofpy_services.device.ports`,
:mod:`~dofpy_services.device.update_client` and
:mod:`~dofpy_services.device.images` implement them."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from dofpy.transfer.manifest import Manifest
from dofpy.transfer.receiver import LocalLeaves
from dofpy_services.device.boot_records import SlotImage
from dofpy_services.device.slot_store import SlotBlockStore
from dofpy_services.image.encryption import EncryptionInfo
from dofpy_services.update.device_interface import Assignment, Authorisation, Stage
from dofpy_services.version.interface import ImageKind, VersionReport

__all__ = [
    "AgentPorts",
    "ImagePort",
    "ImageToInstall",
    "Installed",
    "ManifestRefused",
    "NotNow",
    "Rebooted",
    "Refused",
    "UpdatePort",
    "UserAnswer",
    "VersionPort",
]


class Rebooted(Exception):
    """The agent asked for a reboot: whoever runs it reboots the platform and
    starts a fresh agent on the same state directory."""


class NotNow(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after}")
        self.retry_after = retry_after


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ManifestRefused(Exception):
    """The device's manifest check refused the assigned manifest (wrong class,
    rollback, expired, under-signed...): ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UserAnswer(enum.Enum):
    ACCEPT = "accept"
    DEFER = "defer"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Installed:
    """What the device had installed when the update began, as its manifest
    check needs it (rollback, precursor): the Normal image's sequence (0:
    none) and digest. Kept in the agent's record, because the bootloader's
    slots change during the update (the seed's layout overwrites its Normal
    slot) while the manifest is checked again after every reboot."""

    sequence: int = 0
    digest: bytes | None = None


@dataclass(frozen=True)
class ImageToInstall:
    """A verified manifest's image: the block transfer's manifest (of the
    ciphertext, for a confidential image) and what the bootloader records for
    the slot (always the plaintext); ``encryption`` the confidential image's
    parameters (None: served in the clear)."""

    transfer: Manifest
    slot_image: SlotImage
    encryption: EncryptionInfo | None = None


class UpdatePort(Protocol):
    async def poll(self) -> list[Assignment]: ...
    async def authorise(self, campaign: str, manifest_digest: bytes) -> Authorisation: ...
    async def progress(self, campaign: str, stage: Stage, reason: str) -> None: ...
    async def accept_booted(self, campaign: str, kind: ImageKind, digest: bytes) -> bool: ...
    async def install_report(self, data: bytes, signature: bytes) -> None: ...


class VersionPort(Protocol):
    async def report(self, report: VersionReport) -> bool: ...


class ImagePort(Protocol):
    async def verify(self, assignment: Assignment, installed: Installed) -> ImageToInstall:
        """Fetch the assigned manifest and verify it for a device that has
        ``installed``; :class:`ManifestRefused`."""
        ...

    async def transfer(
        self, image: ImageToInstall, store: SlotBlockStore, local: LocalLeaves | None
    ) -> None:
        """Fetch the image's blocks into ``store`` (each verified before it
        is written), copying those ``local`` holds instead of fetching them
        (adaptive transfer); DofError (or OSError) when the session is lost."""
        ...


@dataclass
class AgentPorts:
    update: UpdatePort
    version: VersionPort
    images: ImagePort
    health_check: Callable[[], Awaitable[str]]
    """Runs the booted image's health check: "" when healthy, else why not."""
    ask_user: Callable[[Assignment], Awaitable[tuple[UserAnswer, float]]]
    """The manual-update hook: accept, defer (with the time to ask again), refuse."""
