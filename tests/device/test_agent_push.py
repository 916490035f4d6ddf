"""The idle agent and the Update service's pushes (issue 14, Build 4), in
virtual time (trio's MockClock, autojump): pushed an assignment, an idle
agent checks in and polls at once, however long its poll interval; when the
push is lost it learns the same at its next poll, whose interval is
jittered so that devices idle together do not poll together."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing

from dofpy_services.device.agent import AgentPorts, DeviceAgent, PushedAssignments
from dofpy_services.device.boot_records import Layout
from dofpy_services.device.machine import AgentMachine, RetryPolicy
from dofpy_services.device.ports import InProcessUpdate
from dofpy_services.device.table import State
from dofpy_services.update.device_interface import Assignment, InstallOutcome, Stage
from dofpy_services.update.device_provider import DeviceUpdates
from tests.device.test_agent_update import DEVICE, KEY, NEW, World, world

NEVER = 1e6
"""A poll interval far beyond the bound of these tests."""
ASSIGNED_AT = 50.0
"""Seconds after the agent's first (empty) poll when the campaign assigns it."""


class PushingUpdate(InProcessUpdate):
    """The in-process Update port with pushes: ``push`` hands the next (or
    current) wait its assignments, unless ``lose``, as a lost datagram."""

    def __init__(self, updates: DeviceUpdates, *, lose: bool = False) -> None:
        super().__init__(updates, DEVICE)
        self.lose = lose
        self._send, self._receive = trio.open_memory_channel[list[Assignment]](4)
        self.polls: list[float] = []
        self.waits = 0

    def push(self, assignments: list[Assignment]) -> None:
        if not self.lose:
            self._send.send_nowait(assignments)

    async def poll(self) -> list[Assignment]:
        self.polls.append(trio.current_time())
        return await super().poll()

    async def wait_for_assignment(self, deadline: float) -> list[Assignment]:
        self.waits += 1
        with trio.move_on_at(deadline):
            return await self._receive.receive()
        return []


def pushing_world(
    tmp_path: Path, port_lose: bool, interval: float
) -> tuple[World, PushingUpdate, list[DeviceAgent]]:
    w = world(tmp_path, Layout.AB)
    port = PushingUpdate(w.updates, lose=port_lose)
    agents: list[DeviceAgent] = []
    rng = random.Random(5)

    def agent() -> DeviceAgent:
        ports = AgentPorts(port, w.versions, w.images, w.health, w.user)
        made = DeviceAgent(
            w.boot, ports, w.directory / "agent", identity=DEVICE, key=KEY, device_class="sensor",
            machine=AgentMachine(RetryPolicy(base=1.0, cap=8.0, max_attempts=4), rng=rng),
            check_in_interval=interval,
        )  # fmt: skip
        agents.append(made)
        return made

    w.agent = agent  # type: ignore[method-assign]
    return w, port, agents


async def _campaign_assigns_later(w: World, port: PushingUpdate) -> None:
    """The service: nothing planned at first; ASSIGNED_AT seconds after the
    agent's first poll the plan gets the update and the device is pushed it."""
    planned = w.updates.plan.updates[DEVICE]
    w.updates.plan.withdraw(DEVICE)
    while not port.polls:
        await trio.sleep(1.0)
    await trio.sleep_until(port.polls[0] + ASSIGNED_AT)
    w.updates.plan.assign(DEVICE, planned)
    port.push(w.updates.poll(DEVICE, trio.current_time()))


def _authorised_at(w: World) -> float:
    stages = w.updates.progress[DEVICE].stages
    return next(entry.at for entry in stages if entry.stage is Stage.AUTHORISED)


async def test_a_push_wakes_the_idle_agent_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    w, port, agents = pushing_world(tmp_path, port_lose=False, interval=NEVER)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_campaign_assigns_later, w, port)
        await w.run_update()
    assert isinstance(port, PushedAssignments)
    first_poll = port.polls[0]
    # Woken at the push, it checked in and polled then (not a poll interval later).
    assert port.polls[1] == pytest.approx(first_poll + ASSIGNED_AT)
    assert _authorised_at(w) - first_poll < ASSIGNED_AT + 60
    trail = agents[0].machine.trail
    assert (State.POLL, State.IDLE) in [(before, after) for before, _, after in trail]
    report = w.updates.progress[DEVICE].report
    assert report is not None and report.outcome is InstallOutcome.SUCCEEDED
    booted = w.boot.booted()
    assert (booted.image, booted.accepted) == (NEW.slot_image(), True)


async def test_a_lost_push_costs_only_the_wait_for_the_jittered_poll(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    interval = 600.0
    w, port, _ = pushing_world(tmp_path, port_lose=True, interval=interval)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_campaign_assigns_later, w, port)
        await w.run_update()
    first_poll, second_poll = port.polls[:2]
    # The push never came: the agent waited out its poll interval, spread by
    # the default ±50 % jitter, and the poll found the assignment.
    assert port.waits >= 1
    assert interval * 0.5 <= second_poll - first_poll <= interval * 1.5
    assert _authorised_at(w) >= second_poll
    report = w.updates.progress[DEVICE].report
    assert report is not None and report.outcome is InstallOutcome.SUCCEEDED


async def test_idle_agents_spread_their_polls(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Agents idle from the same moment (the service back from an outage)
    poll again at different times within the jittered interval."""
    waits = []
    for seed in range(8):
        (tmp_path / str(seed)).mkdir()
        w = world(tmp_path / str(seed), Layout.AB)
        w.updates.plan.withdraw(DEVICE)
        ports = AgentPorts(
            InProcessUpdate(w.updates, DEVICE), w.versions, w.images, w.health, w.user
        )
        agent = DeviceAgent(
            w.boot, ports, w.directory / "agent", identity=DEVICE, key=KEY, device_class="sensor",
            machine=AgentMachine(rng=random.Random(seed)), check_in_interval=300.0,
        )  # fmt: skip
        start = trio.current_time()
        await agent.run(until=lambda a: a.machine.state is State.IDLE and bool(a.machine.trail))
        waits.append(agent.machine.run_at - start)
    assert all(150.0 <= wait <= 450.0 for wait in waits)
    assert len({round(wait) for wait in waits}) == len(waits)
    with pytest.raises(ValueError):
        DeviceAgent(
            w.boot, ports, w.directory / "agent", identity=DEVICE, key=KEY, device_class="sensor",
            check_in_jitter=1.0,
        )  # fmt: skip
