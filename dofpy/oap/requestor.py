"""The requestor side of an OAP core: our requests and subscriptions, and
the answers and notifications that come back for them.

Each request is remembered until its answer (or the node's failure for it)
arrives and is turned into :class:`~dofpy.oap.events.RequestCompleted` or
:class:`~dofpy.oap.events.OapRequestFailed`. A subscription moves through the
table of :mod:`dofpy.oap.subscription`; its refresh deadlines are kept in one
heap. An answer or notification bound to an identity is taken only from that
identity, and only when its session's granted permissions let it provide the
binding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dofpy._core import Address
from dofpy.errors import BadPacket, DofError, LocalProtocolError, ProviderNotPermitted
from dofpy.oap.context import OapContext
from dofpy.oap.deadlines import DeadlineHeap
from dofpy.oap.errors import OapError, ProviderException
from dofpy.oap.events import (
    Notification,
    OapRequestFailed,
    RequestCompleted,
    RequestKind,
    SubscriptionEnded,
)
from dofpy.oap.interface import (
    EventDef,
    ExceptionDef,
    Interface,
    Item,
    Method,
    Property,
    incoming_values_untrusted,
    outgoing_values,
)
from dofpy.oap.provider import object_key
from dofpy.oap.subscription import (
    SubscriptionInput,
    SubscriptionOutcome,
    SubscriptionState,
    subscription_step,
)
from dofpy.security.permissions import is_allowed
from dofpy.session.node import ResponseReceived
from dofpy.wire.dpp import AppId
from dofpy.wire.oap import (
    Binding,
    ChangeCommand,
    ExceptionResponse,
    GetCommand,
    GetResponse,
    InvokeCommand,
    InvokeResponse,
    RegisterCommand,
    RegisterResponse,
    SetCommand,
    SetResponse,
    SignalCommand,
    SubscribeCommand,
    SubscribeResponse,
    decode_oap_untrusted,
    encode_oap,
)
from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import Action, PermissionSet

__all__ = ["RequestorSide"]


@dataclass(slots=True)
class _Outgoing:
    kind: RequestKind
    interface: Interface | None
    item: Item | None
    subscription: int | None = None  # the subscription this (re)subscribe serves
    binding: Binding | None = None
    identity: OID | None = None  # bound: answered only by this identity, if it may provide


@dataclass(frozen=True, slots=True)
class _SubscriptionTarget:
    """What a subscription asks for, and of whom (fixed for its life)."""

    peer: Address
    binding: Binding
    interface: Interface
    item: Property | EventDef
    kind: RequestKind  # SUBSCRIBE or REGISTER
    minimum_delta: int
    identity: OID | None  # bound: notified only by this identity, if it may provide


@dataclass(slots=True)
class _Subscription:
    """A subscription we hold: its id, target, state, and the last sequence
    seen (meaningful once ``state.synced``)."""

    sub_id: int
    target: _SubscriptionTarget
    state: SubscriptionState = SubscriptionState.REQUESTED
    last_sequence: int = 0


_NotificationSource = tuple[Address, RequestKind, int, IID, OID]
"""(provider, SUBSCRIBE or REGISTER, item id, interface, object without attributes)."""


def _source_of(target: _SubscriptionTarget) -> _NotificationSource:
    return (
        target.peer,
        target.kind,
        target.item.item_id,
        target.binding.interface,
        target.binding.object_id,
    )


_EXPECTED_ANSWERS: dict[RequestKind, type[Any]] = {
    RequestKind.GET: GetResponse,
    RequestKind.SET: SetResponse,
    RequestKind.INVOKE: InvokeResponse,
    RequestKind.SUBSCRIBE: SubscribeResponse,
    RequestKind.REGISTER: RegisterResponse,
}


def _may_provide(permissions: PermissionSet | None, binding: Binding) -> bool:
    """Whether a session's granted ``permissions`` let its holder provide ``binding``."""
    return permissions is not None and is_allowed(
        permissions, Action.PROVIDE, binding.object_id, binding.interface
    )


class RequestorSide:
    """The requestor half of :class:`~dofpy.oap.core.OapCore`."""

    def __init__(self, context: OapContext) -> None:
        self._context = context
        self._outgoing: dict[int, _Outgoing] = {}
        self._subscriptions: dict[int, _Subscription] = {}
        # The subscriptions a notification can be for, by what it names, so
        # that it visits those only (in the order they were made).
        self._by_source: dict[_NotificationSource, dict[int, None]] = {}
        self._refresh: DeadlineHeap[int] = DeadlineHeap()  # subscription id -> refresh

    @property
    def subscription_count(self) -> int:
        return len(self._subscriptions)

    @property
    def awaited_count(self) -> int:
        return len(self._outgoing)

    def next_deadline(self) -> float | None:
        return self._refresh.next_deadline()

    def refresh(self, now: float) -> None:
        """Re-send every subscription whose refresh is due."""
        for sub_id in self._refresh.pop_due(now):
            sub = self._subscriptions[sub_id]
            if self._step(sub, SubscriptionInput.REFRESH_DUE) is SubscriptionOutcome.RESEND:
                self._send_subscribe(sub.target, now, sub_id)

    # -- the application's calls --------------------------------------------------------

    def get(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        prop: str | int,
        now: float,
        identity: OID | None,
    ) -> int:
        item = interface.property(prop)
        if not item.readable:
            raise LocalProtocolError(f"{interface.name}.{item.name} is not readable")
        pdu = GetCommand(item.item_id, Binding(interface.iid, object_id))
        return self._request(peer, pdu, _Outgoing(RequestKind.GET, interface, item), now, identity)

    def set(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        prop: str | int,
        value: Any,
        now: float,
        identity: OID | None,
    ) -> int:
        item = interface.property(prop)
        if not item.writable:
            raise LocalProtocolError(f"{interface.name}.{item.name} is not writable")
        values = outgoing_values(item.params, (value,), f"{item.name} value")
        pdu = SetCommand(item.item_id, Binding(interface.iid, object_id), values)
        return self._request(peer, pdu, _Outgoing(RequestKind.SET, interface, item), now, identity)

    def invoke(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        method: str | int,
        arguments: Sequence[Any],
        now: float,
        identity: OID | None,
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
        minimum_delta: int,
        identity: OID | None,
    ) -> int:
        item = interface.item(item_key)
        if isinstance(item, Property):
            if not item.observable:
                raise LocalProtocolError(f"{interface.name}.{item.name} is not observable")
            kind = RequestKind.SUBSCRIBE
        elif isinstance(item, EventDef):
            kind = RequestKind.REGISTER
        else:
            raise LocalProtocolError(f"{interface.name}.{item.name} is neither property nor event")
        if len(self._subscriptions) >= self._context.config.max_subscriptions:
            raise LocalProtocolError("max_subscriptions reached")
        target = _SubscriptionTarget(
            peer=peer,
            binding=Binding(interface.iid, object_key(object_id)),
            interface=interface,
            item=item,
            kind=kind,
            minimum_delta=minimum_delta,
            identity=self._context.node.expected_identity(peer, identity),
        )
        # The subscription is known by the request id of its first command.
        sub_id = self._send_subscribe(target, now, None)
        self._subscriptions[sub_id] = _Subscription(sub_id, target)
        self._by_source.setdefault(_source_of(target), {})[sub_id] = None
        return sub_id

    def unsubscribe(self, subscription_id: int) -> None:
        sub = self._subscriptions.get(subscription_id)
        if sub is not None:
            self._step(sub, SubscriptionInput.CANCELLED)
            self._context.events.append(SubscriptionEnded(subscription_id, None))

    def ping(self, peer: Address, now: float) -> int:
        request_id = self._context.node.ping(peer, now)
        self._outgoing[request_id] = _Outgoing(RequestKind.PING, None, None)
        return request_id

    def open_session(self, peer: Address, now: float) -> int:
        request_id = self._context.node.open_session(peer, now)
        self._outgoing[request_id] = _Outgoing(RequestKind.OPEN, None, None)
        return request_id

    def forget(self, request_id: int) -> None:
        """Forget a request the node answered itself (a DSP Open) or one
        abandoned (:meth:`~dofpy.oap.core.OapCore.cancel`)."""
        self._outgoing.pop(request_id, None)

    # -- what comes back -----------------------------------------------------------------

    def on_notification(
        self,
        peer: Address,
        pdu: ChangeCommand | SignalCommand,
        identity: OID | None,
        permissions: PermissionSet | None,
    ) -> None:
        counters = self._context.counters
        kind = RequestKind.SUBSCRIBE if isinstance(pdu, ChangeCommand) else RequestKind.REGISTER
        binding = pdu.target if isinstance(pdu.target, Binding) else None
        refused = False
        candidates: dict[int, None] = {}
        if binding is not None:
            source = (peer, kind, pdu.item_id, binding.interface, object_key(binding.object_id))
            candidates = self._by_source.get(source, candidates)
        for sub_id in candidates:
            sub = self._subscriptions[sub_id]
            target = sub.target
            if target.identity is not None and not (
                identity == target.identity and _may_provide(permissions, target.binding)
            ):
                # Not from the identity this subscription is bound to (or
                # one that may not provide it): not its notification.
                refused = True
                continue
            item = target.item
            params = item.params if isinstance(item, Property) else item.values
            try:
                values = incoming_values_untrusted(params, pdu.values, item.name)
            except BadPacket:
                counters.bad_oap_payloads += 1
                return
            missed = 0
            if sub.state.synced:
                gap = (pdu.sequence - sub.last_sequence) & 0xFFFF
                if gap == 0 or gap > 0x8000:
                    return  # a duplicate or an old copy
                missed = gap - 1
            self._step(sub, SubscriptionInput.NOTIFIED)
            sub.last_sequence = pdu.sequence
            counters.notifications_received += 1
            counters.notifications_missed += missed
            self._context.events.append(Notification(sub.sub_id, values, pdu.sequence, missed))
            return
        if refused:
            counters.answers_not_permitted += 1
        else:
            counters.notifications_unmatched += 1

    def on_response(self, event: ResponseReceived) -> None:
        record = self._outgoing.pop(event.request_id, None)
        if record is None:
            return
        events = self._context.events
        if record.kind is RequestKind.PING:
            events.append(RequestCompleted(event.request_id, ()))
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
            self._context.counters.answers_not_permitted += 1
            self.on_failure(
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
            self._context.counters.bad_oap_payloads += 1
            self.on_failure(event.request_id, exc, record)
            return
        if isinstance(pdu, ExceptionResponse):
            self.on_failure(event.request_id, _exception_error(pdu, record), record)
            return
        if not isinstance(pdu, _EXPECTED_ANSWERS[record.kind]):
            self.on_failure(
                event.request_id,
                BadPacket(f"{type(pdu).__name__} in answer to a {record.kind.value}"),
                record,
            )
            return
        values: tuple[Any, ...] = ()
        if isinstance(pdu, GetResponse | InvokeResponse):
            item = record.item
            params = (
                (item.params if isinstance(item, Property) else item.results)
                if isinstance(item, Property | Method)
                else ()
            )
            try:
                values = incoming_values_untrusted(
                    params, pdu.values, f"response of {item.name if item else ''}"
                )
            except BadPacket as exc:
                self.on_failure(event.request_id, exc, record)
                return
        if record.subscription is not None:
            sub = self._subscriptions.get(record.subscription)
            if sub is None:
                return  # ended while this (re)subscribe was on its way
            synced_before = sub.state.synced
            if isinstance(pdu, RegisterResponse):
                outcome = self._step(sub, SubscriptionInput.ANSWERED_WITH_SEQUENCE)
                if not synced_before:
                    sub.last_sequence = pdu.sequence
            else:
                outcome = self._step(sub, SubscriptionInput.ANSWERED)
            if outcome is SubscriptionOutcome.CONFIRM:
                events.append(RequestCompleted(sub.sub_id, ()))
            return
        events.append(RequestCompleted(event.request_id, values))

    def on_failure(self, request_id: int, error: DofError, record: _Outgoing | None = None) -> None:
        """Our request ``request_id`` failed (its record already taken, or not)."""
        record = record or self._outgoing.pop(request_id, None)
        if record is None:
            return
        events = self._context.events
        if record.subscription is not None:
            sub = self._subscriptions.get(record.subscription)
            if sub is not None:
                if self._step(sub, SubscriptionInput.FAILED) is SubscriptionOutcome.END:
                    events.append(SubscriptionEnded(sub.sub_id, error))
                else:
                    events.append(OapRequestFailed(sub.sub_id, error))
            return
        events.append(OapRequestFailed(request_id, error))

    # -- internals -----------------------------------------------------------------------

    def _step(self, sub: _Subscription, event: SubscriptionInput) -> SubscriptionOutcome:
        """Move ``sub`` on ``event`` by the table; an ended one is forgotten."""
        sub.state, outcome = subscription_step(sub.state, event)
        if sub.state is SubscriptionState.ENDED:
            del self._subscriptions[sub.sub_id]
            self._refresh.cancel(sub.sub_id)
            source = _source_of(sub.target)
            others = self._by_source[source]
            del others[sub.sub_id]
            if not others:
                del self._by_source[source]
        return outcome

    def _request(
        self,
        peer: Address,
        pdu: GetCommand | SetCommand | InvokeCommand | SubscribeCommand | RegisterCommand,
        record: _Outgoing,
        now: float,
        identity: OID | None,
    ) -> int:
        node = self._context.node
        record.identity = node.expected_identity(peer, identity)
        assert isinstance(pdu.target, Binding)  # requests name their binding in full
        record.binding = pdu.target
        request_id = node.send_command(
            peer, AppId.OAP, encode_oap(pdu), now, identity=record.identity
        )
        self._outgoing[request_id] = record
        return request_id

    def _send_subscribe(self, target: _SubscriptionTarget, now: float, sub_id: int | None) -> int:
        """Send the Subscribe or Register of a subscription (``sub_id`` None for
        the first, whose request id becomes the subscription's); returns the
        request id and schedules the next refresh."""
        pdu: SubscribeCommand | RegisterCommand
        if target.kind is RequestKind.SUBSCRIBE:
            pdu = SubscribeCommand(target.item.item_id, target.binding, target.minimum_delta)
        else:
            pdu = RegisterCommand(target.item.item_id, target.binding)
        record = _Outgoing(target.kind, target.interface, target.item, subscription=sub_id)
        request_id = self._request(target.peer, pdu, record, now, target.identity)
        if sub_id is None:
            record.subscription = sub_id = request_id
        self._refresh.schedule(sub_id, now + self._context.config.subscription_refresh)
        return request_id


def _exception_error(pdu: ExceptionResponse, record: _Outgoing) -> DofError:
    """The error an OAP Exception answer stands for: a declared exception of
    the interface asked, or a protocol error."""
    if not pdu.internal and record.interface is not None:
        try:
            definition = record.interface.exception(pdu.code)
        except (KeyError, TypeError):
            return ProviderException(ExceptionDef(pdu.code, f"exception {pdu.code}"), pdu.values)
        try:
            values = incoming_values_untrusted(definition.values, pdu.values, definition.name)
        except BadPacket as exc:
            return exc
        return ProviderException(definition, values)
    message = pdu.values[0] if pdu.values and isinstance(pdu.values[0], str) else ""
    return OapError(pdu.code, message)
