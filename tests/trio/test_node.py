"""The async OAP API over real UDP sockets on 127.0.0.1 (trio's MockClock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dofpy.errors import ClosedResourceError, DofTimeoutError
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID, Thermostat
from dofpy.trio import open_node
from dofpy.wire.oid import OID


async def test_get_set_invoke_exception_ping() -> None:
    thermostat = Thermostat()
    async with open_node() as provider, open_node() as requestor:
        provider.provide(THERMOSTAT_OID, THERMOSTAT, thermostat)
        peer = provider.local_address
        await requestor.open_session(peer)
        assert await requestor.get(peer, THERMOSTAT_OID, THERMOSTAT, "temperature") == 21
        await requestor.set(peer, THERMOSTAT_OID, THERMOSTAT, "label", "kitchen")
        assert thermostat.label == "kitchen"
        assert await requestor.invoke(peer, THERMOSTAT_OID, THERMOSTAT, "add", 2, 3) == (5,)
        with pytest.raises(ProviderException) as info:
            await requestor.invoke(peer, THERMOSTAT_OID, THERMOSTAT, "add", 999, 3)
        assert info.value.definition.name == "Overflow"
        assert info.value.values == (1000,)
        rtt = await requestor.ping(peer)
        assert rtt >= 0
        with pytest.raises(OapError) as refused:
            await requestor.get(peer, OID(3, b"nobody@example.org"), THERMOSTAT, "temperature")
        assert refused.value.error_code is OapErrorCode.NOT_FOUND
        assert provider.statistics().oap.requests_refused == 1


async def test_subscribe_receives_events_and_changes() -> None:
    async with open_node() as provider, open_node() as requestor:
        provider.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())
        peer = provider.local_address
        async with (
            requestor.subscribe(peer, THERMOSTAT_OID, THERMOSTAT, "alarm") as alarms,
            requestor.subscribe(peer, THERMOSTAT_OID, THERMOSTAT, "temperature") as temps,
        ):
            assert provider.signal(THERMOSTAT_OID, THERMOSTAT, "alarm", "too hot") == 1
            assert provider.notify_change(THERMOSTAT_OID, THERMOSTAT, "temperature", 30) == 1
            first = await alarms.receive()
            change = await temps.receive()
        assert first.values == ("too hot",)
        assert first.missed == 0
        assert change.values == (30,)


async def test_request_to_silent_peer_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async with open_node() as requestor:
        silent = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        await silent.bind(("127.0.0.1", 0))
        with silent, pytest.raises(DofTimeoutError):
            await requestor.get(silent.getsockname(), THERMOSTAT_OID, THERMOSTAT, "temperature")
        assert requestor.statistics().oap.node.requests_timed_out == 1


class _HeldThermostat(Thermostat):
    """Answers ``add`` only once released."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = trio.Event()
        self.release = trio.Event()

    async def add(self, a: int, b: int) -> int:  # type: ignore[override]
        self.asked.set()
        await self.release.wait()
        return super().add(a, b)


async def test_an_answer_started_now_is_awaited_after_other_work() -> None:
    held = _HeldThermostat()
    async with open_node() as provider, open_node() as requestor:
        provider.provide(THERMOSTAT_OID, THERMOSTAT, held)
        peer = provider.local_address
        await requestor.open_session(peer)
        pending = requestor.start_invoke(peer, THERMOSTAT_OID, THERMOSTAT, "add", 2, 3)
        with trio.fail_after(5):
            await held.asked.wait()  # sent at once, before any await of its answer
        # Other work meanwhile: other requests, answered while it is pending.
        assert await requestor.get(peer, THERMOSTAT_OID, THERMOSTAT, "temperature") == 21
        assert not pending.done
        held.release.set()
        with trio.fail_after(5):
            assert await pending.result() == (5,)
        assert pending.done
        with pytest.raises(RuntimeError, match="awaited already"):
            await pending.result()  # once
        pending.cancel()  # after the answer: nothing to abandon
        assert requestor.statistics().oap.node.pending_commands == 0


async def test_a_cancelled_request_is_forgotten_and_its_late_answer_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    held = _HeldThermostat()
    async with open_node() as provider, open_node() as requestor:
        provider.provide(THERMOSTAT_OID, THERMOSTAT, held)
        peer = provider.local_address
        await requestor.open_session(peer)
        pending = requestor.start_invoke(peer, THERMOSTAT_OID, THERMOSTAT, "add", 2, 3)
        await held.asked.wait()
        assert requestor.statistics().oap.node.pending_commands == 1
        assert requestor.statistics().oap.requests_awaited == 1
        pending.cancel()
        pending.cancel()  # idempotent
        assert requestor.statistics().oap.node.pending_commands == 0
        assert requestor.statistics().oap.requests_awaited == 0  # its record too
        assert requestor._waiters == {}
        held.release.set()
        for _ in range(100):  # the provider answers; the answer is nobody's
            if requestor.statistics().oap.node.unmatched_responses:
                break
            await trio.sleep(0.01)
        assert requestor.statistics().oap.node.unmatched_responses == 1
        assert held.add_calls == 1
        with pytest.raises(ClosedResourceError, match="cancelled"):
            await pending.result()  # never delivered


async def test_a_pending_answer_raises_what_invoke_raises() -> None:
    async with open_node() as provider, open_node() as requestor:
        provider.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())
        peer = provider.local_address
        await requestor.open_session(peer)
        overflow = requestor.start_invoke(peer, THERMOSTAT_OID, THERMOSTAT, "add", 999, 3)
        nobody = requestor.start_invoke(
            peer, OID(3, b"nobody@example.org"), THERMOSTAT, "add", 1, 2
        )
        with trio.fail_after(5):
            with pytest.raises(OapError) as refused:
                await nobody.result()  # the later one first: each its own answer
            with pytest.raises(ProviderException) as info:
                await overflow.result()
        assert refused.value.error_code is OapErrorCode.NOT_FOUND
        assert info.value.definition.name == "Overflow" and info.value.values == (1000,)
        assert requestor._waiters == {}


async def test_a_result_cancelled_while_awaited_abandons_the_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    held = _HeldThermostat()
    async with open_node() as provider, open_node() as requestor:
        provider.provide(THERMOSTAT_OID, THERMOSTAT, held)
        peer = provider.local_address
        await requestor.open_session(peer)
        pending = requestor.start_invoke(peer, THERMOSTAT_OID, THERMOSTAT, "add", 2, 3)
        with trio.move_on_after(1.0) as scope:
            await pending.result()
        assert scope.cancelled_caught
        assert requestor.statistics().oap.node.pending_commands == 0
        assert requestor.statistics().oap.requests_awaited == 0
        assert requestor._waiters == {}
