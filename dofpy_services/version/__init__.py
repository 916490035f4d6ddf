"""The Version service: the fleet's registry of who runs what.

Devices :meth:`~VersionClient.report` their class, version, image and boot
state over their secure session (the session's identity is the device);
authorised clients query the registry a page at a time, count it, read each
class's version histogram and a device's history, and subscribe to a class's
changes. See docs/protocol.md ("The Version service") and docs/operations.md.
"""

from dofpy_services.version.client import ReportNotStored, VersionClient
from dofpy_services.version.interface import (
    MAX_PAGE,
    VERSION_CHANGES,
    VERSION_OBJECT,
    VERSION_QUERY,
    VERSION_REPORT,
    BootState,
    DeviceChange,
    DeviceRecord,
    HistoryEntry,
    ImageKind,
    QueryFilter,
    VersionCount,
    VersionReport,
    changes_object,
)
from dofpy_services.version.service import VERSION, VersionConfig, provider_permissions
from dofpy_services.version.store import (
    AsyncVersionStore,
    SyncVersionStore,
    open_async_version_store,
    open_version_store,
)

__all__ = [
    "MAX_PAGE",
    "VERSION",
    "VERSION_CHANGES",
    "VERSION_OBJECT",
    "VERSION_QUERY",
    "VERSION_REPORT",
    "AsyncVersionStore",
    "BootState",
    "DeviceChange",
    "DeviceRecord",
    "HistoryEntry",
    "ImageKind",
    "QueryFilter",
    "ReportNotStored",
    "SyncVersionStore",
    "VersionClient",
    "VersionConfig",
    "VersionCount",
    "VersionReport",
    "changes_object",
    "open_async_version_store",
    "open_version_store",
    "provider_permissions",
]
