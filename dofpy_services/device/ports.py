"""Ports of the device agent onto in-process services: the Update service's
device interface (:class:`~dofpy_services.update.device_provider.DeviceUpdates`,
the provider's own decisions) and the Version service's store
(:class:`~dofpy_services.version.store.SyncVersionStore`, the tables the
Version daemon writes) for one device identity, as the tests run the agent
beside real services without a network."""

from __future__ import annotations

import trio

from dofpy.errors import DofError
from dofpy.wire.oid import OID
from dofpy_services.device.agent import NotNow, Refused
from dofpy_services.update import device_provider
from dofpy_services.update.device_interface import Assignment, Authorisation, Stage
from dofpy_services.update.device_provider import DeviceUpdates
from dofpy_services.version.interface import ImageKind, VersionReport
from dofpy_services.version.store import SyncVersionStore

__all__ = ["InProcessUpdate", "InProcessVersion"]


class InProcessVersion:
    """The agent's VersionPort on the Version service's store in the same
    process: each report is written in its own transaction, as the Version
    daemon's ReportProvider writes it for the session's identity."""

    def __init__(self, store: SyncVersionStore, identity: OID) -> None:
        self.store = store
        self.identity = identity

    async def report(self, report: VersionReport) -> bool:
        pending = self.store.report(self.identity, report, trio.current_time())
        if pending.denied:
            raise DofError("the Version service denies this identity")
        return pending.changed


class InProcessUpdate:
    """The agent's UpdatePort on a :class:`DeviceUpdates` in the same process:
    ``identity`` stands for the secure session's authenticated identity."""

    def __init__(self, updates: DeviceUpdates, identity: OID) -> None:
        self.updates = updates
        self.identity = identity

    async def poll(self) -> list[Assignment]:
        return self.updates.poll(self.identity, trio.current_time())

    async def authorise(self, campaign: str, manifest_digest: bytes) -> Authorisation:
        try:
            return self.updates.authorise(
                self.identity, campaign, manifest_digest, trio.current_time()
            )
        except device_provider.NotNow as exc:
            raise NotNow(exc.retry_after) from None
        except device_provider.Refused as exc:
            raise Refused(exc.reason) from None

    async def progress(self, campaign: str, stage: Stage, reason: str) -> None:
        self.updates.record_progress(
            self.identity, campaign, stage.value, reason, trio.current_time()
        )

    async def accept_booted(self, campaign: str, kind: ImageKind, digest: bytes) -> bool:
        return self.updates.accept_booted(
            self.identity, campaign, kind.value, digest, trio.current_time()
        )

    async def install_report(self, data: bytes, signature: bytes) -> None:
        try:
            self.updates.install_report(self.identity, data, signature, trio.current_time())
        except device_provider.Refused as exc:
            raise Refused(exc.reason) from None
