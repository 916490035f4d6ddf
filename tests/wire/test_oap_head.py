"""``probe_command_head_untrusted`` reads a command's opcode, item and target
exactly as the full decoder does, and declines the shapes it does not cover."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.wire.oap import (
    ChangeCommand,
    GetCommand,
    InvokeCommand,
    OapPdu,
    RegisterCommand,
    SetCommand,
    SignalCommand,
    SubscribeCommand,
    decode_oap_untrusted,
    encode_oap,
    probe_command_head_untrusted,
)
from tests.wire.test_oap import PDU_STRATEGIES, any_pdu

HEADED = (
    GetCommand,
    SetCommand,
    InvokeCommand,
    SubscribeCommand,
    RegisterCommand,
    ChangeCommand,
    SignalCommand,
)


@given(st.one_of(*(PDU_STRATEGIES[kind] for kind in HEADED)))
def test_head_matches_the_full_decode(pdu: OapPdu) -> None:
    payload = encode_oap(pdu)
    head = probe_command_head_untrusted(payload)
    if getattr(pdu, "command_control", None) is not None:
        assert head is None
        return
    assert head is not None
    assert head.opcode == pdu.OPCODE
    assert head.item_id == pdu.item_id  # type: ignore[union-attr]
    assert head.target == pdu.target  # type: ignore[union-attr]
    # Everything after the head is the part the full decoder reads next.
    assert decode_oap_untrusted(payload, False) == pdu


@given(any_pdu)
def test_other_shapes_are_declined(pdu: OapPdu) -> None:
    if isinstance(pdu, HEADED) and not pdu.IS_RESPONSE:
        return
    if pdu.IS_RESPONSE:
        return  # a response never reaches the command dispatch
    assert probe_command_head_untrusted(encode_oap(pdu)) is None


@given(st.one_of(*(PDU_STRATEGIES[kind] for kind in HEADED)), st.data())
def test_truncated_heads_raise_only_bad_packet(pdu: OapPdu, data: st.DataObject) -> None:
    payload = encode_oap(pdu)
    cut = payload[: data.draw(st.integers(0, len(payload)))]
    try:
        head = probe_command_head_untrusted(cut)
    except BadPacket:
        return
    if head is not None:
        assert head.end <= len(cut)


def test_empty_payload_is_bad() -> None:
    with pytest.raises(BadPacket):
        probe_command_head_untrusted(b"")
