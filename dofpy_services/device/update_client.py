"""The agent's UpdatePort over OAP: UPDATE_DEVICE on the Update service's
node, in the device's secure session (the session's identity is the device).

``NotNow`` and ``Refused`` come back as the agent's
:class:`~dofpy_services.device.agent.NotNow` and
:class:`~dofpy_services.device.agent.Refused`; every other failure (a lost
session, a timeout, BUSY) is a ``DofError`` the agent's machine retries with
its back-off.
"""

from __future__ import annotations

from typing import Any

from dofpy._core import Address
from dofpy.oap.errors import ProviderException
from dofpy.trio import DofNode
from dofpy.wire.oid import OID
from dofpy_services.device.agent import NotNow, Refused
from dofpy_services.update.device_interface import (
    UPDATE_DEVICE,
    UPDATE_OBJECT,
    Assignment,
    Authorisation,
    Stage,
)
from dofpy_services.version.interface import ImageKind

__all__ = ["UpdateDeviceClient"]


class UpdateDeviceClient:
    """UPDATE_DEVICE at ``peer``; ``identity`` is the Update service's own
    (the secure session authenticates it)."""

    def __init__(
        self,
        node: DofNode,
        peer: Address,
        *,
        identity: OID | None = None,
        object_id: OID = UPDATE_OBJECT,
    ) -> None:
        self._node = node
        self._peer = peer
        self._identity = identity
        self._object = object_id

    async def _invoke(self, method: str, *args: Any) -> tuple[Any, ...]:
        try:
            return await self._node.invoke(
                self._peer, self._object, UPDATE_DEVICE, method, *args, identity=self._identity
            )
        except ProviderException as exc:
            if exc.definition.name == "NotNow":
                raise NotNow(float(exc.values[0])) from None
            if exc.definition.name == "Refused":
                raise Refused(str(exc.values[0])) from None
            raise

    async def poll(self) -> list[Assignment]:
        (assignments,) = await self._invoke("poll")
        return list(assignments)

    async def authorise(self, campaign: str, manifest_digest: bytes) -> Authorisation:
        (authorisation,) = await self._invoke("authorise", campaign, manifest_digest)
        assert isinstance(authorisation, Authorisation)
        return authorisation

    async def progress(self, campaign: str, stage: Stage, reason: str) -> None:
        await self._invoke("progress", campaign, stage.value, reason)

    async def accept_booted(self, campaign: str, kind: ImageKind, digest: bytes) -> bool:
        (accepted,) = await self._invoke("accept_booted", campaign, kind.value, digest)
        return bool(accepted)

    async def install_report(self, data: bytes, signature: bytes) -> None:
        await self._invoke("install_report", data, signature)
