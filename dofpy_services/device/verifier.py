"""The device's own manifest check, as the agent's ImagePort calls it before
anything on the device changes: :func:`dofpy.image.verify.verify_manifest`
with the device's trust root, its vendor and class, what it runs (from the
bootloader) and the time, turned into the summary the fetch needs.

It refuses (the :class:`~dofpy.image.errors.ManifestRefused` subclasses): a
manifest of another vendor or class (``WrongVendor``, ``WrongClass``), one
that is not newer than the installed image (``Rollback``: older or equal
sequence), one that expired (``Expired``, its own or the trust root's), one
signed by fewer keys than the device's class needs (``BelowThreshold``,
``UnknownKey``, ``Tampered``...), and a delta over another image.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from dofpy.image.trust import TrustRoot
from dofpy.image.verify import DeviceState, verify_manifest
from dofpy_services.device.agent import Installed
from dofpy_services.image.manifests import summary_of_verified
from dofpy_services.image.store import ManifestSummary

__all__ = ["DeviceVerifier"]


class DeviceVerifier:
    """``verify(manifest_bytes, installed) -> ManifestSummary`` for a device
    of ``vendor_id``/``device_class`` trusting ``trust_root`` that has
    ``installed`` (the agent's :class:`~dofpy_services.device.agent.Installed`:
    what it ran when the update began); ``clock()`` is the device's time
    (POSIX seconds)."""

    def __init__(
        self,
        trust_root: TrustRoot,
        vendor_id: uuid.UUID,
        device_class: uuid.UUID,
        clock: Callable[[], float],
    ) -> None:
        self.trust_root = trust_root
        self.vendor_id = vendor_id
        self.device_class = device_class
        self.clock = clock

    def __call__(self, data: bytes, installed: Installed) -> ManifestSummary:
        device = DeviceState(
            self.vendor_id, self.device_class, installed.sequence, installed.digest
        )
        verified = verify_manifest(data, self.trust_root, device, self.clock())
        return summary_of_verified(data, verified)
