"""Fuzz target for ``open_datagram_untrusted`` (which runs
``parse_secure_datagram_untrusted`` then ``open_secure_frame``) with a fixed
key, so mutations of valid seeds reach the authentication check."""

from __future__ import annotations

from dofpy.security.crypto import INITIATOR_NODE
from dofpy.security.secure_frame import open_datagram_untrusted, seal_datagram
from dofpy.wire.dpp import AppId, DppPacket, OpIdType

_KEY = bytes(range(32))

SEEDS: tuple[bytes, ...] = (
    seal_datagram(
        DppPacket(AppId.OAP, b"\x0a\x03\x01", op_id_type=OpIdType.IMPLIED_SENDER, op_count=2),
        key=_KEY,
        ssid=5,
        sender_node=INITIATOR_NODE,
        packet_number=1,
    ),
    seal_datagram(
        DppPacket(AppId.COMMON, b"\x03"),
        key=_KEY,
        ssid=0x4000,
        sender_node=INITIATOR_NODE,
        packet_number=0x3FFFFFFF,
        tag_length=8,
        source=1,
        length_size=1,
    ),
)


def target(data: bytes) -> None:
    """Parse and open ``data``; ``BadPacket`` is the only acceptable failure."""
    open_datagram_untrusted(data, key=_KEY, sender_node=INITIATOR_NODE)
