"""Every sequence of session inputs moves a peer as the state table says, and
the node never raises (h2-style: Hypothesis over sequences of every input,
checked against a model of the table after each one)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.session._retry import RetryPolicy
from dofpy.session.node import Node, NodeConfig, PeerState
from dofpy.session.peers import PeerInput
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame
from dofpy.wire.dsp import DspOpen, DspOpenResponse, DspTerminate, encode_dsp
from tests.session.test_state_tables import PEER_OUTCOMES

PEER = ("10.0.0.7", 3567)


class _Table:
    """The documented table (written from docs/architecture.md in
    test_state_tables, not read from the code): the model's moves."""

    @staticmethod
    def next(state: PeerState, given: PeerInput) -> PeerState:
        outcome = PEER_OUTCOMES[(state, given)]
        assert outcome is not None, f"the model made an undocumented move: {given} in {state}"
        return outcome


documented = _Table()

INPUTS = (
    "open_session",
    "terminate_session",
    "ping",
    "peer_opens",
    "peer_terminates",
    "peer_answers_open",
    "time_passes",
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(INPUTS), max_size=25))
def test_any_sequence_of_session_inputs(inputs: list[str]) -> None:
    # One attempt of one second: every Open still pending fails at the next
    # "time_passes" (which jumps 5 s), none before (only timers fail them).
    retry = RetryPolicy(initial_timeout=1.0, max_attempts=1, total_timeout=1.0)
    node = Node(NodeConfig(retry=retry))
    model = PeerState.IDLE  # what the table says the peer's state is
    latest_open_pending = False
    known = False  # the node remembers the peer (a Terminate to a stranger moves nothing)
    now = 0.0
    op = 1000
    sent_opens: list[int] = []
    for name in inputs:
        now += 0.25
        op += 1
        match name:
            case "open_session":
                sent_opens.append(node.open_session(PEER, now))
                model, latest_open_pending = documented.next(model, PeerInput.WE_OPEN), True
                known = True
            case "terminate_session":
                node.terminate_session(PEER, now)
                if known:
                    model = documented.next(model, PeerInput.CLOSE)
                latest_open_pending = False  # every pending command fails
            case "ping":
                node.ping(PEER, now)  # a common operation: no DSP move
            case "peer_opens":
                packet = DppPacket(
                    AppId.DSP,
                    encode_dsp(DspOpen()),
                    op_id_type=OpIdType.IMPLIED_SENDER,
                    op_count=op,
                )
                node.receive_datagram(encode_frame(packet), PEER, now)
                model = documented.next(
                    documented.next(model, PeerInput.PEER_SPEAKS), PeerInput.PEER_OPENS
                )
                known = True
            case "peer_terminates":
                packet = DppPacket(
                    AppId.DSP,
                    encode_dsp(DspTerminate()),
                    op_id_type=OpIdType.IMPLIED_SENDER,
                    op_count=op,
                )
                node.receive_datagram(encode_frame(packet), PEER, now)
                model = documented.next(
                    documented.next(model, PeerInput.PEER_SPEAKS), PeerInput.CLOSE
                )
                known = True
            case "peer_answers_open":
                if sent_opens:
                    packet = DppPacket(
                        AppId.DSP,
                        encode_dsp(DspOpenResponse((1,))),
                        is_response=True,
                        op_id_type=OpIdType.IMPLIED_RECEIVER,
                        op_count=sent_opens[-1],
                    )
                    node.receive_datagram(encode_frame(packet), PEER, now)
                    if latest_open_pending:  # an answer to no pending Open is dropped
                        model = documented.next(model, PeerInput.OPEN_ANSWERED)
                        latest_open_pending = False
            case "time_passes":
                now += 5.0
                node.handle_timer(now)
                if latest_open_pending:
                    model = documented.next(model, PeerInput.OPEN_FAILED)
                    latest_open_pending = False
        node.datagrams_to_send(now)
        while node.next_event() is not None:
            pass
        assert node.peer_state(PEER) is model, (name, inputs)
