"""The CCM security mode (DOF protocol id 0x6001): its per-packet header and
its negotiation options.

**Header.** A secure DPP packet whose security header has the 0x80 bit set
carries, right after that header, the security-mode header. For CCM in a
two-party session (every TEP session), as Wireshark's DOF dissector reads it::

    flags     1 byte  0x80 manager · 0x70 key period (0..7) · 0x08 target node
                      follows · 0x04 reserved (0) · 0x02 next node follows ·
                      0x01 packet number follows
    packet    c4      if 0x01; absent, the receiver counts packets itself
    target    c4      if 0x08
    next node c4      if 0x02

then the ciphertext and the tag. In a two-party session the node id (0 for the
initiator, 1 for the responder) and the slot (0) are implied, not sent; the
n-party (group) form, which sends them, is not implemented here.

**Options.** The value of the DSP option / TEP "desired security mode"
(family 2, protocol 0x6001)::

    count      1 byte   number of strengths
    strengths  count bytes (1 = AES-256, 2 = AES-192, 3 = AES-128)
    flags      1 byte   0x80 minimum encrypt · 0x40 maximum encrypt ·
                        0x38 maximum MAC code · 0x07 minimum MAC code
                        (MAC length in bytes = code * 2 + 2)

The dissector takes the cipher from the first strength, "encrypted" from the
0x80 bit and the tag length from the *minimum* MAC code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dofpy.errors import BadPacket
from dofpy.wire._codec import C4_MAX, Reader, encode_c4

__all__ = [
    "CCM_PROTOCOL_ID",
    "CcmHeader",
    "CcmOptions",
    "CcmStrength",
    "decode_ccm_header_untrusted",
    "decode_ccm_options_untrusted",
    "read_ccm_header",
]

CCM_PROTOCOL_ID = 0x6001

_FLAG_MANAGER = 0x80
_FLAG_PERIOD = 0x70
_FLAG_TARGET = 0x08
_FLAG_RESERVED = 0x04
_FLAG_NEXT_NODE = 0x02
_FLAG_PACKET = 0x01

_VALID_TAGS = frozenset(range(4, 17, 2))


class CcmStrength(enum.IntEnum):
    """Cipher strengths a CCM option may offer (the dissector's names)."""

    AES_256 = 1
    AES_192 = 2
    AES_128 = 3


def _check_optional_c4(value: int | None, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not 0 <= value <= C4_MAX):
        raise ValueError(f"CCM {name} {value} outside 0..{C4_MAX:#x}")


@dataclass(frozen=True, slots=True)
class CcmHeader:
    """The CCM header of one secure packet (two-party form).

    ``packet_number`` goes into the nonce; dofpy always sends it. ``key_period``
    (0..7) selects a key in group sessions and is ignored by two-party ones.
    ``manager`` is the 0x80 flag, whose meaning the public record does not
    give; dofpy sends it clear.
    """

    packet_number: int | None = None
    target_node: int | None = None
    next_node: int | None = None
    key_period: int = 0
    manager: bool = False

    def __post_init__(self) -> None:
        _check_optional_c4(self.packet_number, "packet number")
        _check_optional_c4(self.target_node, "target node")
        _check_optional_c4(self.next_node, "next node")
        if isinstance(self.key_period, bool) or not 0 <= self.key_period <= 7:
            raise ValueError(f"CCM key period {self.key_period} outside 0..7")

    def encode(self) -> bytes:
        """The wire encoding."""
        flags = (self.key_period << 4) | (_FLAG_MANAGER if self.manager else 0)
        out = bytearray()
        if self.packet_number is not None:
            flags |= _FLAG_PACKET
            out += encode_c4(self.packet_number)
        if self.target_node is not None:
            flags |= _FLAG_TARGET
            out += encode_c4(self.target_node)
        if self.next_node is not None:
            flags |= _FLAG_NEXT_NODE
            out += encode_c4(self.next_node)
        return bytes((flags,)) + bytes(out)


def read_ccm_header(reader: Reader) -> CcmHeader:
    """Read a two-party CCM header (untrusted input; raises ``BadPacket``)."""
    flags = reader.u8()
    if flags & _FLAG_RESERVED:
        raise BadPacket(f"CCM header reserved flag 0x04 set: {flags:#04x}")
    packet_number = reader.c4() if flags & _FLAG_PACKET else None
    target = reader.c4() if flags & _FLAG_TARGET else None
    next_node = reader.c4() if flags & _FLAG_NEXT_NODE else None
    return CcmHeader(
        packet_number=packet_number,
        target_node=target,
        next_node=next_node,
        key_period=(flags & _FLAG_PERIOD) >> 4,
        manager=bool(flags & _FLAG_MANAGER),
    )


def decode_ccm_header_untrusted(data: bytes) -> CcmHeader:
    """Decode bytes holding exactly one CCM header."""
    reader = Reader(data)
    header = read_ccm_header(reader)
    reader.expect_end("CCM header")
    return header


@dataclass(frozen=True, slots=True)
class CcmOptions:
    """What a node asks of (or grants to) a CCM session.

    ``min_tag`` is the tag (MAC) length the session uses, in bytes: 4, 6, ...
    16. ``encrypt_min`` clear means packets are authenticated but sent in
    clear. ``strengths`` lists the offered ciphers, preferred first; dofpy
    implements AES-256 only.
    """

    strengths: tuple[int, ...] = (CcmStrength.AES_256,)
    encrypt_min: bool = True
    encrypt_max: bool = True
    max_tag: int = 16
    min_tag: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.strengths, tuple) or not 1 <= len(self.strengths) <= 0xFF:
            raise ValueError("CCM options need a tuple of 1 to 255 strengths")
        for strength in self.strengths:
            if isinstance(strength, bool) or not 0 <= strength <= 0xFF:
                raise ValueError(f"CCM strength {strength} outside 0..255")
        for name, tag in (("max_tag", self.max_tag), ("min_tag", self.min_tag)):
            if tag not in _VALID_TAGS:
                raise ValueError(f"CCM {name} {tag} is not one of 4, 6, ... 16")
        if self.min_tag > self.max_tag:
            raise ValueError("CCM min_tag exceeds max_tag")

    @property
    def tag_length(self) -> int:
        """The tag length the session uses (the dissector reads ``min_tag``)."""
        return self.min_tag

    def encode(self) -> bytes:
        """The option value bytes."""
        flags = (
            (0x80 if self.encrypt_min else 0)
            | (0x40 if self.encrypt_max else 0)
            | (((self.max_tag - 2) // 2) << 3)
            | ((self.min_tag - 2) // 2)
        )
        return bytes((len(self.strengths), *self.strengths, flags))


def decode_ccm_options_untrusted(data: bytes) -> CcmOptions:
    """Decode a CCM option value."""
    reader = Reader(data)
    count = reader.u8()
    strengths = tuple(reader.take(count))
    flags = reader.u8()
    reader.expect_end("CCM options")
    max_code, min_code = (flags >> 3) & 0x07, flags & 0x07
    if max_code == 0 or min_code == 0:
        raise BadPacket("CCM MAC code 0 (a 2-byte tag) is not a valid CCM tag length")
    try:
        return CcmOptions(
            strengths=strengths,
            encrypt_min=bool(flags & 0x80),
            encrypt_max=bool(flags & 0x40),
            max_tag=max_code * 2 + 2,
            min_tag=min_code * 2 + 2,
        )
    except ValueError as exc:
        raise BadPacket(f"bad CCM options: {exc}") from None
