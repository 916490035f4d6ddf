"""The one-way command path of a secure session: ``SecureChannel.seal_command``
and ``probe_sealed_command`` + ``SecureChannel.open_sealed_untrusted``
give exactly what the general ``seal`` / ``decode_frame_untrusted`` +
``open_packet_untrusted`` give, on valid and on mutated datagrams."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.security.secure_frame import SecureChannel
from dofpy.wire._codec import C4_MAX
from dofpy.wire.dpp import (
    DppPacket,
    OpIdType,
    decode_frame_untrusted,
    probe_sealed_command,
    split_app_untrusted,
)
from fuzz.targets import sealed_command

KEY = bytes(range(7, 39))
c4s = st.one_of(st.integers(0, 0x7F), st.integers(0x80, 0x3FFF), st.integers(0x4000, C4_MAX))
fields = st.tuples(
    st.integers(0, 0x7FFF),  # app id
    st.binary(max_size=80),  # payload
    c4s,  # op count
    st.none() | st.integers(0, 0xFF),  # retry
    c4s,  # SSID
    st.integers(1, C4_MAX - 2),  # first packet number
)


def _pair(ssid: int, first: int) -> tuple[SecureChannel, SecureChannel, SecureChannel]:
    """Two senders in the same state and the receiving side."""
    return (
        SecureChannel(KEY, ssid=ssid, initiator=True, first_packet_number=first),
        SecureChannel(KEY, ssid=ssid, initiator=True, first_packet_number=first),
        SecureChannel(KEY, ssid=ssid, initiator=False),
    )


@given(fields)
def test_seal_command_equals_seal_and_opens_as_the_general_path(
    case: tuple[int, bytes, int, int | None, int, int],
) -> None:
    app_id, payload, op_count, retry, ssid, first = case
    fast, general, receiver = _pair(ssid, first)
    packet = DppPacket(
        app_id, payload, op_id_type=OpIdType.IMPLIED_SENDER, op_count=op_count, retry=retry
    )
    datagram = fast.seal_command(app_id, payload, op_count, retry)
    assert datagram == general.seal(packet)
    dnp, dpp = decode_frame_untrusted(datagram)
    fields = probe_sealed_command(datagram)
    if retry is not None:
        assert fields is None  # a command with a retry byte takes the general path
        return
    assert fields is not None
    op, delay, ssid_read, packet_number, start = fields
    assert dpp.security is not None
    assert (op, delay, ssid_read) == (dpp.op_count, dpp.delay, dpp.security.ssid)
    assert packet_number == first
    other = SecureChannel(KEY, ssid=ssid, initiator=False)
    clear = other.open_packet_untrusted(dnp, dpp)
    plaintext = receiver.open_sealed_untrusted(datagram, packet_number, start)
    assert split_app_untrusted(plaintext) == (clear.app_id, clear.payload)
    with pytest.raises(BadPacket):  # replayed
        receiver.open_sealed_untrusted(datagram, packet_number, start)


@given(fields, st.data())
def test_mutated_datagrams_read_as_the_general_decoder_reads_them(
    case: tuple[int, bytes, int, int | None, int, int], data: st.DataObject
) -> None:
    app_id, payload, op_count, _retry, ssid, first = case
    sender = SecureChannel(KEY, ssid=ssid, initiator=True, first_packet_number=first)
    datagram = bytearray(sender.seal_command(app_id, payload, op_count))
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        position = data.draw(st.integers(0, len(datagram)))
        if kind == "cut":
            del datagram[position:]
        elif kind == "insert":
            datagram[position:position] = bytes([data.draw(st.integers(0, 255))])
        elif position < len(datagram):
            datagram[position] ^= 1 << data.draw(st.integers(0, 7))
    mutated = bytes(datagram)
    sealed_command.target(mutated)  # the fuzz target's differential check
    fields = probe_sealed_command(mutated)
    receiver = SecureChannel(KEY, ssid=ssid, initiator=False)
    general = SecureChannel(KEY, ssid=ssid, initiator=False)
    if fields is None:
        return
    _op, _delay, ssid_read, packet_number, start = fields
    if ssid_read != ssid:
        return  # the node picks the channel by the SSID read: another session's
    dnp, dpp = decode_frame_untrusted(mutated)
    try:
        expected: object = general.open_packet_untrusted(dnp, dpp)
    except BadPacket as exc:
        expected = type(exc)
    try:
        app, rest = split_app_untrusted(
            receiver.open_sealed_untrusted(mutated, packet_number, start)
        )
        got: object = (app, rest)
    except BadPacket as exc:
        got = type(exc)
    if isinstance(expected, DppPacket):
        assert got == (expected.app_id, expected.payload)
    else:
        assert got == expected


def test_seal_command_refuses_out_of_range_fields() -> None:
    channel = SecureChannel(KEY, ssid=1, initiator=True)
    for app_id, op_count, retry in ((0x8000, 1, None), (1, C4_MAX + 1, None), (1, 1, 256)):
        with pytest.raises(ValueError):
            channel.seal_command(app_id, b"", op_count, retry)
