"""What an OAP core tells its application: the events, the kinds of request
and the statistics.

The node's own events (sessions, peers, handshakes, other applications'
commands) are passed up unchanged and are re-exported here so that one
``match`` over :data:`OapEvent` needs one import.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from dofpy._core import Address
from dofpy.errors import DofError
from dofpy.oap.interface import Interface, Item
from dofpy.session.node import (
    AuthenticatorRequested,
    CommandReceived,
    IncomingHandshakeFailed,
    NodeStatistics,
    PeerClosed,
    PlaintextUsed,
    SecureSessionEnded,
    SecureSessionEstablished,
    SessionOpened,
)
from dofpy.wire.oap import Alias, Binding
from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import Action, PermissionSet

__all__ = [
    "AccessDenied",
    "AuthenticatorRequested",
    "CommandReceived",
    "IncomingHandshakeFailed",
    "IncomingRequest",
    "Notification",
    "OapEvent",
    "OapRequestFailed",
    "OapStatistics",
    "PeerClosed",
    "PlaintextUsed",
    "ProviderAnnounced",
    "RequestCompleted",
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
class OapRequestFailed:
    """Our request failed: ``error`` is an :class:`OapError`,
    :class:`ProviderException`, timeout or resource error.

    (Named apart from the node's :class:`dofpy.session.node.RequestFailed`,
    which this core turns into this event.)
    """

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
    """A request was refused for want of permission, or a Subscribe or
    Register for want of the identity the object's provider admits as a
    subscriber (for the operator's log)."""

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
    | OapRequestFailed
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
    requests_busy: int
    notifications_sent: int
    notifications_received: int
    notifications_unmatched: int
    notifications_missed: int
    permission_denied: int
    answers_not_permitted: int
    subscribers_refused: int
    subscribers: int
    subscriptions: int
    requests_awaited: int
    """Our requests whose answers are still awaited (each one a record kept
    until its answer, its failure or its cancellation)."""
    requests_in_progress: int
    """Requests to our objects received and not yet answered."""
    request_bytes_in_progress: int
    """Their OAP payloads' bytes (bounded by ``max_incoming_bytes``)."""
