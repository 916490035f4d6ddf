"""The bootloader's records: what it boots, what is accepted, what each slot holds.

Pure codec, no I/O. A :class:`BootRecord` is stored twice (*double-buffered*)
in two fixed-size areas of the records file; each copy carries a sequence
number and the SHA-256 of its bytes. A new record is always written over the
copy that does **not** hold the current one, with the next sequence number,
so a torn write (a power cut part-way through) destroys at most the older
copy: the torn copy fails its checksum, and :func:`current_record` picks the
valid copy with the highest sequence number — the record from before the
interrupted write, or the new one if it was written whole.

Layout of one copy (big-endian)::

    magic "dofpyBR\\x01" | body length u16 | body | SHA-256(magic, length, body)

    body: sequence u64 | layout u8 | target u8 | accepted u8 | last_normal u8 |
          previous_normal u8 | boot_attempts u8 | max_boot_attempts u8 |
          slot count u8 | per slot: slot u8 | state u8 | capacity u64 |
          (state VALID only) size u64 | digest 32 | image sequence u64 |
          version length u8 | version (UTF-8)

``0xFF`` stands for "no slot". Bytes after the digest (the area's padding)
are ignored.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass

from dofpy.errors import BadPacket

__all__ = [
    "LAYOUT_SLOTS",
    "MAX_VERSION_BYTES",
    "RECORD_AREA_BYTES",
    "BootRecord",
    "Layout",
    "Slot",
    "SlotImage",
    "SlotRecord",
    "SlotState",
    "current_record",
    "decode_boot_record_untrusted",
    "encode_boot_record",
]


class Slot(enum.IntEnum):
    """A slot of the device's storage (the number is the Version service's
    ``BootState.slot``)."""

    NORMAL = 0
    """The Normal image (the A slot on the A/B layout)."""
    REPROGRAM = 1
    """The small Reprogram image: obtains a new Normal image, rolls back."""
    NORMAL_B = 2
    """The second Normal slot of the A/B layout."""

    @property
    def is_normal(self) -> bool:
        return self is not Slot.REPROGRAM


class Layout(enum.IntEnum):
    """Which slots a device has."""

    SEED = 1
    """One Normal slot and the Reprogram slot: a Normal image is written from
    Reprogram mode, over the old one."""
    AB = 2
    """Two Normal slots and the Reprogram slot: the previous Normal image is
    kept in the other slot, for an instant revert."""


LAYOUT_SLOTS: dict[Layout, tuple[Slot, ...]] = {
    Layout.SEED: (Slot.NORMAL, Slot.REPROGRAM),
    Layout.AB: (Slot.NORMAL, Slot.NORMAL_B, Slot.REPROGRAM),
}
"""The slots of each layout, in record order."""


class SlotState(enum.IntEnum):
    """What a slot holds."""

    EMPTY = 0
    """Erased: nothing bootable."""
    WRITING = 1
    """Opened for writing: its bytes are not an image yet, never booted."""
    VALID = 2
    """A whole image, whose size and digest the record holds."""


MAX_VERSION_BYTES = 64
RECORD_AREA_BYTES = 512
"""The size of each of the two copy areas in the records file."""

_NO_SLOT = 0xFF
_MAGIC = b"dofpyBR\x01"
_HEAD = struct.Struct(">8sH")
_BODY = struct.Struct(">QBBBBBBBB")
_SLOT = struct.Struct(">BBQ")
_IMAGE = struct.Struct(">Q32sQB")
_DIGEST_BYTES = 32
_U64 = 1 << 64


@dataclass(frozen=True, slots=True)
class SlotImage:
    """The image a slot holds: its size, SHA-256, and version (text and order)."""

    size: int
    digest: bytes
    sequence: int
    version: str

    def __post_init__(self) -> None:
        if not 0 <= self.size < _U64 or not 0 <= self.sequence < _U64:
            raise ValueError("size and sequence must fit in 64 bits")
        if len(self.digest) != _DIGEST_BYTES:
            raise ValueError("digest must be 32 bytes (SHA-256)")
        if len(self.version.encode("utf-8")) > MAX_VERSION_BYTES:
            raise ValueError(f"version must be at most {MAX_VERSION_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """One slot as the record describes it; ``image`` is set exactly when VALID."""

    slot: Slot
    state: SlotState
    capacity: int
    image: SlotImage | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.capacity < _U64:
            raise ValueError("capacity must fit in 64 bits")
        if (self.image is not None) != (self.state is SlotState.VALID):
            raise ValueError("a slot has an image exactly when it is VALID")
        if self.image is not None and self.image.size > self.capacity:
            raise ValueError("the image is larger than its slot")


@dataclass(frozen=True, slots=True)
class BootRecord:
    """The bootloader's whole state.

    ``target`` is the slot to boot next; ``accepted`` the last accepted one,
    booted instead once ``target`` has been booted ``max_boot_attempts`` times
    without being accepted (or does not verify). ``last_normal`` is the Normal
    slot accepted most recently, ``previous_normal`` the one accepted before it
    while it still holds that image (A/B: the instant-revert slot).
    """

    sequence: int
    layout: Layout
    target: Slot
    accepted: Slot
    boot_attempts: int
    max_boot_attempts: int
    slots: tuple[SlotRecord, ...]
    last_normal: Slot | None = None
    previous_normal: Slot | None = None

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ValueError(problem)

    def slot(self, slot: Slot) -> SlotRecord:
        """The record of ``slot`` (KeyError if the layout has no such slot)."""
        for entry in self.slots:
            if entry.slot is slot:
                return entry
        raise KeyError(slot)

    def state(self, slot: Slot) -> SlotState:
        return self.slot(slot).state


def _problem(record: BootRecord) -> str:
    """Why ``record`` is not a record the bootloader could have written ('' if it is)."""
    if not 0 <= record.sequence < _U64:
        return "sequence must fit in 64 bits"
    if tuple(entry.slot for entry in record.slots) != LAYOUT_SLOTS[record.layout]:
        return "the slots are not the layout's"
    if not 1 <= record.max_boot_attempts <= 255:
        return "max_boot_attempts must be 1..255"
    if not 0 <= record.boot_attempts <= record.max_boot_attempts:
        return "boot_attempts must be 0..max_boot_attempts"
    states = {entry.slot: entry.state for entry in record.slots}
    for name, slot in (("target", record.target), ("accepted", record.accepted)):
        if states.get(slot) is not SlotState.VALID:
            return f"the {name} slot must hold a valid image"
    for name, maybe in (("last_normal", record.last_normal), ("previous", record.previous_normal)):
        if maybe is not None and (not maybe.is_normal or states.get(maybe) is not SlotState.VALID):
            return f"the {name} slot must be a valid Normal slot"
    if record.previous_normal is not None and record.previous_normal == record.last_normal:
        return "previous_normal must differ from last_normal"
    return ""


def _slot_byte(slot: Slot | None) -> int:
    return _NO_SLOT if slot is None else int(slot)


def encode_boot_record(record: BootRecord) -> bytes:
    """One copy of ``record`` (at most :data:`RECORD_AREA_BYTES`)."""
    parts = [
        _BODY.pack(
            record.sequence,
            record.layout,
            record.target,
            record.accepted,
            _slot_byte(record.last_normal),
            _slot_byte(record.previous_normal),
            record.boot_attempts,
            record.max_boot_attempts,
            len(record.slots),
        )
    ]
    for entry in record.slots:
        parts.append(_SLOT.pack(entry.slot, entry.state, entry.capacity))
        image = entry.image
        if image is not None:
            version = image.version.encode("utf-8")
            parts.append(_IMAGE.pack(image.size, image.digest, image.sequence, len(version)))
            parts.append(version)
    body = b"".join(parts)
    head = _HEAD.pack(_MAGIC, len(body)) + body
    encoded = head + hashlib.sha256(head).digest()
    assert len(encoded) <= RECORD_AREA_BYTES  # three slots with 64-byte versions: 386 bytes
    return encoded


def _enum(kind: type[enum.IntEnum], value: int, what: str) -> enum.IntEnum:
    try:
        return kind(value)
    except ValueError:
        raise BadPacket(f"boot record: unknown {what} {value}") from None


def decode_boot_record_untrusted(data: bytes) -> BootRecord:
    """The record in ``data`` (one copy area; trailing bytes ignored).

    Raises only :class:`~dofpy.errors.BadPacket`: for a torn, corrupt or
    foreign copy, or one that says something the bootloader never writes.
    """
    view = bytes(data)
    if len(view) < _HEAD.size:
        raise BadPacket("boot record: truncated")
    magic, length = _HEAD.unpack_from(view)
    if magic != _MAGIC:
        raise BadPacket("boot record: not a boot record")
    end = _HEAD.size + length
    if len(view) < end + _DIGEST_BYTES:
        raise BadPacket("boot record: truncated")
    if not hmac.compare_digest(hashlib.sha256(view[:end]).digest(), view[end : end + 32]):
        raise BadPacket("boot record: checksum mismatch (torn or corrupt)")
    body = view[_HEAD.size : end]
    try:
        return _decode_body(body)
    except struct.error:
        raise BadPacket("boot record: truncated body") from None
    except ValueError as exc:  # a field the bootloader never writes (BootRecord's checks)
        raise BadPacket(f"boot record: {exc}") from None


def _decode_body(body: bytes) -> BootRecord:
    (sequence, layout, target, accepted, last, previous, attempts, maximum, count) = (
        _BODY.unpack_from(body)
    )
    offset = _BODY.size
    slots: list[SlotRecord] = []
    for _ in range(count):
        slot_value, state_value, capacity = _SLOT.unpack_from(body, offset)
        offset += _SLOT.size
        slot = Slot(_enum(Slot, slot_value, "slot"))
        state = SlotState(_enum(SlotState, state_value, "slot state"))
        image = None
        if state is SlotState.VALID:
            size, digest, image_sequence, version_length = _IMAGE.unpack_from(body, offset)
            offset += _IMAGE.size
            raw = body[offset : offset + version_length]
            offset += version_length
            if len(raw) != version_length or version_length > MAX_VERSION_BYTES:
                raise BadPacket("boot record: bad version text")
            try:
                version = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BadPacket("boot record: version is not UTF-8") from None
            image = SlotImage(size, digest, image_sequence, version)
        slots.append(SlotRecord(slot, state, capacity, image))
    if offset != len(body):
        raise BadPacket("boot record: trailing bytes in the body")

    def optional(value: int, what: str) -> Slot | None:
        return None if value == _NO_SLOT else Slot(_enum(Slot, value, what))

    return BootRecord(
        sequence,
        Layout(_enum(Layout, layout, "layout")),
        Slot(_enum(Slot, target, "target slot")),
        Slot(_enum(Slot, accepted, "accepted slot")),
        attempts,
        maximum,
        tuple(slots),
        optional(last, "last_normal slot"),
        optional(previous, "previous_normal slot"),
    )


def current_record(copies: tuple[bytes, bytes]) -> tuple[int, BootRecord] | None:
    """Of the two copy areas, the index and record of the valid copy with the
    highest sequence number; ``None`` when neither is valid."""
    best: tuple[int, BootRecord] | None = None
    for index, data in enumerate(copies):
        try:
            record = decode_boot_record_untrusted(data)
        except BadPacket:
            continue
        if best is None or record.sequence > best[1].sequence:
            best = (index, record)
    return best
