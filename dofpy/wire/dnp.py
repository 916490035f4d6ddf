"""DNP, the DOF Network Protocol: the outermost framing of every datagram.

DNP version 1 (as Wireshark's DOF dissector reads it)::

    header   1 byte   bit 7: a flags byte follows; bits 0-6: version (1)
    flags    1 byte   only if header bit 7; absent means 0
                      bits 0-1: size of the length field (0..3 bytes)
                      0x04: source address present
                      0x08: destination address present
                      bits 4-7: reserved, zero
    length   0..3 B   big-endian count of the bytes after the length field
                      (addresses included); absent: the rest of the datagram
    source   c3       only if flag 0x04 (the dissector shows 0 when absent)
    dest     c3       only if flag 0x08
    payload           the DPP packet

DNP version 0 is the version query: a header byte with version 0, then either
nothing or zero padding (a query), or a list of non-zero supported versions,
optionally followed by zero padding (a query response).

We emit the flags byte only when it is not 0 and refuse a zero flags byte on
input (a non-minimal encoding), so every packet has exactly one encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from dofpy.errors import BadPacket
from dofpy.wire._codec import C3_MAX, Reader, check_version_list, encode_c3

__all__ = [
    "DNP_VERSION",
    "DnpPacket",
    "DnpPdu",
    "DnpVersionQuery",
    "DnpVersionResponse",
    "decode_dnp_any_untrusted",
    "decode_dnp_untrusted",
    "encode_dnp",
]

DNP_VERSION = 1

_FLAG_SOURCE = 0x04
_FLAG_DESTINATION = 0x08
_FLAG_LENGTH_SIZE = 0x03
_FLAG_RESERVED = 0xF0


@dataclass(frozen=True, slots=True)
class DnpPacket:
    """A DNP version 1 packet carrying ``payload`` (a DPP packet).

    ``source`` / ``destination`` are the optional DNP addresses (c3,
    0..0x3FFFFF); ``length_size`` is the size in bytes (0..3) of the explicit
    length field, 0 meaning "the rest of the datagram".
    """

    payload: bytes
    source: int | None = None
    destination: int | None = None
    length_size: int = 0
    version: int = DNP_VERSION

    def __post_init__(self) -> None:
        if self.version != DNP_VERSION:
            raise ValueError(f"DnpPacket is DNP version 1, not {self.version}")
        if not 0 <= self.length_size <= 3:
            raise ValueError(f"DNP length field size {self.length_size} outside 0..3")
        for name, address in (("source", self.source), ("destination", self.destination)):
            if address is not None and not 0 <= address <= C3_MAX:
                raise ValueError(f"DNP {name} address {address} outside 0..{C3_MAX:#x}")


@dataclass(frozen=True, slots=True)
class DnpVersionQuery:
    """DNP version 0 query: "which DNP versions do you support?".

    ``padding`` zero bytes may follow the header (the dissector allows them).
    """

    padding: int = 0

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise ValueError("padding cannot be negative")


@dataclass(frozen=True, slots=True)
class DnpVersionResponse:
    """DNP version 0 query response: the supported versions (1..255 each)."""

    versions: tuple[int, ...]

    def __post_init__(self) -> None:
        check_version_list(self.versions, "DNP")


DnpPdu = DnpPacket | DnpVersionQuery | DnpVersionResponse


def encode_dnp(packet: DnpPdu) -> bytes:
    """Encode a DNP packet (or a version query / response) into a datagram."""
    if isinstance(packet, DnpVersionQuery):
        return bytes(1 + packet.padding)
    if isinstance(packet, DnpVersionResponse):
        return b"\x00" + bytes(packet.versions)
    flags = packet.length_size
    tail = bytearray()
    if packet.source is not None:
        flags |= _FLAG_SOURCE
        tail += encode_c3(packet.source)
    if packet.destination is not None:
        flags |= _FLAG_DESTINATION
        tail += encode_c3(packet.destination)
    tail += packet.payload
    out = bytearray()
    if flags:
        out += bytes((0x80 | DNP_VERSION, flags))
    else:
        out.append(DNP_VERSION)
    if packet.length_size:
        if len(tail) >= 1 << (8 * packet.length_size):
            raise ValueError(
                f"{len(tail)} bytes do not fit a {packet.length_size}-byte DNP length field"
            )
        out += len(tail).to_bytes(packet.length_size, "big")
    return bytes(out + tail)


def decode_dnp_any_untrusted(datagram: bytes) -> DnpPdu:
    """Decode a datagram's DNP layer: a version 1 packet or a version 0 query."""
    reader = Reader(datagram)
    header = reader.u8()
    version = header & 0x7F
    if version == 0:
        if header & 0x80:
            raise BadPacket("DNP version 0 header with the flags bit set")
        return _decode_version_query(reader.rest())
    if version != DNP_VERSION:
        raise BadPacket(f"unsupported DNP version {version}")
    flags = 0
    if header & 0x80:
        flags = reader.u8()
        if flags == 0:
            raise BadPacket("DNP flags byte present but 0 (not minimal)")
        if flags & _FLAG_RESERVED:
            raise BadPacket(f"DNP reserved flag bits set: {flags:#04x}")
    length_size = flags & _FLAG_LENGTH_SIZE
    if length_size:
        length = int.from_bytes(reader.take(length_size), "big")
        if length != reader.remaining():
            raise BadPacket(
                f"DNP length {length} does not match the {reader.remaining()} bytes that follow"
            )
    source = reader.c3() if flags & _FLAG_SOURCE else None
    destination = reader.c3() if flags & _FLAG_DESTINATION else None
    return DnpPacket(reader.rest(), source, destination, length_size)


def _decode_version_query(body: bytes) -> DnpVersionQuery | DnpVersionResponse:
    versions = body.split(b"\x00", 1)[0]
    padding = body[len(versions) :]
    if padding.strip(b"\x00"):
        raise BadPacket("DNP version list: non-zero byte after the padding began")
    if not versions:
        return DnpVersionQuery(len(padding))
    if padding:
        raise BadPacket("DNP version response with padding (not minimal)")
    return DnpVersionResponse(tuple(versions))


def decode_dnp_untrusted(datagram: bytes) -> DnpPacket:
    """Decode a DNP version 1 packet; a version query is ``BadPacket`` here."""
    packet = decode_dnp_any_untrusted(datagram)
    if not isinstance(packet, DnpPacket):
        raise BadPacket("DNP version query, not a DNP version 1 packet")
    return packet
