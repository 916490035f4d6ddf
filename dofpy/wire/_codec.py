"""Byte-level primitives shared by every codec: a bounds-checked reader and the
OpenDOF compressed integers c2, c3 and c4.

Only minimal encodings are accepted or produced: a value that fits a shorter
form in a longer one is ``BadPacket`` (tshark flags it too).
"""

from __future__ import annotations

from dofpy.errors import BadPacket

C2_MAX = 0x7FFF
C3_MAX = 0x3FFFFF
C4_MAX = 0x3FFFFFFF


class Reader:
    """A cursor over untrusted bytes; every read that runs past the end raises
    ``BadPacket``."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self._data = bytes(data)
        self._pos = pos

    @property
    def pos(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def at_end(self) -> bool:
        return self._pos >= len(self._data)

    def peek_u8(self) -> int:
        if self._pos >= len(self._data):
            raise BadPacket("truncated: expected a byte at end of data")
        return self._data[self._pos]

    def u8(self) -> int:
        value = self.peek_u8()
        self._pos += 1
        return value

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise BadPacket(f"truncated: wanted {n} bytes, {self.remaining()} left")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def expect_end(self, what: str) -> None:
        if not self.at_end():
            raise BadPacket(f"{what}: {self.remaining()} trailing bytes")

    # -- compressed integers -------------------------------------------------

    def c2(self) -> int:
        first = self.u8()
        if first < 0x80:
            return first
        value = ((first & 0x7F) << 8) | self.u8()
        if value < 0x80:
            raise BadPacket("c2 not minimally encoded")
        return value

    def c3(self) -> int:
        first = self.u8()
        if first < 0x80:
            return first
        if first < 0xC0:
            value = ((first & 0x3F) << 8) | self.u8()
            if value < 0x80:
                raise BadPacket("c3 not minimally encoded")
            return value
        value = ((first & 0x3F) << 16) | self.u16()
        if value <= 0x3FFF:
            raise BadPacket("c3 not minimally encoded")
        return value

    def c4(self) -> int:
        first = self.u8()
        if first < 0x80:
            return first
        if first < 0xC0:
            value = ((first & 0x3F) << 8) | self.u8()
            if value < 0x80:
                raise BadPacket("c4 not minimally encoded")
            return value
        value = ((first & 0x3F) << 24) | int.from_bytes(self.take(3), "big")
        if value <= 0x3FFF:
            raise BadPacket("c4 not minimally encoded")
        return value


def _check(value: int, maximum: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} needs an int, got {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} value {value} outside 0..{maximum:#x}")


def encode_c2(value: int) -> bytes:
    """Minimal c2: one byte below 0x80, else two bytes with the top bit set."""
    _check(value, C2_MAX, "c2")
    if value < 0x80:
        return bytes((value,))
    return (0x8000 | value).to_bytes(2, "big")


def encode_c3(value: int) -> bytes:
    """Minimal c3: 1, 2 (14 bits) or 3 (22 bits) bytes."""
    _check(value, C3_MAX, "c3")
    if value < 0x80:
        return bytes((value,))
    if value <= 0x3FFF:
        return (0x8000 | value).to_bytes(2, "big")
    return (0xC00000 | value).to_bytes(3, "big")


def encode_c4(value: int) -> bytes:
    """Minimal c4: 1, 2 (14 bits) or 4 (30 bits) bytes."""
    _check(value, C4_MAX, "c4")
    if value < 0x80:
        return bytes((value,))
    if value <= 0x3FFF:
        return (0x8000 | value).to_bytes(2, "big")
    return (0xC0000000 | value).to_bytes(4, "big")


def check_u8(value: int, name: str) -> None:
    _check(value, 0xFF, name)


def check_version_list(versions: tuple[int, ...], layer: str) -> None:
    """A version query response lists one or more versions, each 1..255."""
    if not versions:
        raise ValueError("a version response lists at least one version")
    for version in versions:
        if not 1 <= version <= 0xFF:
            raise ValueError(f"{layer} version {version} outside 1..255")
