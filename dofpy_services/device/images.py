"""The agent's ImagePort on the Image service: the assigned manifest fetched
by its digest from the first ImageProvider (or relay) that has it, checked by
the device's own verifier (``verify``: the manifest helper's
:func:`~dofpy.image.verify.verify_manifest` with the device's trust root and
installed state, which refuses a wrong class, a rollback, an expired or
under-signed manifest), and its image fetched by the block transfer straight
into the slot store (every leaf verified before it is written)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dofpy._core import Address
from dofpy.errors import BadPacket, DofError
from dofpy.image.errors import ManifestRefused as ManifestCheckFailed
from dofpy.transfer.receiver import LocalLeaves
from dofpy.trio import TransferNode
from dofpy_services.device.agent import ImageToInstall, Installed, ManifestRefused
from dofpy_services.device.boot_records import SlotImage
from dofpy_services.device.slot_store import SlotBlockStore
from dofpy_services.image.encryption import EncryptionInfo
from dofpy_services.image.manifests import encryption_of, manifest_named
from dofpy_services.image.serving import IMAGE_INTERFACE, IMAGE_OBJECT
from dofpy_services.image.store import ManifestSummary
from dofpy_services.update.device_interface import Assignment

__all__ = ["DeviceManifestCheck", "ServiceImages", "check_manifest", "image_to_install"]

DeviceManifestCheck = Callable[[bytes, Installed], ManifestSummary]
"""The device's check of a manifest's bytes for what it has installed
(:class:`~dofpy_services.device.verifier.DeviceVerifier`): raises the
manifest helper's errors or ``BadPacket``."""


def check_manifest(
    verify: DeviceManifestCheck, data: bytes, installed: Installed
) -> ImageToInstall:
    """``data`` checked by ``verify`` for a device that has ``installed``, as
    the agent installs it; every refusal of the check (a malformed manifest
    included) is the agent's :class:`~dofpy_services.device.agent.ManifestRefused`,
    final, never a transient error to retry."""
    try:
        summary = verify(data, installed)
        encryption = encryption_of(data) if summary.encrypted else None
    except (ManifestCheckFailed, BadPacket) as exc:
        raise ManifestRefused(f"{type(exc).__name__}: {exc}") from None
    return image_to_install(summary, encryption)


def image_to_install(
    summary: ManifestSummary, encryption: EncryptionInfo | None = None
) -> ImageToInstall:
    """What the agent installs of a verified manifest: its transfer manifest,
    and the slot's image (a confidential image's plaintext size and signed
    plaintext digest, with ``encryption`` its parameters)."""
    image = summary.image
    if summary.encrypted:
        if encryption is None:
            raise ManifestRefused("a confidential image without its encryption parameters")
        if encryption.plaintext_size != image.size:
            raise ManifestRefused("AES-CTR ciphertext and plaintext differ in size")
        slot_image = SlotImage(
            encryption.plaintext_size,
            encryption.plaintext_sha256,
            summary.sequence,
            summary.version,
        )
        return ImageToInstall(image, slot_image, encryption)
    return ImageToInstall(
        image, SlotImage(image.size, image.object_id, summary.sequence, summary.version)
    )


class ServiceImages:
    """Manifests and images from ``providers`` (Image providers or relays)."""

    def __init__(
        self, node: TransferNode, providers: Sequence[Address], verify: DeviceManifestCheck
    ) -> None:
        if not providers:
            raise ValueError("ServiceImages needs at least one provider")
        self.node = node
        self.providers = list(providers)
        self._verify = verify

    async def _manifest(self, digest: bytes) -> bytes:
        last: DofError | None = None
        for peer in self.providers:
            try:
                (data,) = await self.node.node.invoke(
                    peer, IMAGE_OBJECT, IMAGE_INTERFACE, "manifest", digest
                )
            except DofError as exc:
                last = exc
                continue
            if isinstance(data, bytes) and manifest_named(data, digest):
                return data
            last = BadPacket("a provider answered with another manifest")
        assert last is not None
        raise last

    async def verify(self, assignment: Assignment, installed: Installed) -> ImageToInstall:
        data = await self._manifest(assignment.manifest_digest)
        return check_manifest(self._verify, data, installed)

    async def transfer(
        self, image: ImageToInstall, store: SlotBlockStore, local: LocalLeaves | None
    ) -> None:
        await self.node.fetch(image.transfer, self.providers, store=store, local=local)
