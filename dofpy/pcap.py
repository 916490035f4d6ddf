"""Pure pcap formatting and reading.

Writing: UDP datagrams into pcap bytes (LINKTYPE_RAW, so IPv4 and IPv6 share
one file). The trio endpoint writes these to a file; tests and interop checks
feed them to tshark. Reading (:func:`read_pcap_untrusted`): the UDP datagrams
of a capture, e.g. an operator's ``tcpdump -w``, to split it by conversation
and to undo the kernel's UDP segmentation offload where the capture holds a
GSO buffer as one datagram (:func:`split_coalesced_untrusted`).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from dofpy.errors import BadPacket
from dofpy.security.secure_frame import parse_secure_datagram_untrusted

__all__ = [
    "PCAP_GLOBAL_HEADER",
    "Capture",
    "CapturedDatagram",
    "pcap_record",
    "read_pcap_untrusted",
    "split_coalesced_untrusted",
]

_LINKTYPE_RAW = 101
PCAP_GLOBAL_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, _LINKTYPE_RAW)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip_udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    src_ip = ipaddress.ip_address(src[0])
    dst_ip = ipaddress.ip_address(dst[0])
    if src_ip.version != dst_ip.version:
        raise ValueError("source and destination address families differ")
    udp_len = 8 + len(payload)
    udp = struct.pack("!HHHH", src[1], dst[1], udp_len, 0) + payload
    if src_ip.version == 4:
        pseudo = src_ip.packed + dst_ip.packed + struct.pack("!BBH", 0, 17, udp_len)
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + udp_len,
            0,
            0x4000,
            64,
            17,
            0,
            src_ip.packed,
            dst_ip.packed,
        )
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    else:
        pseudo = src_ip.packed + dst_ip.packed + struct.pack("!I3xB", udp_len, 17)
        header = struct.pack(
            "!IHBB16s16s", 0x60000000, udp_len, 17, 64, src_ip.packed, dst_ip.packed
        )
    checksum = _checksum(pseudo + udp) or 0xFFFF
    return header + udp[:6] + struct.pack("!H", checksum) + udp[8:]


def pcap_record(
    timestamp: float, src: tuple[str, int], dst: tuple[str, int], payload: bytes
) -> bytes:
    """One pcap record holding an IP/UDP packet from ``src`` to ``dst``."""
    packet = _ip_udp(src, dst, payload)
    seconds = int(timestamp)
    micros = round((timestamp - seconds) * 1_000_000)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    return struct.pack("<IIII", seconds, micros, len(packet), len(packet)) + packet


# -- reading captures ---------------------------------------------------------------------

_LINKTYPE_NULL = 0
_LINKTYPE_ETHERNET = 1
_LINKTYPE_LINUX_SLL = 113
_LINKTYPE_LINUX_SLL2 = 276
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_VLAN = (0x8100, 0x88A8)
_UDP = 17


@dataclass(frozen=True, slots=True)
class CapturedDatagram:
    """One UDP datagram of a capture, as the capture holds it.

    ``frame`` is its number as Wireshark counts (from 1, every record of the
    file, UDP or not). ``payload`` is the IP payload past the UDP header: one
    datagram, or several when the capture was taken before the kernel
    segmented a UDP GSO send (or after it coalesced them, GRO); see
    :func:`split_coalesced_untrusted`."""

    frame: int
    timestamp: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


@dataclass(frozen=True, slots=True)
class Capture:
    """The UDP datagrams of a pcap file, and how many records were something else."""

    datagrams: tuple[CapturedDatagram, ...]
    other_records: int
    """Records that are not an IPv4/IPv6 UDP packet (or were cut short)."""


def read_pcap_untrusted(data: bytes) -> Capture:
    """The UDP datagrams in a classic pcap file (``tcpdump -w``; pcapng is
    refused: ``editcap -F pcap`` converts). Link types: Ethernet (VLAN tags
    skipped), raw IP, Linux cooked (v1 and v2, ``tcpdump -i any``) and BSD
    loopback. Raises ``BadPacket`` on a file that is not such a capture."""
    if len(data) < 24:
        raise BadPacket("not a pcap file: shorter than its header")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        raise BadPacket("not a classic pcap file (pcapng? convert with editcap -F pcap)")
    fraction = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    (linktype,) = struct.unpack_from(order + "I", data, 20)
    linktype &= 0x0FFFFFFF  # the upper bits carry FCS information
    if linktype not in (
        _LINKTYPE_NULL,
        _LINKTYPE_ETHERNET,
        _LINKTYPE_RAW,
        _LINKTYPE_LINUX_SLL,
        _LINKTYPE_LINUX_SLL2,
    ):
        raise BadPacket(f"pcap link type {linktype} is not supported")
    datagrams: list[CapturedDatagram] = []
    other = 0
    offset = 24
    frame = 0
    while offset < len(data):
        if offset + 16 > len(data):
            raise BadPacket("pcap record header cut short")
        seconds, fraction_part, captured, original = struct.unpack_from(
            order + "IIII", data, offset
        )
        offset += 16
        if offset + captured > len(data):
            raise BadPacket("pcap record cut short")
        record = data[offset : offset + captured]
        offset += captured
        frame += 1
        datagram = (
            None
            if captured < original
            else _udp_in(frame, seconds + fraction_part * fraction, linktype, record)
        )
        if datagram is None:
            other += 1
        else:
            datagrams.append(datagram)
    return Capture(tuple(datagrams), other)


def _udp_in(frame: int, timestamp: float, linktype: int, record: bytes) -> CapturedDatagram | None:
    ip: bytes | None
    if linktype == _LINKTYPE_RAW:
        ip = record
    elif linktype == _LINKTYPE_NULL:
        ip = record[4:] if len(record) > 4 else None
    elif linktype == _LINKTYPE_LINUX_SLL:
        ip = _by_ethertype(record, 14, 16)
    elif linktype == _LINKTYPE_LINUX_SLL2:
        ip = _by_ethertype(record, 0, 20)
    else:
        ethertype_at = 12
        while len(record) >= ethertype_at + 2 and (
            int.from_bytes(record[ethertype_at : ethertype_at + 2], "big") in _ETHERTYPE_VLAN
        ):
            ethertype_at += 4
        ip = _by_ethertype(record, ethertype_at, ethertype_at + 2)
    if not ip:
        return None
    version = ip[0] >> 4
    if version == 4 and len(ip) >= 20:
        header = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        if ip[9] != _UDP or header < 20 or total > len(ip) or header + 8 > total:
            return None
        if int.from_bytes(ip[6:8], "big") & 0x3FFF:  # a fragment: not a whole datagram
            return None
        src_host = str(ipaddress.IPv4Address(ip[12:16]))
        dst_host = str(ipaddress.IPv4Address(ip[16:20]))
        udp = ip[header:total]
    elif version == 6 and len(ip) >= 40:
        total = 40 + int.from_bytes(ip[4:6], "big")
        if ip[6] != _UDP or total > len(ip) or total < 48:
            return None
        src_host = str(ipaddress.IPv6Address(ip[8:24]))
        dst_host = str(ipaddress.IPv6Address(ip[24:40]))
        udp = ip[40:total]
    else:
        return None
    # The IP length, not the UDP one: a GSO buffer captured before
    # segmentation carries the segment's UDP length and the whole IP length.
    src = (src_host, int.from_bytes(udp[0:2], "big"))
    dst = (dst_host, int.from_bytes(udp[2:4], "big"))
    return CapturedDatagram(frame, timestamp, src, dst, bytes(udp[8:]))


def _by_ethertype(record: bytes, ethertype_at: int, ip_at: int) -> bytes | None:
    if len(record) < ip_at:
        return None
    ethertype = int.from_bytes(record[ethertype_at : ethertype_at + 2], "big")
    if ethertype not in (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6):
        return None
    return record[ip_at:]


def split_coalesced_untrusted(payload: bytes) -> list[bytes] | None:
    """The datagrams of a UDP GSO (or GRO) buffer that a capture holds as one
    datagram, or ``None`` when ``payload`` is not one.

    Linux segments a GSO send into datagrams of one size (the last may be
    shorter) *after* the capture point on loopback and on interfaces that
    offload segmentation; a capture there holds the unsegmented buffer, which
    Wireshark's DOF dissector reads as one DNP packet (one per UDP datagram)
    and fails to decrypt. dofpy's endpoints send runs of equal-size datagrams
    so. The split is accepted only when every part is a CCM-protected DOF
    datagram of one session with consecutive packet numbers (what one sender's
    run is): a real datagram is never split by chance. Never raises."""
    size = len(payload)
    prefix = payload[:2]
    if size < 2:
        return None
    for segment in range(16, size):
        if payload[segment : segment + 2] != prefix:
            continue
        parts = [payload[at : at + segment] for at in range(0, size, segment)]
        if _one_run(parts):
            return parts
    return None


def _one_run(parts: list[bytes]) -> bool:
    try:
        frames = [parse_secure_datagram_untrusted(part) for part in parts]
    except BadPacket:
        return False
    ssid = frames[0].ssid
    number = frames[0].packet_number
    for index, frame in enumerate(frames):
        if frame.ssid != ssid or frame.packet_number != number + index:
            return False
    return True
