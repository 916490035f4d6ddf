"""Every sequence of session inputs keeps a peer inside the state table, and
the node never raises (h2-style: Hypothesis over every state and input)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.session.node import Node, PeerState
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame
from dofpy.wire.dsp import DspOpen, DspOpenResponse, DspTerminate, encode_dsp

PEER = ("10.0.0.7", 3567)

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
    node = Node()
    now = 0.0
    op = 1000
    sent_opens: list[int] = []
    for name in inputs:
        now += 0.25
        op += 1
        match name:
            case "open_session":
                sent_opens.append(node.open_session(PEER, now))
            case "terminate_session":
                node.terminate_session(PEER, now)
            case "ping":
                node.ping(PEER, now)
            case "peer_opens":
                packet = DppPacket(
                    AppId.DSP,
                    encode_dsp(DspOpen()),
                    op_id_type=OpIdType.IMPLIED_SENDER,
                    op_count=op,
                )
                node.receive_datagram(encode_frame(packet), PEER, now)
            case "peer_terminates":
                packet = DppPacket(
                    AppId.DSP,
                    encode_dsp(DspTerminate()),
                    op_id_type=OpIdType.IMPLIED_SENDER,
                    op_count=op,
                )
                node.receive_datagram(encode_frame(packet), PEER, now)
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
            case "time_passes":
                now += 5.0
                node.handle_timer(now)
        node.datagrams_to_send(now)
        while node.next_event() is not None:
            pass
        assert node.peer_state(PEER) in PeerState
