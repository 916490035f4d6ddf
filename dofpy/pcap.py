"""Pure pcap formatting: turn UDP datagrams into pcap bytes (LINKTYPE_RAW, so
IPv4 and IPv6 share one file). The trio endpoint writes these to a file; tests
and interop checks feed them to tshark.
"""

from __future__ import annotations

import ipaddress
import struct

__all__ = ["PCAP_GLOBAL_HEADER", "pcap_record"]

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
