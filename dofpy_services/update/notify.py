"""Telling devices about their update: at once through a live subscription,
else at the device's next poll, with the jittered polling interval
(:func:`poll_interval`) so that a fleet coming back from an outage does not
check in all at once.

The offer itself is durable: a device whose row is NOTIFIED is offered the
update at every poll until it answers (the engine answers a CHECK_IN with a
NOTIFY), whichever process made the offer. A push only makes the device ask
sooner: it is one OAP Change command (a datagram, sent once), so a lost one
costs the device nothing but the wait until its next poll.

How a push reaches one device and no other: the device invokes ``watch``
on UPDATE_DEVICE in its secure session and is answered the OID of *its*
notice object, named by a keyed hash of the session's authenticated identity
under a secret of this process (:class:`NoticeObjects`); it subscribes to
``assignment`` there, and the service sends each device's assignment only to
that device's object. The object is provided for that device's identity
only (OAP's ``provide(..., subscribers=)``): a Subscribe to it from any
other session is refused ``NOT_FOUND`` by the OAP core, as a name never
handed out is, so what binds the object to the device is the session's
identity; the name's being unguessable only keeps strangers from learning
which devices watch. The object carries pushes only: every request to it is
refused.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from dofpy.oap.core import IncomingRequest
from dofpy.oap.errors import OapError, OapErrorCode
from dofpy.trio import DofNode, Provider
from dofpy.wire.oid import OID
from dofpy_services.update.device_interface import UPDATE_DEVICE, Assignment, poll_interval
from dofpy_services.update.engine import Action, ActionKind

__all__ = ["FRESH_STEPS", "NOTICE_PREFIX", "AssignmentPushes", "NoticeObjects", "poll_interval"]

NOTICE_PREFIX = b"dofpy-update-notice:"
"""The data of every notice object's OID starts so (then 24 bytes of keyed hash)."""
_TAG_BYTES = 24
FRESH_STEPS = 2
"""Steps at which a device that just watched is pushed what it has."""


class NoticeObjects:
    """Which devices watch for pushes at this process, and each one's notice
    object (sans-IO). ``secret`` (at least 16 bytes, random per process)
    keys the objects' names; at most ``max_devices`` are kept, the least
    recently watched forgotten first (its subscription then ends at its next
    refresh, and the device watches again or polls)."""

    def __init__(self, secret: bytes, *, max_devices: int = 65_536) -> None:
        if len(secret) < 16 or max_devices < 1:
            raise ValueError("a secret of at least 16 bytes and max_devices >= 1")
        self._secret = secret
        self._max = max_devices
        self._watched: OrderedDict[str, tuple[OID, OID]] = OrderedDict()
        self._fresh: dict[str, int] = {}
        """Devices that watched lately, and the steps they are still pushed
        what they have (whether or not the engine just notified them)."""

    def object_of(self, identity: OID) -> OID:
        """``identity``'s notice object (the same for the life of the secret)."""
        tag = hmac.new(self._secret, identity.encode(), hashlib.sha256).digest()[:_TAG_BYTES]
        return OID(3, NOTICE_PREFIX + tag)

    def watch(self, identity: OID) -> tuple[OID, bool, OID | None]:
        """``identity`` watches: its object, whether it is newly watched (to
        be provided), and the object of a device forgotten to make room (to
        be withdrawn), if any."""
        device = str(identity)
        known = self._watched.get(device)
        if known is not None:
            self._watched.move_to_end(device)
            return known[1], False, None
        evicted = None
        if len(self._watched) >= self._max:
            gone, (_, evicted) = self._watched.popitem(last=False)
            self._fresh.pop(gone, None)
        notices = self.object_of(identity)
        self._watched[device] = (identity, notices)
        # The device polled just before it watched; were it notified between
        # that poll and its Subscribe, the push would find no subscriber. So
        # a new watcher is pushed what it has at the next FRESH_STEPS steps
        # (until one is heard), whatever the engine did.
        self._fresh[device] = FRESH_STEPS
        return notices, True, evicted

    def watched(self, device: str) -> tuple[OID, OID] | None:
        """(identity, notice object) of a watching device, by its row's name."""
        return self._watched.get(device)

    def wanted(self, actions: Iterable[Action]) -> list[tuple[OID, OID]]:
        """The devices to push at this step (each once, in order): the
        watching devices the engine just notified, then those that watched
        lately (see :meth:`heard`); as (identity, notice object)."""
        wanted: dict[str, tuple[OID, OID]] = {}
        for action in actions:
            if action.kind != ActionKind.NOTIFY or action.device in wanted:
                continue
            found = self._watched.get(action.device)
            if found is not None:
                wanted[action.device] = found
        for device in list(self._fresh):
            self._fresh[device] -= 1
            if not self._fresh[device]:
                del self._fresh[device]
            if device not in wanted:
                wanted[device] = self._watched[device]
        return list(wanted.values())

    def heard(self, identity: OID) -> None:
        """A push reached ``identity``'s subscription: no more pushes unless
        the engine notifies it."""
        self._fresh.pop(str(identity), None)

    def __len__(self) -> int:
        return len(self._watched)


class _NoticeObject(Provider):
    """A notice object carries Change commands only."""

    async def handle(self, request: IncomingRequest) -> Sequence[Any]:
        raise OapError(OapErrorCode.NOT_SUPPORTED, "a notice object only carries pushes")


class AssignmentPushes:
    """The notice objects on ``node`` and the pushes sent to them (counted
    in ``sent``: Change commands that left; ``unheard``: pushes for a watched
    device with no subscriber at that moment)."""

    def __init__(self, node: DofNode, objects: NoticeObjects) -> None:
        self.node = node
        self.objects = objects
        self.sent = 0
        self.unheard = 0

    def watch(self, identity: OID) -> OID:
        """Provide ``identity``'s notice object (once, for ``identity``'s
        subscription only) and answer it."""
        notices, new, evicted = self.objects.watch(identity)
        if evicted is not None:
            self.node.withdraw(evicted, UPDATE_DEVICE)
        if new:
            self.node.provide(
                notices, UPDATE_DEVICE, _NoticeObject(), subscribers=frozenset({identity})
            )
        return notices

    def push(self, identity: OID, notices: OID, assignments: Sequence[Assignment]) -> int:
        """Tell the subscribers of ``notices`` (``identity``'s) its
        assignments; how many Change commands were sent."""
        if self.node.closed:
            return 0
        sent = self.node.notify_change(notices, UPDATE_DEVICE, "assignment", tuple(assignments))
        self.sent += sent
        if sent:
            self.objects.heard(identity)
        else:
            self.unheard += 1
        return sent
