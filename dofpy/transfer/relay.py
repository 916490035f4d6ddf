"""A caching relay: a requestor upstream, a provider downstream.

``RelayCore`` is a :class:`~dofpy.transfer.core.TransferCore` that offers
objects it does not have yet: on the first downstream Fetch for a registered
object it starts *one* upstream transfer into its own store, and serves each
leaf downstream as soon as it is verified (what is asked before it arrives
waits in the downstream sender and goes out on arrival). However many
requestors ask at the same time, each block is fetched from upstream once
(plus what upstream loss forces). The relay need not be trusted: it verifies
what it gets, and every requestor verifies again against the manifest.
"""

from __future__ import annotations

from dofpy._core import Address
from dofpy.transfer.core import TransferCore
from dofpy.transfer.manifest import Manifest

__all__ = ["RelayCore"]


class RelayCore(TransferCore):
    """A :class:`TransferCore` that relays registered objects from upstream."""

    def add_object(self, manifest: Manifest, upstream: list[Address]) -> None:
        """Relay ``manifest``'s object, fetched from ``upstream`` on first demand."""
        self.relay(manifest, upstream)
