"""Fuzz target for ``read_pcap_untrusted`` (an operator's capture is untrusted
input) and ``split_coalesced_untrusted`` on every datagram it finds."""

from __future__ import annotations

from dofpy.pcap import (
    PCAP_GLOBAL_HEADER,
    pcap_record,
    read_pcap_untrusted,
    split_coalesced_untrusted,
)
from dofpy.security.crypto import INITIATOR_NODE
from dofpy.security.secure_frame import seal_datagram
from dofpy.wire.dpp import AppId, DppPacket, OpIdType

_KEY = bytes(range(32))


def _sealed(number: int) -> bytes:
    packet = DppPacket(AppId.OAP, b"\x0a\x03\x01", op_id_type=OpIdType.IMPLIED_SENDER, op_count=2)
    return seal_datagram(packet, key=_KEY, ssid=5, sender_node=INITIATOR_NODE, packet_number=number)


SEEDS: tuple[bytes, ...] = (
    PCAP_GLOBAL_HEADER + pcap_record(1.5, ("127.0.0.1", 4000), ("127.0.0.1", 3567), b"\x01"),
    PCAP_GLOBAL_HEADER
    + pcap_record(2.0, ("::1", 4000), ("::1", 3567), _sealed(1) + _sealed(2) + _sealed(3)),
)


def target(data: bytes) -> None:
    """Read ``data`` as a capture; ``BadPacket`` is the only acceptable failure
    (the splitter never raises)."""
    for datagram in read_pcap_untrusted(data).datagrams:
        split_coalesced_untrusted(datagram.payload)
