"""The async API: an OAP node on a trio UDP endpoint.

:func:`~dofpy.trio.open_node` (:mod:`dofpy.trio._open`) binds a UDP socket,
runs an :class:`~dofpy.oap.core.OapCore` on it and gives back a
:class:`DofNode` whose methods are awaitable: ``await node.get(peer, oid,
interface, "temp")``. Providers are plain objects (see
:class:`~dofpy.trio.Provider`); each incoming request runs as its own task,
and the core bounds how many may be in progress.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import trio

from dofpy._core import Address
from dofpy.errors import (
    BadPacket,
    ClosedResourceError,
    DofError,
    PeerIdentityMismatch,
    RemoteProtocolError,
    SecureSessionFailed,
)
from dofpy.oap.core import (
    AccessDenied,
    AuthenticatorRequested,
    CommandReceived,
    IncomingHandshakeFailed,
    IncomingRequest,
    Notification,
    OapCore,
    OapRequestFailed,
    OapStatistics,
    PeerClosed,
    PlaintextUsed,
    ProviderAnnounced,
    RequestCompleted,
    SecureSessionEnded,
    SecureSessionEstablished,
    SessionOpened,
    SubscriptionEnded,
)
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.oap.interface import Interface
from dofpy.security.keylog import format_keylog_line
from dofpy.trio._endpoint import UdpEndpoint
from dofpy.trio._endpoint_config import EndpointStatistics
from dofpy.trio._provider import Provider, current_request_var
from dofpy.wire.dpp import AppId
from dofpy.wire.oid import OID

__all__ = ["DofNode", "DofNodeStatistics", "PendingAnswer", "Subscription"]

logger = logging.getLogger("dofpy.node")


ApplicationHandler = Callable[[CommandReceived | AuthenticatorRequested], None]
"""Takes the commands of one non-OAP application (see
:meth:`DofNode.set_application_handler`)."""


def _remote_error(error: DofError) -> DofError:
    """What an awaiting requestor sees: a response that did not decode or did
    not fit its interface is the peer breaking the protocol
    (:class:`~dofpy.errors.RemoteProtocolError`, the ``BadPacket`` its cause),
    not a packet of ours."""
    if isinstance(error, BadPacket):
        remote = RemoteProtocolError(f"malformed response: {error}")
        remote.__cause__ = error
        return remote
    return error


@dataclass(frozen=True, slots=True)
class DofNodeStatistics:
    """A node's counters: the UDP endpoint's and the OAP core's."""

    endpoint: EndpointStatistics
    oap: OapStatistics
    notifications_dropped: int
    handler_errors: int


class Subscription:
    """An active subscription: iterate it for :class:`Notification` values."""

    def __init__(self, node: DofNode, subscription_id: int, buffer: int) -> None:
        self.id = subscription_id
        self._node = node
        self._send, self._receive = trio.open_memory_channel[Notification](buffer)
        self.dropped = 0

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Notification:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def receive(self) -> Notification:
        """The next notification; ``trio.EndOfChannel`` once the subscription ended."""
        return await self._receive.receive()


class _Waiter:
    __slots__ = ("done", "error", "values")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.values: tuple[Any, ...] = ()
        self.error: DofError | None = None


class PendingAnswer:
    """A request sent whose answer is awaited later
    (:meth:`DofNode.start_invoke`): await :meth:`result` once, or
    :meth:`cancel` it.

    Until one of them, the node keeps the request (retransmitted as any
    other, until its answer or its timeout), so whoever starts one must end
    it: ``try``/``finally: pending.cancel()``.
    """

    __slots__ = ("_awaited", "_node", "_waiter", "request_id")

    def __init__(self, node: DofNode, request_id: int) -> None:
        self.request_id = request_id
        self._node = node
        self._waiter = _Waiter()
        self._awaited = False
        node._waiters[request_id] = self._waiter

    @property
    def done(self) -> bool:
        """Whether the answer (or the request's failure) has arrived, or it
        was cancelled: :meth:`result` would not wait."""
        return self._waiter.done.is_set()

    async def result(self) -> tuple[Any, ...]:
        """The answer's values; raises what the request failed with
        (:class:`~dofpy.oap.errors.OapError`, a provider's
        :class:`~dofpy.oap.errors.ProviderException`, a timeout...), and
        ``ClosedResourceError`` once cancelled. Awaited once: a second call
        raises ``RuntimeError``. Cancelled while waiting (trio), the request
        is abandoned as by :meth:`cancel`."""
        if self._awaited:
            raise RuntimeError(f"the answer of request {self.request_id} was awaited already")
        self._awaited = True
        waiter = self._waiter
        try:
            await waiter.done.wait()
        finally:
            self.cancel()
        if waiter.error is not None:
            raise waiter.error
        return waiter.values

    def cancel(self) -> None:
        """Abandon the request: the node stops retransmitting it and drops
        its answer should it arrive later (counted as unmatched). Idempotent;
        nothing once the answer has arrived."""
        waiter = self._waiter
        node = self._node
        # Only our own waiter: once answered, the request id may be another's.
        if node._waiters.get(self.request_id) is waiter:
            del node._waiters[self.request_id]
            node.core.cancel(self.request_id)
        if not waiter.done.is_set():
            waiter.error = ClosedResourceError(f"request {self.request_id} was cancelled")
            waiter.done.set()


class DofNode:
    """An OAP node on a UDP socket: provide objects, request from peers.

    Create it with :func:`open_node`. All methods must be called from the trio
    run that opened it. Its endpoint hands it every input (its ``on_input``
    hook is :meth:`dispatch`); a protocol driving the endpoint around the OAP
    core (the block transfer) sets its own hook, which calls :meth:`dispatch`.
    """

    def __init__(
        self,
        core: OapCore,
        endpoint: UdpEndpoint,
        nursery: trio.Nursery,
        notification_buffer: int,
        keylog: TextIO | None = None,
    ) -> None:
        self.core = core
        self._keylog = keylog
        self._secure_waiters: dict[Address, list[_Waiter]] = {}
        self._nursery = nursery
        self._endpoint = endpoint
        self._waiters: dict[int, _Waiter] = {}
        self._subscriptions: dict[int, Subscription] = {}
        self._handlers: dict[tuple[OID, bytes], Provider] = {}
        self._notification_buffer = notification_buffer
        self._notifications_dropped = 0
        self._handler_errors = 0
        self._announcements: list[ProviderAnnounced] = []
        self._application_handlers: dict[int, ApplicationHandler] = {}
        self._handshake_failure_handler: Callable[[IncomingHandshakeFailed], None] | None = None
        self._closed = False

    # -- plumbing ------------------------------------------------------------------

    @property
    def local_address(self) -> Address:
        return self._endpoint.local_address

    def statistics(self) -> DofNodeStatistics:
        return DofNodeStatistics(
            endpoint=self._endpoint.statistics(),
            oap=self.core.statistics(),
            notifications_dropped=self._notifications_dropped,
            handler_errors=self._handler_errors,
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def wakeup(self) -> None:
        """Send what the core has to send now (after calling into ``core``)."""
        self._wakeup()

    def _wakeup(self) -> None:
        if self._closed:
            raise ClosedResourceError("the node is closed")
        self._endpoint.wakeup()

    def _shut(self) -> None:
        self._closed = True
        for waiter in self._waiters.values():
            waiter.error = ClosedResourceError("the node was closed")
            waiter.done.set()
        for subscription in self._subscriptions.values():
            subscription._send.close()

    def dispatch(self) -> None:
        """Hand the OAP core's events to waiting tasks and providers (the
        endpoint's ``on_input`` hook: after every input)."""
        self._dispatch()

    def _dispatch(self) -> None:
        while (event := self.core.next_event()) is not None:
            match event:
                case RequestCompleted() | SessionOpened():
                    waiter = self._waiters.pop(event.request_id, None)
                    if waiter is None:
                        subscription = None
                        if isinstance(event, RequestCompleted):
                            subscription = self._subscriptions.get(event.request_id)
                        if subscription is None:
                            logger.debug("completion of a request nobody awaits: %r", event)
                        continue
                    if isinstance(event, RequestCompleted):
                        waiter.values = event.values
                    waiter.done.set()
                case OapRequestFailed():
                    waiter = self._waiters.pop(event.request_id, None)
                    if waiter is not None:
                        waiter.error = _remote_error(event.error)
                        waiter.done.set()
                    self._end_subscription(event.request_id)
                case Notification():
                    subscription = self._subscriptions.get(event.subscription_id)
                    if subscription is None:
                        continue
                    try:
                        subscription._send.send_nowait(event)
                    except trio.WouldBlock:
                        subscription.dropped += 1
                        self._notifications_dropped += 1
                case SubscriptionEnded():
                    self._end_subscription(event.subscription_id)
                case IncomingRequest():
                    self._nursery.start_soon(self._serve, event)
                case ProviderAnnounced():
                    self._announcements.append(event)
                    del self._announcements[:-256]
                case PeerClosed():
                    logger.info("session with %s closed (by peer: %s)", event.peer, event.by_peer)
                case SecureSessionEstablished():
                    self._on_secure_session(event)
                case PlaintextUsed():
                    logger.warning(
                        "application packets %s %s in the clear (plaintext=ALLOW)",
                        "sent to" if event.sent else "accepted from",
                        event.peer,
                    )
                case SecureSessionEnded():
                    if isinstance(event.error, SecureSessionFailed | PeerIdentityMismatch):
                        # A handshake of ours failed: its requests fail with this.
                        logger.warning("%s", event.error)
                    else:
                        logger.info("secure session with %s ended: %s", event.peer, event.error)
                    for waiter in self._secure_waiters.pop(event.peer, []):
                        waiter.error = event.error
                        waiter.done.set()
                case IncomingHandshakeFailed():
                    # Anyone whose address answers can start (and fail) one: INFO.
                    logger.info("%s", event.error)
                    handler = self._handshake_failure_handler
                    if handler is not None:
                        try:
                            handler(event)
                        except Exception:
                            self._handler_errors += 1
                            logger.exception("handshake failure handler failed on %r", event)
                case CommandReceived() | AuthenticatorRequested():
                    app_id = event.app_id if isinstance(event, CommandReceived) else AppId.TRP
                    application = self._application_handlers.get(app_id)
                    if application is None:
                        logger.debug("no handler for application %#x: %r dropped", app_id, event)
                        continue
                    try:
                        application(event)
                    except Exception:
                        self._handler_errors += 1
                        logger.exception("handler of application %#x failed on %r", app_id, event)
                case AccessDenied():
                    logger.warning(
                        "refused %s by %s (%s) on %s %s",
                        event.action.letters(),
                        event.identity,
                        event.peer,
                        event.object_id,
                        event.interface,
                    )

    def set_application_handler(self, app_id: int, handler: ApplicationHandler | None) -> None:
        """Hand the commands of application ``app_id`` (one the node serves
        besides OAP: ``NodeConfig.applications``) to ``handler`` as
        :class:`~dofpy.session.node.CommandReceived`; ``None`` removes it.

        The handler of ``AppId.TRP`` also takes the
        :class:`~dofpy.session.events.AuthenticatorRequested` of a node with
        ``defer_authenticator`` (both are TRP Request Sessions to decide). It runs
        in the receive path, so it must not block: start a task (bounded by
        the application) that answers with ``core.node.send_response`` or
        ``core.node.answer_authenticator``, then :meth:`wakeup`. What it raises is
        logged and counted (``handler_errors``). Commands of an application
        without a handler are dropped (their requestor times out).
        """
        if handler is None:
            self._application_handlers.pop(app_id, None)
        else:
            self._application_handlers[app_id] = handler

    def set_handshake_failure_handler(
        self, handler: Callable[[IncomingHandshakeFailed], None] | None
    ) -> None:
        """Hand every :class:`~dofpy.session.events.IncomingHandshakeFailed`
        (a handshake another node started with this one failed; its
        ``error.cause`` says why) to ``handler``, besides the INFO log line;
        ``None`` removes it. It runs in the receive path: it must not block
        (an Authenticator queues an audit line). What it raises is logged and
        counted (``handler_errors``)."""
        self._handshake_failure_handler = handler

    def _on_secure_session(self, event: SecureSessionEstablished) -> None:
        logger.info(
            "secure session %d with %s (%s) established",
            event.ssid,
            event.peer,
            event.peer_identity,
        )
        if self._keylog is not None:
            security = self.core.node.config.security
            me = None if security is None else security.identity
            initiator, responder = (
                (me, event.peer_identity) if event.initiator else (event.peer_identity, me)
            )
            self._keylog.write(
                format_keylog_line(event.session_key, initiator, responder, event.ssid)
            )
            self._keylog.flush()
        for waiter in self._secure_waiters.pop(event.peer, []):
            waiter.done.set()

    def _end_subscription(self, subscription_id: int) -> None:
        subscription = self._subscriptions.pop(subscription_id, None)
        if subscription is not None:
            subscription._send.close()

    async def _serve(self, request: IncomingRequest) -> None:
        key = (request.object_id.without_attributes(), request.interface.iid.encode())
        handler = self._handlers.get(key)
        error: ProviderException | OapError | None = None
        values: Sequence[Any] = ()
        try:
            if handler is None:
                raise OapError(OapErrorCode.NOT_FOUND, "provider withdrawn")
            token = current_request_var.set(request)
            try:
                values = await handler.handle(request)
            finally:
                current_request_var.reset(token)
        except (ProviderException, OapError) as exc:
            error = exc
        except Exception:
            self._handler_errors += 1
            logger.exception("provider %r failed on %s", handler, request.item.name)
            error = OapError(OapErrorCode.INTERNAL, "provider failed")
        if self._closed:
            return
        try:
            if error is None:
                self.core.respond(request, values, trio.current_time())
            else:
                self.core.respond_error(request, error, trio.current_time())
        except DofError:
            # The handler's answer did not fit its interface: the core has sent
            # an INTERNAL exception instead; the node keeps serving.
            self._handler_errors += 1
            logger.exception("provider %r answered %s wrongly", handler, request.item.name)
        self._wakeup()

    def _pending(self, request_id: int) -> PendingAnswer:
        """Await ``request_id``'s answer (the core has just queued it), and
        send it now."""
        pending = PendingAnswer(self, request_id)
        try:
            self._wakeup()
        except BaseException:
            pending.cancel()
            raise
        return pending

    async def _await(self, request_id: int) -> tuple[Any, ...]:
        return await self._pending(request_id).result()

    # -- provider side -------------------------------------------------------------

    def provide(
        self,
        object_id: OID,
        interface: Interface,
        provider: Provider,
        *,
        subscribers: Iterable[OID] | None = None,
    ) -> None:
        """Serve ``interface`` on ``object_id`` with ``provider``.

        With ``subscribers``, only those authenticated identities may
        Subscribe or Register to it (any other is refused ``NOT_FOUND``: see
        :meth:`dofpy.oap.core.OapCore.provide`).

        Raises ``TypeError`` at once, naming them, when ``provider`` lacks
        handlers the interface needs (see :meth:`Provider.missing_handlers`),
        rather than refusing those requests one by one later.
        """
        missing = provider.missing_handlers(interface)
        if missing:
            raise TypeError(
                f"{type(provider).__name__} cannot provide {interface.name}: "
                f"it has no {', '.join(missing)}"
            )
        self.core.provide(object_id, interface, subscribers=subscribers)
        self._handlers[(object_id.without_attributes(), interface.iid.encode())] = provider

    def withdraw(self, object_id: OID, interface: Interface) -> None:
        self.core.withdraw(object_id, interface)
        self._handlers.pop((object_id.without_attributes(), interface.iid.encode()), None)

    def announce(self, peer: Address, object_id: OID, interface: Interface) -> int:
        """Send a Provide for one of our bindings to ``peer``; returns the alias."""
        alias = self.core.announce(peer, object_id, interface, trio.current_time())
        self._wakeup()
        return alias

    def notify_change(self, object_id: OID, interface: Interface, prop: str, value: Any) -> int:
        """Tell subscribers of ``prop`` its new value; returns how many were told."""
        sent = self.core.notify_change(object_id, interface, prop, value, trio.current_time())
        self._wakeup()
        return sent

    def signal(self, object_id: OID, interface: Interface, event: str, *values: Any) -> int:
        """Signal ``event`` to its registrants; returns how many were signalled."""
        sent = self.core.signal(object_id, interface, event, values, trio.current_time())
        self._wakeup()
        return sent

    # -- requestor side --------------------------------------------------------------

    async def get(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        prop: str,
        *,
        identity: OID | None = None,
    ) -> Any:
        """Read a property of a remote object.

        With ``identity`` (or an entry for ``peer`` in the security
        configuration's ``peer_identities``) only a secure session with that
        authenticated identity carries the request and its answer, and only
        when the identity's granted permissions let it provide the binding:
        otherwise :class:`~dofpy.errors.PeerIdentityMismatch` (someone else
        answered the handshake) or :class:`~dofpy.errors.ProviderNotPermitted`.
        The same holds for :meth:`set`, :meth:`invoke` and :meth:`subscribe`.
        """
        now = trio.current_time()
        request_id = self.core.get(peer, object_id, interface, prop, now, identity=identity)
        return (await self._await(request_id))[0]

    async def set(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        prop: str,
        value: Any,
        *,
        identity: OID | None = None,
    ) -> None:
        """Write a property of a remote object (executed at most once)."""
        now = trio.current_time()
        request_id = self.core.set(peer, object_id, interface, prop, value, now, identity=identity)
        await self._await(request_id)

    async def invoke(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        method: str,
        *args: Any,
        identity: OID | None = None,
    ) -> tuple[Any, ...]:
        """Call a method of a remote object (executed at most once); its results."""
        return await self.start_invoke(
            peer, object_id, interface, method, *args, identity=identity
        ).result()

    def start_invoke(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        method: str,
        *args: Any,
        identity: OID | None = None,
    ) -> PendingAnswer:
        """Send the request of :meth:`invoke` now and await its answer later
        (:meth:`PendingAnswer.result`): the peer works on it meanwhile (a
        stream asks for its next page before it decodes the last one).
        Abandon it with :meth:`PendingAnswer.cancel`."""
        now = trio.current_time()
        request_id = self.core.invoke(
            peer, object_id, interface, method, args, now, identity=identity
        )
        return self._pending(request_id)

    async def ping(self, peer: Address) -> float:
        """DPP ping; returns the round-trip time in seconds."""
        start = trio.current_time()
        await self._await(self.core.ping(peer, start))
        return trio.current_time() - start

    async def secure_session(self, peer: Address) -> OID:
        """Establish a secure session with ``peer`` (TEP, then AES-256-CCM) and
        return its authenticated identity. Requests start one anyway when the
        node requires security; this makes the handshake explicit."""
        identity = self.core.node.peer_identity(peer)
        if identity is not None:
            return identity
        waiter = _Waiter()
        self._secure_waiters.setdefault(peer, []).append(waiter)
        self.core.node.secure_session(peer, trio.current_time())
        self._wakeup()
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        identity = self.core.node.peer_identity(peer)
        assert identity is not None
        return identity

    async def open_session(self, peer: Address) -> None:
        """DSP Open with ``peer``."""
        await self._await(self.core.open_session(peer, trio.current_time()))

    @asynccontextmanager
    async def subscribe(
        self,
        peer: Address,
        object_id: OID,
        interface: Interface,
        item: str,
        *,
        identity: OID | None = None,
    ) -> AsyncIterator[Subscription]:
        """Subscribe to an observable property or register for an event.

        ``async with node.subscribe(...) as sub: async for n in sub: ...``; the
        subscription is confirmed before the block starts and ends with it.
        With ``identity`` (see :meth:`get`) only notifications from that
        identity are delivered.
        """
        sub_id = self.core.subscribe(
            peer, object_id, interface, item, trio.current_time(), identity=identity
        )
        subscription = Subscription(self, sub_id, self._notification_buffer)
        self._subscriptions[sub_id] = subscription
        try:
            await self._await(sub_id)
            yield subscription
        finally:
            self._subscriptions.pop(sub_id, None)
            self.core.unsubscribe(sub_id)
            subscription._send.close()


if TYPE_CHECKING:
    from dofpy.oap.client import RequestorNode

    def _a_node_is_a_requestor(node: DofNode) -> RequestorNode:
        # mypy checks here that Interface.client takes a DofNode.
        return node
