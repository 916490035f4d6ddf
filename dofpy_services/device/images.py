"""The agent's ImagePort on the Image service: the assigned manifest fetched
by its digest from the first ImageProvider (or relay) that has it, checked by
the device's own verifier (``verify``: the manifest helper's
:func:`~dofpy.image.verify.verify_manifest` with the device's trust root and
installed state, which refuses a wrong class, a rollback, an expired or
under-signed manifest), and its image fetched by the block transfer straight
into the slot store (every leaf verified before it is written)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from dofpy._core import Address
from dofpy.errors import BadPacket, DofError
from dofpy.image.errors import ManifestRefused as ManifestCheckFailed
from dofpy.trio import TransferNode
from dofpy_services.device.agent import ImageToInstall, ManifestRefused
from dofpy_services.device.boot_records import SlotImage
from dofpy_services.device.slot_store import SlotBlockStore
from dofpy_services.image.serving import IMAGE_INTERFACE, IMAGE_OBJECT, VerifyManifest
from dofpy_services.update.device_interface import Assignment

__all__ = ["ServiceImages"]


class ServiceImages:
    """Manifests and images from ``providers`` (Image providers or relays)."""

    def __init__(
        self, node: TransferNode, providers: Sequence[Address], verify: VerifyManifest
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
            if isinstance(data, bytes) and hmac.compare_digest(
                hashlib.sha256(data).digest(), digest
            ):
                return data
            last = BadPacket("a provider answered with another manifest")
        assert last is not None
        raise last

    async def verify(self, assignment: Assignment) -> ImageToInstall:
        data = await self._manifest(assignment.manifest_digest)
        try:
            summary = self._verify(data)
        except (ManifestCheckFailed, BadPacket) as exc:
            raise ManifestRefused(f"{type(exc).__name__}: {exc}") from None
        if summary.encrypted:
            # Decrypting into a slot (with the authorisation's wrapped key)
            # is not built yet: refused before anything changes.
            raise ManifestRefused("confidential images are not installed into slots yet")
        image = summary.image
        return ImageToInstall(
            image, SlotImage(image.size, image.object_id, summary.sequence, summary.version)
        )

    async def transfer(self, image: ImageToInstall, store: SlotBlockStore) -> None:
        await self.node.fetch(image.transfer, self.providers, store=store)
