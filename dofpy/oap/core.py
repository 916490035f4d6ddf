"""The sans-IO OAP core: objects with providers and requestors on a DPS node.

:class:`OapCore` wraps a :class:`dofpy.session.Node` and implements the
:class:`dofpy._core.DatagramCore` protocol by delegation. It is a façade over
four parts, one module each:

- :mod:`dofpy.oap.gate`: every incoming command passes it first (one
  permission check for the decoded and the raw path; interception for
  protocols built on OAP, such as the block transfer);
- :mod:`dofpy.oap.provider`: the provided objects, the checked requests
  handed to the application as :class:`IncomingRequest` (answered with
  :meth:`OapCore.respond` or :meth:`OapCore.respond_error`), subscribers and
  registrants, and the Change and Signal commands sent to them;
- :mod:`dofpy.oap.requestor`: ``get``/``set``/``invoke``/``subscribe`` as OAP
  commands and their answers as :class:`RequestCompleted`,
  :class:`OapRequestFailed` and :class:`Notification` events; subscriptions
  follow the table of :mod:`dofpy.oap.subscription`;
- :mod:`dofpy.oap.events`: what the core tells its application.

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

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from dofpy._core import Address
from dofpy.errors import BadPacket
from dofpy.oap.config import OapConfig
from dofpy.oap.context import OapContext, OapCounters
from dofpy.oap.errors import OapError, ProviderException
from dofpy.oap.events import (
    AccessDenied,
    AuthenticatorRequested,
    CommandReceived,
    IncomingHandshakeFailed,
    IncomingRequest,
    Notification,
    OapEvent,
    OapRequestFailed,
    OapStatistics,
    PeerClosed,
    PlaintextUsed,
    ProviderAnnounced,
    RequestCompleted,
    RequestKind,
    SecureSessionEnded,
    SecureSessionEstablished,
    SessionOpened,
    SubscriptionEnded,
)
from dofpy.oap.gate import DeniedHandler, Gate, Interceptor, RawInterceptor
from dofpy.oap.interface import Interface, outgoing_values
from dofpy.oap.provider import ProviderSide
from dofpy.oap.requestor import RequestorSide
from dofpy.session.node import Node, ResponseReceived
from dofpy.session.node import RequestFailed as NodeRequestFailed
from dofpy.wire.dpp import AppId
from dofpy.wire.oap import ChangeCommand, ProvideCommand, SignalCommand
from dofpy.wire.oid import IID, OID

__all__ = [
    "AccessDenied",
    "AuthenticatorRequested",
    "CommandReceived",
    "DeniedHandler",
    "IncomingHandshakeFailed",
    "IncomingRequest",
    "Interceptor",
    "Notification",
    "OapConfig",
    "OapCore",
    "OapEvent",
    "OapRequestFailed",
    "OapStatistics",
    "PeerClosed",
    "PlaintextUsed",
    "ProviderAnnounced",
    "RawInterceptor",
    "RequestCompleted",
    "RequestKind",
    "SecureSessionEnded",
    "SecureSessionEstablished",
    "SessionOpened",
    "SubscriptionEnded",
]


class OapCore:
    """A sans-IO OAP node: providers and requestors. A ``DatagramCore``."""

    def __init__(self, config: OapConfig | None = None) -> None:
        self.config = config or OapConfig()
        self.node = Node(self.config.node)
        self._events: deque[OapEvent] = deque()
        self._context = OapContext(self.node, self.config, self._events, OapCounters())
        self._provider = ProviderSide(self._context)
        self._requestor = RequestorSide(self._context)
        self._gate = Gate(self._context, self._provider.resolve, self._provider.admits_subscriber)

    # -- DatagramCore --------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.node.receive_datagram(data, addr, now)
        self._drain(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self.node.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        # Called after every datagram: no lists, one comparison per part.
        deadline = self.node.get_timer()
        requestor = self._requestor.next_deadline()
        if requestor is not None and (deadline is None or requestor < deadline):
            deadline = requestor
        provider = self._provider.next_deadline()
        if provider is not None and (deadline is None or provider < deadline):
            deadline = provider
        return deadline

    def handle_timer(self, now: float) -> None:
        self.node.handle_timer(now)
        self._provider.expire(now)
        self._requestor.refresh(now)
        self._drain(now)

    def next_event(self) -> OapEvent | None:
        return self._events.popleft() if self._events else None

    def statistics(self) -> OapStatistics:
        return OapStatistics(
            node=self.node.statistics(),
            subscribers=self._provider.subscriber_count,
            subscriptions=self._requestor.subscription_count,
            requests_awaited=self._requestor.awaited_count,
            requests_in_progress=self._provider.incoming_count,
            request_bytes_in_progress=self._provider.incoming_bytes,
            **asdict(self._context.counters),
        )

    # -- provider side ----------------------------------------------------------------

    def provide(
        self,
        object_id: OID,
        interface: Interface,
        *,
        subscribers: Iterable[OID] | None = None,
    ) -> None:
        """Provide ``interface`` on ``object_id`` here (commands to it are accepted).

        With ``subscribers``, only those authenticated identities may
        Subscribe or Register to it: one from any other identity, or from a
        session with none (in the clear), is refused with ``NOT_FOUND``, as
        to an object not provided (counted in ``subscribers_refused``,
        reported as :class:`AccessDenied`), whatever its permissions allow
        and whichever path it arrives by. Providing again replaces the
        restriction (and, when it changes, drops the subscribers: they are
        admitted afresh at their next Subscribe); :meth:`withdraw` ends it.
        """
        self._provider.provide(object_id, interface, subscribers)

    def withdraw(self, object_id: OID, interface: Interface) -> None:
        """Stop providing; its subscribers are dropped."""
        self._provider.withdraw(object_id, interface)

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
        self._gate.intercept(interface, handler, raw, on_denied)

    def announce(self, peer: Address, object_id: OID, interface: Interface, now: float) -> int:
        """Send a Provide to ``peer`` for a binding we provide; returns the alias."""
        return self._provider.announce(peer, object_id, interface, now)

    def respond(self, request: IncomingRequest, values: Sequence[Any], now: float) -> None:
        """Answer an :class:`IncomingRequest` successfully.

        Values the item's declaration does not allow, or a response longer than
        the node's ``max_datagram`` once framed (and sealed), are not sent: the
        requestor gets an internal OAP Exception saying why, and this raises
        ``LocalProtocolError``.
        """
        self._provider.respond(request, values, now)

    def respond_error(
        self, request: IncomingRequest, error: ProviderException | OapError, now: float
    ) -> None:
        """Refuse an :class:`IncomingRequest` with a declared or protocol exception."""
        self._provider.respond_error(request, error, now)

    def notify_change(
        self, object_id: OID, interface: Interface, prop: str | int, value: Any, now: float
    ) -> int:
        """Send the new value of an observable property to its subscribers."""
        item = interface.property(prop)
        values = outgoing_values(item.params, (value,), f"{item.name} value")
        return self._provider.notify(object_id, interface, item, RequestKind.SUBSCRIBE, values, now)

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
        return self._provider.notify(object_id, interface, item, RequestKind.REGISTER, wire, now)

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
        (else :class:`OapRequestFailed` with
        :class:`~dofpy.errors.PeerIdentityMismatch` or
        :class:`~dofpy.errors.ProviderNotPermitted`); the same holds for
        :meth:`set`, :meth:`invoke` and :meth:`subscribe`."""
        return self._requestor.get(peer, object_id, interface, prop, now, identity)

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
        return self._requestor.set(peer, object_id, interface, prop, value, now, identity)

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
        return self._requestor.invoke(peer, object_id, interface, method, arguments, now, identity)

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
        return self._requestor.subscribe(
            peer, object_id, interface, item_key, now, minimum_delta, identity
        )

    def unsubscribe(self, subscription_id: int) -> None:
        """Stop a subscription here; the provider lets it lapse at its lease end."""
        self._requestor.unsubscribe(subscription_id)

    def ping(self, peer: Address, now: float) -> int:
        return self._requestor.ping(peer, now)

    def cancel(self, request_id: int) -> bool:
        """Abandon our request ``request_id`` (a get, set, invoke or ping):
        it is no longer retransmitted, its answer should one arrive is
        dropped (counted as unmatched) and its record is forgotten, so that
        no event follows for it. True if it was still pending."""
        self._requestor.forget(request_id)
        return self.node.cancel(request_id)

    def open_session(self, peer: Address, now: float) -> int:
        """Send a DSP Open; :class:`SessionOpened` (or :class:`OapRequestFailed`) follows."""
        return self._requestor.open_session(peer, now)

    # -- the node's events -------------------------------------------------------------

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
                        self._context.counters.bad_oap_payloads += 1
                case ResponseReceived():
                    self._requestor.on_response(event)
                case NodeRequestFailed():
                    self._requestor.on_failure(event.request_id, event.error)
                case SessionOpened():
                    self._requestor.forget(event.request_id)
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

    def _on_command(self, event: CommandReceived, now: float) -> None:
        pdu = self._gate.admit(event, now)
        if pdu is None:
            return  # refused, or taken by an interceptor
        if isinstance(pdu, ChangeCommand | SignalCommand):
            self._requestor.on_notification(event.peer, pdu, event.identity, event.permissions)
        elif isinstance(pdu, ProvideCommand):
            self._events.append(ProviderAnnounced(event.peer, pdu.binding, pdu.alias))
        else:
            self._provider.on_command(event, pdu, now)
