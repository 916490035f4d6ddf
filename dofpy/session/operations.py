"""DSP and the DPP common operations of a node, over its peer table: the
Open, Terminate, Ping and Heartbeat it sends (each with its own response and
failure handlers in the command table) and the answers it gives."""

from __future__ import annotations

from dofpy._core import Address
from dofpy.errors import BrokenResourceError, ClosedResourceError, DofError
from dofpy.session.commands import CommandTable, PendingCommand
from dofpy.session.config import NodeConfig
from dofpy.session.events import (
    EmitEvent,
    PeerClosed,
    RequestFailed,
    ResponseReceived,
    SessionOpened,
)
from dofpy.session.outbound import Outbound
from dofpy.session.peers import Peer, PeerInput, PeerTable
from dofpy.wire.common import (
    CommonPdu,
    Heartbeat,
    Ping,
    PingResponse,
    Query,
    QueryResponse,
    decode_common_untrusted,
    encode_common,
)
from dofpy.wire.dpp import AppId
from dofpy.wire.dsp import (
    DspConfigAck,
    DspConfigReject,
    DspConfigRequest,
    DspNop,
    DspOpen,
    DspOpenResponse,
    DspPdu,
    DspQuery,
    DspQueryResponse,
    DspTerminate,
    DspTerminateResponse,
    decode_dsp_untrusted,
    encode_dsp,
)
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet

__all__ = ["PeerOperations"]


class PeerOperations:
    """The DSP session and common operations of one node with its peers."""

    def __init__(
        self,
        config: NodeConfig,
        commands: CommandTable,
        outbound: Outbound,
        emit_event: EmitEvent,
    ) -> None:
        self.config = config
        self._commands = commands
        self._out = outbound
        self._emit_event = emit_event
        self.peers = PeerTable(config.max_peers, commands.busy_peers)

    def ping(self, peer: Address, now: float) -> int:
        """Send a DPP ping; completes as :class:`ResponseReceived` (app COMMON)."""
        return self._commands.start(
            peer,
            AppId.COMMON,
            encode_common(Ping()),
            now,
            on_response=self._on_ping_response,
            on_failure=self._on_request_failed,
        )

    def open_session(self, peer: Address, now: float) -> int:
        """Send a DSP Open; :class:`SessionOpened` follows on success."""
        self.peers.touch(peer, now).move(PeerInput.WE_OPEN)
        return self._commands.start(
            peer,
            AppId.DSP,
            encode_dsp(DspOpen()),
            now,
            on_response=self._on_open_response,
            on_failure=self._on_open_failed,
        )

    def terminate_session(self, peer: Address, now: float) -> None:
        """Send a DSP Terminate and fail every command pending with ``peer``."""
        known = self.peers.get(peer)
        self._commands.start(
            peer,
            AppId.DSP,
            encode_dsp(DspTerminate()),
            now,
            on_response=self._on_control_response,
            survives_close=True,
        )
        if known is not None:
            self.close_peer(known, by_peer=False, now=now)

    def send_heartbeat(self, peer: Address, now: float) -> None:
        """Send a DPP heartbeat (no response is expected)."""
        self._commands.start(
            peer, AppId.COMMON, encode_common(Heartbeat()), now, expect_response=False
        )

    def _on_request_failed(self, pending: PendingCommand, error: DofError, now: float) -> None:
        self._emit_event(RequestFailed(pending.request_id, pending.peer, error), droppable=False)

    def _on_open_failed(self, pending: PendingCommand, error: DofError, now: float) -> None:
        known = self.peers.get(pending.peer)
        if known is not None:
            known.move(PeerInput.OPEN_FAILED)
        self._on_request_failed(pending, error, now)

    def _on_ping_response(
        self,
        pending: PendingCommand,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        # Validated before it ends the ping: a malformed answer leaves it to
        # its retransmissions.
        decode_common_untrusted(payload, True)
        self.peers.touch(pending.peer, now)
        self._emit_event(
            ResponseReceived(pending.request_id, pending.peer, pending.app_id, payload),
            droppable=False,
        )
        return True

    def _on_open_response(
        self,
        pending: PendingCommand,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        pdu = decode_dsp_untrusted(payload, True)
        self._commands.finish(pending)
        peer = self.peers.touch(pending.peer, now)
        if isinstance(pdu, DspOpenResponse):
            peer.applications = pdu.app_ids
            peer.move(PeerInput.OPEN_ANSWERED)
            self._emit_event(
                SessionOpened(pending.request_id, peer.address, pdu.app_ids), droppable=False
            )
        else:
            self._on_open_failed(
                pending, BrokenResourceError(f"peer {peer.address} refused DSP Open: {pdu!r}"), now
            )
        return True

    def _on_control_response(
        self,
        pending: PendingCommand,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        self.peers.touch(pending.peer, now)  # Terminate responses need no action
        return True

    def close_peer(self, peer: Peer, *, by_peer: bool, now: float) -> None:
        peer.move(PeerInput.CLOSE)
        error: DofError = (
            BrokenResourceError(f"peer {peer.address} terminated the session")
            if by_peer
            else ClosedResourceError(f"session with {peer.address} terminated by us")
        )
        self._commands.fail_where(peer.address, lambda p: not p.survives_close, error, now)
        self._emit_event(PeerClosed(peer.address, by_peer), droppable=False)

    def receive_dsp(
        self,
        pdu: DspPdu,
        peer: Peer,
        op: int | None,
        now: float,
        size: int,
        identity: OID | None = None,
    ) -> None:
        match pdu:
            case DspOpen():
                peer.move(PeerInput.PEER_OPENS)
                reply = encode_dsp(DspOpenResponse(self._apps()))
                self._answer(peer, op, AppId.DSP, reply, now, size, identity)
            case DspQuery():
                reply = encode_dsp(DspQueryResponse(self._apps()))
                self._answer(peer, op, AppId.DSP, reply, now, size, identity)
            case DspConfigRequest(options=options):
                # dofpy negotiates nothing yet: any option is refused, none is
                # silently accepted.
                answer = DspConfigReject() if options else DspConfigAck()
                self._answer(peer, op, AppId.DSP, encode_dsp(answer), now, size, identity)
            case DspTerminate():
                self._answer(
                    peer, op, AppId.DSP, encode_dsp(DspTerminateResponse()), now, size, identity
                )
                self.close_peer(peer, by_peer=True, now=now)
            case DspNop():
                pass

    def receive_common(
        self,
        pdu: CommonPdu,
        peer: Peer,
        op: int | None,
        now: float,
        size: int,
        identity: OID | None = None,
    ) -> None:
        match pdu:
            case Ping():
                self._answer(
                    peer, op, AppId.COMMON, encode_common(PingResponse()), now, size, identity
                )
            case Query():
                reply = QueryResponse(self.config.node_id)
                self._answer(peer, op, AppId.COMMON, encode_common(reply), now, size, identity)
            case _:
                pass  # Heartbeat and source management need no answer here.

    def _answer(
        self,
        peer: Peer,
        op: int | None,
        app_id: int,
        payload: bytes,
        now: float,
        size: int,
        identity: OID | None,
    ) -> None:
        if op is not None:
            self._out.respond(peer.address, op, app_id, payload, now, limit=size, identity=identity)

    def _apps(self) -> tuple[int, ...]:
        return tuple(a for a in self.config.applications if a not in (AppId.DSP, AppId.COMMON))
