"""The provider side of an OAP core: the objects we provide, the requests to
them, their subscribers and registrants, and the Change and Signal commands
sent to those.

Every command that reaches it has passed the gate (permissions,
interception); here it is checked against the provided interface (object,
item, kind of item, value types) before the application sees it as an
:class:`~dofpy.oap.events.IncomingRequest`.

Subscribers are leases: kept for ``subscription_lease`` seconds after their
last Subscribe or Register, their expiry deadlines in one heap. An object
may be provided for some subscribers only (``provide(..., subscribers=)``,
by authenticated identity); the gate asks :meth:`ProviderSide.admits_subscriber`
before a Subscribe or Register goes anywhere (provider path or interceptor).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from dofpy._core import Address
from dofpy.errors import BadPacket, LocalProtocolError
from dofpy.oap.context import NO_SUCH_OBJECT, OapContext
from dofpy.oap.deadlines import DeadlineHeap
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.oap.events import IncomingRequest, RequestKind
from dofpy.oap.interface import (
    EventDef,
    Interface,
    Item,
    Method,
    Property,
    incoming_values_untrusted,
    outgoing_values,
)
from dofpy.session.node import CommandReceived
from dofpy.wire.dpp import AppId
from dofpy.wire.oap import (
    Alias,
    Binding,
    ChangeCommand,
    ExceptionResponse,
    GetCommand,
    GetResponse,
    InvokeCommand,
    InvokeResponse,
    OapPdu,
    ProvideCommand,
    RegisterCommand,
    RegisterResponse,
    SetCommand,
    SetResponse,
    SignalCommand,
    SubscribeCommand,
    SubscribeResponse,
    encode_oap,
)
from dofpy.wire.oid import IID, OID

__all__ = ["ProviderSide", "object_key"]


def object_key(oid: OID) -> OID:
    """The object an OID names, for looking it up (attributes do not count)."""
    return oid.without_attributes()


@dataclass(slots=True)
class _Incoming:
    peer: Address
    op_count: int | None
    kind: RequestKind
    item: Item
    identity: OID | None = None  # who asked: the answer goes to it only
    size: int = 0  # its payload's bytes, its share of max_incoming_bytes

    @property
    def requestor(self) -> OID | Address:
        """Whose share of ``max_incoming_per_peer`` it is: the authenticated
        identity, or the address of a command in the clear."""
        return self.peer if self.identity is None else self.identity


_SubscriberKey = tuple[Address, OID, IID, int, RequestKind]
_ItemKey = tuple[OID, IID, int, RequestKind]  # what is subscribed to, by whom not


class _CheckedCommand(NamedTuple):
    """A request checked against its item: its kind, its values for the
    application, and why it is refused (``None`` when it is not)."""

    kind: RequestKind
    values: tuple[Any, ...]
    refusal: tuple[OapErrorCode, str] | None


_RequestCommand = GetCommand | SetCommand | InvokeCommand | SubscribeCommand | RegisterCommand


class ProviderSide:
    """The provider half of :class:`~dofpy.oap.core.OapCore`."""

    def __init__(self, context: OapContext) -> None:
        self._context = context
        self._providers: dict[tuple[OID, IID], Interface] = {}
        # The identities admitted as subscribers, for the bindings provided
        # for some subscribers only (the others admit every permitted one).
        self._admitted: dict[tuple[OID, IID], frozenset[OID]] = {}
        self._aliases: dict[int, Binding] = {}
        self._incoming: dict[int, _Incoming] = {}
        # Requests in progress by requestor (identity, or address in the
        # clear), and their payloads' bytes: max_incoming_per_peer, _bytes.
        self._incoming_by: dict[OID | Address, int] = {}
        self._incoming_bytes = 0
        self._next_handle = 1
        # Subscribers and registrants, by their lease's end; and the peers
        # subscribed to each item, so that a notification visits only those.
        self._subscribers: DeadlineHeap[_SubscriberKey] = DeadlineHeap()
        self._subscribed: dict[_ItemKey, dict[Address, None]] = {}
        self._sequences: dict[_ItemKey, int] = {}

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def next_deadline(self) -> float | None:
        return self._subscribers.next_deadline()

    def expire(self, now: float) -> None:
        """Forget the subscribers whose lease ended at or before ``now``."""
        for key in self._subscribers.pop_due(now):
            self._forget_subscriber(key)

    def _forget_subscriber(self, key: _SubscriberKey) -> None:
        self._subscribers.cancel(key)
        peer, item_key = key[0], key[1:]
        peers = self._subscribed[item_key]
        del peers[peer]
        if not peers:
            del self._subscribed[item_key]

    # -- the application's calls --------------------------------------------------------

    def provide(
        self, object_id: OID, interface: Interface, subscribers: Iterable[OID] | None = None
    ) -> None:
        binding = (object_key(object_id), interface.iid)
        admitted = None if subscribers is None else frozenset(subscribers)
        if binding in self._providers and self._admitted.get(binding) != admitted:
            # Provided again for other subscribers: those admitted before
            # may not be now (they are kept by address, not identity), so
            # every one subscribes again and is admitted afresh.
            self._forget_subscribers(*binding)
        self._providers[binding] = interface
        if admitted is None:
            self._admitted.pop(binding, None)
        else:
            self._admitted[binding] = admitted

    def withdraw(self, object_id: OID, interface: Interface) -> None:
        binding = (object_key(object_id), interface.iid)
        self._providers.pop(binding, None)
        self._admitted.pop(binding, None)
        self._forget_subscribers(*binding)

    def _forget_subscribers(self, oid: OID, iid: IID) -> None:
        for key in [k for k in self._subscribers if k[1] == oid and k[2] == iid]:
            self._forget_subscriber(key)

    def admits_subscriber(self, binding: Binding, identity: OID | None) -> bool:
        """Whether a Subscribe or Register to ``binding`` from ``identity``
        (the session's authenticated identity; ``None`` in the clear) may be
        taken: always, unless the binding is provided for some subscribers
        only and ``identity`` is none of them."""
        if not self._admitted:
            return True
        admitted = self._admitted.get((object_key(binding.object_id), binding.interface))
        return admitted is None or (identity is not None and identity in admitted)

    def announce(self, peer: Address, object_id: OID, interface: Interface, now: float) -> int:
        oid = object_key(object_id)
        if (oid, interface.iid) not in self._providers:
            raise LocalProtocolError(f"{oid} does not provide {interface.name} here")
        binding = Binding(interface.iid, oid)
        alias = next((a for a, b in self._aliases.items() if b == binding), len(self._aliases))
        if alias > 0xFFFF:
            raise LocalProtocolError("alias space exhausted")
        self._aliases[alias] = binding
        pdu = ProvideCommand(Alias(alias, 1 if alias < 0x100 else 2), binding)
        self._context.node.send_command(
            peer, AppId.OAP, encode_oap(pdu), now, expect_response=False
        )
        return alias

    def resolve(self, target: Alias | Binding) -> Binding | None:
        """The binding a command's target names (an alias we announced, or itself)."""
        if isinstance(target, Alias):
            return self._aliases.get(target.value)
        return target

    @property
    def incoming_count(self) -> int:
        """Requests received and not yet answered."""
        return len(self._incoming)

    @property
    def incoming_bytes(self) -> int:
        """Their OAP payloads' bytes."""
        return self._incoming_bytes

    def _answered(self, handle: int) -> _Incoming:
        record = self._incoming.pop(handle, None)
        if record is None:
            raise LocalProtocolError(f"request {handle} was already answered")
        self._incoming_bytes -= record.size
        requestor = record.requestor
        left = self._incoming_by[requestor] - 1
        if left:
            self._incoming_by[requestor] = left
        else:
            del self._incoming_by[requestor]
        return record

    def respond(self, request: IncomingRequest, values: Sequence[Any], now: float) -> None:
        record = self._answered(request.handle)
        values = tuple(values)
        item = record.item
        try:
            if isinstance(item, Property) and record.kind is RequestKind.GET:
                values = outgoing_values(item.params, values, f"{item.name} value")
                payload = encode_oap(GetResponse(values))
            elif isinstance(item, Method):
                values = outgoing_values(item.results, values, f"{item.name} results")
                payload = encode_oap(InvokeResponse(values))
            else:
                if values:
                    raise ValueError("a Set response carries no values")
                payload = encode_oap(SetResponse())
        except (TypeError, ValueError) as exc:
            # The application answered with values its own interface does not allow.
            self._send_exception(record, OapErrorCode.INTERNAL, True, (str(exc),), now)
            raise LocalProtocolError(f"bad response to {item.name}: {exc}") from None
        assert record.op_count is not None  # commands without one never reach here
        node = self._context.node
        limit = node.config.max_datagram
        size = node.response_size(record.peer, record.op_count, AppId.OAP, payload)
        if size > limit:
            # Sent, it would be dropped (by the kernel or on the way) and the
            # requestor would retry until it timed out: refuse it now, loudly.
            message = (
                f"response of {size} bytes exceeds the {limit}-byte datagram limit: "
                "return pages (a cursor) or use the block transfer"
            )
            self._send_exception(record, OapErrorCode.INTERNAL, True, (message,), now)
            raise LocalProtocolError(f"{item.name}: {message}")
        node.send_response(
            record.peer, record.op_count, AppId.OAP, payload, now, identity=record.identity
        )

    def respond_error(
        self, request: IncomingRequest, error: ProviderException | OapError, now: float
    ) -> None:
        record = self._answered(request.handle)
        if isinstance(error, ProviderException):
            definition = error.definition
            try:
                values = outgoing_values(definition.values, error.values, definition.name)
            except (TypeError, ValueError) as exc:
                # A declared exception with values its declaration does not allow.
                self._send_exception(record, OapErrorCode.INTERNAL, True, (str(exc),), now)
                raise LocalProtocolError(f"bad exception {definition.name}: {exc}") from None
            self._send_exception(record, definition.item_id, False, values, now)
        else:
            assert error.code is not None
            self._send_exception(record, error.code, True, (str(error),), now)

    def notify(
        self,
        object_id: OID,
        interface: Interface,
        item: Property | EventDef,
        kind: RequestKind,
        values: tuple[Any, ...],
        now: float,
    ) -> int:
        """Send a Change (``kind`` SUBSCRIBE) or Signal (REGISTER) to every
        subscriber of ``item``; returns how many were sent."""
        oid = object_key(object_id)
        seq_key = (oid, interface.iid, item.item_id, kind)
        sequence = (self._sequences.get(seq_key, 0) + 1) & 0xFFFF
        self._sequences[seq_key] = sequence
        binding = Binding(interface.iid, oid)
        pdu: ChangeCommand | SignalCommand
        if kind is RequestKind.SUBSCRIBE:
            pdu = ChangeCommand(item.item_id, binding, sequence, values)
        else:
            pdu = SignalCommand(item.item_id, binding, sequence, values)
        payload = encode_oap(pdu)
        node = self._context.node
        sent = 0
        for peer in self._subscribed.get(seq_key, ()):
            node.send_command(peer, AppId.OAP, payload, now, expect_response=False)
            sent += 1
        self._context.counters.notifications_sent += sent
        return sent

    # -- commands from requestors ----------------------------------------------------------

    def on_command(self, event: CommandReceived, pdu: OapPdu, now: float) -> None:
        """Serve a command that passed the gate and is neither a notification
        nor a Provide: a request to one of our objects, or a refusal."""
        context = self._context
        peer, op, identity = event.peer, event.op_count, event.identity
        if not isinstance(pdu, _RequestCommand):
            context.refuse(
                peer,
                op,
                OapErrorCode.NOT_SUPPORTED,
                f"{pdu.OPCODE.name} unsupported",
                now,
                identity,
            )
            return
        if op is None:
            # Without an operation id no answer can reach the requestor: a Get or
            # Invoke would be wasted work, and a Set could not be acknowledged.
            context.counters.requests_refused += 1
            return
        binding = self.resolve(pdu.target)
        interface = (
            None
            if binding is None
            else self._providers.get((object_key(binding.object_id), binding.interface))
        )
        if binding is None or interface is None:
            context.refuse(peer, op, OapErrorCode.NOT_FOUND, NO_SUCH_OBJECT, now, identity)
            return
        try:
            item = interface.item(pdu.item_id)
        except KeyError:
            context.refuse(
                peer, op, OapErrorCode.NO_SUCH_ITEM, f"no item {pdu.item_id}", now, identity
            )
            return
        kind, values, refusal = _check_command(pdu, item)
        if refusal is not None:
            code, message = refusal
            context.refuse(peer, op, code, message, now, identity)
            return
        if kind in (RequestKind.SUBSCRIBE, RequestKind.REGISTER):
            self._add_subscriber(peer, op, binding, item, kind, now, identity)
            return
        config = context.config
        record = _Incoming(peer, op, kind, item, identity, len(event.payload))
        requestor = record.requestor
        busy = None
        if len(self._incoming) >= config.max_incoming:
            busy = "too many requests in progress"
        elif self._incoming_by.get(requestor, 0) >= config.max_incoming_per_peer:
            busy = "too many of your requests in progress"
        elif self._incoming_bytes + record.size > config.max_incoming_bytes:
            busy = "too many bytes of requests in progress"
        if busy is not None:
            context.counters.requests_busy += 1
            context.refuse(peer, op, OapErrorCode.BUSY, busy, now, identity)
            return
        handle = self._next_handle
        self._next_handle += 1
        self._incoming[handle] = record
        self._incoming_by[requestor] = self._incoming_by.get(requestor, 0) + 1
        self._incoming_bytes += record.size
        context.events.append(
            IncomingRequest(
                handle,
                peer,
                kind,
                binding.object_id,
                interface,
                item,
                values,
                event.identity,
                event.permissions,
            )
        )

    def _add_subscriber(
        self,
        peer: Address,
        op: int | None,
        binding: Binding,
        item: Item,
        kind: RequestKind,
        now: float,
        identity: OID | None,
    ) -> None:
        context = self._context
        oid = object_key(binding.object_id)
        key: _SubscriberKey = (peer, oid, binding.interface, item.item_id, kind)
        if (
            key not in self._subscribers
            and len(self._subscribers) >= context.config.max_subscribers
        ):
            context.refuse(peer, op, OapErrorCode.BUSY, "too many subscribers", now, identity)
            return
        item_key: _ItemKey = (oid, binding.interface, item.item_id, kind)
        sequence = self._sequences.get(item_key, 0)
        self._subscribers.schedule(key, now + context.config.subscription_lease)
        self._subscribed.setdefault(item_key, {})[peer] = None
        if op is None:
            return
        reply: SubscribeResponse | RegisterResponse = (
            SubscribeResponse() if kind is RequestKind.SUBSCRIBE else RegisterResponse(sequence)
        )
        context.node.send_response(peer, op, AppId.OAP, encode_oap(reply), now, identity=identity)

    def _send_exception(
        self, record: _Incoming, code: int, internal: bool, values: Sequence[Any], now: float
    ) -> None:
        pdu = ExceptionResponse(int(code), tuple(values), internal=internal, final=True)
        self._context.node.send_response(
            record.peer, record.op_count, AppId.OAP, encode_oap(pdu), now, identity=record.identity
        )


class _Refusal(Exception):
    def __init__(self, code: OapErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _check_command(pdu: _RequestCommand, item: Item) -> _CheckedCommand:
    """Which kind of request ``pdu`` is, its values, and why it is refused (if so)."""
    values: tuple[Any, ...] = ()
    try:
        match pdu:
            case GetCommand():
                if not (isinstance(item, Property) and item.readable):
                    raise _Refusal(OapErrorCode.NOT_SUPPORTED, f"{item.name} is not readable")
                return _CheckedCommand(RequestKind.GET, values, None)
            case SetCommand():
                if not (isinstance(item, Property) and item.writable):
                    raise _Refusal(OapErrorCode.NOT_SUPPORTED, f"{item.name} is not writable")
                values = _check(item.params, pdu.values, item.name)
                return _CheckedCommand(RequestKind.SET, values, None)
            case InvokeCommand():
                if not isinstance(item, Method):
                    raise _Refusal(OapErrorCode.NOT_SUPPORTED, f"{item.name} is not a method")
                values = _check(item.arguments, pdu.values, item.name)
                return _CheckedCommand(RequestKind.INVOKE, values, None)
            case SubscribeCommand():
                if not (isinstance(item, Property) and item.observable):
                    raise _Refusal(OapErrorCode.NOT_SUPPORTED, f"{item.name} is not observable")
                return _CheckedCommand(RequestKind.SUBSCRIBE, values, None)
            case RegisterCommand():
                if not isinstance(item, EventDef):
                    raise _Refusal(OapErrorCode.NOT_SUPPORTED, f"{item.name} is not an event")
                return _CheckedCommand(RequestKind.REGISTER, values, None)
    except _Refusal as refusal:
        return _CheckedCommand(RequestKind.GET, values, (refusal.code, refusal.message))
    raise AssertionError("unreachable")  # pragma: no cover


def _check(params: Sequence[Any], values: tuple[Any, ...], name: str) -> tuple[Any, ...]:
    """The command's values for the application (records decoded), or a refusal."""
    try:
        return incoming_values_untrusted(params, values, name)
    except BadPacket as exc:
        raise _Refusal(OapErrorCode.INVALID_VALUE, str(exc)) from None
