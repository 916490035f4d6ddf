"""OpenDOF Object Identifiers (OIDs) and Interface Identifiers (IIDs).

OID wire form: class (c4) · header byte (bit 7: attributes follow; bit 6: 0;
bits 0-5: data length 0..63) · data · attributes. Each attribute is
``[bit 7 more | id (7 bits)] [length, 1 byte] [data]``; attribute 0 carries a
provider OID, 1 a session, 2 a group. Class 0 is the broadcast OID.

IID wire form: the first byte's low two bits give the identifier length
(0 -> 16, 1 -> 1, 2 -> 2, 3 -> 4 bytes), its upper six bits the registry.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from dofpy.errors import BadPacket
from dofpy.wire._codec import C4_MAX, Reader, encode_c4

__all__ = [
    "IID",
    "OID",
    "BROADCAST_OID",
    "OIDAttribute",
    "OIDAttributeType",
    "decode_iid_untrusted",
    "decode_oid_untrusted",
    "parse_oid_text_untrusted",
    "read_iid",
    "read_oid",
]

OID_MAX_DATA = 63
_ATTR_MAX_DATA = 255


class OIDAttributeType(enum.IntEnum):
    PROVIDER = 0
    SESSION = 1
    GROUP = 2


@dataclass(frozen=True, slots=True)
class OIDAttribute:
    """One OID attribute: a type id (0..127) and its raw data (<= 255 bytes)."""

    type_id: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.type_id <= 0x7F:
            raise ValueError(f"OID attribute id {self.type_id} outside 0..127")
        if len(self.data) > _ATTR_MAX_DATA:
            raise ValueError(f"OID attribute data of {len(self.data)} bytes exceeds 255")


@dataclass(frozen=True, slots=True)
class OID:
    """An Object Identifier: a class, up to 63 data bytes and attributes.

    ``OID(6, b"example.org")`` is the domain ``[6:example.org]``.
    """

    class_id: int
    data: bytes = b""
    attributes: tuple[OIDAttribute, ...] = field(default=())

    def __post_init__(self) -> None:
        if not 0 <= self.class_id <= C4_MAX:
            raise ValueError(f"OID class {self.class_id} outside 0..{C4_MAX:#x}")
        if len(self.data) > OID_MAX_DATA:
            raise ValueError(f"OID data of {len(self.data)} bytes exceeds {OID_MAX_DATA}")
        if self.class_id == 0 and (self.data or self.attributes):
            raise ValueError("the broadcast OID (class 0) has no data and no attributes")

    @classmethod
    def from_text(cls, text: str) -> OID:
        """Parse ``[6:example.org]`` or ``[{06}:{6578}]``; raises ``ValueError``."""
        try:
            return parse_oid_text_untrusted(text)
        except BadPacket as exc:
            raise ValueError(str(exc)) from None

    @property
    def is_broadcast(self) -> bool:
        return self.class_id == 0

    def without_attributes(self) -> OID:
        return OID(self.class_id, self.data) if self.attributes else self

    def encode(self) -> bytes:
        out = bytearray(encode_c4(self.class_id))
        if self.class_id == 0:
            return bytes(out)
        out.append((0x80 if self.attributes else 0) | len(self.data))
        out += self.data
        for index, attr in enumerate(self.attributes):
            more = 0x80 if index + 1 < len(self.attributes) else 0
            out.append(more | attr.type_id)
            out.append(len(attr.data))
            out += attr.data
        return bytes(out)

    def __str__(self) -> str:
        if self.class_id == 0:
            return "[0:]"
        return "[" + _format_part(self.class_id, self.data) + "]"


def _printable(data: bytes) -> bool:
    return all(0x20 < b < 0x7F and b not in b"[]{}:" for b in data)


def _format_part(class_id: int, data: bytes) -> str:
    if data and _printable(data):
        return f"{class_id}:{data.decode('ascii')}"
    return f"{{{class_id:02x}}}:{{{data.hex()}}}"


def read_oid(reader: Reader) -> OID:
    """Read one OID from ``reader`` (untrusted)."""
    class_id = reader.c4()
    if class_id == 0:
        return OID(0)
    header = reader.u8()
    if header & 0x40:
        raise BadPacket("OID header bit 6 must be 0")
    data = reader.take(header & 0x3F)
    attributes: list[OIDAttribute] = []
    if header & 0x80:
        while True:
            tag = reader.u8()
            length = reader.u8()
            attributes.append(OIDAttribute(tag & 0x7F, reader.take(length)))
            if not tag & 0x80:
                break
    return OID(class_id, data, tuple(attributes))


def decode_oid_untrusted(data: bytes) -> OID:
    """Decode bytes holding exactly one OID."""
    reader = Reader(data)
    oid = read_oid(reader)
    reader.expect_end("OID")
    return oid


_TEXT = re.compile(r"^\[(?:(\d+)|\{([0-9a-fA-F]+)\}):(?:\{([0-9a-fA-F]*)\}|([^\]]*))\]$")


def parse_oid_text_untrusted(text: str) -> OID:
    """Parse the text form of an OID; raises ``BadPacket`` on malformed text."""
    match = _TEXT.match(text.strip())
    if match is None:
        raise BadPacket(f"not an OID text form: {text!r}")
    dec_class, hex_class, hex_data, str_data = match.groups()
    try:
        class_id = int(dec_class) if dec_class is not None else int(hex_class, 16)
        if hex_data is not None:
            if len(hex_data) % 2:
                raise BadPacket(f"odd number of hex digits in {text!r}")
            data = bytes.fromhex(hex_data)
        else:
            data = str_data.encode("utf-8")
        return OID(class_id, data)
    except ValueError as exc:
        raise BadPacket(f"invalid OID {text!r}: {exc}") from None


BROADCAST_OID = OID(0)


_IID_LENGTHS = {0: 16, 1: 1, 2: 2, 3: 4}
_IID_CODES = {length: code for code, length in _IID_LENGTHS.items()}


@dataclass(frozen=True, slots=True)
class IID:
    """An Interface Identifier: a registry (0..63) and a 1, 2, 4 or 16 byte id.

    Text form ``[1:{00010000}]``: registry, then the identifier in hex.
    """

    registry: int
    identifier: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.registry <= 0x3F:
            raise ValueError(f"IID registry {self.registry} outside 0..63")
        if len(self.identifier) not in _IID_CODES:
            raise ValueError(f"IID identifier must be 1, 2, 4 or 16 bytes, not {len(self.identifier)}")

    @classmethod
    def from_text(cls, text: str) -> IID:
        match = re.fullmatch(r"\[(\d+):\{([0-9a-fA-F]+)\}\]", text.strip())
        if match is None:
            raise ValueError(f"not an IID text form: {text!r}")
        return cls(int(match.group(1)), bytes.fromhex(match.group(2)))

    def encode(self) -> bytes:
        return bytes(((self.registry << 2) | _IID_CODES[len(self.identifier)],)) + self.identifier

    def __str__(self) -> str:
        return f"[{self.registry}:{{{self.identifier.hex()}}}]"


def read_iid(reader: Reader) -> IID:
    first = reader.u8()
    return IID(first >> 2, reader.take(_IID_LENGTHS[first & 0x03]))


def decode_iid_untrusted(data: bytes) -> IID:
    reader = Reader(data)
    iid = read_iid(reader)
    reader.expect_end("IID")
    return iid
