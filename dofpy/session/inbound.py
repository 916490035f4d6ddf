"""The receive path of a node: one datagram in, routed by shape.

A sealed one-way command (a block transfer's datagrams) is read and opened
without building packets; any other datagram is decoded, opened through the
channel table when secure, and checked against the plaintext policy. A
response goes to the command it answers (its own handler decides); a command
is answered from the duplicate cache when it is a retransmission, else goes to
the handshake (TEP), to DSP and the common operations, or up as
:class:`CommandReceived` (or to the one-way command handler).
"""

from __future__ import annotations

import logging

from dofpy._core import Address
from dofpy.errors import BadPacket
from dofpy.security.secure_frame import SecureChannel
from dofpy.session._dedup import PENDING, DuplicateCache
from dofpy.session.commands import CommandTable
from dofpy.session.config import NodeConfig
from dofpy.session.events import CommandHandler, CommandReceived, EmitEvent
from dofpy.session.operations import PeerOperations
from dofpy.session.outbound import PLAINTEXT_APPS, Outbound
from dofpy.session.secure_tables import SecureTables
from dofpy.wire.common import decode_common_untrusted
from dofpy.wire.dpp import (
    AppId,
    DppPacket,
    OpIdType,
    decode_frame_untrusted,
    probe_sealed_command,
    split_app_untrusted,
)
from dofpy.wire.dsp import DspTerminate, decode_dsp_untrusted
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet

logger = logging.getLogger("dofpy.session.inbound")

__all__ = ["Inbound"]

# Enum members the per-datagram path compares with, as module constants: on
# Python 3.11 reading a member off its Enum class goes through the metaclass's
# attribute hook, several times slower than reading a global.
_TEP, _DSP, _COMMON = AppId.TEP, AppId.DSP, AppId.COMMON


class Inbound:
    """Where each datagram a node receives goes."""

    def __init__(
        self,
        config: NodeConfig,
        counts: dict[str, int],
        commands: CommandTable,
        operations: PeerOperations,
        outbound: Outbound,
        security: SecureTables | None,
        duplicates: DuplicateCache[DppPacket],
        emit_event: EmitEvent,
    ) -> None:
        self.config = config
        self._counts = counts
        self._commands = commands
        self._operations = operations
        self._out = outbound
        self._security = security
        self._duplicates = duplicates
        self._emit_event = emit_event
        self.command_handler: CommandHandler | None = None

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._counts["datagrams_received"] += 1
        try:
            security = self._security
            if (
                security is not None
                and self.config.fast_paths
                and (sealed := probe_sealed_command(data)) is not None
            ):
                # The shape of every one-way command a secure session carries
                # (a block transfer's datagrams): read without building
                # packets, every header byte checked, then authenticated.
                # (Unpacked: faster than four named-field reads.)
                op_count, _delay, ssid, packet_number, start = sealed
                opened = security.channels.open_from(
                    addr, ssid, now, SecureChannel.open_sealed_untrusted, data, packet_number, start
                )
                if opened is None:
                    return
                session, plaintext = opened
                if plaintext and plaintext[0] < 0x80:
                    # The one-byte c2 of every application dofpy runs, split here
                    # without a call (split_app_untrusted reads the same).
                    app_id, payload = plaintext[0], plaintext[1:]
                else:
                    app_id, payload = split_app_untrusted(plaintext)
                self._receive_command(
                    app_id,
                    op_count,
                    None,
                    payload,
                    addr,
                    now,
                    len(data),
                    session.peer_identity,
                    session.permissions,
                    session.channel,
                )
                return
            dnp, packet = decode_frame_untrusted(data)
            identity: OID | None = None
            permissions: PermissionSet | None = None
            channel: SecureChannel | None = None
            if packet.security is not None:
                if security is None:
                    self._counts["unsupported_datagrams"] += 1
                    return
                # Opened from the packet decoded above: one parse per datagram.
                opened_packet = security.channels.open_from(
                    addr,
                    packet.security.ssid,
                    now,
                    SecureChannel.open_packet_untrusted,
                    dnp,
                    packet,
                )
                if opened_packet is None:
                    return
                session, packet = opened_packet
                identity, permissions = session.peer_identity, session.permissions
                channel = session.channel
            elif security is not None and packet.app_id not in PLAINTEXT_APPS:
                # In the clear only by explicit choice (PlaintextPolicy.ALLOW), and
                # never from a peer secured with us: anyone can send from its address.
                if not security.channels.plaintext_allowed(addr):
                    security.count("plaintext_refused")
                    return
                security.channels.used_plaintext(addr, sent=False, now=now)
            self._receive_packet(packet, addr, now, len(data), identity, permissions, channel)
        except BadPacket as exc:
            self._counts["bad_datagrams"] += 1
            logger.debug("dropped a bad datagram of %d bytes from %s: %s", len(data), addr, exc)

    def _receive_packet(
        self,
        packet: DppPacket,
        addr: Address,
        now: float,
        size: int,
        identity: OID | None,
        permissions: PermissionSet | None,
        channel: SecureChannel | None = None,
    ) -> None:
        if packet.security is not None or packet.app_id is None:
            # A secure packet inside a secure packet: nothing sends that.
            self._counts["unsupported_datagrams"] += 1
            return
        if packet.is_response:
            self._receive_response(packet, packet.app_id, addr, now, identity, permissions)
        else:
            self._receive_command(
                packet.app_id,
                packet.op_count if packet.op_id_type is OpIdType.IMPLIED_SENDER else None,
                packet.retry,
                packet.payload,
                addr,
                now,
                size,
                identity,
                permissions,
                channel,
            )

    def _receive_response(
        self,
        packet: DppPacket,
        app_id: int,
        addr: Address,
        now: float,
        identity: OID | None = None,
        permissions: PermissionSet | None = None,
    ) -> None:
        pending = (
            self._commands.get(packet.op_count)
            if packet.op_id_type is OpIdType.IMPLIED_RECEIVER
            else None
        )
        if pending is None or pending.peer != addr or pending.app_id != app_id:
            self._counts["unmatched_responses"] += 1
            if self._security is not None and app_id in (AppId.TEP, AppId.TRP, AppId.DSP):
                self._security.count("control_ignored")
            return
        if (
            identity is None
            and app_id != AppId.TEP
            and (security := self._security) is not None
            and security.config.require_security
            and security.channels.session(addr) is not None
        ):
            # A peer we share a secure session with seals every answer but
            # TEP's: a clear one (a TRP Reject to a sealed TRP request, a DSP
            # answer) is forged.
            security.count("control_ignored")
            return
        if pending.identity is not None and identity != pending.identity:
            # From the address asked, but not from the identity asked (another
            # session at that address, or in the clear): not the answer. The
            # command goes on waiting for one from the identity it is bound to.
            self._counts["responses_wrong_identity"] += 1
            return
        if pending.on_response is None:
            self._commands.finish(pending)
            self._operations.peers.touch(addr, now)
        elif not self._commands.answered(pending, packet.payload, identity, permissions, now):
            # A late or repeated copy of a handshake's answer (a late Accept
            # must not end the Confirm that reuses the Rekey's operation id).
            self._counts["unmatched_responses"] += 1

    def _receive_command(
        self,
        app_id: int,
        op: int | None,
        retry: int | None,
        payload: bytes,
        addr: Address,
        now: float,
        size: int,
        identity: OID | None,
        permissions: PermissionSet | None,
        channel: SecureChannel | None = None,
    ) -> None:
        """A command (``op``: its implied-sender operation count, if any),
        through the secure session ``channel`` (authenticated as ``identity``)
        or in the clear."""
        if app_id == _TEP and self._security is not None:
            if identity is not None:
                self._security.channels.on_sealed_tep_command(addr, payload, now)
                return
            # Handshakes keep their own per-operation state (a Confirm reuses
            # the Rekey's operation id); no state for unvalidated addresses.
            self._security.responder.on_tep_command(addr, op, payload, size, now)
            return
        if app_id not in self.config.applications:
            self._counts["unsupported_datagrams"] += 1
            return
        # Only commands that carry a retry byte may come again as retries; those
        # are the ones remembered, so one-way traffic (block transfer signals)
        # does not churn the duplicate cache.
        remember = op is not None and retry is not None
        # Remembered per authenticated identity (per address in the clear):
        # another identity at the same address with the same operation id is
        # a new command, checked and answered afresh, never given the answer
        # meant for the first.
        key = (addr, identity, op)
        if remember:
            seen = self._duplicates.lookup(key, now)
            if seen is not None:
                self._counts["duplicate_commands"] += 1
                if seen is not PENDING:
                    assert isinstance(seen, list)
                    for response in seen:
                        if channel is not None:
                            # Back through the session the copy came on: the
                            # requestor's, whichever is current at the address.
                            if channel.exhausted:
                                # Its key is used up: the requestor retries
                                # under the new one, answered from here then.
                                self._counts["duplicate_responses_held"] += 1
                                continue
                            self._out.send(channel.seal(response), addr)
                        else:
                            self._out.transmit(addr, response, now)
                        self._counts["duplicate_responses_resent"] += 1
                return
        peer = self._operations.peers.heard(addr, now)
        # DSP and common operations are decoded before they are remembered: a
        # malformed copy must not make a later good retry look like a duplicate.
        if app_id == _DSP:
            dsp = decode_dsp_untrusted(payload, False)
            if (
                isinstance(dsp, DspTerminate)
                and identity is None
                and self._security is not None
                and self._security.config.require_security
            ):
                # Anyone can send a clear Terminate under our peer's address:
                # with security required only a sealed one ends the session.
                self._security.count("control_ignored")
                return
            if remember:
                self._duplicates.begin(key, now)
            self._operations.receive_dsp(dsp, peer, op, now, size, identity)
        elif app_id == _COMMON:
            common = decode_common_untrusted(payload, False)
            if remember:
                self._duplicates.begin(key, now)
            self._operations.receive_common(common, peer, op, now, size, identity)
        else:
            handler = self.command_handler
            if (
                handler is not None
                and not remember
                and handler(addr, op, app_id, payload, identity, permissions, now)
            ):
                return
            event = CommandReceived(addr, op, app_id, payload, retry or 0, identity, permissions)
            if not self._emit_event(event, droppable=True):
                self._counts["commands_refused"] += 1
                return
            if remember:
                self._duplicates.begin(key, now)
