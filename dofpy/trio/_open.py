"""Opening nodes: :func:`open_node` and the node lifetime it shares with
:func:`~dofpy.trio.open_transfer_node` (:func:`run_oap_node`), the plaintext
bind check, and the ``security=`` convenience."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TextIO

import trio

from dofpy._core import Address, DatagramCore
from dofpy.errors import LocalProtocolError
from dofpy.oap.core import OapConfig, OapCore
from dofpy.security.keylog import open_keylog
from dofpy.session.config import SecurityConfig
from dofpy.trio._endpoint import open_udp_endpoint
from dofpy.trio._endpoint_config import EndpointConfig
from dofpy.trio._groups import lone_exceptions_unwrapped
from dofpy.trio._node import DofNode
from dofpy.trio._pcapfile import PcapWriter

__all__ = ["check_plaintext_bind", "oap_config_with_security", "open_node", "run_oap_node"]

logger = logging.getLogger("dofpy.node")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:  # a host name (or "" for every address): not known to be loopback
        return False


def check_plaintext_bind(local: Address, *, secure: bool, allow_plaintext: bool) -> None:
    """Refuse to serve ``local`` in the clear beyond this host unless asked to.

    Without a security configuration anyone on the network may talk to the
    node as anyone (and a block-transfer provider answers them: it only asks
    that they prove their address). That is fine on loopback (tests,
    examples); any other address needs ``allow_plaintext=True``, which is
    logged as a warning. Raises :class:`~dofpy.errors.LocalProtocolError`.
    """
    if secure or _is_loopback(local[0]):
        return
    if not allow_plaintext:
        raise LocalProtocolError(
            f"refusing to serve {local[0]}:{local[1]} without security: configure a "
            "SecurityConfig, bind a loopback address, or pass allow_plaintext=True"
        )
    logger.warning(
        "serving %s:%s WITHOUT SECURITY (allow_plaintext=True): any host that reaches it "
        "may use it under any identity",
        local[0],
        local[1],
    )


def oap_config_with_security(
    config: OapConfig | None, security: SecurityConfig | None
) -> OapConfig:
    """``config`` (or the default) with ``security`` in its node configuration."""
    config = config or OapConfig()
    if security is None:
        return config
    if config.node.security is not None:
        raise ValueError("give security= or config.node.security, not both")
    # A node_id left unset becomes the security identity (NodeConfig checks).
    return replace(config, node=replace(config.node, security=security))


@asynccontextmanager
async def open_node(
    local: Address = ("127.0.0.1", 0),
    config: OapConfig | None = None,
    *,
    security: SecurityConfig | None = None,
    endpoint: EndpointConfig | None = None,
    sock: socket.socket | None = None,
    pcap_path: str | os.PathLike[str] | None = None,
    shared_pcap: PcapWriter | None = None,
    keylog_path: str | os.PathLike[str] | None = None,
    notification_buffer: int = 256,
    allow_plaintext: bool = False,
) -> AsyncIterator[DofNode]:
    """Run an OAP node on a UDP socket bound at ``local`` for the block's lifetime.

    ``pcap_path`` captures every datagram to a pcap file (Wireshark reads it with
    ``-d udp.port==PORT,dof``); ``shared_pcap`` is one capture of several
    nodes (see :func:`~dofpy.trio.open_udp_endpoint`); ``keylog_path`` appends
    every secure session's key (see :mod:`dofpy.security.keylog`) so that
    Wireshark can decrypt it. Security comes from ``security`` (put into
    ``config.node``; the node's id is then its security identity) or from
    ``config.node.security``; without it only a loopback ``local`` is
    accepted unless ``allow_plaintext`` (logged: :func:`check_plaintext_bind`).
    ``endpoint`` says how the socket is used (:class:`~dofpy.trio.EndpointConfig`);
    ``sock`` is an already bound UDP socket to use instead of binding ``local``.
    """
    async with run_oap_node(
        OapCore(oap_config_with_security(config, security)),
        local,
        endpoint=endpoint,
        sock=sock,
        pcap_path=pcap_path,
        shared_pcap=shared_pcap,
        keylog_path=keylog_path,
        notification_buffer=notification_buffer,
        allow_plaintext=allow_plaintext,
    ) as node:
        yield node


@asynccontextmanager
async def run_oap_node(
    core: OapCore,
    local: Address,
    *,
    driven: DatagramCore | None = None,
    endpoint: EndpointConfig | None = None,
    default_offload: bool = False,
    sock: socket.socket | None = None,
    pcap_path: str | os.PathLike[str] | None = None,
    shared_pcap: PcapWriter | None = None,
    keylog_path: str | os.PathLike[str] | None = None,
    notification_buffer: int = 256,
    allow_plaintext: bool = False,
) -> AsyncIterator[DofNode]:
    """The lifetime of a :class:`DofNode` around ``core``: key log, nursery for
    provider tasks, UDP endpoint, and a clean close (waiters failed,
    subscriptions ended). The endpoint drives ``driven`` (by default ``core``
    itself; a protocol wrapping the OAP core, the block transfer, passes its
    own) and calls :meth:`DofNode.dispatch` after every input, until the
    caller sets another ``on_input`` hook. ``endpoint.offload`` left ``None``
    means ``default_offload``. A plaintext node binds a non-loopback address
    only with ``allow_plaintext`` (logged).
    """
    check_plaintext_bind(
        local, secure=core.node.config.security is not None, allow_plaintext=allow_plaintext
    )
    options = endpoint or EndpointConfig()
    keylog: TextIO | None = None
    if keylog_path is not None:
        keylog = open_keylog(keylog_path)
    try:
        with lone_exceptions_unwrapped():
            async with trio.open_nursery() as nursery:
                try:
                    async with open_udp_endpoint(
                        core if driven is None else driven,
                        local,
                        pcap_path=pcap_path,
                        shared_pcap=shared_pcap,
                        sock=sock,
                        recv_buffer=options.recv_buffer,
                        send_buffer=options.send_buffer,
                        max_datagram=options.max_datagram,
                        send_queue_limit=options.send_queue_limit,
                        recv_batch=options.recv_batch,
                        offload=default_offload if options.offload is None else options.offload,
                    ) as udp:
                        # No checkpoint since the endpoint started: no input
                        # reaches the core before the hook is set.
                        node = DofNode(core, udp, nursery, notification_buffer, keylog)
                        udp.on_input = node.dispatch
                        try:
                            yield node
                        finally:
                            node._shut()
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        if keylog is not None:
            keylog.close()
