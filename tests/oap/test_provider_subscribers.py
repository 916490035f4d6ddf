"""The provider's subscribers against a model: leases taken, refreshed,
expired and withdrawn in any order, a notification goes to exactly the peers
whose lease on that item is running (the per-item index and the lease heap
agree with a plain list of leases)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.oap.core import OapCore, RequestKind
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.wire.oap import Binding

LEASE = 60.0
PEERS = [("10.0.0.2", 40000 + n) for n in range(4)]
ITEMS = {RequestKind.SUBSCRIBE: "temperature", RequestKind.REGISTER: "alarm"}

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("subscribe"), st.sampled_from(PEERS), st.sampled_from(list(ITEMS))),
        st.tuples(st.just("wait"), st.integers(1, 40), st.just(None)),
        st.tuples(st.just("withdraw"), st.just(0), st.just(None)),
        st.tuples(st.just("notify"), st.just(0), st.sampled_from(list(ITEMS))),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(_steps)
def test_notifications_reach_exactly_the_running_leases(
    steps: list[tuple[str, object, object]],
) -> None:
    core = OapCore()
    core.provide(THERMOSTAT_OID, THERMOSTAT)
    provider = core._provider
    binding = Binding(THERMOSTAT.iid, THERMOSTAT_OID)
    leases: dict[tuple[object, RequestKind], float] = {}  # (peer, kind) -> lease end
    now = 0.0
    for name, arg, kind in steps:
        if name == "subscribe":
            assert isinstance(kind, RequestKind)
            item = THERMOSTAT.item(ITEMS[kind])
            provider._add_subscriber(arg, None, binding, item, kind, now, None)
            leases[(arg, kind)] = now + LEASE
        elif name == "wait":
            assert isinstance(arg, int)
            now += arg
            core.handle_timer(now)
            leases = {key: end for key, end in leases.items() if end > now}
        elif name == "withdraw":
            core.withdraw(THERMOSTAT_OID, THERMOSTAT)
            core.provide(THERMOSTAT_OID, THERMOSTAT)
            leases.clear()
        else:
            assert isinstance(kind, RequestKind)
            if kind is RequestKind.SUBSCRIBE:
                sent = core.notify_change(THERMOSTAT_OID, THERMOSTAT, "temperature", 20, now)
            else:
                sent = core.signal(THERMOSTAT_OID, THERMOSTAT, "alarm", ["x"], now)
            assert sent == sum(1 for _, k in leases if k is kind)
        assert core.statistics().subscribers == len(leases)
        expected_timer = min(leases.values(), default=None)
        assert provider.next_deadline() == expected_timer
