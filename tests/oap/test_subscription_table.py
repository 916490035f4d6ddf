"""The requestor's subscription table, h2-style: for every (state, input)
pair, a real subscription of an :class:`OapCore` is put in that state
directly, the input is delivered the way the node would deliver it, and the
outcome is checked against the rules documented in
:mod:`dofpy.oap.subscription` (written out again here, not read from the
table)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import DofError, DofTimeoutError, IllegalTransition
from dofpy.oap.core import (
    Notification,
    OapCore,
    OapEvent,
    OapRequestFailed,
    RequestCompleted,
    SubscriptionEnded,
)
from dofpy.oap.subscription import (
    SUBSCRIPTION_TRANSITIONS,
    SubscriptionInput,
    SubscriptionState,
    subscription_step,
)
from dofpy.session.node import ResponseReceived
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID
from dofpy.wire.dpp import AppId
from dofpy.wire.oap import (
    Binding,
    ChangeCommand,
    RegisterResponse,
    SignalCommand,
    SubscribeResponse,
    encode_oap,
)

PROVIDER = ("10.0.0.1", 3567)
S = SubscriptionState
I = SubscriptionInput  # noqa: E741 (the table's own abbreviation)

# Which item an input needs: a Subscribe answer comes only for a property, a
# Register answer (with its sequence) only for an event.
_ITEM_FOR = {I.ANSWERED: "temperature", I.ANSWERED_WITH_SEQUENCE: "alarm"}


def _drain(core: OapCore) -> list[OapEvent]:
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    return events


def _subscribed(item: str) -> tuple[OapCore, int, Any]:
    core = OapCore()
    sub_id = core.subscribe(PROVIDER, THERMOSTAT_OID, THERMOSTAT, item, 0.0)
    core.datagrams_to_send(0.0)
    sub = core._requestor._subscriptions[sub_id]
    return core, sub_id, sub


def _deliver(core: OapCore, sub_id: int, event: SubscriptionInput, sequence: int) -> None:
    """Feed ``event`` to the requestor as the node's events would bring it."""
    requestor = core._requestor
    binding = Binding(THERMOSTAT.iid, THERMOSTAT_OID)
    sub = requestor._subscriptions[sub_id]
    match event:
        case I.ANSWERED:
            requestor.on_response(
                ResponseReceived(sub_id, PROVIDER, AppId.OAP, encode_oap(SubscribeResponse()))
            )
        case I.ANSWERED_WITH_SEQUENCE:
            payload = encode_oap(RegisterResponse(sequence))
            requestor.on_response(ResponseReceived(sub_id, PROVIDER, AppId.OAP, payload))
        case I.NOTIFIED:
            if sub.target.item.name == "temperature":
                requestor.on_notification(
                    PROVIDER, ChangeCommand(1, binding, sequence, (22,)), None, None
                )
            else:
                requestor.on_notification(
                    PROVIDER, SignalCommand(4, binding, sequence, ("hot",)), None, None
                )
        case I.REFRESH_DUE:
            # The requestor's part of handle_timer (the node's own timer would
            # also retransmit the unanswered command).
            requestor.refresh(core.config.subscription_refresh)
        case I.FAILED:
            # As OapCore hands on the node's RequestFailed (a timeout, say).
            requestor.on_failure(sub_id, DofTimeoutError("no answer"))
        case I.CANCELLED:
            core.unsubscribe(sub_id)


@given(
    state=st.sampled_from(SubscriptionState),
    event=st.sampled_from(SubscriptionInput),
    item=st.sampled_from(["temperature", "alarm"]),
    last=st.integers(0, 0xFFFF),
    gap=st.integers(1, 0x8000),
)
def test_every_state_and_input(
    state: SubscriptionState, event: SubscriptionInput, item: str, last: int, gap: int
) -> None:
    core, sub_id, sub = _subscribed(_ITEM_FOR.get(event, item))
    sub.state = state
    sub.last_sequence = last
    # A notification in sequence order (after ``gap - 1`` lost) or an answer's sequence.
    sequence = (last + gap) & 0xFFFF
    confirmed = state in (S.ACTIVE, S.ACTIVE_SYNCED)
    synced = state in (S.REQUESTED_SYNCED, S.ACTIVE_SYNCED)

    if state is S.ENDED:
        # An ended subscription takes no input: the table has no entry.
        with pytest.raises(IllegalTransition):
            _deliver(core, sub_id, event, sequence)
        return
    _deliver(core, sub_id, event, sequence)
    events = _drain(core)
    after = core._requestor._subscriptions.get(sub_id)

    if event in (I.FAILED, I.CANCELLED):
        assert after is None
        assert sub_id not in core._requestor._refresh
        assert core._requestor._by_source == {}  # its notifications are not looked for
        assert core.statistics().subscriptions == 0
        (ended,) = events
        if event is I.CANCELLED:
            assert ended == SubscriptionEnded(sub_id, None)
        elif confirmed:
            assert isinstance(ended, SubscriptionEnded) and ended.subscription_id == sub_id
            assert isinstance(ended.error, DofTimeoutError)
        else:
            # Never accepted: the subscribe itself failed.
            assert isinstance(ended, OapRequestFailed) and ended.request_id == sub_id
        return

    assert after is sub
    if event is I.REFRESH_DUE:
        assert sub.state is state
        assert events == []
        assert len(core.datagrams_to_send(20.0)) == 1  # the Subscribe or Register again
        assert core._requestor.next_deadline() == 2 * core.config.subscription_refresh
    elif event in (I.ANSWERED, I.ANSWERED_WITH_SEQUENCE):
        assert sub.state.confirmed
        # The first answer confirms; a refresh's answer says nothing.
        assert events == ([] if confirmed else [RequestCompleted(sub_id, ())])
        if event is I.ANSWERED:
            assert sub.state.synced == synced
            assert sub.last_sequence == last
        else:
            assert sub.state.synced
            # The Register answer's sequence is adopted only when none is known.
            assert sub.last_sequence == (last if synced else sequence)
    else:
        assert event is I.NOTIFIED
        assert sub.state.confirmed == confirmed
        assert sub.state.synced
        assert sub.last_sequence == sequence
        (notification,) = events
        assert isinstance(notification, Notification)
        assert notification.subscription_id == sub_id
        assert notification.sequence == sequence
        # The gap is counted only from a known sequence.
        assert notification.missed == (gap - 1 if synced else 0)


@pytest.mark.parametrize("state", [S.REQUESTED_SYNCED, S.ACTIVE_SYNCED])
@pytest.mark.parametrize("behind", [0, 1, 0x7FFF])
def test_a_duplicate_or_old_notification_is_not_an_input(
    state: SubscriptionState, behind: int
) -> None:
    core, sub_id, sub = _subscribed("temperature")
    sub.state, sub.last_sequence = state, 100
    _deliver(core, sub_id, I.NOTIFIED, (100 - behind) & 0xFFFF)
    assert _drain(core) == []
    assert sub.state is state and sub.last_sequence == 100


def test_the_table_holds_every_pair_but_those_of_the_ended_state() -> None:
    for state in SubscriptionState:
        for event in SubscriptionInput:
            if state is S.ENDED:
                assert (state, event) not in SUBSCRIPTION_TRANSITIONS
                with pytest.raises(IllegalTransition, match="subscription"):
                    subscription_step(state, event)
            else:
                subscription_step(state, event)  # does not raise


def test_failure_error_reaches_the_application_unchanged() -> None:
    core, sub_id, sub = _subscribed("alarm")
    sub.state = S.ACTIVE_SYNCED
    error: DofError = DofTimeoutError("gone")
    core._requestor.on_failure(sub_id, error)
    assert _drain(core) == [SubscriptionEnded(sub_id, error)]
