"""The agent's UpdatePort over OAP: UPDATE_DEVICE on the Update service's
node, in the device's secure session (the session's identity is the device).

``NotNow`` and ``Refused`` come back as the agent's
:class:`~dofpy_services.device.agent.NotNow` and
:class:`~dofpy_services.device.agent.Refused`; every other failure (a lost
session, a timeout, BUSY) is a ``DofError`` the agent's machine retries with
its back-off.

:meth:`UpdateDeviceClient.wait_for_assignment` is how the agent waits while
idle: subscribed to its notice object (``watch``), it wakes the moment the
Update service pushes it an assignment, and otherwise at its poll time, as
it would without a subscription (none permitted, the service pushes
nothing, the subscription ended or the push was lost).
"""

from __future__ import annotations

from typing import Any

import trio

from dofpy._core import Address
from dofpy.errors import DofError
from dofpy.oap.errors import ProviderException
from dofpy.trio import DofNode
from dofpy.wire.oid import OID, decode_oid_untrusted
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
        self.pushes_received = 0
        """Pushed assignments that woke a wait."""
        self.push_failures = 0
        """Waits that could not subscribe (or whose subscription ended) and
        fell back to their poll time."""

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

    async def wait_for_assignment(self, deadline: float) -> list[Assignment]:
        """Wait until trio time ``deadline`` or until the Update service
        pushes this device an assignment, whichever is first: the pushed
        assignments, or ``[]`` at the deadline. Never raises for the
        service's sake: with no subscription to be had, it just waits."""
        with trio.move_on_at(deadline):
            try:
                pushed = await self._pushed()
            except (DofError, NotNow, Refused):
                pushed = None
            if pushed:
                self.pushes_received += 1
                return pushed
            self.push_failures += 1
            await trio.sleep_until(deadline)
        return []

    async def _pushed(self) -> list[Assignment] | None:
        """Subscribe to this device's notice object and answer the first
        non-empty push; None when the subscription ends first."""
        (encoded,) = await self._invoke("watch")
        notices = decode_oid_untrusted(encoded)
        async with self._node.subscribe(
            self._peer, notices, UPDATE_DEVICE, "assignment", identity=self._identity
        ) as subscription:
            async for notification in subscription:
                assignments = [a for a in notification.values[0] if isinstance(a, Assignment)]
                if assignments:
                    return assignments
        return None
