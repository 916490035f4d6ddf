"""The boot record codec: round trip, refusal of anything torn or foreign
(BadPacket only), and the choice of the current copy."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy_services.device.boot_records import (
    LAYOUT_SLOTS,
    MAX_VERSION_BYTES,
    RECORD_AREA_BYTES,
    BootRecord,
    Layout,
    Slot,
    SlotImage,
    SlotRecord,
    SlotState,
    current_record,
    decode_boot_record_untrusted,
    encode_boot_record,
)

U64 = st.integers(0, (1 << 64) - 1)
images = st.builds(
    SlotImage,
    size=st.integers(0, 1 << 20),
    digest=st.binary(min_size=32, max_size=32),
    sequence=U64,
    version=st.text(max_size=MAX_VERSION_BYTES // 4),
)


@st.composite
def boot_records(draw: st.DrawFn) -> BootRecord:
    layout = draw(st.sampled_from(Layout))
    slots = []
    for slot in LAYOUT_SLOTS[layout]:
        state = draw(st.sampled_from(SlotState))
        image = draw(images) if state is SlotState.VALID else None
        capacity = draw(st.integers(image.size if image else 0, 1 << 24))
        slots.append(SlotRecord(slot, state, capacity, image))
    valid = [entry.slot for entry in slots if entry.state is SlotState.VALID]
    if not valid:  # the bootloader always has an accepted slot
        entry = slots[0]
        slots[0] = SlotRecord(
            entry.slot, SlotState.VALID, entry.capacity, SlotImage(0, bytes(32), 0, "")
        )
        valid = [entry.slot]
    normal = [slot for slot in valid if slot.is_normal]
    last = draw(st.sampled_from([None, *normal]))
    previous = draw(st.sampled_from([None, *[s for s in normal if s != last]]))
    maximum = draw(st.integers(1, 255))
    return BootRecord(
        sequence=draw(U64),
        layout=layout,
        target=draw(st.sampled_from(valid)),
        accepted=draw(st.sampled_from(valid)),
        boot_attempts=draw(st.integers(0, maximum)),
        max_boot_attempts=maximum,
        slots=tuple(slots),
        last_normal=last,
        previous_normal=previous,
    )


@given(boot_records(), st.binary(max_size=64))
def test_round_trip(record: BootRecord, padding: bytes) -> None:
    encoded = encode_boot_record(record)
    assert len(encoded) <= RECORD_AREA_BYTES
    assert decode_boot_record_untrusted(encoded + padding) == record


@given(boot_records(), st.data())
def test_any_truncation_or_flipped_bit_is_refused(record: BootRecord, data: st.DataObject) -> None:
    encoded = encode_boot_record(record)
    with pytest.raises(BadPacket):
        decode_boot_record_untrusted(encoded[: data.draw(st.integers(0, len(encoded) - 1))])
    position = data.draw(st.integers(0, len(encoded) * 8 - 1))
    flipped = bytearray(encoded)
    flipped[position // 8] ^= 1 << (position % 8)
    with pytest.raises(BadPacket):
        decode_boot_record_untrusted(bytes(flipped))


@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_bad_packet(data: bytes) -> None:
    with contextlib.suppress(BadPacket):
        decode_boot_record_untrusted(data)


def _seal(body: bytes) -> bytes:
    """A copy with a correct checksum around ``body`` (what only a bug or a
    forger writes: the checks behind the checksum)."""
    head = b"dofpyBR\x01" + len(body).to_bytes(2, "big") + body
    return head + hashlib.sha256(head).digest()


def _record(**changes: object) -> BootRecord:
    image = SlotImage(4, hashlib.sha256(b"abcd").digest(), 1, "1.0")
    record = BootRecord(
        sequence=7,
        layout=Layout.SEED,
        target=Slot.NORMAL,
        accepted=Slot.NORMAL,
        boot_attempts=0,
        max_boot_attempts=3,
        slots=(
            SlotRecord(Slot.NORMAL, SlotState.VALID, 16, image),
            SlotRecord(Slot.REPROGRAM, SlotState.VALID, 8, image),
        ),
        last_normal=Slot.NORMAL,
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def _forged(**changes: object) -> bytes:
    """A copy of a record the bootloader never writes, with a good checksum
    (what only a bug or a forger makes: the checks behind the checksum)."""
    record = _record()
    for name, value in changes.items():
        object.__setattr__(record, name, value)  # past BootRecord's own checks
    return encode_boot_record(record)


_EMPTY_REPROGRAM = (_record().slots[0], SlotRecord(Slot.REPROGRAM, SlotState.EMPTY, 8))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"layout": Layout.AB}, "slots are not the layout's"),
        ({"slots": _EMPTY_REPROGRAM, "accepted": Slot.REPROGRAM}, "accepted slot must hold"),
        ({"slots": _EMPTY_REPROGRAM, "target": Slot.REPROGRAM}, "target slot must hold"),
        ({"boot_attempts": 4}, "boot_attempts"),
        ({"max_boot_attempts": 0}, "max_boot_attempts"),
        ({"last_normal": Slot.REPROGRAM}, "last_normal slot must be"),
        ({"previous_normal": Slot.NORMAL}, "previous_normal must differ"),
    ],
)
def test_checked_fields_behind_a_good_checksum(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(BadPacket, match=reason):
        decode_boot_record_untrusted(_forged(**changes))


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (8, "unknown layout"),
        (9, "unknown target"),
        (11, "unknown last_normal"),
        (16, "unknown slot"),
    ],
)
def test_unknown_values_behind_a_good_checksum(offset: int, reason: str) -> None:
    body = bytearray(encode_boot_record(_record())[10:-32])
    body[offset] = 9  # offsets in the body: layout, target, last_normal, the first slot
    with pytest.raises(BadPacket, match=reason):
        decode_boot_record_untrusted(_seal(bytes(body)))


def test_trailing_body_bytes_and_bad_version_text_are_refused() -> None:
    body = encode_boot_record(_record())[10:-32]
    with pytest.raises(BadPacket, match="trailing"):
        decode_boot_record_untrusted(_seal(body + b"\0"))
    with pytest.raises(BadPacket, match="UTF-8"):
        decode_boot_record_untrusted(_seal(body.replace(b"1.0", b"\xff.0")))


def test_the_valid_copy_with_the_higher_sequence_is_current() -> None:
    older = encode_boot_record(_record(sequence=7))
    newer = encode_boot_record(_record(sequence=8, boot_attempts=0))
    assert current_record((older, newer)) == (1, _record(sequence=8))
    assert current_record((newer, older)) == (0, _record(sequence=8))
    torn = newer[: len(newer) // 2] + older[len(newer) // 2 :]
    assert current_record((older, torn)) == (0, _record(sequence=7))
    assert current_record((torn, b"")) is None


def test_records_the_bootloader_never_writes_are_refused_at_encoding() -> None:
    with pytest.raises(ValueError, match="accepted"):
        _record(
            slots=(
                SlotRecord(Slot.NORMAL, SlotState.VALID, 16, _record().slots[0].image),
                SlotRecord(Slot.REPROGRAM, SlotState.EMPTY, 8),
            ),
            accepted=Slot.REPROGRAM,
        )
    with pytest.raises(ValueError, match="image exactly when"):
        SlotRecord(Slot.NORMAL, SlotState.WRITING, 16, _record().slots[0].image)
    with pytest.raises(ValueError, match="larger"):
        SlotRecord(Slot.NORMAL, SlotState.VALID, 2, _record().slots[0].image)
    with pytest.raises(ValueError, match="previous_normal must differ"):
        _record(previous_normal=Slot.NORMAL)
