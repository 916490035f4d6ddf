"""Fuzz target: ``probe_sealed_command`` (the header of a secure
one-way command, read without building packets).

Differential: it never raises; whenever it gives fields, the general decoder
accepts the datagram and gives the same op count, delay, SSID and packet number;
and whenever the general decoder sees a datagram of that one shape, the fast
reader gives its fields.
"""

from __future__ import annotations

from dofpy.errors import BadPacket
from dofpy.security.secure_frame import SecureChannel
from dofpy.wire._codec import Reader
from dofpy.wire.dpp import OpIdType, decode_frame_untrusted, probe_sealed_command

_KEY = bytes(range(32))

SEEDS: tuple[bytes, ...] = (
    SecureChannel(_KEY, ssid=5, initiator=True).seal_command(1, b"\x16\x02\x00\x01", 7),
    SecureChannel(_KEY, ssid=0x4000, initiator=False, first_packet_number=0x3FFF).seal_command(
        0x7FFF, b"x" * 40, 0x3FFFFFFF
    ),
    SecureChannel(_KEY, ssid=0x80, initiator=True).seal_command(1, b"", 0x80, retry=3),
)


def target(data: bytes) -> None:
    """Read the header both ways and compare."""
    fields = probe_sealed_command(data)
    try:
        dnp, dpp = decode_frame_untrusted(data)
    except BadPacket:
        if fields is not None:
            raise AssertionError(f"fast reader accepted {data!r}, the decoder did not") from None
        return
    security = dpp.security
    one_shape = (
        dnp.length_size == 0
        and dnp.source is None
        and dnp.destination is None
        and security is not None
        and not dpp.is_response
        and dpp.op_id_type is OpIdType.IMPLIED_SENDER
        and dpp.seq is None
        and dpp.retry is None
        and security.mode_header
        and not security.as_assigned
        and security.ssid is not None
        and security.remote_domain is None
        and security.partition is None
        and dpp.payload[:1] == b"\x01"
    )
    if not one_shape:
        if fields is not None:
            raise AssertionError(f"fast reader accepted another shape: {dpp}")
        return
    try:
        packet_number = Reader(dpp.payload, 1).c4()
    except BadPacket:
        if fields is not None:
            raise AssertionError("fast reader accepted a bad packet number") from None
        return
    assert security is not None
    expected = (dpp.op_count, dpp.delay, security.ssid, packet_number)
    if fields is None or fields[:4] != expected:
        raise AssertionError(f"fast reader gave {fields}, the decoder {expected}")
