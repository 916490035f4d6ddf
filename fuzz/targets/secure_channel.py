"""Fuzz target: the three ways an established :class:`SecureChannel` opens
what its peer sent (``open_untrusted``, ``open_packet_untrusted`` after one
decode, and ``open_sealed_untrusted`` after the sealed-command probe).

The channel is one end of a live session (its peer sealed the seeds), so
mutations of the seeds reach the replay window and the authentication check.
Each run opens with a fresh channel (a seed opened once would be a replay the
next time). Differential: the general and the packet path agree on every
datagram; where the sealed-command probe reads one, its path gives the same
plaintext; ``BadPacket`` is the only failure.
"""

from __future__ import annotations

from dofpy.errors import BadPacket
from dofpy.security.secure_frame import SecureChannel
from dofpy.wire.dpp import (
    AppId,
    DppPacket,
    OpIdType,
    decode_frame_untrusted,
    probe_sealed_command,
    split_app_untrusted,
)

_KEY = bytes(range(32))
_SSID = 9


def _sender() -> SecureChannel:
    return SecureChannel(_KEY, ssid=_SSID, initiator=True)


def _receiver() -> SecureChannel:
    return SecureChannel(_KEY, ssid=_SSID, initiator=False)


_peer = _sender()
SEEDS: tuple[bytes, ...] = (
    _peer.seal_command(AppId.OAP, b"\x0a\x03\x01", 7),
    _peer.seal_command(AppId.OAP, b"\x16\x02\x00\x01", 8, retry=2),
    _peer.seal(DppPacket(AppId.COMMON, b"\x03", op_id_type=OpIdType.IMPLIED_SENDER, op_count=9)),
    _peer.seal(
        DppPacket(
            AppId.OAP, b"\x0b", is_response=True, op_id_type=OpIdType.IMPLIED_RECEIVER, op_count=3
        )
    ),
    _peer.seal_command(0x7FFF, b"x" * 40, 0x3FFFFFFF),
)


def _clear(packet: DppPacket) -> tuple[int | None, bytes]:
    return packet.app_id, packet.payload


def target(data: bytes) -> None:
    """Open ``data`` every way an established channel does, and compare."""
    general: tuple[int | None, bytes] | BadPacket
    try:
        general = _clear(_receiver().open_untrusted(data).dpp)
    except BadPacket as exc:
        general = exc
    try:
        dnp, dpp = decode_frame_untrusted(data)
        by_packet: tuple[int | None, bytes] | None = _clear(
            _receiver().open_packet_untrusted(dnp, dpp)
        )
    except BadPacket:
        by_packet = None
    if (by_packet is None) != isinstance(general, BadPacket) or (
        by_packet is not None and by_packet != general
    ):
        raise AssertionError(f"open_untrusted and open_packet_untrusted differ on {data!r}")
    head = probe_sealed_command(data)
    if head is None:
        return
    _op, _delay, ssid, packet_number, start = head
    if ssid != _SSID:
        return  # another session's: the node looks it up by SSID first
    try:
        sealed = split_app_untrusted(_receiver().open_sealed_untrusted(data, packet_number, start))
    except BadPacket:
        if by_packet is not None:
            raise AssertionError(f"only the sealed-command path refused {data!r}") from None
        return
    if by_packet is None or sealed != by_packet:
        raise AssertionError(f"the sealed-command path opened {data!r} differently")
