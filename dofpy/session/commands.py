"""The command table: operation ids, retransmission and the held queue.

A command carries the implied sender SID and a fresh operation count; its
response carries the implied receiver SID and the same count. A pending
command is retransmitted (same count, retry byte incremented) until an answer
ends it or its :class:`RetryPolicy` gives up. Each pending command carries its
own handlers: ``on_response`` decides whether an answer ends it,
``on_failure`` hears why it ended without one. The table never decides how a
command goes on the wire: ``emit`` (given by the node) seals it, sends it in
the clear, or says it must wait (False).

Deadlines are kept in one heap of ``(when, request id)`` entries, so finding
the next timer and the commands due costs the log of what is pending, not a
scan; an entry whose command was answered, cancelled or rescheduled is
skipped when it comes up (lazy deletion).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from dofpy._core import Address
from dofpy.errors import DofError, LocalProtocolError
from dofpy.session._retry import RetryPolicy, RetryState
from dofpy.wire._codec import C4_MAX
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet

__all__ = ["CommandTable", "PendingCommand"]

# One-way commands waiting for a secure session, per peer (oldest dropped).
MAX_HELD_PER_PEER = 256

ResponseHandler = Callable[["PendingCommand", bytes, OID | None, PermissionSet | None, float], bool]
"""``on_response(pending, payload, identity, permissions, now)``: True when the
answer ends ``pending`` (the table then forgets it, unless the handler already
put another command in its slot). Called while ``pending`` is still in the
table, so a handler that raises ``BadPacket`` leaves it to its retransmissions."""
FailureHandler = Callable[["PendingCommand", DofError, float], None]


def _ignore_failure(pending: PendingCommand, error: DofError, now: float) -> None:
    pass


@dataclass(slots=True, eq=False)
class PendingCommand:
    request_id: int
    peer: Address
    app_id: int
    payload: bytes
    retry: RetryState | None  # None: sent once, no retransmission
    on_response: ResponseHandler | None = None
    on_failure: FailureHandler = _ignore_failure
    # Sent only through, and answered only from, a secure session with this identity.
    identity: OID | None = None
    # A TEP command of a handshake of ours: the handshake re-sends and ends it,
    # so a new session neither re-emits it nor does a failed one fail it.
    handshake: bool = False
    # Left pending when the peer's DSP session closes (the Terminate itself).
    survives_close: bool = False
    # Its place in the table (a command taking over an id keeps the first's).
    order: int = 0

    @property
    def retry_byte(self) -> int | None:
        return None if self.retry is None else self.retry.retry_byte


class CommandTable:
    """The commands a node waits on, and the one-way ones it holds."""

    def __init__(
        self,
        *,
        limit: int,
        retry: RetryPolicy,
        first_op: int,
        rng: Callable[[int], bytes] | None,
        emit: Callable[[PendingCommand, int, float], bool],
        describe_timeout: Callable[[PendingCommand, int, float], DofError],
        on_timeout: Callable[[PendingCommand, float], None],
    ) -> None:
        """``describe_timeout(pending, attempts, now)`` says why a request
        timed out (it only describes); ``on_timeout(pending, now)`` is then
        told of the timeout, to act on it (the node retires a silent secure
        session), before the request's own ``on_failure``."""
        self._limit = limit
        self._retry = retry
        self._next_op = first_op
        self._rng = rng
        self._emit = emit
        self._describe_timeout = describe_timeout
        self._on_timeout = on_timeout
        self._pending: dict[int, PendingCommand] = {}
        self._held: dict[Address, deque[PendingCommand]] = {}
        self._deadlines: list[tuple[float, int, int]] = []  # (when, request id, id(pending))
        self._started = 0
        self.counts = dict.fromkeys(("retransmissions", "requests_timed_out", "held_dropped"), 0)

    # -- queries -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._pending)

    def get(self, request_id: int | None) -> PendingCommand | None:
        return None if request_id is None else self._pending.get(request_id)

    def with_peer(self, peer: Address) -> list[PendingCommand]:
        return [p for p in self._pending.values() if p.peer == peer]

    def busy_peers(self) -> set[Address]:
        return {p.peer for p in self._pending.values()}

    def attempts(self, request_id: int) -> int:
        """Copies of pending command ``request_id`` sent so far (0: not pending)."""
        pending = self._pending.get(request_id)
        return 0 if pending is None or pending.retry is None else pending.retry.attempts

    def bound_identities(self, peer: Address) -> set[OID]:
        """The identities the commands waiting for ``peer`` are bound to."""
        bound = {p.identity for p in self._pending.values() if p.peer == peer}
        bound.update(p.identity for p in self._held.get(peer, ()))
        return {identity for identity in bound if identity is not None}

    # -- starting and ending ----------------------------------------------------------

    def allocate_op(self, *, unpredictable: bool = False) -> int:
        if unpredictable and self._rng is not None:
            for _ in range(8):
                op = int.from_bytes(self._rng(4), "big") & C4_MAX
                if op not in self._pending:
                    return op
        for _ in range(len(self._pending) + 1):
            op = self._next_op
            self._next_op = 0 if op >= C4_MAX else op + 1
            if op not in self._pending:
                return op
        raise LocalProtocolError("no free operation count")  # pragma: no cover

    def start(
        self,
        peer: Address,
        app_id: int,
        payload: bytes,
        now: float,
        *,
        expect_response: bool = True,
        retry: RetryPolicy | None = None,
        on_response: ResponseHandler | None = None,
        on_failure: FailureHandler = _ignore_failure,
        identity: OID | None = None,
        op: int | None = None,
        unpredictable: bool = False,
        handshake: bool = False,
        survives_close: bool = False,
    ) -> int:
        """Send a command (``emit`` it now); with ``expect_response`` it waits
        for an answer under ``retry``, else a copy ``emit`` could not send is
        held (bounded) for :meth:`flush`. Returns its request id."""
        if expect_response and len(self._pending) >= self._limit:
            raise LocalProtocolError(
                f"{len(self._pending)} commands pending: limit max_pending_commands reached"
            )
        if op is None:
            op = self.allocate_op(unpredictable=unpredictable)
        state = RetryState.start(retry or self._retry, now) if expect_response else None
        pending = PendingCommand(
            op,
            peer,
            app_id,
            payload,
            state,
            on_response,
            on_failure,
            identity,
            handshake,
            survives_close,
        )
        if expect_response:
            replaced = self._pending.get(op)
            if replaced is None:
                self._started += 1
                pending.order = self._started
            else:
                pending.order = replaced.order
            self._pending[op] = pending
            self._schedule(pending)
        if not self._emit(pending, 0, now) and not expect_response:
            # A one-way command has no retransmission to carry it once the
            # secure session exists: hold it (bounded) until then.
            self._hold(pending)
        return op

    def answered(
        self,
        pending: PendingCommand,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        """Give ``pending`` its answer; True when that ended it."""
        assert pending.on_response is not None
        if not pending.on_response(pending, payload, identity, permissions, now):
            return False
        self.finish(pending)
        return True

    def finish(self, pending: PendingCommand) -> None:
        """Forget ``pending`` (its slot may already hold another command)."""
        if self._pending.get(pending.request_id) is pending:
            del self._pending[pending.request_id]

    def fail(self, pending: PendingCommand, error: DofError, now: float) -> None:
        self.finish(pending)
        pending.on_failure(pending, error, now)

    def cancel(self, request_id: int) -> bool:
        return self._pending.pop(request_id, None) is not None

    def fail_where(
        self, peer: Address, which: Callable[[PendingCommand], bool], error: DofError, now: float
    ) -> None:
        """Fail every command pending with ``peer`` that ``which`` picks."""
        for pending in [p for p in self._pending.values() if p.peer == peer and which(p)]:
            self.fail(pending, error, now)

    # -- held one-way commands -----------------------------------------------------------

    def _hold(self, pending: PendingCommand) -> None:
        held = self._held.setdefault(pending.peer, deque())
        if len(held) >= MAX_HELD_PER_PEER:
            held.popleft()
            self.counts["held_dropped"] += 1
        held.append(pending)

    def drop_held(self, peer: Address, which: Callable[[PendingCommand], bool]) -> None:
        held = self._held.get(peer)
        if held:
            kept = deque(p for p in held if not which(p))
            self.counts["held_dropped"] += len(held) - len(kept)
            self._held[peer] = kept

    def flush(self, peer: Address, now: float) -> None:
        """A secure session with ``peer`` exists: send what waited for one."""
        for pending in self.with_peer(peer):
            if not pending.handshake:
                retry_byte = 0 if pending.retry is None else pending.retry.retry_byte
                self._emit(pending, retry_byte, now)
        for pending in self._held.pop(peer, ()):
            if not self._emit(pending, 0, now):
                # Bound to another identity than this session's: it waits for
                # the handshake that emit started (bounded as before).
                self._held.setdefault(peer, deque()).append(pending)

    # -- timers ----------------------------------------------------------------------------

    def _schedule(self, pending: PendingCommand) -> None:
        assert pending.retry is not None
        heapq.heappush(
            self._deadlines, (pending.retry.next_timer(), pending.request_id, id(pending))
        )

    def _head(self) -> tuple[float, PendingCommand] | None:
        """The earliest deadline of a command still waiting on it; stale
        entries (answered, cancelled, rescheduled) are dropped on the way."""
        heap = self._deadlines
        while heap:
            when, request_id, ident = heap[0]
            pending = self._pending.get(request_id)
            if (
                pending is not None
                and id(pending) == ident
                and pending.retry is not None
                and pending.retry.next_timer() == when
            ):
                return when, pending
            heapq.heappop(heap)
        return None

    def get_timer(self) -> float | None:
        if not self._deadlines:
            return None  # one-way commands (a transfer's) never wait on a timer
        head = self._head()
        return None if head is None else head[0]

    def handle_timer(self, now: float) -> None:
        due: list[PendingCommand] = []
        while (head := self._head()) is not None and head[0] <= now:
            heapq.heappop(self._deadlines)
            due.append(head[1])
        # In the order the commands were started, as a scan of the table
        # would meet them: retransmissions leave in a reproducible order.
        due.sort(key=lambda p: p.order)
        for pending in due:
            state = pending.retry
            if self._pending.get(pending.request_id) is not pending or state is None:
                continue
            if state.expired(now):
                del self._pending[pending.request_id]
                self.counts["requests_timed_out"] += 1
                error = self._describe_timeout(pending, state.attempts, now)
                self._on_timeout(pending, now)
                pending.on_failure(pending, error, now)
            elif state.due(now):
                state.record_send(now)
                self.counts["retransmissions"] += 1
                self._schedule(pending)
                self._emit(pending, state.retry_byte, now)
            else:  # pragma: no cover - a deadline passed means expired or due
                self._schedule(pending)
