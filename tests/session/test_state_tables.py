"""The session layer's state machines are ``(state, input) -> state`` tables
(h2-style: every pair is tried with the state set directly, and the outcome
is the one documented here, or the one error type for a missing entry)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import IllegalTransition, LocalProtocolError
from dofpy.security.crypto import build_rekey
from dofpy.session._retry import RetryPolicy
from dofpy.session.handshake import Handshake, HandshakeInput, Phase
from dofpy.session.node import Node, NodeConfig
from dofpy.session.peers import Peer, PeerInput, PeerState, PeerTable
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, encode_frame
from dofpy.wire.dsp import DspOpen, DspOpenResponse, DspTerminate, encode_dsp
from dofpy.wire.oid import OID

S, PI = PeerState, PeerInput

# What docs/architecture.md says a peer does; None: the move must not happen.
PEER_OUTCOMES: dict[tuple[PeerState, PeerInput], PeerState | None] = {
    **{(state, PI.WE_OPEN): S.OPENING for state in S},
    (S.IDLE, PI.PEER_SPEAKS): S.IDLE,
    (S.OPENING, PI.PEER_SPEAKS): S.OPENING,
    (S.OPEN, PI.PEER_SPEAKS): S.OPEN,
    (S.CLOSED, PI.PEER_SPEAKS): S.IDLE,
    (S.IDLE, PI.PEER_OPENS): S.OPEN,
    (S.OPENING, PI.PEER_OPENS): S.OPEN,
    (S.OPEN, PI.PEER_OPENS): S.OPEN,
    (S.CLOSED, PI.PEER_OPENS): None,  # a closed peer speaks (IDLE) before it opens
    (S.IDLE, PI.OPEN_ANSWERED): S.OPEN,
    (S.OPENING, PI.OPEN_ANSWERED): S.OPEN,
    (S.OPEN, PI.OPEN_ANSWERED): S.OPEN,
    (S.CLOSED, PI.OPEN_ANSWERED): S.CLOSED,
    (S.IDLE, PI.OPEN_FAILED): S.IDLE,
    (S.OPENING, PI.OPEN_FAILED): S.CLOSED,
    (S.OPEN, PI.OPEN_FAILED): S.OPEN,
    (S.CLOSED, PI.OPEN_FAILED): S.CLOSED,
    **{(state, PI.CLOSE): S.CLOSED for state in S},
}

P, H = Phase, HandshakeInput
_LIVE = (P.REKEY_SENT, P.CONFIRM_SENT, P.ASKING_AUTHENTICATOR, P.ACCEPT_SENT)
HANDSHAKE_OUTCOMES: dict[tuple[Phase, HandshakeInput], Phase] = {
    (P.REKEY_SENT, H.BUSY): P.REKEY_SENT,
    (P.CONFIRM_SENT, H.BUSY): P.FAILED,
    (P.REKEY_SENT, H.ACCEPT_VERIFIED): P.CONFIRM_SENT,
    (P.CONFIRM_SENT, H.CONFIRM_ACKED): P.DONE,
    (P.ASKING_AUTHENTICATOR, H.TICKETS): P.ACCEPT_SENT,
    (P.ACCEPT_SENT, H.CONFIRM_VERIFIED): P.DONE,
    **{(phase, H.FAIL): P.FAILED for phase in _LIVE},
}


def test_every_peer_pair_is_documented() -> None:
    assert set(PEER_OUTCOMES) == {(s, i) for s in S for i in PI}


@given(st.sampled_from(list(S)), st.sampled_from(list(PI)))
def test_a_peer_in_any_state_takes_any_input_as_documented(
    state: PeerState, given_input: PeerInput
) -> None:
    peer = Peer(("10.0.0.7", 3567), state)
    expected = PEER_OUTCOMES[(state, given_input)]
    if expected is None:
        with pytest.raises(IllegalTransition):
            peer.move(given_input)
        assert peer.state is state
    else:
        peer.move(given_input)
        assert peer.state is expected


@pytest.mark.parametrize("state", list(S))
def test_a_heard_peer_moves_as_the_table_says_for_peer_speaks(state: PeerState) -> None:
    # PeerTable.heard skips the table for the states PEER_SPEAKS leaves as
    # they are: it must end where the table's move ends, and note the time.
    table = PeerTable(4, set)
    address = ("10.0.0.7", 3567)
    table.touch(address, 1.0).state = state
    peer = table.heard(address, 2.5)
    assert peer is table.get(address)
    assert peer.state is PEER_OUTCOMES[(state, PI.PEER_SPEAKS)]
    assert peer.last_heard == 2.5


def test_a_peer_heard_first_is_remembered_idle() -> None:
    table = PeerTable(4, set)
    peer = table.heard(("10.0.0.8", 3567), 4.0)
    assert (peer.state, peer.last_heard, len(table)) == (S.IDLE, 4.0, 1)


_BLOCK = build_rekey(OID(3, b"domain"), OID(3, b"node"), b"\x01" * 16).initiator


def _handshake(phase: Phase) -> Handshake:
    return Handshake(("10.0.0.7", 3567), phase, 15.0, _BLOCK, 1)


@given(st.sampled_from(list(P)), st.sampled_from(list(H)))
def test_a_handshake_in_any_phase_takes_any_input_as_documented(
    phase: Phase, given_input: HandshakeInput
) -> None:
    handshake = _handshake(phase)
    expected = HANDSHAKE_OUTCOMES.get((phase, given_input))
    if expected is None:
        # DONE and FAILED take nothing; a live phase only its own inputs.
        with pytest.raises(IllegalTransition):
            handshake.move(given_input)
        assert handshake.phase is phase
    else:
        handshake.move(given_input)
        assert handshake.phase is expected


def test_illegal_transition_is_a_local_protocol_error() -> None:
    assert issubclass(IllegalTransition, LocalProtocolError)
    with pytest.raises(IllegalTransition, match="no move for"):
        _handshake(P.DONE).move(H.FAIL)


# -- the same table seen through a node: the state set directly, the input a
# real call or datagram, the outcome the documented one ------------------------

PEER = ("10.0.0.7", 3567)
NODE_INPUTS = ("open_session", "peer_opens", "open_answered", "open_times_out", "peer_terminates")
# (state, input) -> the peer's state afterwards, through the node.
NODE_OUTCOMES: dict[tuple[PeerState, str], PeerState] = {
    **{(state, "open_session"): S.OPENING for state in S},
    # A command from a closed peer makes it IDLE first: its Open then opens.
    **{(state, "peer_opens"): S.OPEN for state in S},
    (S.IDLE, "open_answered"): S.OPEN,
    (S.OPENING, "open_answered"): S.OPEN,
    (S.OPEN, "open_answered"): S.OPEN,
    (S.CLOSED, "open_answered"): S.CLOSED,
    (S.IDLE, "open_times_out"): S.IDLE,
    (S.OPENING, "open_times_out"): S.CLOSED,
    (S.OPEN, "open_times_out"): S.OPEN,
    (S.CLOSED, "open_times_out"): S.CLOSED,
    **{(state, "peer_terminates"): S.CLOSED for state in S},
}


def _node_with_peer_in(state: PeerState) -> tuple[Node, int]:
    """A node with a DSP Open pending to PEER and PEER's state set to ``state``."""
    retry = RetryPolicy(initial_timeout=1.0, max_attempts=1, total_timeout=1.0)
    node = Node(NodeConfig(retry=retry))
    request = node.open_session(PEER, 0.0)
    node.datagrams_to_send(0.0)
    known = node._operations.peers.get(PEER)
    assert known is not None
    known.state = state
    return node, request


def _command(pdu: bytes, op: int) -> bytes:
    return encode_frame(
        DppPacket(AppId.DSP, pdu, op_id_type=OpIdType.IMPLIED_SENDER, op_count=op, retry=0)
    )


@given(st.sampled_from(list(S)), st.sampled_from(NODE_INPUTS))
def test_a_node_moves_a_peer_in_any_state_as_documented(state: PeerState, name: str) -> None:
    node, request = _node_with_peer_in(state)
    match name:
        case "open_session":
            node.open_session(PEER, 0.1)
        case "peer_opens":
            node.receive_datagram(_command(encode_dsp(DspOpen()), 900), PEER, 0.1)
        case "open_answered":
            answer = DppPacket(
                AppId.DSP,
                encode_dsp(DspOpenResponse((AppId.OAP,))),
                is_response=True,
                op_id_type=OpIdType.IMPLIED_RECEIVER,
                op_count=request,
            )
            node.receive_datagram(encode_frame(answer), PEER, 0.1)
        case "open_times_out":
            node.handle_timer(1.0)
        case "peer_terminates":
            node.receive_datagram(_command(encode_dsp(DspTerminate()), 901), PEER, 0.1)
    assert node.peer_state(PEER) is NODE_OUTCOMES[(state, name)]
