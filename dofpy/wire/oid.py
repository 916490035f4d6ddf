"""OpenDOF Object Identifiers (OIDs) and Interface Identifiers (IIDs).

OID wire form: class (c4) · header byte (bit 7: attributes follow; bit 6: must
be 0; bits 0-5: data length 0..63) · data · attributes. The header byte is
always present, so the broadcast OID (class 0, no data) is ``00 00``. Each
attribute is ``[bit 7: another attribute follows | id (7 bits)] [length, 1
byte] [data]``. Attribute 0 (provider) and 2 (group) carry a complete nested
OID: Wireshark's DOF dissector parses their data as one and reports a malformed
packet when it is not, so we refuse anything else there. Attribute 1 (session)
and the other ids carry raw bytes.

Text form, exactly as the dissector prints it: ``[{06}:example.org]``. The class
is hex in braces, 2, 4, 6 or 8 upper-case digits; the data is shown as a string
when every byte is printable ASCII (0x20..0x7E), with ``[ ] ( ) { } | \\``
escaped by a backslash, otherwise as ``{HEX}``. Attributes follow in
parentheses, separated by ``|``: ``[{06}:ab({01}:xy|{00}:[{03}:z])]`` (a value
that is itself a valid OID is shown as that OID). The parser also accepts a
decimal class (``[6:example.org]``) and lower-case hex.

IID wire form: the first byte's low two bits give the identifier length
(0 -> 16, 1 -> 1, 2 -> 2, 3 -> 4 bytes), its upper six bits the registry. Text
form ``[{01}:{00010000}]``: registry as two hex digits, then the identifier.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from dofpy.errors import BadPacket
from dofpy.wire._codec import C4_MAX, Reader, encode_c4

__all__ = [
    "BROADCAST_OID",
    "IID",
    "OID",
    "OIDAttribute",
    "OIDAttributeType",
    "decode_iid_untrusted",
    "decode_oid_untrusted",
    "parse_iid_text_untrusted",
    "parse_oid_text_untrusted",
    "read_iid",
    "read_oid",
]

OID_MAX_DATA = 63
_ATTR_MAX_DATA = 255
_ESCAPED = frozenset(b"[](){}|\\")
# Attributes whose value the dissector parses as a nested OID.
_OID_VALUED = frozenset((0, 2))
# A nested OID takes at least 4 wire bytes per level and an attribute holds at
# most 255, so deeper text cannot describe a valid OID anyway.
_MAX_TEXT_DEPTH = 64


class OIDAttributeType(enum.IntEnum):
    """Attribute ids with a defined meaning."""

    PROVIDER = 0
    SESSION = 1
    GROUP = 2


@dataclass(frozen=True, slots=True)
class OIDAttribute:
    """One OID attribute: a type id (0..127) and its raw data (<= 255 bytes).

    For ``PROVIDER`` and ``GROUP`` the data must be one complete OID encoding;
    build those with :meth:`with_oid`.
    """

    type_id: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.type_id <= 0x7F:
            raise ValueError(f"OID attribute id {self.type_id} outside 0..127")
        if len(self.data) > _ATTR_MAX_DATA:
            raise ValueError(f"OID attribute data of {len(self.data)} bytes exceeds 255")
        if self.type_id in _OID_VALUED:
            try:
                decode_oid_untrusted(self.data)
            except BadPacket as exc:
                raise ValueError(f"OID attribute {self.type_id} must hold one OID: {exc}") from None

    @classmethod
    def with_oid(cls, type_id: int, oid: OID) -> OIDAttribute:
        """An attribute whose value is ``oid`` (e.g. a provider or group)."""
        return cls(type_id, oid.encode())

    @property
    def oid(self) -> OID | None:
        """The nested OID for provider/group attributes, else ``None``."""
        if self.type_id in _OID_VALUED:
            return decode_oid_untrusted(self.data)
        return None


@dataclass(frozen=True, slots=True)
class OID:
    """An Object Identifier: a class, up to 63 data bytes and attributes.

    ``OID(6, b"example.org")`` is the domain ``[{06}:example.org]``. Class 0 is
    the broadcast OID; it carries no data.
    """

    class_id: int
    data: bytes = b""
    attributes: tuple[OIDAttribute, ...] = field(default=())

    def __post_init__(self) -> None:
        if isinstance(self.class_id, bool) or not 0 <= self.class_id <= C4_MAX:
            raise ValueError(f"OID class {self.class_id} outside 0..{C4_MAX:#x}")
        if len(self.data) > OID_MAX_DATA:
            raise ValueError(f"OID data of {len(self.data)} bytes exceeds {OID_MAX_DATA}")
        if self.class_id == 0 and self.data:
            raise ValueError("the broadcast OID (class 0) has no data")
        if not isinstance(self.attributes, tuple):
            raise ValueError("OID attributes must be a tuple")

    @classmethod
    def from_text(cls, text: str) -> OID:
        """Parse ``[{06}:example.org]`` or ``[6:example.org]``; raises ``ValueError``."""
        try:
            return parse_oid_text_untrusted(text)
        except BadPacket as exc:
            raise ValueError(str(exc)) from None

    @property
    def is_broadcast(self) -> bool:
        """True for class 0, the broadcast OID."""
        return self.class_id == 0

    def without_attributes(self) -> OID:
        """This OID with its attributes dropped."""
        return OID(self.class_id, self.data) if self.attributes else self

    def encode(self) -> bytes:
        """The wire encoding (always minimal)."""
        out = bytearray(encode_c4(self.class_id))
        out.append((0x80 if self.attributes else 0) | len(self.data))
        out += self.data
        for index, attr in enumerate(self.attributes):
            more = 0x80 if index + 1 < len(self.attributes) else 0
            out.append(more | attr.type_id)
            out.append(len(attr.data))
            out += attr.data
        return bytes(out)

    def __str__(self) -> str:
        text = "[{" + _class_hex(self.class_id) + "}:" + _format_data(self.data)
        if self.attributes:
            parts = []
            for attr in self.attributes:
                parts.append(f"{{{attr.type_id:02X}}}:" + _format_attribute_value(attr.data))
            text += "(" + "|".join(parts) + ")"
        return text + "]"


def _class_hex(class_id: int) -> str:
    width = max(1, (class_id.bit_length() + 7) // 8)
    return f"{class_id:0{2 * width}X}"


def _format_data(data: bytes) -> str:
    if all(0x20 <= b <= 0x7E for b in data):
        return "".join("\\" + chr(b) if b in _ESCAPED else chr(b) for b in data)
    return "{" + data.hex().upper() + "}"


def _format_attribute_value(data: bytes) -> str:
    try:
        return str(decode_oid_untrusted(data))
    except BadPacket:
        return _format_data(data)


def read_oid(reader: Reader) -> OID:
    """Read one OID from ``reader`` (untrusted input; raises ``BadPacket``)."""
    class_id = reader.c4()
    header = reader.u8()
    if header & 0x40:
        raise BadPacket("OID header bit 6 must be 0")
    data = reader.take(header & 0x3F)
    attributes: list[OIDAttribute] = []
    more = bool(header & 0x80)
    while more:
        tag = reader.u8()
        value = reader.take(reader.u8())
        try:
            attributes.append(OIDAttribute(tag & 0x7F, value))
        except ValueError as exc:
            raise BadPacket(f"bad OID attribute: {exc}") from None
        more = bool(tag & 0x80)
    try:
        return OID(class_id, data, tuple(attributes))
    except ValueError as exc:
        raise BadPacket(f"bad OID: {exc}") from None


def decode_oid_untrusted(data: bytes) -> OID:
    """Decode bytes holding exactly one OID."""
    reader = Reader(data)
    oid = read_oid(reader)
    reader.expect_end("OID")
    return oid


class _TextParser:
    """Recursive-descent parser for the OID text form."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> BadPacket:
        return BadPacket(f"invalid OID text {self.text!r} at {self.pos}: {why}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected {char!r}")
        self.pos += 1

    def hex_field(self) -> bytes:
        self.expect("{")
        end = self.text.find("}", self.pos)
        if end < 0:
            raise self.fail("unclosed '{'")
        digits = self.text[self.pos : end]
        if len(digits) % 2 or not re.fullmatch(r"[0-9A-Fa-f]*", digits):
            raise self.fail("bad hex digits")
        self.pos = end + 1
        return bytes.fromhex(digits)

    def number(self) -> int:
        match = re.compile(r"\d{1,10}").match(self.text, self.pos)
        if match is None:
            raise self.fail("expected a number")
        self.pos = match.end()
        return int(match.group())

    def string_field(self) -> bytes:
        out = bytearray()
        while True:
            char = self.peek()
            if char == "\\":
                self.pos += 1
                char = self.peek()
                if not char or ord(char) not in _ESCAPED:
                    raise self.fail("bad escape")
                out.append(ord(char))
                self.pos += 1
            elif not char or ord(char) in _ESCAPED:
                return bytes(out)
            elif 0x20 <= ord(char) <= 0x7E:
                out.append(ord(char))
                self.pos += 1
            else:
                raise self.fail("character outside printable ASCII")

    def data_field(self) -> bytes:
        return self.hex_field() if self.peek() == "{" else self.string_field()

    def oid(self, depth: int = 0) -> OID:
        if depth > _MAX_TEXT_DEPTH:
            raise self.fail("OIDs nested too deeply")
        self.expect("[")
        if self.peek() == "{":
            raw_class = self.hex_field()
            if not 1 <= len(raw_class) <= 4:
                raise self.fail("class needs 1 to 4 hex bytes")
            class_id = int.from_bytes(raw_class, "big")
        else:
            class_id = self.number()
        self.expect(":")
        data = self.data_field()
        attributes: list[OIDAttribute] = []
        if self.peek() == "(":
            self.pos += 1
            while True:
                type_id = (
                    int.from_bytes(self.hex_field(), "big")
                    if self.peek() == "{"
                    else (self.number())
                )
                self.expect(":")
                value = self.oid(depth + 1).encode() if self.peek() == "[" else self.data_field()
                try:
                    attributes.append(OIDAttribute(type_id, value))
                except ValueError as exc:
                    raise self.fail(str(exc)) from None
                if self.peek() != "|":
                    break
                self.pos += 1
            self.expect(")")
        self.expect("]")
        try:
            return OID(class_id, data, tuple(attributes))
        except ValueError as exc:
            raise self.fail(str(exc)) from None


def parse_oid_text_untrusted(text: str) -> OID:
    """Parse the text form of an OID; raises ``BadPacket`` on malformed text."""
    if len(text) > 4096:
        raise BadPacket("OID text too long")
    parser = _TextParser(text.strip())
    oid = parser.oid()
    if parser.pos != len(parser.text):
        raise parser.fail("trailing characters")
    return oid


BROADCAST_OID = OID(0)


_IID_LENGTHS = {0: 16, 1: 1, 2: 2, 3: 4}
_IID_CODES = {length: code for code, length in _IID_LENGTHS.items()}
_IID_TEXT = re.compile(r"\[(?:\{([0-9A-Fa-f]{2})\}|(\d{1,2})):\{([0-9A-Fa-f]*)\}\]")


@dataclass(frozen=True, slots=True)
class IID:
    """An Interface Identifier: a registry (0..63) and a 1, 2, 4 or 16 byte id.

    Text form ``[{01}:{00010000}]``: registry in hex, then the identifier.
    """

    registry: int
    identifier: bytes

    def __post_init__(self) -> None:
        if isinstance(self.registry, bool) or not 0 <= self.registry <= 0x3F:
            raise ValueError(f"IID registry {self.registry} outside 0..63")
        if len(self.identifier) not in _IID_CODES:
            raise ValueError(
                f"IID identifier must be 1, 2, 4 or 16 bytes, not {len(self.identifier)}"
            )

    @classmethod
    def from_text(cls, text: str) -> IID:
        """Parse ``[{01}:{00010000}]`` (or a decimal registry); raises ``ValueError``."""
        try:
            return parse_iid_text_untrusted(text)
        except BadPacket as exc:
            raise ValueError(str(exc)) from None

    def encode(self) -> bytes:
        """The wire encoding."""
        return bytes(((self.registry << 2) | _IID_CODES[len(self.identifier)],)) + self.identifier

    def __str__(self) -> str:
        return f"[{{{self.registry:02X}}}:{{{self.identifier.hex().upper()}}}]"


def parse_iid_text_untrusted(text: str) -> IID:
    """Parse the text form of an IID; raises ``BadPacket`` on malformed text."""
    match = _IID_TEXT.fullmatch(text.strip())
    if match is None:
        raise BadPacket(f"not an IID text form: {text[:80]!r}")
    hex_registry, dec_registry, identifier = match.groups()
    registry = int(hex_registry, 16) if hex_registry is not None else int(dec_registry)
    if len(identifier) % 2:
        raise BadPacket(f"odd number of hex digits in {text[:80]!r}")
    try:
        return IID(registry, bytes.fromhex(identifier))
    except ValueError as exc:
        raise BadPacket(f"invalid IID {text[:80]!r}: {exc}") from None


def read_iid(reader: Reader) -> IID:
    """Read one IID from ``reader`` (untrusted input; raises ``BadPacket``)."""
    first = reader.u8()
    return IID(first >> 2, reader.take(_IID_LENGTHS[first & 0x03]))


def decode_iid_untrusted(data: bytes) -> IID:
    """Decode bytes holding exactly one IID."""
    reader = Reader(data)
    iid = read_iid(reader)
    reader.expect_end("IID")
    return iid
