"""The session lost during every step of the update, one step at a time, on
both layouts: the first service call the agent makes in that state fails as
a lost session does (DofError); the step answers RETRY, the machine waits its
back-off and runs the same step again, and the update still ends with the
new image booted and accepted. And a transfer lost half way resumes from the
leaves already verified and written: only the rest is fetched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from dofpy.errors import DofError
from dofpy.testing.netsim import LinkConditions, Network
from dofpy.testing.transfer import PROVIDER, REQUESTOR
from dofpy.transfer.core import TransferCore
from dofpy.transfer.receiver import LocalLeaves
from dofpy_services.device.agent import AgentPorts, DeviceAgent, ImageToInstall
from dofpy_services.device.boot_records import Layout
from dofpy_services.device.machine import AgentMachine, RetryPolicy
from dofpy_services.device.ports import InProcessUpdate
from dofpy_services.device.slot_store import SlotBlockStore
from dofpy_services.device.table import Input, State
from dofpy_services.update.device_interface import InstallOutcome
from tests.device.test_agent_update import DEVICE, KEY, NEW, NetsimImages, World, world


class LosesInState:
    """Wraps a port: the first call made while the agent is in ``state``
    fails as a lost session would; every other call goes through."""

    def __init__(
        self, inner: object, state: State, current: Callable[[], State], lost: list[str]
    ) -> None:
        self._inner = inner
        self._state = state
        self._current = current
        self.lost = lost
        """The call that failed, shared by the ports of one session (one loss)."""

    def __getattr__(self, name: str) -> object:
        method = getattr(self._inner, name)

        async def call(*args: object) -> object:
            if not self.lost and self._current() is self._state:
                self.lost.append(name)
                raise DofError(f"session lost during {name}")
            return await method(*args)

        return call


def losing_world(tmp_path: Path, layout: Layout, state: State) -> tuple[World, list[DeviceAgent]]:
    w = world(tmp_path, layout)
    agents: list[DeviceAgent] = []

    def current() -> State:
        return agents[-1].machine.state

    lost: list[str] = []
    update = LosesInState(InProcessUpdate(w.updates, DEVICE), state, current, lost)
    version = LosesInState(w.versions, state, current, lost)
    images = LosesInState(w.images, state, current, lost)

    def agent() -> DeviceAgent:
        ports = AgentPorts(update, version, images, w.health, w.user)  # type: ignore[arg-type]
        made = DeviceAgent(
            w.boot, ports, w.directory / "agent", identity=DEVICE, key=KEY, device_class="sensor",
            machine=AgentMachine(RetryPolicy(base=1.0, cap=8.0, max_attempts=4)),
        )  # fmt: skip
        agents.append(made)
        return made

    w.agent = agent  # type: ignore[method-assign]
    return w, agents


STEPS_WITH_CALLS = [
    State.CHECK_IN,
    State.POLL,
    State.VERIFY_MANIFEST,
    State.AUTHORISE,
    State.CONFIRM_REPROGRAM,
    State.TRANSFER,
    State.ENTER_NORMAL,
    State.CONFIRM_NORMAL,
    State.REPORT,
]
"""Every state whose step talks to a service (HEALTH_CHECK, ASK_USER of an
automatic campaign, IDLE and DEFERRED talk to none)."""


@pytest.mark.parametrize("state", STEPS_WITH_CALLS, ids=lambda s: s.value)
@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB], ids=lambda layout: layout.name)
async def test_the_session_lost_in_a_step_retries_that_step(
    tmp_path: Path, layout: Layout, state: State, autojump_clock: trio.testing.MockClock
) -> None:
    w, agents = losing_world(tmp_path, layout, state)
    await w.run_update()
    trails = [step for agent in agents for step in agent.machine.trail]
    assert (state, Input.RETRY, state) in trails, trails
    lost = agents[0].ports.update.lost  # type: ignore[attr-defined]
    assert len(lost) == 1
    booted = w.boot.booted()
    assert (booted.image, booted.accepted) == (NEW.slot_image(), True)
    report = w.updates.progress[DEVICE].report
    assert report is not None and report.outcome is InstallOutcome.SUCCEEDED
    assert w.versions.reports[-1].image_digest == NEW.slot_image().digest


class LosesHalfWay(NetsimImages):
    """The first transfer ends (the session lost) once half the leaves are
    written; the next one, from another provider, fetches the rest."""

    def __init__(self) -> None:
        super().__init__(loss=0.02)
        self.written: list[int] = []

    async def transfer(
        self, image: ImageToInstall, store: SlotBlockStore, local: LocalLeaves | None = None
    ) -> None:
        if self.transfers:
            await super().transfer(image, store, local)
            self.written.append(store.leaves_written)
            return
        self.transfers += 1
        net = Network(seed=7, default=LinkConditions(loss=self.loss, delay=0.01))
        requestor = TransferCore(store=store)
        net.add(self.provider, PROVIDER)
        net.add(requestor, REQUESTOR)
        requestor.fetch(image.transfer, [PROVIDER], net.now, local=local)
        net.wakeup(REQUESTOR)
        half = image.transfer.leaf_count // 2
        net.run_until(lambda: store.leaves_written >= half, max_time=30)
        net.remove(PROVIDER)
        self.written.append(store.leaves_written)
        raise DofError("session lost half way through the transfer")


@pytest.mark.parametrize("layout", [Layout.SEED, Layout.AB])
async def test_a_transfer_lost_half_way_resumes_from_the_verified_leaves(
    tmp_path: Path, layout: Layout, autojump_clock: trio.testing.MockClock
) -> None:
    images = LosesHalfWay()
    w = world(tmp_path, layout, images=images)
    await w.run_update()
    leaves = images.manifest.leaf_count
    first, rest = images.written
    assert leaves // 2 <= first < leaves
    assert first + rest == leaves  # nothing fetched twice, nothing missing
    # Both attempts' bytes are reported, the resumed ones not again.
    report = w.updates.progress[DEVICE].report
    assert report is not None and report.bytes_fetched == len(images.image.data)
    booted = w.boot.booted()
    assert (booted.image, booted.accepted) == (NEW.slot_image(), True)
