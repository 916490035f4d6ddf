"""Pushing devices their update window (issue 14, Build 4): a device with a
live subscription is told its assignment the moment the campaign engine
notifies it, over OAP in secure sessions on 127.0.0.1; what it subscribes to
is chosen by its session's identity (``watch``) and admits that identity
only, so it hears only its own, even against a stranger knowing its name;
and a device that cannot subscribe, or whose push is lost, still learns it
at its (jittered) poll time."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.testing.domain import LocalDomain
from dofpy.testing.secure import DOMAIN_OID, open_secure_node
from dofpy.trio import DofNode
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy_services.daemon.service import InFlight
from dofpy_services.device.update_client import UpdateDeviceClient
from dofpy_services.store import open_database_sync
from dofpy_services.update import campaign_store as cs
from dofpy_services.update.campaign_devices import CampaignDeviceProvider, CampaignDevices
from dofpy_services.update.daemon import push_assignments
from dofpy_services.update.device_interface import (
    UPDATE_DEVICE,
    UPDATE_OBJECT,
    Assignment,
)
from dofpy_services.update.engine import Action as EngineAction
from dofpy_services.update.engine import ActionKind
from dofpy_services.update.notify import (
    FRESH_STEPS,
    NOTICE_PREFIX,
    AssignmentPushes,
    NoticeObjects,
)
from dofpy_services.update.tracking import DeviceState
from dofpy_services.update.worker import CampaignWorker
from tests.image.signing_fixtures import NOW
from tests.services.test_daemon_runner import WAIT
from tests.update.campaign_fixtures import ROOT, SERVICE_KEY, full_approvals, make_spec

T = TypeVar("T")

DEVICE = OID(3, b"device-1@example.org")
STRANGER = OID(3, b"device-2@example.org")
SERVICE = OID(3, b"update@example.org")
SECRET = b"\x07" * 32
NEVER = 1e6
"""A poll interval far beyond every bound of these tests: what a device
learns within them it learnt from a push."""


# -- which device an object belongs to ------------------------------------------------------


def test_each_identity_has_its_own_notice_object_named_by_the_process_secret() -> None:
    objects = NoticeObjects(SECRET, max_devices=2)
    mine, new, evicted = objects.watch(DEVICE)
    assert (new, evicted) == (True, None)
    assert mine.data.startswith(NOTICE_PREFIX)
    assert objects.watch(DEVICE) == (mine, False, None)  # watching again: the same object
    theirs, _, _ = objects.watch(STRANGER)
    assert theirs != mine
    # Another process (another secret) names the same device's object otherwise:
    # knowing the scheme and the identity is not enough to name it.
    assert NoticeObjects(b"\x08" * 32).object_of(DEVICE) != mine
    # Bounded: the least recently watched goes first (to be withdrawn).
    objects.watch(DEVICE)
    third = OID(3, b"device-3@example.org")
    _, _, evicted = objects.watch(third)
    assert evicted == theirs
    assert objects.watched(str(STRANGER)) is None and len(objects) == 2
    with pytest.raises(ValueError):
        NoticeObjects(b"short")


def test_only_devices_just_notified_or_just_watching_are_pushed() -> None:
    objects = NoticeObjects(SECRET)
    mine, _, _ = objects.watch(DEVICE)
    objects.heard(DEVICE)  # not fresh any more (see below)
    actions = [
        EngineAction(ActionKind.NOTIFY, str(DEVICE), "spring"),
        EngineAction(ActionKind.NOTIFY, str(DEVICE), "autumn"),  # once per device
        EngineAction(ActionKind.NOTIFY, str(STRANGER), "spring"),  # not watching: it polls
        EngineAction(ActionKind.ALLOW_INSTALL, str(DEVICE), "spring"),
    ]
    assert objects.wanted(actions) == [(DEVICE, mine)]
    assert objects.wanted(actions[2:]) == []
    # A device that just watched is pushed what it has at the next
    # FRESH_STEPS steps, notified or not, until a push is heard.
    theirs, _, _ = objects.watch(STRANGER)
    for _ in range(FRESH_STEPS):
        assert objects.wanted([]) == [(STRANGER, theirs)]
    assert objects.wanted([]) == []
    objects.watch(third := OID(3, b"device-3@example.org"))
    objects.heard(third)
    assert objects.wanted([]) == []


# -- over OAP, against the campaign store ---------------------------------------------------


def domain(device_actions: str = "xs") -> LocalDomain:
    local = LocalDomain(DOMAIN_OID, rng=random.Random(17).randbytes)
    local.enrol(
        SERVICE, PermissionSet((BindingPermission(Action.parse("p"), OID(0), UPDATE_DEVICE.iid),))
    )
    grant = PermissionSet(
        (BindingPermission(Action.parse(device_actions), OID(0), UPDATE_DEVICE.iid),)
    )
    local.enrol(DEVICE, grant)
    local.enrol(STRANGER, grant)
    return local


class _Context:
    """What CampaignDeviceProvider uses of the daemon's ServiceContext."""

    draining = False

    def __init__(self) -> None:
        self.in_flight = InFlight()

    async def in_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(function, *args)


def _campaign(location: str) -> tuple[CampaignWorker, CampaignDevices]:
    """A running campaign whose one device (DEVICE) the next step notifies."""
    spec = make_spec(canary_share=1.0, image_sequence=20)
    db = open_database_sync(location, service=cs.SERVICE, migrations=cs.MIGRATIONS)
    worker = CampaignWorker(db, SERVICE_KEY, "update-1", lease=30.0)
    worker.create(spec, now=NOW, actor="operator")
    for signed in full_approvals(spec.terms):
        worker.approve(spec.name, signed, ROOT, now=NOW, actor="operator")
    worker.start(spec.name, ROOT, lambda _s: [(str(DEVICE), 0)], now=NOW, actor="operator")
    return worker, CampaignDevices(worker, retry_after=5.0)


@asynccontextmanager
async def serving(
    tmp_path: Path, local: LocalDomain
) -> AsyncIterator[tuple[DofNode, CampaignWorker, CampaignDevices, AssignmentPushes]]:
    worker, devices = await trio.to_thread.run_sync(_campaign, str(tmp_path / "c.db"))
    try:
        async with open_secure_node(local, SERVICE) as node:
            pushes = AssignmentPushes(node, NoticeObjects(SECRET))
            provider = CampaignDeviceProvider(
                devices,
                _Context(),  # type: ignore[arg-type]
                lambda: float(NOW + 2),
                pushes,
            )
            node.provide(UPDATE_OBJECT, UPDATE_DEVICE, provider)
            yield node, worker, devices, pushes
    finally:
        worker.db.close()


async def _subscribers(node: DofNode, count: int) -> None:
    """Until ``count`` subscriptions are held at ``node`` (on a socket: WAIT bounds it)."""
    while node.statistics().oap.subscribers < count:
        await trio.sleep(0.01)


def _row(worker: CampaignWorker, device: OID) -> tuple[DeviceState, float]:
    row = worker.db.read(lambda tx: cs.find_device(tx, "spring", str(device)))
    assert row is not None
    return row.state, row.due


async def test_a_subscribed_device_learns_its_window_without_polling(tmp_path: Path) -> None:
    local = domain()
    async with (
        serving(tmp_path, local) as (node, worker, devices, pushes),
        open_secure_node(local, DEVICE) as device_node,
    ):
        client = UpdateDeviceClient(device_node, node.local_address, identity=SERVICE)
        learnt: list[Assignment] = []

        async def wait() -> None:
            learnt.extend(await client.wait_for_assignment(trio.current_time() + NEVER))

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                await _subscribers(node, 1)
                # The engine's step notifies the device; the daemon pushes.
                actions = await trio.to_thread.run_sync(worker.step, float(NOW + 1))
                assert [(a.kind, a.device) for a in actions] == [(ActionKind.NOTIFY, str(DEVICE))]
                sent = await push_assignments(
                    pushes, devices, actions, float(NOW + 2), trio.to_thread.run_sync
                )
                assert sent == 1
        # Told, not heard: the push is no check-in (a poll would have moved
        # the silence deadline on from the notification's).
        state, due = await trio.to_thread.run_sync(_row, worker, DEVICE)
        assert (state, due) == (DeviceState.NOTIFIED, NOW + 1 + make_spec().silence_timeout)
    (assignment,) = learnt
    spec = make_spec()
    assert (assignment.campaign, assignment.manifest_digest) == ("spring", bytes(range(32)))
    assert (assignment.window_start, assignment.window_end) == (
        float(spec.terms.start),
        float(spec.terms.deadline),
    )
    assert client.pushes_received == 1 and client.push_failures == 0
    assert pushes.sent == 1


async def test_a_device_notified_before_its_subscribe_is_pushed_at_the_next_step(
    tmp_path: Path,
) -> None:
    """The engine notifies the device after its last poll but before it
    watches: that step has no one to push; the next step pushes it anyway,
    as it does every device that just watched."""
    local = domain()
    async with (
        serving(tmp_path, local) as (node, worker, devices, pushes),
        open_secure_node(local, DEVICE) as device_node,
    ):
        client = UpdateDeviceClient(device_node, node.local_address, identity=SERVICE)
        learnt: list[Assignment] = []

        async def wait() -> None:
            learnt.extend(await client.wait_for_assignment(trio.current_time() + NEVER))

        with trio.fail_after(WAIT):
            actions = await trio.to_thread.run_sync(worker.step, float(NOW + 1))
            unheard = await push_assignments(
                pushes, devices, actions, float(NOW + 1), trio.to_thread.run_sync
            )
            assert unheard == 0  # not watching yet: no one to push
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                await _subscribers(node, 1)
                # The next step notifies no one, but the device just watched.
                later = await trio.to_thread.run_sync(worker.step, float(NOW + 11))
                assert later == []
                sent = await push_assignments(
                    pushes, devices, later, float(NOW + 11), trio.to_thread.run_sync
                )
                assert sent == 1
    assert [a.campaign for a in learnt] == ["spring"]
    # Heard: the step after pushes it nothing more.
    assert pushes.objects.wanted([]) == []


async def test_a_device_hears_only_its_own_pushes(tmp_path: Path) -> None:
    local = domain()
    async with (
        serving(tmp_path, local) as (node, worker, devices, pushes),
        open_secure_node(local, DEVICE) as device_node,
        open_secure_node(local, STRANGER) as stranger_node,
    ):
        peer = node.local_address
        mine = UpdateDeviceClient(device_node, peer, identity=SERVICE)
        theirs = UpdateDeviceClient(stranger_node, peer, identity=SERVICE)
        heard: dict[str, list[Assignment]] = {"mine": [], "theirs": []}

        async def wait(name: str, client: UpdateDeviceClient) -> None:
            heard[name] = await client.wait_for_assignment(trio.current_time() + NEVER)

        with trio.fail_after(WAIT):
            # watch names no device: each is answered its own object.
            (encoded,) = await stranger_node.invoke(
                peer, UPDATE_OBJECT, UPDATE_DEVICE, "watch", identity=SERVICE
            )
            assert encoded == pushes.objects.object_of(STRANGER).encode()
            assert encoded != pushes.objects.object_of(DEVICE).encode()
            # An object named the obvious way for the device (no secret) is
            # nothing here: the stranger cannot subscribe to it.
            guessed = OID(3, NOTICE_PREFIX + DEVICE.data[:24])
            with pytest.raises(OapError) as refused:
                async with stranger_node.subscribe(
                    peer, guessed, UPDATE_DEVICE, "assignment", identity=SERVICE
                ):
                    pass
            assert refused.value.code == OapErrorCode.NOT_FOUND
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait, "theirs", theirs)
                nursery.start_soon(wait, "mine", mine)
                await _subscribers(node, 2)
                actions = await trio.to_thread.run_sync(worker.step, float(NOW + 1))
                sent = await push_assignments(
                    pushes, devices, actions, float(NOW + 2), trio.to_thread.run_sync
                )
                assert sent == 1  # one Change, to the device's object only
                while not heard["mine"]:
                    await trio.sleep(0.01)
                # The stranger's own object was pushed nothing: it still waits.
                assert heard["theirs"] == [] and theirs.pushes_received == 0
                nursery.cancel_scope.cancel()
    assert [a.campaign for a in heard["mine"]] == ["spring"]
    assert device_node.statistics().oap.notifications_received == 1
    assert stranger_node.statistics().oap.notifications_received == 0


async def test_a_stranger_who_knows_a_devices_notice_object_is_refused_there(
    tmp_path: Path,
) -> None:
    """The attack on trust by name: a stranger granted what the device is
    (``xs``) knows the device's notice object (the test computes it, as a
    device that gave it away would have told it) and Subscribes there once
    the device watches (the object is provided). The OAP core refuses it by
    identity, ``NOT_FOUND`` as to a name never handed out; the push goes to
    the device alone and the stranger overhears nothing."""
    local = domain()
    async with (
        serving(tmp_path, local) as (node, worker, devices, pushes),
        open_secure_node(local, DEVICE) as device_node,
        open_secure_node(local, STRANGER) as stranger_node,
    ):
        peer = node.local_address
        client = UpdateDeviceClient(device_node, peer, identity=SERVICE)
        stolen = pushes.objects.object_of(DEVICE)
        learnt: list[Assignment] = []
        overheard: list[tuple[Any, ...]] = []
        refusals: list[OapError] = []

        async def wait() -> None:
            learnt.extend(await client.wait_for_assignment(trio.current_time() + NEVER))

        async def eavesdrop() -> None:
            try:
                async with stranger_node.subscribe(
                    peer, stolen, UPDATE_DEVICE, "assignment", identity=SERVICE
                ) as changes:
                    async for change in changes:
                        overheard.append(change.values)
            except OapError as exc:
                refusals.append(exc)

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                await _subscribers(node, 1)  # the device watched: its object is provided
                nursery.start_soon(eavesdrop)
                # Until the stranger's Subscribe was answered, one way or the other.
                while not refusals and node.statistics().oap.subscribers < 2:
                    await trio.sleep(0.01)
                actions = await trio.to_thread.run_sync(worker.step, float(NOW + 1))
                sent = await push_assignments(
                    pushes, devices, actions, float(NOW + 2), trio.to_thread.run_sync
                )
                while not learnt:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
    assert [r.code for r in refusals] == [OapErrorCode.NOT_FOUND]
    assert overheard == [] and stranger_node.statistics().oap.notifications_received == 0
    assert sent == 1  # one Change, to the device's own subscription
    assert [a.campaign for a in learnt] == ["spring"]
    assert client.pushes_received == 1
    stats = node.statistics().oap
    assert (stats.subscribers_refused, stats.permission_denied) == (1, 0)


async def test_a_device_without_the_subscribe_grant_falls_back_to_its_poll_time(
    tmp_path: Path,
) -> None:
    local = domain("x")  # devices enrolled before pushes: execute only
    async with (
        serving(tmp_path, local) as (node, _worker, _devices, _pushes),
        open_secure_node(local, DEVICE) as device_node,
    ):
        client = UpdateDeviceClient(device_node, node.local_address, identity=SERVICE)
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                # The Subscribe is denied: the wait becomes a plain wait to
                # its deadline (the poll time), which the agent then polls at.
                nursery.start_soon(client.wait_for_assignment, trio.current_time() + NEVER)
                while client.push_failures == 0:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
            assert await client.poll() == []  # not notified yet: polling answers as before
    assert client.pushes_received == 0
    assert node.statistics().oap.permission_denied >= 1
    assert node.statistics().oap.subscribers == 0


# -- the client's fallback, on a scripted node in virtual time --------------------------------


class ScriptedNode:
    """A node whose ``watch`` answers from a script and whose subscriptions
    deliver ``pushes`` (then end)."""

    def __init__(
        self, watch: Any, pushes: Sequence[tuple[Any, ...]] = (), *, hang: bool = False
    ) -> None:
        self.watch = watch
        self.pushes = list(pushes)
        self.hang = hang
        """After its pushes the subscription stays (none comes), rather than ending."""
        self.invoked: list[str] = []

    async def invoke(self, peer: Any, obj: Any, iface: Any, method: str, *a: Any, **k: Any) -> Any:
        self.invoked.append(method)
        if isinstance(self.watch, BaseException):
            raise self.watch
        return (self.watch,)

    @asynccontextmanager
    async def subscribe(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        pushes, hang = self.pushes, self.hang

        class _Notification:
            def __init__(self, values: tuple[Any, ...]) -> None:
                self.values = values

        async def each() -> AsyncIterator[Any]:
            for values in pushes:
                await trio.sleep(30.0)
                yield _Notification(values)
            if hang:
                await trio.sleep_forever()

        yield each()


ASSIGNMENT = Assignment("spring", b"\x01" * 32, "2.0", 20, 100.0, 200.0)


async def test_the_client_wakes_at_a_push_and_otherwise_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    notices = OID(3, NOTICE_PREFIX + b"\x00" * 24).encode()
    # An empty push (nothing to do) does not wake it; the assignment does, at once.
    node = ScriptedNode(notices, [((),), ((ASSIGNMENT,),)])
    client = UpdateDeviceClient(node, ("127.0.0.1", 1))  # type: ignore[arg-type]
    start = trio.current_time()
    assert await client.wait_for_assignment(start + NEVER) == [ASSIGNMENT]
    assert trio.current_time() - start == pytest.approx(60.0)
    assert node.invoked == ["watch"]  # no poll
    # The push never comes (lost): the wait ends at the deadline.
    client = UpdateDeviceClient(ScriptedNode(notices, hang=True), ("127.0.0.1", 1))  # type: ignore[arg-type]
    start = trio.current_time()
    assert await client.wait_for_assignment(start + 600.0) == []
    assert trio.current_time() - start == pytest.approx(600.0)
    # The service pushes nothing (Refused), the subscription ends, the answer
    # is garbled: the wait still lasts to the deadline, and no longer.
    for scripted in (
        ScriptedNode(ProviderException(UPDATE_DEVICE.exception("Refused"), ["no pushes"])),
        ScriptedNode(notices, [((),)]),
        ScriptedNode(notices),
        ScriptedNode(b"\xff not an oid"),
    ):
        client = UpdateDeviceClient(scripted, ("127.0.0.1", 1))  # type: ignore[arg-type]
        start = trio.current_time()
        assert await client.wait_for_assignment(start + 600.0) == []
        assert trio.current_time() - start == pytest.approx(600.0)
        assert client.push_failures == 1
