"""The sans-IO OAP core: objects with providers and requestors on a DPS node.

:class:`OapCore` wraps a :class:`dofpy.session.Node` and implements the
:class:`dofpy._core.DatagramCore` protocol by delegation. On the requestor side
it turns ``get``/``set``/``invoke``/``subscribe``/``register`` into OAP
commands and the responses into :class:`RequestCompleted`,
:class:`RequestFailed` and :class:`Notification` events. On the provider side
it checks every incoming command against the provided interface (object,
item, kind of item, value types) before the application sees it, emits
:class:`IncomingRequest` for the application to answer with
:meth:`OapCore.respond` or :meth:`OapCore.respond_error`, keeps subscribers and
registrants, and sends Change and Signal commands to them.

Subscriptions are leases (a dofpy convention, see docs/protocol.md): the
provider keeps a subscriber for ``subscription_lease`` seconds after its last
Subscribe or Register; the requestor re-sends the command every
``subscription_refresh`` seconds while the subscription is wanted. Change and
Signal commands are sent once (OAP defines no response to them); their 16-bit
sequence lets the requestor count what it missed.

A node configured with applications besides OAP (``NodeConfig.applications``,
e.g. TRP for an Authenticator that is also an OAP node) hands their commands
up unchanged as the node's :class:`CommandReceived` (with the session's
identity and permissions); the application answers with
``core.node.send_response``. :class:`AuthenticatorRequested` (a responder with
``defer_authenticator``) is passed up as well.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dofpy._core import Address
from dofpy.errors import BadPacket, DofError, LocalProtocolError, ProviderNotPermitted
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.oap.interface import (
    Event,
    ExceptionDef,
    Interface,
    Item,
    Method,
    Property,
    incoming_values_untrusted,
    outgoing_values,
)
from dofpy.security.permissions import is_allowed
from dofpy.session.node import (
    AuthenticatorRequested,
    CommandReceived,
    IncomingHandshakeFailed,
    Node,
    NodeConfig,
    NodeStatistics,
    PeerClosed,
    PlaintextUsed,
    ResponseReceived,
    SecureSessionEnded,
    SecureSessionEstablished,
    SessionOpened,
)
from dofpy.session.node import (
    RequestFailed as NodeRequestFailed,
)
from dofpy.wire.dpp import AppId
from dofpy.wire.oap import (
    Alias,
    Binding,
    ChangeCommand,
    CommandHead,
    ExceptionResponse,
    GetCommand,
    GetResponse,
    InvokeCommand,
    InvokeResponse,
    OapOpcode,
    OapPdu,
    ProvideCommand,
    RegisterCommand,
    RegisterResponse,
    SetCommand,
    SetResponse,
    SignalCommand,
    SubscribeCommand,
    SubscribeResponse,
    decode_oap_untrusted,
    encode_oap,
    read_command_head_untrusted,
)
from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import Action, PermissionSet

__all__ = [
    "AccessDenied",
    "AuthenticatorRequested",
    "CommandReceived",
    "IncomingHandshakeFailed",
    "IncomingRequest",
    "Notification",
    "OapConfig",
    "OapCore",
    "OapEvent",
    "OapStatistics",
    "PeerClosed",
    "PlaintextUsed",
    "ProviderAnnounced",
    "RequestCompleted",
    "RequestFailed",
    "RequestKind",
    "SecureSessionEnded",
    "SecureSessionEstablished",
    "SessionOpened",
    "SubscriptionEnded",
]


class RequestKind(enum.Enum):
    GET = "get"
    SET = "set"
    INVOKE = "invoke"
    SUBSCRIBE = "subscribe"
    REGISTER = "register"
    PROVIDE = "provide"
    PING = "ping"
    OPEN = "open"


@dataclass(frozen=True, slots=True)
class OapConfig:
    """Configuration of an OAP core (the node's own limits are in ``node``)."""

    node: NodeConfig = field(default_factory=NodeConfig)
    subscription_lease: float = 60.0
    subscription_refresh: float = 20.0
    max_subscribers: int = 65536
    max_subscriptions: int = 4096
    max_incoming: int = 4096

    def __post_init__(self) -> None:
        if not 0 < self.subscription_refresh < self.subscription_lease:
            raise ValueError("need 0 < subscription_refresh < subscription_lease")
        for name in ("max_subscribers", "max_subscriptions", "max_incoming"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


# -- events ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """A checked Get, Set or Invoke for one of our providers.

    Answer with :meth:`OapCore.respond` (the property value for GET, nothing for
    SET, the results for INVOKE) or :meth:`OapCore.respond_error`.

    ``identity`` and ``permissions`` are the requestor's authenticated
    identity and the permissions its secure session was granted (both
    ``None`` for a request in the clear): a provider that serves on behalf of
    its caller (a device reporting about itself) compares what the request
    claims with ``identity``, never with anything the request carries.
    """

    handle: int
    peer: Address
    kind: RequestKind
    object_id: OID
    interface: Interface
    item: Item
    values: tuple[Any, ...]
    identity: OID | None = None
    permissions: PermissionSet | None = None


@dataclass(frozen=True, slots=True)
class RequestCompleted:
    """Our request succeeded. ``values``: (value,) for a Get, () for a Set or a
    subscription, the results for an Invoke."""

    request_id: int
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """Our request failed: ``error`` is an :class:`OapError`,
    :class:`ProviderException`, timeout or resource error."""

    request_id: int
    error: DofError


@dataclass(frozen=True, slots=True)
class Notification:
    """A Change (subscribed property) or Signal (registered event) arrived.

    ``missed`` counts the notifications lost before this one (from the gap in
    the 16-bit sequence).
    """

    subscription_id: int
    values: tuple[Any, ...]
    sequence: int
    missed: int


@dataclass(frozen=True, slots=True)
class SubscriptionEnded:
    """A subscription ended: cancelled by us or refused / lost (``error``)."""

    subscription_id: int
    error: DofError | None


@dataclass(frozen=True, slots=True)
class AccessDenied:
    """A request was refused for want of permission (for the operator's log)."""

    peer: Address
    identity: OID | None
    action: Action
    object_id: OID
    interface: IID


@dataclass(frozen=True, slots=True)
class ProviderAnnounced:
    """``peer`` sent a Provide: it provides ``binding`` under ``alias``."""

    peer: Address
    binding: Binding
    alias: Alias


OapEvent = (
    AccessDenied
    | IncomingRequest
    | RequestCompleted
    | RequestFailed
    | Notification
    | SubscriptionEnded
    | ProviderAnnounced
    | SessionOpened
    | PeerClosed
    | SecureSessionEstablished
    | SecureSessionEnded
    | CommandReceived
    | AuthenticatorRequested
    | IncomingHandshakeFailed
    | PlaintextUsed
)


@dataclass(frozen=True, slots=True)
class OapStatistics:
    node: NodeStatistics
    bad_oap_payloads: int
    requests_refused: int
    notifications_sent: int
    notifications_received: int
    notifications_unmatched: int
    notifications_missed: int
    permission_denied: int
    answers_not_permitted: int
    subscribers: int
    subscriptions: int


# -- internal records ---------------------------------------------------------------


@dataclass(slots=True)
class _Outgoing:
    kind: RequestKind
    interface: Interface | None
    item: Item | None
    subscription: int | None = None  # the subscription this (re)subscribe serves
    binding: Binding | None = None
    identity: OID | None = None  # bound: answered only by this identity, if it may provide


@dataclass(slots=True)
class _Incoming:
    peer: Address
    op_count: int | None
    kind: RequestKind
    item: Item
    identity: OID | None = None  # who asked: the answer goes to it only


@dataclass(slots=True)
class _Subscription:
    """Requestor side: a subscription we hold."""

    sub_id: int
    peer: Address
    binding: Binding
    interface: Interface
    item: Property | Event
    kind: RequestKind  # SUBSCRIBE or REGISTER
    minimum_delta: int
    next_refresh: float
    established: bool = False
    last_sequence: int | None = None
    identity: OID | None = None  # bound: notified only by this identity, if it may provide


@dataclass(slots=True)
class _Subscriber:
    """Provider side: a peer that subscribed or registered."""

    expires: float
    sequence: int


_SubscriberKey = tuple[Address, OID, IID, int, RequestKind]

Interceptor = Callable[[Address, OID | None, int | None, OapPdu, float], None]
"""Takes every OAP command addressed (by full binding) to one interface:
``(peer, identity, op_count, pdu, now)``, ``identity`` the authenticated
identity of the secure session it came through (None in the clear).
Protocols built on OAP messages with their own recovery (the block transfer)
use it instead of the request/response path."""

RawInterceptor = Callable[[Address, OID | None, int | None, CommandHead, bytes, float], None]
"""The fast form of an :data:`Interceptor`: ``(peer, identity, op_count, head,
payload, now)`` with the OAP payload only read up to its target (``head``); the
interceptor decodes and checks the rest itself, raising only ``BadPacket``."""

DeniedHandler = Callable[[Address, int | None, Binding, float], None]
"""Told of an intercepted command refused for want of permission: ``(peer,
op_count, binding, now)``. It answers in the intercepted protocol's own terms
(the OAP Exception response is then not sent: a one-way command has no
requestor waiting for one)."""


@dataclass(frozen=True, slots=True)
class _Interception:
    handler: Interceptor
    raw: RawInterceptor | None
    on_denied: DeniedHandler | None


def _key(oid: OID) -> OID:
    return oid.without_attributes()


def _may_provide(permissions: PermissionSet | None, binding: Binding) -> bool:
    """Whether a session's granted ``permissions`` let its holder provide ``binding``."""
    return permissions is not None and is_allowed(
        permissions, Action.PROVIDE, binding.object_id, binding.interface
    )


class OapCore:
    """A sans-IO OAP node: providers and requestors. A ``DatagramCore``."""

    def __init__(self, config: OapConfig | None = None) -> None:
        self.config = config or OapConfig()
        self.node = Node(self.config.node)
        self._providers: dict[tuple[OID, IID], Interface] = {}
        self._aliases: dict[int, Binding] = {}
        self._outgoing: dict[int, _Outgoing] = {}
        self._incoming: dict[int, _Incoming] = {}
        self._next_handle = 1
        self._subscriptions: dict[int, _Subscription] = {}
        self._subscribers: dict[_SubscriberKey, _Subscriber] = {}
        self._sequences: dict[tuple[OID, IID, int, RequestKind], int] = {}
        self._events: deque[OapEvent] = deque()
        self._interceptors: dict[IID, _Interception] = {}
        self._raw_interceptors = 0
        # The last raw-routed command head: its bytes, the head read from them
        # and its interception (a transfer's datagrams repeat one head).
        self._raw_head: tuple[bytes, CommandHead, _Interception] | None = None
        # The last permission check passed: (permissions, action, binding).
        self._last_allowed: tuple[PermissionSet, Action, Binding] | None = None
        self._counts = dict.fromkeys(
            (
                "bad_oap_payloads",
                "requests_refused",
                "notifications_sent",
                "notifications_received",
                "notifications_unmatched",
                "notifications_missed",
                "permission_denied",
                "answers_not_permitted",
            ),
            0,
        )

    # -- DatagramCore --------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.node.receive_datagram(data, addr, now)
        self._drain(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self.node.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        timers = [self.node.get_timer()]
        timers += [s.next_refresh for s in self._subscriptions.values()]
        if self._subscribers:
            timers.append(min(s.expires for s in self._subscribers.values()))
        present = [t for t in timers if t is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        self.node.handle_timer(now)
        for key, subscriber in list(self._subscribers.items()):
            if subscriber.expires <= now:
                del self._subscribers[key]
        for sub in list(self._subscriptions.values()):
            if sub.next_refresh <= now:
                self._send_subscribe(sub, now)
        self._drain(now)

    def next_event(self) -> OapEvent | None:
        return self._events.popleft() if self._events else None

    def statistics(self) -> OapStatistics:
        return OapStatistics(
            node=self.node.statistics(),
            subscribers=len(self._subscribers),
            subscriptions=len(self._subscriptions),
            **self._counts,
        )

    # -- provider side ----------------------------------------------------------------

    def provide(self, object_id: OID, interface: Interface) -> None:
        """Provide ``interface`` on ``object_id`` here (commands to it are accepted)."""
        self._providers[(_key(object_id), interface.iid)] = interface

    def withdraw(self, object_id: OID, interface: Interface) -> None:
        """Stop providing; its subscribers are dropped."""
        oid = _key(object_id)
        self._providers.pop((oid, interface.iid), None)
        for key in [k for k in self._subscribers if k[1] == oid and k[2] == interface.iid]:
            del self._subscribers[key]

    def intercept(
        self,
        interface: IID,
        handler: Interceptor,
        *,
        raw: RawInterceptor | None = None,
        on_denied: DeniedHandler | None = None,
    ) -> None:
        """Hand every OAP command whose target binding names ``interface`` to
        ``handler`` instead of the provider path (one handler per IID).

        With ``raw``, commands without command control go to ``raw`` with the
        payload read only up to the target (no generic decode of the value
        list): ``raw`` decodes the rest itself. Permissions are checked first
        either way; ``on_denied`` is told of each refused command and answers
        it in the interface's own protocol instead of an OAP Exception.
        """
        if interface in self._interceptors:
            raise LocalProtocolError(f"{interface} is already intercepted")
        self._interceptors[interface] = _Interception(handler, raw, on_denied)
        if raw is not None:
            self._raw_interceptors += 1
            # One-way commands for raw interceptors go straight from the node
            # to them, without an event each.
            self.node.set_command_handler(self._on_direct_command)

    def announce(self, peer: Address, object_id: OID, interface: Interface, now: float) -> int:
        """Send a Provide to ``peer`` for a binding we provide; returns the alias."""
        oid = _key(object_id)
        if (oid, interface.iid) not in self._providers:
            raise LocalProtocolError(f"{oid} does not provide {interface.name} here")
        binding = Binding(interface.iid, oid)
        alias = next((a for a, b in self._aliases.items() if b == binding), len(self._aliases))
        if alias > 0xFFFF:
            raise LocalProtocolError("alias space exhausted")
        self._aliases[alias] = binding
        pdu = ProvideCommand(Alias(alias, 1 if alias < 0x100 else 2), binding)
        self.node.send_command(peer, AppId.OAP, encode_oap(pdu), now, expect_response=False)
        return alias

    def respond(self, request: IncomingRequest, values: Sequence[Any], now: float) -> None:
        """Answer an :class:`IncomingRequest` successfully.

        Values the item's declaration does not allow, or a response longer than
        the node's ``max_datagram`` once framed (and sealed), are not sent: the
        requestor gets an internal OAP Exception saying why, and this raises
        ``LocalProtocolError``.
        """
        record = self._incoming.pop(request.handle, None)
        if record is None:
            raise LocalProtocolError(f"request {request.handle} was already answered")
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
        limit = self.node.config.max_datagram
        size = self.node.response_size(record.peer, record.op_count, AppId.OAP, payload)
        if size > limit:
            # Sent, it would be dropped (by the kernel or on the way) and the
            # requestor would retry until it timed out: refuse it now, loudly.
            message = (
                f"response of {size} bytes exceeds the {limit}-byte datagram limit: "
                "return pages (a cursor) or use the block transfer"
            )
            self._send_exception(record, OapErrorCode.INTERNAL, True, (message,), now)
            raise LocalProtocolError(f"{item.name}: {message}")
        self.node.send_response(
            record.peer, record.op_count, AppId.OAP, payload, now, identity=record.identity
        )

    def respond_error(
        self, request: IncomingRequest, error: ProviderException | OapError, now: float
    ) -> None:
        """Refuse an :class:`IncomingRequest` with a declared or protocol exception."""
        record = self._incoming.pop(request.handle, None)
        if record is None:
            raise LocalProtocolError(f"request {request.handle} was already answered")
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

    def notify_change(
        self, object_id: OID, interface: Interface, prop: str | int, value: Any, now: float
    ) -> int:
        """Send the new value of an observable property to its subscribers."""
        item = interface.property(prop)
        values = outgoing_values(item.params, (value,), f"{item.name} value")
        return self._notify(object_id, interface, item, RequestKind.SUBSCRIBE, values, now)

    def signal(
        self,
        object_id: OID,
        interface: Interface,
        event: str | int,
        values: Sequence[Any],
        now: float,
    ) -> int:
        """Signal an event to every registrant; returns how many were sent."""
        item = interface.event(event)
        wire = outgoing_values(item.values, tuple(values), f"{item.name} values")
        return self._notify(object_id, interface, item, RequestKind.REGISTER, wire, now)

    # -- requestor side ----------------------------------------------------------------

    def get(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        prop: str | int,
        now: float,
        *,
        identity: OID | None = None,
    ) -> int:
        """Read a property. With ``identity`` (or a ``peer_identities`` entry
        for ``peer``) only that authenticated identity may answer, and only
        when its session's granted permissions let it provide the binding
        (else :class:`RequestFailed` with
        :class:`~dofpy.errors.PeerIdentityMismatch` or
        :class:`~dofpy.errors.ProviderNotPermitted`); the same holds for
        :meth:`set`, :meth:`invoke` and :meth:`subscribe`."""
        item = interface.property(prop)
        if not item.readable:
            raise LocalProtocolError(f"{interface.name}.{item.name} is not readable")
        pdu = GetCommand(item.item_id, Binding(interface.iid, object_id))
        record = _Outgoing(RequestKind.GET, interface, item)
        return self._request(peer, pdu, record, now, identity)

    def set(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        prop: str | int,
        value: Any,
        now: float,
        *,
        identity: OID | None = None,
    ) -> int:
        item = interface.property(prop)
        if not item.writable:
            raise LocalProtocolError(f"{interface.name}.{item.name} is not writable")
        values = outgoing_values(item.params, (value,), f"{item.name} value")
        pdu = SetCommand(item.item_id, Binding(interface.iid, object_id), values)
        record = _Outgoing(RequestKind.SET, interface, item)
        return self._request(peer, pdu, record, now, identity)

    def invoke(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        method: str | int,
        arguments: Sequence[Any],
        now: float,
        *,
        identity: OID | None = None,
    ) -> int:
        item = interface.method(method)
        values = outgoing_values(item.arguments, tuple(arguments), f"{item.name} arguments")
        pdu = InvokeCommand(item.item_id, Binding(interface.iid, object_id), values)
        record = _Outgoing(RequestKind.INVOKE, interface, item)
        return self._request(peer, pdu, record, now, identity)

    def subscribe(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        item_key: str | int,
        now: float,
        *,
        minimum_delta: int = 0,
        identity: OID | None = None,
    ) -> int:
        """Subscribe to an observable property (Change) or register for an event
        (Signal). Returns the subscription id; :class:`RequestCompleted` with that
        id confirms it, :class:`Notification` events follow."""
        item = interface.item(item_key)
        if isinstance(item, Property):
            if not item.observable:
                raise LocalProtocolError(f"{interface.name}.{item.name} is not observable")
            kind = RequestKind.SUBSCRIBE
        elif isinstance(item, Event):
            kind = RequestKind.REGISTER
        else:
            raise LocalProtocolError(f"{interface.name}.{item.name} is neither property nor event")
        if len(self._subscriptions) >= self.config.max_subscriptions:
            raise LocalProtocolError("max_subscriptions reached")
        bound = self.node.expected_identity(peer, identity)
        sub = _Subscription(
            sub_id=-1,
            peer=peer,
            binding=Binding(interface.iid, _key(object_id)),
            interface=interface,
            item=item,
            kind=kind,
            minimum_delta=minimum_delta,
            next_refresh=now,
            identity=bound,
        )
        sub.sub_id = self._send_subscribe(sub, now)
        self._subscriptions[sub.sub_id] = sub
        return sub.sub_id

    def unsubscribe(self, subscription_id: int) -> None:
        """Stop a subscription here; the provider lets it lapse at its lease end."""
        sub = self._subscriptions.pop(subscription_id, None)
        if sub is not None:
            self._events.append(SubscriptionEnded(subscription_id, None))

    def ping(self, peer: Address, now: float) -> int:
        request_id = self.node.ping(peer, now)
        self._outgoing[request_id] = _Outgoing(RequestKind.PING, None, None)
        return request_id

    def open_session(self, peer: Address, now: float) -> int:
        """Send a DSP Open; :class:`SessionOpened` (or :class:`RequestFailed`) follows."""
        request_id = self.node.open_session(peer, now)
        self._outgoing[request_id] = _Outgoing(RequestKind.OPEN, None, None)
        return request_id

    # -- internals -----------------------------------------------------------------------

    def _request(
        self,
        peer: Address,
        pdu: GetCommand | SetCommand | InvokeCommand | SubscribeCommand | RegisterCommand,
        record: _Outgoing,
        now: float,
        identity: OID | None = None,
    ) -> int:
        record.identity = self.node.expected_identity(peer, identity)
        assert isinstance(pdu.target, Binding)  # requests name their binding in full
        record.binding = pdu.target
        request_id = self.node.send_command(
            peer, AppId.OAP, encode_oap(pdu), now, identity=record.identity
        )
        self._outgoing[request_id] = record
        return request_id

    def _send_subscribe(self, sub: _Subscription, now: float) -> int:
        pdu: SubscribeCommand | RegisterCommand
        if sub.kind is RequestKind.SUBSCRIBE:
            pdu = SubscribeCommand(sub.item.item_id, sub.binding, sub.minimum_delta)
        else:
            pdu = RegisterCommand(sub.item.item_id, sub.binding)
        sub.next_refresh = now + self.config.subscription_refresh
        record = _Outgoing(sub.kind, sub.interface, sub.item, subscription=sub.sub_id)
        request_id = self._request(sub.peer, pdu, record, now, sub.identity)
        if sub.sub_id == -1:
            record.subscription = request_id
        return request_id

    def _notify(
        self,
        object_id: OID,
        interface: Interface,
        item: Property | Event,
        kind: RequestKind,
        values: tuple[Any, ...],
        now: float,
    ) -> int:
        oid = _key(object_id)
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
        sent = 0
        for key, subscriber in self._subscribers.items():
            peer, s_oid, s_iid, s_item, s_kind = key
            if (s_oid, s_iid, s_item, s_kind) == (oid, interface.iid, item.item_id, kind):
                subscriber.sequence = sequence
                self.node.send_command(peer, AppId.OAP, payload, now, expect_response=False)
                sent += 1
        self._counts["notifications_sent"] += sent
        return sent

    def _send_exception(
        self, record: _Incoming, code: int, internal: bool, values: Sequence[Any], now: float
    ) -> None:
        pdu = ExceptionResponse(int(code), tuple(values), internal=internal, final=True)
        self.node.send_response(
            record.peer, record.op_count, AppId.OAP, encode_oap(pdu), now, identity=record.identity
        )

    def _drain(self, now: float) -> None:
        while (event := self.node.next_event()) is not None:
            match event:
                case CommandReceived() if event.app_id != AppId.OAP:
                    # Another application the node serves (NodeConfig.applications):
                    # the application answers with node.send_response.
                    self._events.append(event)
                case CommandReceived():
                    try:
                        self._on_command(event, now)
                    except BadPacket:
                        self._counts["bad_oap_payloads"] += 1
                case ResponseReceived():
                    self._on_response(event)
                case NodeRequestFailed():
                    self._on_failure(event.request_id, event.error)
                case SessionOpened():
                    self._outgoing.pop(event.request_id, None)
                    self._events.append(event)
                case (
                    PeerClosed()
                    | SecureSessionEstablished()
                    | SecureSessionEnded()
                    | AuthenticatorRequested()
                    | IncomingHandshakeFailed()
                    | PlaintextUsed()
                ):
                    self._events.append(event)

    # -- provider dispatch ---------------------------------------------------------------

    def _refuse(
        self,
        peer: Address,
        op: int | None,
        code: OapErrorCode,
        message: str,
        now: float,
        identity: OID | None,
    ) -> None:
        self._counts["requests_refused"] += 1
        if op is None:
            return
        pdu = ExceptionResponse(int(code), (message,), internal=True, final=True)
        self.node.send_response(peer, op, AppId.OAP, encode_oap(pdu), now, identity=identity)

    def _permitted(
        self,
        event: CommandReceived | tuple[Address, OID | None, PermissionSet | None],
        action: Action,
        binding: Binding,
        now: float,
        op: int | None = None,
        on_denied: DeniedHandler | None = None,
    ) -> bool:
        """Whether the (authenticated) requestor may do ``action`` on ``binding``.

        Without a security configuration every request is allowed (a plaintext
        node trusts its network). With one, a request must come through a
        secure session whose granted permissions allow it: deny by default.
        """
        if self.node.config.security is None:
            return True
        if isinstance(event, CommandReceived):
            peer, identity, permissions = event.peer, event.identity, event.permissions
        else:
            peer, identity, permissions = event
        if permissions is not None:
            last = self._last_allowed
            # The same session's permissions (the very object) allowed the
            # same action on the same binding just before: a transfer asks
            # this thousands of times a second.
            if (
                last is not None
                and last[0] is permissions
                and last[1] == action
                and last[2] == binding
            ):
                return True
            if is_allowed(permissions, action, binding.object_id, binding.interface):
                self._last_allowed = (permissions, action, binding)
                return True
        self._counts["permission_denied"] += 1
        self._events.append(
            AccessDenied(peer, identity, action, binding.object_id, binding.interface)
        )
        if on_denied is not None:
            self._counts["requests_refused"] += 1
            on_denied(peer, op, binding, now)
        else:
            self._refuse(
                peer, op, OapErrorCode.PERMISSION_DENIED, "permission denied", now, identity
            )
        return False

    def _resolve(self, target: Alias | Binding) -> Binding | None:
        if isinstance(target, Alias):
            return self._aliases.get(target.value)
        return target

    def _on_command(self, event: CommandReceived, now: float) -> None:
        peer, op, identity = event.peer, event.op_count, event.identity
        if self._raw_interceptors and self._on_raw_command(event, now):
            return
        pdu = decode_oap_untrusted(event.payload, False)
        target = getattr(pdu, "target", None)
        # Permissions first, for every request (intercepted ones too): a
        # requestor that may not touch an object does not learn whether it
        # exists, nor reach a protocol built on OAP such as the block transfer.
        action = _ACTIONS.get(type(pdu))
        interception = (
            self._interceptors.get(target.interface) if isinstance(target, Binding) else None
        )
        if action is not None and isinstance(target, Alias | Binding):
            resolved = self._resolve(target)
            on_denied = None if interception is None else interception.on_denied
            if resolved is not None and not self._permitted(
                event, action, resolved, now, op, on_denied
            ):
                return
        if interception is not None:
            interception.handler(peer, event.identity, op, pdu, now)
            return
        if isinstance(pdu, ChangeCommand | SignalCommand):
            self._on_notification(peer, pdu, identity, event.permissions)
            return
        if isinstance(pdu, ProvideCommand):
            if not self._permitted(event, Action.PROVIDE, pdu.binding, now):
                return
            self._events.append(ProviderAnnounced(peer, pdu.binding, pdu.alias))
            return
        if not isinstance(
            pdu, GetCommand | SetCommand | InvokeCommand | SubscribeCommand | RegisterCommand
        ):
            self._refuse(
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
            self._counts["requests_refused"] += 1
            return
        binding = self._resolve(pdu.target)
        interface = (
            None
            if binding is None
            else self._providers.get((_key(binding.object_id), binding.interface))
        )
        if binding is None or interface is None:
            self._refuse(
                peer, op, OapErrorCode.NOT_FOUND, "no such object or interface", now, identity
            )
            return
        try:
            item = interface.item(pdu.item_id)
        except KeyError:
            self._refuse(
                peer, op, OapErrorCode.NO_SUCH_ITEM, f"no item {pdu.item_id}", now, identity
            )
            return
        kind, values, problem = self._check_command(pdu, item)
        if problem is not None:
            code, message = problem
            self._refuse(peer, op, code, message, now, identity)
            return
        if kind in (RequestKind.SUBSCRIBE, RequestKind.REGISTER):
            self._add_subscriber(peer, op, binding, item, kind, now, identity)
            return
        if len(self._incoming) >= self.config.max_incoming:
            self._refuse(
                peer, op, OapErrorCode.BUSY, "too many requests in progress", now, identity
            )
            return
        handle = self._next_handle
        self._next_handle += 1
        self._incoming[handle] = _Incoming(peer, op, kind, item, identity)
        self._events.append(
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

    def _on_raw_command(self, event: CommandReceived, now: float) -> bool:
        """Hand a command for a raw interceptor over after reading only its
        head (permissions checked as on the general path); False when the
        command is not one for a raw interceptor."""
        return self._route_raw(
            event.peer, event.op_count, event.payload, event.identity, event.permissions, now
        )

    def _on_direct_command(
        self,
        peer: Address,
        op: int | None,
        app_id: int,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        """The node's one-way command handler: :meth:`_on_raw_command` without
        the event (True when a raw interceptor took the command, or when it was
        malformed: counted as the event path counts it)."""
        if app_id != AppId.OAP:
            return False
        try:
            return self._route_raw(peer, op, payload, identity, permissions, now)
        except BadPacket:
            self._counts["bad_oap_payloads"] += 1
            return True

    def _route_raw(
        self,
        peer: Address,
        op: int | None,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        cached = self._raw_head
        if cached is not None and payload.startswith(cached[0]):
            # read_command_head_untrusted reads nothing past the head: the same
            # head bytes give the same head.
            _, head, interception = cached
        else:
            found = read_command_head_untrusted(payload)
            if found is None or not isinstance(found.target, Binding):
                return False
            head = found
            known = self._interceptors.get(found.target.interface)
            if known is None or known.raw is None:
                return False
            interception = known
            self._raw_head = (payload[: head.end], head, interception)
        assert interception.raw is not None and isinstance(head.target, Binding)
        action = _OPCODE_ACTIONS.get(head.opcode)
        if action is not None and not self._permitted(
            (peer, identity, permissions), action, head.target, now, op, interception.on_denied
        ):
            return True
        interception.raw(peer, identity, op, head, payload, now)
        return True

    @staticmethod
    def _check_command(
        pdu: GetCommand | SetCommand | InvokeCommand | SubscribeCommand | RegisterCommand,
        item: Item,
    ) -> tuple[RequestKind, tuple[Any, ...], tuple[OapErrorCode, str] | None]:
        """Which kind of request ``pdu`` is, its values, and why it is refused (if so)."""
        values: tuple[Any, ...] = ()
        try:
            match pdu:
                case GetCommand():
                    if not (isinstance(item, Property) and item.readable):
                        raise _Refusal(OapErrorCode.NOT_SUPPORTED, f"{item.name} is not readable")
                    return RequestKind.GET, values, None
                case SetCommand():
                    if not (isinstance(item, Property) and item.writable):
                        raise _Refusal(OapErrorCode.NOT_SUPPORTED, f"{item.name} is not writable")
                    values = _check(item.params, pdu.values, item.name)
                    return RequestKind.SET, values, None
                case InvokeCommand():
                    if not isinstance(item, Method):
                        raise _Refusal(OapErrorCode.NOT_SUPPORTED, f"{item.name} is not a method")
                    values = _check(item.arguments, pdu.values, item.name)
                    return RequestKind.INVOKE, values, None
                case SubscribeCommand():
                    if not (isinstance(item, Property) and item.observable):
                        raise _Refusal(OapErrorCode.NOT_SUPPORTED, f"{item.name} is not observable")
                    return RequestKind.SUBSCRIBE, values, None
                case RegisterCommand():
                    if not isinstance(item, Event):
                        raise _Refusal(OapErrorCode.NOT_SUPPORTED, f"{item.name} is not an event")
                    return RequestKind.REGISTER, values, None
        except _Refusal as refusal:
            return RequestKind.GET, values, (refusal.code, refusal.message)
        raise AssertionError("unreachable")  # pragma: no cover

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
        oid = _key(binding.object_id)
        key: _SubscriberKey = (peer, oid, binding.interface, item.item_id, kind)
        if key not in self._subscribers and len(self._subscribers) >= self.config.max_subscribers:
            self._refuse(peer, op, OapErrorCode.BUSY, "too many subscribers", now, identity)
            return
        sequence = self._sequences.get((oid, binding.interface, item.item_id, kind), 0)
        self._subscribers[key] = _Subscriber(now + self.config.subscription_lease, sequence)
        if op is None:
            return
        reply: SubscribeResponse | RegisterResponse = (
            SubscribeResponse() if kind is RequestKind.SUBSCRIBE else RegisterResponse(sequence)
        )
        self.node.send_response(peer, op, AppId.OAP, encode_oap(reply), now, identity=identity)

    # -- requestor dispatch ---------------------------------------------------------------

    def _on_notification(
        self,
        peer: Address,
        pdu: ChangeCommand | SignalCommand,
        identity: OID | None,
        permissions: PermissionSet | None,
    ) -> None:
        kind = RequestKind.SUBSCRIBE if isinstance(pdu, ChangeCommand) else RequestKind.REGISTER
        binding = self._resolve_remote(pdu.target)
        refused = False
        for sub in self._subscriptions.values():
            if (
                sub.peer == peer
                and sub.kind is kind
                and sub.item.item_id == pdu.item_id
                and binding is not None
                and sub.binding.interface == binding.interface
                and sub.binding.object_id == _key(binding.object_id)
            ):
                if sub.identity is not None and not (
                    identity == sub.identity and _may_provide(permissions, sub.binding)
                ):
                    # Not from the identity this subscription is bound to (or
                    # one that may not provide it): not its notification.
                    refused = True
                    continue
                params = sub.item.params if isinstance(sub.item, Property) else sub.item.values
                try:
                    values = incoming_values_untrusted(params, pdu.values, sub.item.name)
                except BadPacket:
                    self._counts["bad_oap_payloads"] += 1
                    return
                missed = 0
                if sub.last_sequence is not None:
                    gap = (pdu.sequence - sub.last_sequence) & 0xFFFF
                    if gap == 0 or gap > 0x8000:
                        return  # a duplicate or an old copy
                    missed = gap - 1
                sub.last_sequence = pdu.sequence
                self._counts["notifications_received"] += 1
                self._counts["notifications_missed"] += missed
                self._events.append(Notification(sub.sub_id, values, pdu.sequence, missed))
                return
        self._counts["answers_not_permitted" if refused else "notifications_unmatched"] += 1

    @staticmethod
    def _resolve_remote(target: Alias | Binding) -> Binding | None:
        return target if isinstance(target, Binding) else None

    def _on_response(self, event: ResponseReceived) -> None:
        record = self._outgoing.pop(event.request_id, None)
        if record is None:
            return
        if record.kind is RequestKind.PING:
            self._events.append(RequestCompleted(event.request_id, ()))
            return
        binding = record.binding
        if (
            record.identity is not None
            and binding is not None
            and not _may_provide(event.permissions, binding)
        ):
            # The node delivered it from the identity asked (it checks that);
            # the Authenticator's grant to that identity must also cover
            # providing what was asked, or the answer is not taken.
            self._counts["answers_not_permitted"] += 1
            self._on_failure(
                event.request_id,
                ProviderNotPermitted(
                    f"{record.identity} at {event.peer[0]}:{event.peer[1]} answered, but its "
                    f"session's permissions do not let it provide {binding.interface} on "
                    f"{binding.object_id}"
                ),
                record,
            )
            return
        try:
            pdu = decode_oap_untrusted(event.payload, True)
        except BadPacket as exc:
            self._counts["bad_oap_payloads"] += 1
            self._on_failure(event.request_id, exc, record)
            return
        if isinstance(pdu, ExceptionResponse):
            self._on_failure(event.request_id, self._exception_error(pdu, record), record)
            return
        expected: dict[RequestKind, type[Any]] = {
            RequestKind.GET: GetResponse,
            RequestKind.SET: SetResponse,
            RequestKind.INVOKE: InvokeResponse,
            RequestKind.SUBSCRIBE: SubscribeResponse,
            RequestKind.REGISTER: RegisterResponse,
        }
        if not isinstance(pdu, expected[record.kind]):
            self._on_failure(
                event.request_id,
                BadPacket(f"{type(pdu).__name__} in answer to a {record.kind.value}"),
                record,
            )
            return
        values: tuple[Any, ...] = ()
        if isinstance(pdu, GetResponse | InvokeResponse):
            values = pdu.values
            params = (
                (record.item.params if isinstance(record.item, Property) else record.item.results)
                if isinstance(record.item, Property | Method)
                else ()
            )
            try:
                values = incoming_values_untrusted(
                    params, values, f"response of {record.item.name if record.item else ''}"
                )
            except BadPacket as exc:
                self._on_failure(event.request_id, exc, record)
                return
        if record.subscription is not None:
            sub = self._subscriptions.get(record.subscription)
            if sub is None:
                return
            if isinstance(pdu, RegisterResponse) and sub.last_sequence is None:
                sub.last_sequence = pdu.sequence
            if sub.established:
                return  # a refresh
            sub.established = True
            self._events.append(RequestCompleted(record.subscription, ()))
            return
        self._events.append(RequestCompleted(event.request_id, values))

    def _exception_error(self, pdu: ExceptionResponse, record: _Outgoing) -> DofError:
        if not pdu.internal and record.interface is not None:
            try:
                definition = record.interface.exception(pdu.code)
            except (KeyError, TypeError):
                return ProviderException(
                    ExceptionDef(pdu.code, f"exception {pdu.code}"), pdu.values
                )
            try:
                values = incoming_values_untrusted(definition.values, pdu.values, definition.name)
            except BadPacket as exc:
                return exc
            return ProviderException(definition, values)
        message = pdu.values[0] if pdu.values and isinstance(pdu.values[0], str) else ""
        return OapError(pdu.code, message)

    def _on_failure(
        self, request_id: int, error: DofError, record: _Outgoing | None = None
    ) -> None:
        record = record or self._outgoing.pop(request_id, None)
        if record is None:
            return
        if record.subscription is not None:
            sub = self._subscriptions.pop(record.subscription, None)
            if sub is not None:
                if sub.established:
                    self._events.append(SubscriptionEnded(sub.sub_id, error))
                else:
                    self._events.append(RequestFailed(sub.sub_id, error))
            return
        self._events.append(RequestFailed(request_id, error))


_ACTIONS: dict[type, Action] = {
    GetCommand: Action.READ,
    SetCommand: Action.WRITE,
    InvokeCommand: Action.EXECUTE,
    SubscribeCommand: Action.SUBSCRIBE,
    RegisterCommand: Action.SUBSCRIBE,
}


_OPCODE_ACTIONS: dict[OapOpcode, Action] = {
    OapOpcode.GET: Action.READ,
    OapOpcode.SET: Action.WRITE,
    OapOpcode.INVOKE: Action.EXECUTE,
    OapOpcode.SUBSCRIBE: Action.SUBSCRIBE,
    OapOpcode.REGISTER: Action.SUBSCRIBE,
}


class _Refusal(Exception):
    def __init__(self, code: OapErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _check(params: Sequence[Any], values: tuple[Any, ...], name: str) -> tuple[Any, ...]:
    """The command's values for the application (records decoded), or a refusal."""
    try:
        return incoming_values_untrusted(params, values, name)
    except BadPacket as exc:
        raise _Refusal(OapErrorCode.INVALID_VALUE, str(exc)) from None
