"""The send path of a node: how a command, a response or a control answer
goes on the wire (sealed through the current secure session, in the clear when
the policy allows, or held back for a handshake), and the datagrams waiting
to leave. Sans-IO: it only appends to :attr:`Outbound.datagrams`."""

from __future__ import annotations

import enum

from dofpy._core import Address
from dofpy.errors import LocalProtocolError
from dofpy.session._dedup import DuplicateCache
from dofpy.session.commands import PendingCommand
from dofpy.session.secure_tables import SecureTables
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame
from dofpy.wire.oid import OID

__all__ = ["ALWAYS_PLAIN_APPS", "PLAINTEXT_APPS", "Outbound", "Unset"]

# Applications that may travel in the clear when security is required: session
# set-up (DSP), key exchange (TEP, TRP) and the common operations (ping).
PLAINTEXT_APPS = frozenset({AppId.DSP, AppId.TEP, AppId.TRP, AppId.COMMON})
# Applications never sealed by the generic path: TEP (a Rekey names its domain
# only in the clear; the one sealed TEP command, End Session, is sealed apart).
# TRP is sealed when a session with the Authenticator exists (seal_authenticator).
ALWAYS_PLAIN_APPS = frozenset({AppId.TEP})


class Unset(enum.Enum):
    CURRENT = "current"  # send_response: the identity of the current session


class Outbound:
    """What a node sends, and through which session."""

    def __init__(
        self, duplicates: DuplicateCache[DppPacket], counts: dict[str, int], *, fast_paths: bool
    ) -> None:
        self.datagrams: list[tuple[bytes, Address]] = []
        self.fast_paths = fast_paths
        # Set once the secure tables exist (they send through this object).
        self.security: SecureTables | None = None
        self._duplicates = duplicates
        self._counts = counts

    def take(self) -> list[tuple[bytes, Address]]:
        out, self.datagrams = self.datagrams, []
        return out

    def emit_command(self, pending: PendingCommand, retry_byte: int, now: float) -> bool:
        security = self.security
        if security is not None and pending.identity is not None:
            session = security.channels.session(pending.peer)
            if session is None or session.peer_identity != pending.identity:
                # Bound to an identity: never in the clear, never on a session
                # with anyone else. A handshake of our own decides (the
                # current session may be one the peer's address started).
                security.initiator.ensure_session(pending.peer, now)
                return False
        if security is not None and self.fast_paths and pending.app_id not in ALWAYS_PLAIN_APPS:
            session = security.channels.session(pending.peer)
            if session is not None:
                # What transmit does with the packet below, sealed straight
                # from its fields (SecureChannel.seal_command): no packet built.
                if not security.channels.ready_to_seal(pending.peer, session, now):
                    return False  # the key is used up: held for the new one
                sealed = session.channel.seal_command(
                    pending.app_id,
                    pending.payload,
                    pending.request_id,
                    retry_byte if pending.retry is not None else None,
                )
                self.datagrams.append((sealed, pending.peer))
                return True
        packet = DppPacket(
            app_id=pending.app_id,
            payload=pending.payload,
            op_id_type=OpIdType.IMPLIED_SENDER,
            op_count=pending.request_id,
            retry=retry_byte if pending.retry is not None else None,
        )
        # Held back until a secure session exists, when one is required; the
        # session's arrival re-emits every held command at once.
        return self.transmit(pending.peer, packet, now)

    def transmit(self, peer: Address, packet: DppPacket, now: float) -> bool:
        """Put ``packet`` on the wire to ``peer``: sealed when a secure session
        exists, in the clear when allowed. False when it was held back."""
        security = self.security
        if security is not None and packet.app_id not in ALWAYS_PLAIN_APPS:
            session = security.channels.session(peer)
            if session is not None:
                if not security.channels.ready_to_seal(peer, session, now):
                    return False  # the key is used up: held for the new one
                self.datagrams.append((session.channel.seal(packet), peer))
                return True
            if packet.app_id == AppId.TRP and security.config.seal_authenticator:
                security.initiator.ensure_session(peer, now)
                return False
            if packet.app_id not in PLAINTEXT_APPS:
                if not security.channels.plaintext_allowed(peer):
                    # Policy REFUSE, or a peer once secured: a handshake, never the clear.
                    security.initiator.ensure_session(peer, now)
                    return False
                security.channels.used_plaintext(peer, sent=True, now=now)
        self.datagrams.append((encode_frame(packet), peer))
        return True

    def respond(
        self,
        peer: Address,
        op_count: int | None,
        app_id: int,
        payload: bytes,
        now: float,
        limit: int | None,
        identity: OID | Unset | None = Unset.CURRENT,
    ) -> None:
        if op_count is None:
            raise LocalProtocolError("a command without an operation id cannot be answered")
        security = self.security
        current = None if security is None else security.channels.session(peer)
        if identity is Unset.CURRENT:
            identity = None if current is None else current.peer_identity
        packet = DppPacket(
            app_id=app_id,
            payload=payload,
            is_response=True,
            op_id_type=OpIdType.IMPLIED_RECEIVER,
            op_count=op_count,
        )
        if limit is not None and self.unvalidated(peer) and len(encode_frame(packet)) > limit:
            # Never answer an address we have not validated with more bytes
            # than it sent us (no amplification through spoofed sources).
            assert self.security is not None
            self.security.count("amplification_drops")
            return
        self._duplicates.add_response((peer, identity, op_count), packet, now)
        if identity is not None and (current is None or current.peer_identity != identity):
            # The command's identity no longer holds the session at this
            # address: its answer is kept for its retransmission (answered
            # through its own session), never sent to whoever holds it now.
            self._counts["responses_withheld"] += 1
            return
        self.transmit(peer, packet, now)

    def response_size(self, peer: Address, op_count: int, app_id: int, payload: bytes) -> int:
        """How long the datagram :meth:`send_response` would send ``peer`` now
        is, at most (sealed when a secure session with ``peer`` exists); compare
        it with ``config.max_datagram`` before answering."""
        clear = len(
            encode_frame(
                DppPacket(
                    app_id=app_id,
                    payload=payload,
                    is_response=True,
                    op_id_type=OpIdType.IMPLIED_RECEIVER,
                    op_count=op_count,
                )
            )
        )
        session = None if self.security is None else self.security.channels.session(peer)
        return clear if session is None else clear + session.channel.max_overhead

    def unvalidated(self, peer: Address) -> bool:
        security = self.security
        return (
            security is not None
            and security.config.require_security
            and security.channels.session(peer) is None
        )

    def send(self, datagram: bytes, peer: Address) -> None:
        self.datagrams.append((datagram, peer))

    def send_plain_response(
        self, peer: Address, op: int, app_id: int, payload: bytes, limit: int | None = None
    ) -> bool:
        datagram = encode_frame(
            DppPacket(
                app_id=app_id,
                payload=payload,
                is_response=True,
                op_id_type=OpIdType.IMPLIED_RECEIVER,
                op_count=op,
            )
        )
        if limit is not None and len(datagram) > limit:
            return False
        self.datagrams.append((datagram, peer))
        return True
