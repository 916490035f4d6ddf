"""An object provided for some subscribers only (``provide(...,
subscribers=)``): trust by the session's authenticated identity, not by the
object's name being hard to guess, on the seeded simulator.

The attack: a second enrolled node, granted ``s`` on the interface like the
genuine subscriber (so the permission check lets it through) and knowing the
object's name, Subscribes and Registers there. It is refused as though the
object were not provided, on the decoded path, the raw path and the
interception path alike, with the fast paths on and off, and across a
withdraw and provide again; the genuine subscriber is admitted and notified.
"""

from __future__ import annotations

import dataclasses

import pytest

from dofpy.oap.core import (
    AccessDenied,
    Notification,
    OapConfig,
    OapCore,
    OapEvent,
    OapRequestFailed,
    RequestCompleted,
    SubscriptionEnded,
)
from dofpy.oap.errors import OapError, OapErrorCode
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.testing.secure import (
    CLIENT,
    CLIENT_ID,
    PROVIDER,
    PROVIDER_ID,
    SecureDomain,
    thermostat_grant,
)
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action

STRANGER_ID = OID(3, b"stranger@example.org")
STRANGER = ("10.1.0.3", 40001)
NOT_PROVIDED = OID(3, b"not-provided@example.org")


class World:
    """A secure THERMOSTAT domain: a provider, the genuine subscriber
    (CLIENT_ID) and a stranger granted the very same (``rwxs``)."""

    def __init__(self, *, fast_paths: bool = True, seed: int = 1) -> None:
        self.domain = SecureDomain(seed=seed)
        self.domain.local.enrol(STRANGER_ID, thermostat_grant("rwxs"))
        self.net = self.domain.net
        node = self.domain.local.node_config(PROVIDER_ID)
        self.provider = OapCore(OapConfig(node=dataclasses.replace(node, fast_paths=fast_paths)))
        self.net.add(self.provider, PROVIDER)
        self.client = self._requestor(CLIENT, CLIENT_ID, fast_paths)
        self.stranger = self._requestor(STRANGER, STRANGER_ID, fast_paths)
        self.events: dict[int, list[OapEvent]] = {
            id(core): [] for core in (self.provider, self.client, self.stranger)
        }

    def _requestor(self, address: tuple[str, int], identity: OID, fast: bool) -> OapCore:
        node = self.domain.local.node_config(identity, asks=thermostat_grant("rwxs"))
        core = OapCore(OapConfig(node=dataclasses.replace(node, fast_paths=fast)))
        self.net.add(core, address)
        return core

    def of(self, core: OapCore) -> list[OapEvent]:
        return self.events[id(core)]

    def pump(self) -> bool:
        for core in (self.provider, self.client, self.stranger):
            while (event := core.next_event()) is not None:
                self.of(core).append(event)
        return False

    def result(self, core: OapCore, request_id: int) -> OapEvent:
        def done() -> bool:
            self.pump()
            return any(getattr(e, "request_id", None) == request_id for e in self.of(core))

        assert self.net.run_until(done, max_time=60), f"request {request_id} never ended"
        return next(e for e in self.of(core) if getattr(e, "request_id", None) == request_id)

    def subscribe(self, core: OapCore, item: str, object_id: OID = THERMOSTAT_OID) -> int:
        sub = core.subscribe(PROVIDER, object_id, THERMOSTAT, item, self.net.now)
        self.net.wakeup(STRANGER if core is self.stranger else CLIENT)
        return sub

    def notifications(self, core: OapCore) -> list[Notification]:
        return [e for e in self.of(core) if isinstance(e, Notification)]

    def run(self, seconds: float) -> None:
        self.net.run_until(self.pump, max_time=seconds)


def _refusal(event: OapEvent) -> OapError:
    assert isinstance(event, OapRequestFailed | SubscriptionEnded), event
    assert isinstance(event.error, OapError), event.error
    return event.error


@pytest.mark.parametrize("fast_paths", [True, False])
def test_a_stranger_knowing_the_name_is_refused_and_the_subscriber_is_admitted(
    fast_paths: bool,
) -> None:
    w = World(fast_paths=fast_paths)
    w.provider.provide(THERMOSTAT_OID, THERMOSTAT, subscribers={CLIENT_ID})
    # What a Subscribe to an object not provided is answered, for comparison.
    absent = _refusal(w.result(w.stranger, w.subscribe(w.stranger, "temperature", NOT_PROVIDED)))
    # The attack: the stranger names the object and Subscribes, then Registers.
    for item in ("temperature", "alarm"):
        refused = _refusal(w.result(w.stranger, w.subscribe(w.stranger, item)))
        # Told nothing more than of an object not provided.
        assert refused.error_code is OapErrorCode.NOT_FOUND
        assert refused.args == absent.args
    stats = w.provider.statistics()
    assert (stats.subscribers_refused, stats.subscribers, stats.permission_denied) == (2, 0, 0)
    denied = [e for e in w.of(w.provider) if isinstance(e, AccessDenied)]
    assert [(e.identity, e.action, e.object_id) for e in denied] == [
        (STRANGER_ID, Action.SUBSCRIBE, THERMOSTAT_OID)
    ] * 2
    # The genuine subscriber is admitted and hears the change; the stranger nothing.
    sub = w.subscribe(w.client, "temperature")
    assert w.result(w.client, sub) == RequestCompleted(sub, ())
    sent = w.provider.notify_change(THERMOSTAT_OID, THERMOSTAT, "temperature", 22, w.net.now)
    assert sent == 1
    w.net.wakeup(PROVIDER)
    w.run(5)
    assert [n.values for n in w.notifications(w.client)] == [(22,)]
    assert w.notifications(w.stranger) == []
    assert w.stranger.statistics().notifications_received == 0
    # Past a lease and a refresh: the subscriber's lease runs on, the
    # stranger holds none (a refused subscription ends: nothing is retried).
    w.run(60)
    assert w.provider.statistics().subscribers == 1
    assert w.stranger.statistics().subscriptions == 0
    assert w.provider.statistics().subscribers_refused == 2


def test_every_identity_may_subscribe_to_an_object_provided_without_subscribers() -> None:
    w = World()
    w.provider.provide(THERMOSTAT_OID, THERMOSTAT)
    sub = w.subscribe(w.stranger, "temperature")
    assert w.result(w.stranger, sub) == RequestCompleted(sub, ())
    assert w.provider.statistics().subscribers_refused == 0


def test_the_restriction_holds_across_withdraw_and_provide_again() -> None:
    w = World()
    w.provider.provide(THERMOSTAT_OID, THERMOSTAT, subscribers={CLIENT_ID})
    w.provider.withdraw(THERMOSTAT_OID, THERMOSTAT)
    w.provider.provide(THERMOSTAT_OID, THERMOSTAT, subscribers={CLIENT_ID})
    refused = _refusal(w.result(w.stranger, w.subscribe(w.stranger, "temperature")))
    assert refused.error_code is OapErrorCode.NOT_FOUND
    sub = w.subscribe(w.client, "temperature")
    assert w.result(w.client, sub) == RequestCompleted(sub, ())
    # Provided again for another subscriber: the one admitted before is
    # dropped (subscribers are kept by address: only a fresh Subscribe
    # shows who it is), and its next refresh is refused.
    w.provider.provide(THERMOSTAT_OID, THERMOSTAT, subscribers={STRANGER_ID})
    assert w.provider.statistics().subscribers == 0
    assert w.provider.notify_change(THERMOSTAT_OID, THERMOSTAT, "temperature", 1, w.net.now) == 0
    # Provided again for the same subscribers: nobody is dropped.
    sub = w.subscribe(w.stranger, "temperature")
    assert w.result(w.stranger, sub) == RequestCompleted(sub, ())
    w.provider.provide(THERMOSTAT_OID, THERMOSTAT, subscribers=[STRANGER_ID])
    assert w.provider.statistics().subscribers == 1
    # Withdrawn, then provided for everyone: the restriction is gone with it.
    w.provider.withdraw(THERMOSTAT_OID, THERMOSTAT)
    w.provider.provide(THERMOSTAT_OID, THERMOSTAT)
    sub = w.subscribe(w.client, "alarm")
    assert w.result(w.client, sub) == RequestCompleted(sub, ())


@pytest.mark.parametrize("raw", [True, False])
def test_an_interceptor_never_sees_a_subscribe_from_an_identity_not_admitted(raw: bool) -> None:
    """The interception path (decoded and raw) is gated the same way: the
    check is the gate's, before any interceptor."""
    w = World()
    w.provider.provide(THERMOSTAT_OID, THERMOSTAT, subscribers={CLIENT_ID})
    seen: list[OID | None] = []

    def decoded(peer: object, identity: OID | None, *rest: object) -> None:
        seen.append(identity)

    def raw_handler(peer: object, identity: OID | None, *rest: object) -> None:
        seen.append(identity)

    w.provider.intercept(THERMOSTAT.iid, decoded, raw=raw_handler if raw else None)
    refused = _refusal(w.result(w.stranger, w.subscribe(w.stranger, "temperature")))
    assert refused.error_code is OapErrorCode.NOT_FOUND
    assert seen == [] and w.provider.statistics().subscribers_refused == 1
    # The admitted identity's Subscribe reaches the interceptor (which does
    # not answer it here: the test only looks at who got through).
    w.subscribe(w.client, "temperature")
    w.run(1)
    assert set(seen) == {CLIENT_ID}


def test_in_the_clear_no_session_identity_is_admitted() -> None:
    provider, requestor = OapCore(), OapCore()
    provider.provide(THERMOSTAT_OID, THERMOSTAT, subscribers={CLIENT_ID})
    net = SecureDomain().net
    net.add(provider, PROVIDER)
    net.add(requestor, CLIENT)
    sub = requestor.subscribe(PROVIDER, THERMOSTAT_OID, THERMOSTAT, "temperature", net.now)
    net.wakeup(CLIENT)
    events: list[OapEvent] = []

    def ended() -> bool:
        events.extend(iter(requestor.next_event, None))
        return any(getattr(e, "request_id", None) == sub for e in events)

    assert net.run_until(ended, max_time=60)
    (event,) = [e for e in events if getattr(e, "request_id", None) == sub]
    assert _refusal(event).error_code is OapErrorCode.NOT_FOUND
    assert provider.statistics().subscribers_refused == 1
    assert provider.statistics().subscribers == 0
