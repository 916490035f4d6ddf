"""Fuzz target: the bootloader's record copies as a power cut or a corrupt
flash leaves them (``decode_boot_record_untrusted``); a copy that decodes
must re-encode to the same bytes, and ``current_record`` must choose a copy
that decodes."""

from __future__ import annotations

import hashlib

from dofpy_services.device.boot_records import (
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

_IMAGE = SlotImage(4096, hashlib.sha256(b"normal").digest(), 20, "2.0")
_SEED = BootRecord(
    sequence=5,
    layout=Layout.SEED,
    target=Slot.REPROGRAM,
    accepted=Slot.NORMAL,
    boot_attempts=1,
    max_boot_attempts=3,
    slots=(
        SlotRecord(Slot.NORMAL, SlotState.VALID, 8192, _IMAGE),
        SlotRecord(Slot.REPROGRAM, SlotState.VALID, 2048, SlotImage(900, bytes(32), 1, "r1")),
    ),
    last_normal=Slot.NORMAL,
)
_AB = BootRecord(
    sequence=9,
    layout=Layout.AB,
    target=Slot.NORMAL_B,
    accepted=Slot.NORMAL_B,
    boot_attempts=0,
    max_boot_attempts=3,
    slots=(
        SlotRecord(Slot.NORMAL, SlotState.VALID, 8192, SlotImage(10, bytes(32), 10, "1.0")),
        SlotRecord(Slot.NORMAL_B, SlotState.VALID, 8192, _IMAGE),
        SlotRecord(Slot.REPROGRAM, SlotState.WRITING, 2048),
    ),
    last_normal=Slot.NORMAL_B,
    previous_normal=Slot.NORMAL,
)

SEEDS: tuple[bytes, ...] = (
    encode_boot_record(_SEED),
    encode_boot_record(_AB),
    encode_boot_record(_SEED).ljust(RECORD_AREA_BYTES, b"\0") + encode_boot_record(_AB),
)


def target(data: bytes) -> None:
    first, second = data[:RECORD_AREA_BYTES], data[RECORD_AREA_BYTES:]
    found = current_record((first, second))
    if found is not None:
        index, record = found
        if decode_boot_record_untrusted((first, second)[index]) != record:
            raise AssertionError("current_record chose a copy that does not decode to it")
    record = decode_boot_record_untrusted(data)
    encoded = encode_boot_record(record)
    if decode_boot_record_untrusted(encoded) != record or not data.startswith(encoded):
        raise AssertionError("a decoded record does not survive re-encoding")
