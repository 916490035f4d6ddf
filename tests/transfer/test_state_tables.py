"""The sender and receiver state machines, pair by pair (h2-style).

Each test sets the state directly, applies one input and checks the outcome
the module docstrings document: the new state, or ``IllegalTransition`` (the
one error of a missing entry, for every table) with the state unchanged. The expected tables
are written out here from the documentation, not read from the code.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import IllegalTransition
from dofpy.testing.transfer import PROVIDER, make_object
from dofpy.transfer.fetch_state import FetchInput
from dofpy.transfer.manifest import ObjectHashes
from dofpy.transfer.receiver import FetchState, Receiver
from dofpy.transfer.sender import BlockSender, SenderConfig, SendState
from dofpy.transfer.sender import _Input as SendInput
from dofpy.transfer.store import MemoryStore

# SENDING: something queued; IDLE: nothing queued; CLOSED: the requestor is
# done or went quiet, and a closed sender takes no input at all.
_SENDER_SPEC = {
    (SendState.IDLE, SendInput.FETCH): SendState.SENDING,
    (SendState.SENDING, SendInput.FETCH): SendState.SENDING,
    (SendState.SENDING, SendInput.DRAINED): SendState.IDLE,
    (SendState.IDLE, SendInput.DRAINED): SendState.IDLE,
    (SendState.IDLE, SendInput.DONE): SendState.CLOSED,
    (SendState.SENDING, SendInput.DONE): SendState.CLOSED,
    (SendState.IDLE, SendInput.EXPIRED): SendState.CLOSED,
    (SendState.SENDING, SendInput.EXPIRED): SendState.CLOSED,
}

# HASHES until every hash chunk is verified, then BLOCKS until every leaf is;
# either may give up (FAILED); COMPLETE and FAILED are final.
_RECEIVER_SPEC = {
    (FetchState.HASHES, FetchInput.HASHES_DONE): FetchState.BLOCKS,
    (FetchState.HASHES, FetchInput.GIVE_UP): FetchState.FAILED,
    (FetchState.BLOCKS, FetchInput.LEAVES_DONE): FetchState.COMPLETE,
    (FetchState.BLOCKS, FetchInput.GIVE_UP): FetchState.FAILED,
}


class _Source:
    def __init__(self) -> None:
        self.manifest = ObjectHashes.build(make_object(4096), 1024).manifest

    def has_hashes(self) -> bool:
        return True

    def chunk(self, chunk: int, chunk_leaves: int) -> tuple[bytes, list[bytes]]:
        raise AssertionError("not served in these tests")

    def has_leaves(self, start: int, end: int) -> bool:
        return True

    def read(self, start: int, end: int) -> bytes:
        raise AssertionError("not served in these tests")


def _sender(state: SendState) -> BlockSender:
    sender = BlockSender(PROVIDER, _Source(), SenderConfig(), 0.0)
    sender.state = state
    return sender


def _receiver(state: FetchState) -> Receiver:
    manifest = ObjectHashes.build(make_object(4096), 1024).manifest
    receiver = Receiver(manifest, [PROVIDER], MemoryStore(), 0.0)
    receiver.state = state
    return receiver


@pytest.mark.parametrize(("state", "event"), list(itertools.product(SendState, SendInput)))
def test_sender_every_state_and_input(state: SendState, event: SendInput) -> None:
    sender = _sender(state)
    expected = _SENDER_SPEC.get((state, event))
    if expected is None:
        with pytest.raises(IllegalTransition, match=f"sender: {event.value} in state"):
            sender._transition(event)
        assert sender.state is state
    else:
        sender._transition(event)
        assert sender.state is expected


@pytest.mark.parametrize(("state", "event"), list(itertools.product(FetchState, FetchInput)))
def test_receiver_every_state_and_input(state: FetchState, event: FetchInput) -> None:
    receiver = _receiver(state)
    had_outstanding = bool(receiver._outstanding)
    expected = _RECEIVER_SPEC.get((state, event))
    if expected is None:
        with pytest.raises(IllegalTransition, match=f"transfer: {event.value} in state"):
            receiver._transition(event, 5.0)
        assert receiver.state is state
        assert bool(receiver._outstanding) == had_outstanding
        return
    receiver._transition(event, 5.0)
    assert receiver.state is expected
    final = expected in (FetchState.COMPLETE, FetchState.FAILED)
    assert receiver.done is final
    if final:
        # A finished transfer waits for nothing and its clock stopped.
        assert not receiver._outstanding and receiver.get_timer() is None
        assert receiver.statistics(100.0).rate == receiver.statistics(5.0).rate


def test_the_closed_and_final_states_take_no_input() -> None:
    assert not [key for key in _SENDER_SPEC if key[0] is SendState.CLOSED]
    assert not [key for key in _RECEIVER_SPEC if key[0] in (FetchState.COMPLETE, FetchState.FAILED)]


@given(st.sampled_from(list(SendState)), st.lists(st.sampled_from(list(SendInput)), max_size=12))
def test_sender_input_sequences_follow_the_spec(start: SendState, events: list[SendInput]) -> None:
    sender = _sender(start)
    model = start
    for event in events:
        expected = _SENDER_SPEC.get((model, event))
        if expected is None:
            with pytest.raises(IllegalTransition):
                sender._transition(event)
        else:
            sender._transition(event)
            model = expected
        assert sender.state is model
