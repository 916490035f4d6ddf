"""The async block transfer: a :class:`~dofpy.transfer.core.TransferCore` on a UDP socket.

:func:`open_transfer_node` binds one UDP socket and drives one transfer core
with :func:`~dofpy.trio.open_udp_endpoint` (one receive loop, one timer). The
node it yields is a provider (:meth:`TransferNode.publish`,
:meth:`TransferNode.serve`), a caching relay (:meth:`TransferNode.relay`) and
a requestor (``await node.fetch(manifest, providers)``) at once; its
:attr:`TransferNode.node` is an ordinary :class:`~dofpy.trio.DofNode` on the
same socket, for the OAP requests and secure sessions around a transfer.

Secure sessions come from ``config.oap.node.security``: the node then seals
every block (AES-256-CCM). Transfer messages are sent without expecting a
response, and the node does not hold such a message back for a session that is
still being set up, so :meth:`TransferNode.fetch` completes the handshake with
its first provider before it sends the first Fetch (rather than losing that
Fetch and waiting a retransmission timeout), and :meth:`TransferNode.relay`
starts the handshakes with its upstream providers at once.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import trio

from dofpy._core import Address
from dofpy.errors import ClosedResourceError, DofError
from dofpy.oap.core import OapStatistics
from dofpy.session.config import SecurityConfig
from dofpy.transfer.core import (
    TransferCompleted,
    TransferConfig,
    TransferCore,
    TransferEvent,
    TransferFailed,
    TransferStatistics,
)
from dofpy.transfer.manifest import Manifest, ObjectHashes
from dofpy.transfer.receiver import LocalLeaves, ReceiverConfig, ReceiverStatistics
from dofpy.transfer.store import BlockStore
from dofpy.trio._endpoint_config import EndpointConfig, EndpointStatistics
from dofpy.trio._node import DofNode
from dofpy.trio._open import oap_config_with_security, run_oap_node
from dofpy.trio._pcapfile import PcapWriter

__all__ = [
    "FetchProgress",
    "TransferNode",
    "TransferNodeStatistics",
    "open_transfer_node",
]

logger = logging.getLogger("dofpy.transfer")

FetchProgress = Callable[[ReceiverStatistics], None]
"""A progress callback: called with the transfer's statistics every
``progress_interval`` seconds while it runs, and once more at its end."""


@dataclass(frozen=True, slots=True)
class TransferNodeStatistics:
    """A transfer node's counters: its endpoint's, its OAP core's and its transfers'."""

    endpoint: EndpointStatistics
    oap: OapStatistics
    transfer: TransferStatistics


class TransferNode:
    """Provider, caching relay and requestor of block transfers on one UDP socket.

    Create it with :func:`open_transfer_node`; call its methods from the trio
    run that opened it.
    """

    def __init__(self, core: TransferCore, node: DofNode) -> None:
        self.core = core
        """The sans-IO transfer core (its store, cache and per-transfer state)."""
        self.node = node
        """The OAP node sharing the socket: ``get``/``invoke``/``secure_session``..."""
        self._finished: dict[int, TransferEvent] = {}
        self._cancelled: set[int] = set()
        self._waiters: dict[int, trio.Event] = {}
        # The endpoint drives the transfer core; after every input, the OAP
        # core's events go to the node and the transfer core's to our waiters.
        node._endpoint.on_input = self._dispatch

    # -- plumbing ----------------------------------------------------------------------

    @property
    def local_address(self) -> Address:
        """The bound ``(host, port)``."""
        return self.node.local_address

    def statistics(self) -> TransferNodeStatistics:
        """Counters: endpoint, OAP core (retransmissions of commands, sessions...)
        and transfers (retransmitted blocks, verification failures, cache hits...)."""
        node = self.node.statistics()
        return TransferNodeStatistics(
            endpoint=node.endpoint, oap=node.oap, transfer=self.core.statistics()
        )

    def _check_open(self) -> None:
        if self.node.closed:
            raise ClosedResourceError("the transfer node is closed")

    def _wakeup(self) -> None:
        self._check_open()
        self.node.wakeup()

    def _close(self) -> None:
        for done in self._waiters.values():
            done.set()

    def _dispatch(self) -> None:
        self.node.dispatch()
        while (event := self.core.next_event()) is not None:
            waiter = self._waiters.pop(event.transfer_id, None)
            if waiter is not None:
                self._finished[event.transfer_id] = event
                waiter.set()
            elif event.transfer_id in self._cancelled:
                self._cancelled.discard(event.transfer_id)
            elif isinstance(event, TransferFailed):
                # Nobody awaits it: a relay's upstream transfer (retried by
                # the core while requestors wait downstream).
                logger.warning(
                    "upstream transfer %d of %s failed: %s",
                    event.transfer_id,
                    event.object_id.hex()[:16],
                    event.error,
                )

    def _secured(self) -> bool:
        return self.core.oap.node.config.security is not None

    def _start_handshakes(self, peers: Sequence[Address]) -> None:
        node = self.core.oap.node
        now = trio.current_time()
        for peer in peers:
            if node.peer_identity(peer) is None:
                node.secure_session(peer, now)

    # -- provider and relay --------------------------------------------------------------

    def publish(self, data: bytes, leaf_size: int = 1024) -> Manifest:
        """Store ``data`` and serve it; returns its manifest (give it to requestors
        through a trusted channel: it is what they verify every block against)."""
        self._check_open()
        return self.core.publish(data, leaf_size)

    def serve(self, hashes: ObjectHashes) -> None:
        """Serve an object already in this node's store."""
        self._check_open()
        self.core.serve(hashes)

    def relay(self, manifest: Manifest, upstream: Sequence[Address]) -> None:
        """Offer ``manifest``'s object downstream, fetched from ``upstream`` on the
        first demand (once, however many requestors ask) and served as it arrives.
        A failed upstream transfer is started again with back-off, from the next
        upstream provider, while requestors wait downstream (logged)."""
        self._check_open()
        self.core.relay(manifest, list(upstream))
        if self._secured():
            self._start_handshakes(upstream)
            self._wakeup()

    # -- requestor ----------------------------------------------------------------------

    async def fetch(
        self,
        manifest: Manifest,
        providers: Sequence[Address],
        *,
        store: BlockStore | None = None,
        config: ReceiverConfig | None = None,
        progress: FetchProgress | None = None,
        progress_interval: float = 0.5,
        local: LocalLeaves | None = None,
    ) -> ReceiverStatistics:
        """Fetch ``manifest``'s object from ``providers`` (in order of preference)
        into ``store`` (default: the node's); returns the transfer's statistics.

        Leaves already verified in the store are not fetched again (resume), nor
        those ``local`` holds (copied, verified, instead: adaptive transfer). Raises
        the transfer's :class:`~dofpy.errors.DofError` when it fails (every provider
        silent, refusing, slower than ``config.min_rate`` or sending bad blocks;
        blocks from anyone but the provider asked are ignored), or the handshake's when the only
        provider cannot be reached securely. ``progress`` is called every
        ``progress_interval`` seconds and once at the end. Cancelling the fetch
        stops the transfer and tells the provider it may forget it.
        """
        if not providers:
            raise ValueError("fetch needs at least one provider")
        if progress_interval <= 0:
            raise ValueError("progress_interval must be > 0")
        self._check_open()
        if self._secured():
            self._start_handshakes(providers[1:])
            try:
                await self.node.secure_session(providers[0])
            except DofError:
                if len(providers) == 1:
                    raise
                # Another provider may do: the transfer moves on by itself.
        transfer_id = self.core.fetch(
            manifest, list(providers), trio.current_time(), store=store, config=config, local=local
        )
        done = trio.Event()
        self._waiters[transfer_id] = done
        self._dispatch()
        self._wakeup()
        try:
            while not done.is_set():
                with trio.move_on_after(progress_interval if progress else float("inf")):
                    await done.wait()
                if progress is not None and not done.is_set():
                    progress(self.core.transfer_statistics(transfer_id, trio.current_time()))
        finally:
            self._waiters.pop(transfer_id, None)
            if not done.is_set() and not self.node.closed:
                # The fetch was cancelled: stop the transfer and free the provider.
                self._cancelled.add(transfer_id)
                self.core.cancel(transfer_id, trio.current_time())
                self._wakeup()
        event = self._finished.pop(transfer_id, None)
        if event is None:
            raise ClosedResourceError("the transfer node was closed during the fetch")
        statistics = event.statistics
        if progress is not None:
            progress(statistics)
        if isinstance(event, TransferFailed):
            raise event.error
        assert isinstance(event, TransferCompleted)
        return statistics


@asynccontextmanager
async def open_transfer_node(
    local: Address = ("127.0.0.1", 0),
    config: TransferConfig | None = None,
    *,
    security: SecurityConfig | None = None,
    store: BlockStore | None = None,
    endpoint: EndpointConfig | None = None,
    sock: socket.socket | None = None,
    pcap_path: str | os.PathLike[str] | None = None,
    shared_pcap: PcapWriter | None = None,
    keylog_path: str | os.PathLike[str] | None = None,
    notification_buffer: int = 256,
    allow_plaintext: bool = False,
) -> AsyncIterator[TransferNode]:
    """Run a block-transfer node on a UDP socket bound at ``local`` for the block's lifetime.

    ``store`` holds what it publishes, relays and (by default) fetches (default:
    in memory). Security comes from ``security`` (put into
    ``config.oap.node``) or from ``config.oap.node.security``; without it only
    a loopback ``local`` is accepted unless ``allow_plaintext`` (logged).
    ``pcap_path`` captures every datagram (``shared_pcap``: into one capture
    of several nodes); ``keylog_path`` appends each secure session's key so
    that Wireshark decrypts the capture. ``endpoint`` says how the socket is
    used (:class:`~dofpy.trio.EndpointConfig`; its ``offload`` defaults to on
    here: block datagrams come in runs of equal size to one peer, which the
    kernel segments where it can); ``sock`` is an already bound UDP socket.
    """
    config = config or TransferConfig()
    if security is not None:
        config = replace(config, oap=oap_config_with_security(config.oap, security))
    core = TransferCore(config, store=store)
    async with run_oap_node(
        core.oap,
        local,
        driven=core,
        endpoint=endpoint,
        default_offload=True,
        sock=sock,
        pcap_path=pcap_path,
        shared_pcap=shared_pcap,
        keylog_path=keylog_path,
        notification_buffer=notification_buffer,
        allow_plaintext=allow_plaintext,
    ) as node:
        transfer_node = TransferNode(core, node)
        try:
            yield transfer_node
        finally:
            transfer_node._close()
