"""The sans-IO DPS node: peers, operation ids, retransmission, duplicates,
DSP session handling and the DPP common operations.

A :class:`Node` speaks DNP/DPP with any number of peers over one datagram
socket (driven by :mod:`dofpy.trio` or :mod:`dofpy.testing.netsim`). It knows
nothing of OAP: the layer above sends application commands and responses
through :meth:`Node.send_command` / :meth:`Node.send_response` and learns what
arrived from :meth:`Node.next_event`.

Operation ids link a command to its response: a command carries the implied
sender SID and a fresh operation count; the response carries the implied
receiver SID and the same count. A command is retransmitted (same count,
retry byte incremented) until a response arrives or its :class:`RetryPolicy`
gives up; the receiving node answers a retransmitted copy from its
:class:`DuplicateCache` instead of handing it up again, so a retried Set or
Invoke executes at most once.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from dofpy._core import Address
from dofpy.errors import (
    BadPacket,
    BrokenResourceError,
    ClosedResourceError,
    DofError,
    DofTimeoutError,
    LocalProtocolError,
)
from dofpy.session._dedup import PENDING, DuplicateCache
from dofpy.session._retry import RetryPolicy, RetryState
from dofpy.wire._codec import C4_MAX
from dofpy.wire.common import (
    Heartbeat,
    Ping,
    PingResponse,
    Query,
    QueryResponse,
    decode_common_untrusted,
    encode_common,
)
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, decode_frame_untrusted, encode_frame
from dofpy.wire.dsp import (
    DspConfigAck,
    DspConfigReject,
    DspConfigRequest,
    DspNop,
    DspOpen,
    DspOpenResponse,
    DspQuery,
    DspQueryResponse,
    DspTerminate,
    DspTerminateResponse,
    decode_dsp_untrusted,
    encode_dsp,
)
from dofpy.wire.oid import OID

__all__ = [
    "CommandReceived",
    "Node",
    "NodeConfig",
    "NodeEvent",
    "NodeStatistics",
    "PeerClosed",
    "PeerState",
    "RequestFailed",
    "ResponseReceived",
    "SessionOpened",
]


# -- configuration, statistics, events ----------------------------------------


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Limits and policies of a node. Every queue and table is bounded here."""

    node_id: OID = field(default_factory=lambda: OID(3, b"node@localhost"))
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    applications: tuple[int, ...] = (AppId.DSP, AppId.OAP, AppId.COMMON)
    max_pending_commands: int = 4096
    max_events: int = 16384
    max_peers: int = 4096
    duplicate_entries: int = 8192
    duplicate_lifetime: float = 60.0
    first_op_count: int = 1

    def __post_init__(self) -> None:
        for name in ("max_pending_commands", "max_events", "max_peers", "duplicate_entries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 <= self.first_op_count <= C4_MAX:
            raise ValueError("first_op_count must be a c4")


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """Counters of a node; every dropped datagram or event is counted once."""

    datagrams_received: int
    datagrams_sent: int
    bad_datagrams: int
    unsupported_datagrams: int
    unmatched_responses: int
    duplicate_commands: int
    duplicate_responses_resent: int
    duplicate_cache_evictions: int
    retransmissions: int
    requests_timed_out: int
    events_dropped: int
    commands_refused: int
    peers: int
    pending_commands: int


class PeerState(enum.Enum):
    """Where a peer's DSP session is."""

    IDLE = "idle"  # no DSP exchange yet; commands still flow (UDP needs no open)
    OPENING = "opening"  # we sent a DSP Open and wait for its response
    OPEN = "open"  # a DSP Open was answered, in either direction
    CLOSED = "closed"  # terminated; a new command from the peer starts over


# Allowed transitions of a peer's session state. Anything else is a bug.
# Opening again (from OPENING or OPEN) re-negotiates; a closed peer starts over
# when either side speaks again.
_PEER_TRANSITIONS: dict[PeerState, frozenset[PeerState]] = {
    PeerState.IDLE: frozenset({PeerState.OPENING, PeerState.OPEN, PeerState.CLOSED}),
    PeerState.OPENING: frozenset({PeerState.OPENING, PeerState.OPEN, PeerState.CLOSED}),
    PeerState.OPEN: frozenset({PeerState.OPENING, PeerState.OPEN, PeerState.CLOSED}),
    PeerState.CLOSED: frozenset({PeerState.IDLE, PeerState.OPENING}),
}


@dataclass(frozen=True, slots=True)
class CommandReceived:
    """A new application command arrived (duplicates never show up here).

    Answer it with :meth:`Node.send_response` (``op_count`` and ``peer``
    identify it); a command needing no answer may be left unanswered.
    """

    peer: Address
    op_count: int | None
    app_id: int
    payload: bytes
    retry: int


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The response to our command ``request_id`` arrived."""

    request_id: int
    peer: Address
    app_id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """Our command ``request_id`` failed: timed out, or the peer went away."""

    request_id: int
    peer: Address
    error: DofError


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """Our DSP Open ``request_id`` completed; ``applications`` the peer supports."""

    request_id: int
    peer: Address
    applications: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """``peer`` terminated its session (DSP Terminate), or we did."""

    peer: Address
    by_peer: bool


NodeEvent = CommandReceived | ResponseReceived | RequestFailed | SessionOpened | PeerClosed


# -- internal state ------------------------------------------------------------


class _Internal(enum.Enum):
    """Commands the node itself issued (not the layer above)."""

    PING = "ping"
    DSP_OPEN = "dsp-open"
    DSP_TERMINATE = "dsp-terminate"
    QUERY = "query"


@dataclass(slots=True)
class _Pending:
    request_id: int
    peer: Address
    app_id: int
    payload: bytes
    retry: RetryState | None  # None: sent once, no retransmission
    internal: _Internal | None = None


@dataclass(slots=True)
class _Peer:
    address: Address
    state: PeerState = PeerState.IDLE
    applications: tuple[int, ...] = ()
    last_heard: float = 0.0


# -- the node ------------------------------------------------------------------


class Node:
    """A sans-IO DPS node. Implements :class:`dofpy._core.DatagramCore`."""

    def __init__(self, config: NodeConfig | None = None) -> None:
        self.config = config or NodeConfig()
        self._next_op = self.config.first_op_count
        self._pending: dict[int, _Pending] = {}
        self._peers: dict[Address, _Peer] = {}
        self._outgoing: list[tuple[bytes, Address]] = []
        self._events: deque[NodeEvent] = deque()
        self._duplicates = DuplicateCache(
            self.config.duplicate_entries, self.config.duplicate_lifetime
        )
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "datagrams_received",
                "datagrams_sent",
                "bad_datagrams",
                "unsupported_datagrams",
                "unmatched_responses",
                "duplicate_commands",
                "duplicate_responses_resent",
                "retransmissions",
                "requests_timed_out",
                "events_dropped",
                "commands_refused",
            ),
            0,
        )

    # -- DatagramCore ------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._counts["datagrams_received"] += 1
        try:
            _dnp, packet = decode_frame_untrusted(data)
            self._receive_packet(packet, addr, now)
        except BadPacket:
            self._counts["bad_datagrams"] += 1

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outgoing = self._outgoing, []
        self._counts["datagrams_sent"] += len(out)
        return out

    def get_timer(self) -> float | None:
        timers = [p.retry.next_timer() for p in self._pending.values() if p.retry is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        for pending in list(self._pending.values()):
            state = pending.retry
            if state is None:
                continue
            if state.expired(now):
                del self._pending[pending.request_id]
                self._counts["requests_timed_out"] += 1
                self._fail(
                    pending,
                    DofTimeoutError(
                        f"no response from {pending.peer[0]}:{pending.peer[1]} to request "
                        f"{pending.request_id} after {state.attempts} attempts"
                    ),
                )
            elif state.due(now):
                state.record_send(now)
                self._counts["retransmissions"] += 1
                self._emit_command(pending, state.retry_byte)

    # -- events and statistics -----------------------------------------------------

    def next_event(self) -> NodeEvent | None:
        """The oldest event not yet taken, or ``None``."""
        return self._events.popleft() if self._events else None

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            **self._counts,
            duplicate_cache_evictions=self._duplicates.evicted,
            peers=len(self._peers),
            pending_commands=len(self._pending),
        )

    def peer_state(self, peer: Address) -> PeerState:
        known = self._peers.get(peer)
        return PeerState.IDLE if known is None else known.state

    # -- sending -------------------------------------------------------------------

    def send_command(
        self,
        peer: Address,
        app_id: int,
        payload: bytes,
        now: float,
        *,
        expect_response: bool = True,
        retry: RetryPolicy | None = None,
    ) -> int:
        """Send an application command; returns its request id (the op count).

        With ``expect_response`` the command is retransmitted under ``retry``
        (default: the node's policy) until :class:`ResponseReceived` or
        :class:`RequestFailed` ends it. Without, it is sent once and forgotten.
        """
        return self._start(peer, app_id, payload, now, expect_response, retry, None)

    def send_response(
        self, peer: Address, op_count: int | None, app_id: int, payload: bytes, now: float
    ) -> None:
        """Answer the command ``op_count`` from ``peer``; duplicates of the command
        will be answered with these same bytes."""
        if op_count is None:
            raise LocalProtocolError("a command without an operation id cannot be answered")
        datagram = encode_frame(
            DppPacket(
                app_id=app_id,
                payload=payload,
                is_response=True,
                op_id_type=OpIdType.IMPLIED_RECEIVER,
                op_count=op_count,
            )
        )
        self._duplicates.add_response((peer, op_count), datagram, now)
        self._outgoing.append((datagram, peer))

    def cancel(self, request_id: int) -> bool:
        """Stop retransmitting ``request_id``; True if it was still pending.

        A response that arrives later is counted as unmatched and dropped.
        """
        return self._pending.pop(request_id, None) is not None

    def ping(self, peer: Address, now: float) -> int:
        """Send a DPP ping; completes as :class:`ResponseReceived` (app COMMON)."""
        return self._start(
            peer, AppId.COMMON, encode_common(Ping()), now, True, None, _Internal.PING
        )

    def open_session(self, peer: Address, now: float) -> int:
        """Send a DSP Open; :class:`SessionOpened` follows on success."""
        self._transition(self._peer(peer, now), PeerState.OPENING)
        return self._start(
            peer, AppId.DSP, encode_dsp(DspOpen()), now, True, None, _Internal.DSP_OPEN
        )

    def terminate_session(self, peer: Address, now: float) -> None:
        """Send a DSP Terminate and fail every command pending with ``peer``."""
        known = self._peers.get(peer)
        self._start(
            peer, AppId.DSP, encode_dsp(DspTerminate()), now, True, None, _Internal.DSP_TERMINATE
        )
        if known is not None:
            self._close_peer(known, by_peer=False)

    def send_heartbeat(self, peer: Address, now: float) -> None:
        """Send a DPP heartbeat (no response is expected)."""
        self._start(peer, AppId.COMMON, encode_common(Heartbeat()), now, False, None, None)

    # -- internals: sending ----------------------------------------------------------

    def _allocate_op(self) -> int:
        for _ in range(len(self._pending) + 1):
            op = self._next_op
            self._next_op = 0 if op >= C4_MAX else op + 1
            if op not in self._pending:
                return op
        raise LocalProtocolError("no free operation count")  # pragma: no cover

    def _start(
        self,
        peer: Address,
        app_id: int,
        payload: bytes,
        now: float,
        expect_response: bool,
        retry: RetryPolicy | None,
        internal: _Internal | None,
    ) -> int:
        if expect_response and len(self._pending) >= self.config.max_pending_commands:
            raise LocalProtocolError(
                f"{len(self._pending)} commands pending: limit max_pending_commands reached"
            )
        op = self._allocate_op()
        state = RetryState.start(retry or self.config.retry, now) if expect_response else None
        pending = _Pending(op, peer, app_id, payload, state, internal)
        if expect_response:
            self._pending[op] = pending
        self._emit_command(pending, 0)
        return op

    def _emit_command(self, pending: _Pending, retry_byte: int) -> None:
        packet = DppPacket(
            app_id=pending.app_id,
            payload=pending.payload,
            op_id_type=OpIdType.IMPLIED_SENDER,
            op_count=pending.request_id,
            retry=retry_byte if pending.retry is not None else None,
        )
        self._outgoing.append((encode_frame(packet), pending.peer))

    def _emit_event(self, event: NodeEvent, *, droppable: bool) -> bool:
        if droppable and len(self._events) >= self.config.max_events:
            self._counts["events_dropped"] += 1
            return False
        self._events.append(event)
        return True

    def _fail(self, pending: _Pending, error: DofError) -> None:
        if pending.internal in (None, _Internal.PING):
            self._emit_event(
                RequestFailed(pending.request_id, pending.peer, error), droppable=False
            )
        elif pending.internal is _Internal.DSP_OPEN:
            known = self._peers.get(pending.peer)
            if known is not None and known.state is PeerState.OPENING:
                self._transition(known, PeerState.CLOSED)
            self._emit_event(
                RequestFailed(pending.request_id, pending.peer, error), droppable=False
            )

    # -- internals: peers ------------------------------------------------------------

    def _peer(self, address: Address, now: float) -> _Peer:
        known = self._peers.get(address)
        if known is None:
            if len(self._peers) >= self.config.max_peers:
                # Forget the peer heard from least recently that has nothing pending.
                busy = {p.peer for p in self._pending.values()}
                idle = [p for p in self._peers.values() if p.address not in busy]
                if idle:
                    del self._peers[min(idle, key=lambda p: p.last_heard).address]
            known = _Peer(address, last_heard=now)
            self._peers[address] = known
        known.last_heard = now
        return known

    def _transition(self, peer: _Peer, new: PeerState) -> None:
        if new not in _PEER_TRANSITIONS[peer.state]:
            raise LocalProtocolError(f"peer {peer.address}: {peer.state.value} -> {new.value}")
        peer.state = new

    def _close_peer(self, peer: _Peer, *, by_peer: bool) -> None:
        if peer.state is not PeerState.CLOSED:
            self._transition(peer, PeerState.CLOSED)
        error: DofError = (
            BrokenResourceError(f"peer {peer.address} terminated the session")
            if by_peer
            else ClosedResourceError(f"session with {peer.address} terminated by us")
        )
        for pending in [p for p in self._pending.values() if p.peer == peer.address]:
            if pending.internal is _Internal.DSP_TERMINATE:
                continue
            del self._pending[pending.request_id]
            self._fail(pending, error)
        self._emit_event(PeerClosed(peer.address, by_peer), droppable=False)

    # -- internals: receiving --------------------------------------------------------

    def _receive_packet(self, packet: DppPacket, addr: Address, now: float) -> None:
        if packet.security is not None or packet.app_id is None:
            # Secure packets need a security session (not negotiated here).
            self._counts["unsupported_datagrams"] += 1
            return
        if packet.is_response:
            self._receive_response(packet, packet.app_id, addr, now)
        else:
            self._receive_command(packet, packet.app_id, addr, now)

    def _receive_response(self, packet: DppPacket, app_id: int, addr: Address, now: float) -> None:
        pending = (
            self._pending.get(packet.op_count)
            if packet.op_id_type is OpIdType.IMPLIED_RECEIVER and packet.op_count is not None
            else None
        )
        if pending is None or pending.peer != addr or pending.app_id != app_id:
            self._counts["unmatched_responses"] += 1
            return
        # Validate an internal response before consuming the pending command:
        # a malformed answer must leave the command to its retransmissions.
        if pending.internal is _Internal.PING:
            decode_common_untrusted(packet.payload, True)
        dsp_reply = (
            decode_dsp_untrusted(packet.payload, True)
            if pending.internal is _Internal.DSP_OPEN
            else None
        )
        del self._pending[pending.request_id]
        peer = self._peer(addr, now)
        match pending.internal:
            case None:
                self._emit_event(
                    ResponseReceived(pending.request_id, addr, app_id, packet.payload),
                    droppable=False,
                )
            case _Internal.PING:
                self._emit_event(
                    ResponseReceived(pending.request_id, addr, app_id, packet.payload),
                    droppable=False,
                )
            case _Internal.DSP_OPEN:
                pdu = dsp_reply
                if isinstance(pdu, DspOpenResponse):
                    peer.applications = pdu.app_ids
                    if peer.state is not PeerState.CLOSED:
                        self._transition(peer, PeerState.OPEN)
                    self._emit_event(
                        SessionOpened(pending.request_id, addr, pdu.app_ids), droppable=False
                    )
                else:
                    self._fail(
                        pending,
                        BrokenResourceError(f"peer {addr} refused DSP Open: {pdu!r}"),
                    )
            case _:
                pass  # Terminate / Query responses need no action.

    def _receive_command(self, packet: DppPacket, app_id: int, addr: Address, now: float) -> None:
        if app_id not in self.config.applications:
            self._counts["unsupported_datagrams"] += 1
            return
        op = packet.op_count if packet.op_id_type is OpIdType.IMPLIED_SENDER else None
        if op is not None:
            seen = self._duplicates.lookup((addr, op), now)
            if seen is not None:
                self._counts["duplicate_commands"] += 1
                if seen is not PENDING:
                    assert isinstance(seen, list)
                    for datagram in seen:
                        self._outgoing.append((datagram, addr))
                        self._counts["duplicate_responses_resent"] += 1
                return
        peer = self._peer(addr, now)
        if peer.state is PeerState.CLOSED:
            self._transition(peer, PeerState.IDLE)
        if app_id == AppId.DSP:
            self._receive_dsp(packet, peer, op, now)
        elif app_id == AppId.COMMON:
            self._receive_common(packet, peer, op, now)
        else:
            event = CommandReceived(addr, op, app_id, packet.payload, packet.retry or 0)
            if not self._emit_event(event, droppable=True):
                self._counts["commands_refused"] += 1
                return
            if op is not None:
                self._duplicates.begin((addr, op), now)

    def _receive_dsp(self, packet: DppPacket, peer: _Peer, op: int | None, now: float) -> None:
        pdu = decode_dsp_untrusted(packet.payload, False)
        if op is not None:
            self._duplicates.begin((peer.address, op), now)
        match pdu:
            case DspOpen():
                if peer.state is not PeerState.OPEN:
                    self._transition(peer, PeerState.OPEN)
                self._answer(peer, op, AppId.DSP, encode_dsp(DspOpenResponse(self._apps())), now)
            case DspQuery():
                self._answer(peer, op, AppId.DSP, encode_dsp(DspQueryResponse(self._apps())), now)
            case DspConfigRequest(options=options):
                # dofpy negotiates nothing yet: any option is refused, none is
                # silently accepted.
                reply = DspConfigReject() if options else DspConfigAck()
                self._answer(peer, op, AppId.DSP, encode_dsp(reply), now)
            case DspTerminate():
                self._answer(peer, op, AppId.DSP, encode_dsp(DspTerminateResponse()), now)
                self._close_peer(peer, by_peer=True)
            case DspNop():
                pass

    def _receive_common(self, packet: DppPacket, peer: _Peer, op: int | None, now: float) -> None:
        pdu = decode_common_untrusted(packet.payload, False)
        if op is not None:
            self._duplicates.begin((peer.address, op), now)
        match pdu:
            case Ping():
                self._answer(peer, op, AppId.COMMON, encode_common(PingResponse()), now)
            case Query():
                reply = QueryResponse(self.config.node_id)
                self._answer(peer, op, AppId.COMMON, encode_common(reply), now)
            case _:
                pass  # Heartbeat and source management need no answer here.

    def _answer(self, peer: _Peer, op: int | None, app_id: int, payload: bytes, now: float) -> None:
        if op is not None:
            self.send_response(peer.address, op, app_id, payload, now)

    def _apps(self) -> tuple[int, ...]:
        return tuple(a for a in self.config.applications if a not in (AppId.DSP, AppId.COMMON))
