"""A file-backed simulated bootloader: the contract of
:mod:`dofpy_services.device.bootloader` on the files of a directory.

The directory (made by :meth:`SimulatedBootloader.provision`, as a factory
would flash a device) holds::

    records           two areas of RECORD_AREA_BYTES: the record's two copies
    slot-normal       the Normal slot (A on the A/B layout), its capacity long
    slot-normal-b     the B slot (A/B layout only)
    slot-reprogram    the Reprogram slot

Slots and records are written in place, as on flash; every write and fsync
goes through a :class:`~dofpy_services.device.fs.DeviceFs`, so a
:class:`~dofpy_services.device.fs.PowerCutFs` can cut the power at any of
them. Opening a :class:`SimulatedBootloader` on a directory *is* a power-on:
it runs the boot decision from the files (the contract's module docstring),
and :meth:`~SimulatedBootloader.reboot` runs it again.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dofpy.errors import BadPacket
from dofpy_services.device.boot_records import (
    LAYOUT_SLOTS,
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
from dofpy_services.device.bootloader import (
    BootInfo,
    BootloaderError,
    Bricked,
    SlotBusy,
    SlotNotBootable,
    WrongImage,
)
from dofpy_services.device.fs import DeviceFs, OsFs, PowerCutFs

__all__ = [
    "RECORDS_FILE",
    "SLOT_FILES",
    "FirmwareImage",
    "SimulatedBootloader",
    "SimulatedSlotWriter",
    "inspect_device",
]

RECORDS_FILE = "records"
SLOT_FILES: dict[Slot, str] = {
    Slot.NORMAL: "slot-normal",
    Slot.NORMAL_B: "slot-normal-b",
    Slot.REPROGRAM: "slot-reprogram",
}
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    """An image's bytes and its version, as :meth:`SimulatedBootloader.provision`
    flashes it and tests write it."""

    data: bytes
    version: str
    sequence: int

    def slot_image(self) -> SlotImage:
        return SlotImage(
            len(self.data), hashlib.sha256(self.data).digest(), self.sequence, self.version
        )


def _slot_digest(fs: DeviceFs, slot: Slot, size: int) -> bytes:
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = fs.read(SLOT_FILES[slot], offset, min(_HASH_CHUNK, size - offset))
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    if offset < size:  # the file is shorter than the image: it cannot match
        return b""
    return digest.digest()


def _verifies(fs: DeviceFs, record: BootRecord, slot: Slot) -> bool:
    """Whether ``slot`` holds a whole image whose bytes match its record."""
    image = record.slot(slot).image
    if image is None or not fs.exists(SLOT_FILES[slot]):
        return False
    return hmac.compare_digest(_slot_digest(fs, slot, image.size), image.digest)


def _read_copies(fs: DeviceFs) -> tuple[bytes, bytes]:
    data = fs.read(RECORDS_FILE, 0, 2 * RECORD_AREA_BYTES) if fs.exists(RECORDS_FILE) else b""
    return data[:RECORD_AREA_BYTES], data[RECORD_AREA_BYTES : 2 * RECORD_AREA_BYTES]


class SimulatedSlotWriter:
    """A slot of a :class:`SimulatedBootloader` open for writing."""

    def __init__(self, bootloader: SimulatedBootloader, slot: Slot, capacity: int) -> None:
        self._bootloader = bootloader
        self._slot = slot
        self._capacity = capacity

    @property
    def slot(self) -> Slot:
        return self._slot

    @property
    def capacity(self) -> int:
        return self._capacity

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self._capacity:
            raise ValueError(f"{offset}+{length} is outside the slot ({self._capacity} bytes)")
        if self._bootloader.record().state(self._slot) is not SlotState.WRITING:
            raise BootloaderError(f"{self._slot.name} is no longer open for writing")

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        self._bootloader.fs.write(SLOT_FILES[self._slot], offset, data)

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return self._bootloader.read_slot(self._slot, offset, length)

    def sync(self) -> None:
        self._bootloader.fs.fsync(SLOT_FILES[self._slot])

    def finish(self, image: SlotImage) -> None:
        self._check(0, image.size)
        self.sync()
        fs = self._bootloader.fs
        if not hmac.compare_digest(_slot_digest(fs, self._slot, image.size), image.digest):
            raise WrongImage(f"{self._slot.name} does not hold the image {image.version}")
        self._bootloader._set_slot(self._slot, SlotState.VALID, image)


class SimulatedBootloader:
    """The bootloader contract on a directory (see the module docstring).

    ``fs``: the file operations (default :class:`OsFs` on ``directory``; tests
    give a :class:`PowerCutFs`). Raises :class:`Bricked` if the records or the
    accepted slot are unusable.
    """

    def __init__(self, directory: str | os.PathLike[str], *, fs: DeviceFs | None = None) -> None:
        self.directory = Path(directory)
        self.fs: DeviceFs = fs if fs is not None else OsFs(self.directory)
        self.boots = 0
        """Boot decisions this object made (power-ons and reboots)."""
        self._boot()

    @classmethod
    def provision(
        cls,
        directory: str | os.PathLike[str],
        layout: Layout,
        *,
        normal: FirmwareImage,
        reprogram: FirmwareImage,
        normal_capacity: int,
        reprogram_capacity: int,
        max_boot_attempts: int = 3,
    ) -> SimulatedBootloader:
        """Flash a new device in ``directory`` (which must hold no records):
        ``normal`` in the Normal slot, accepted and booted; ``reprogram`` in
        the Reprogram slot; the B slot (A/B) empty."""
        fs = OsFs(directory)
        if fs.exists(RECORDS_FILE):
            raise FileExistsError(f"{fs.directory}: already holds a device")
        slots: list[SlotRecord] = []
        for slot in LAYOUT_SLOTS[layout]:
            capacity = reprogram_capacity if slot is Slot.REPROGRAM else normal_capacity
            content = {Slot.NORMAL: normal, Slot.REPROGRAM: reprogram}.get(slot)
            if content is not None and len(content.data) > capacity:
                raise ValueError(f"the {slot.name} image does not fit in {capacity} bytes")
            fs.write(SLOT_FILES[slot], 0, (content.data if content else b"").ljust(capacity, b"\0"))
            fs.fsync(SLOT_FILES[slot])
            state = SlotState.VALID if content else SlotState.EMPTY
            slots.append(
                SlotRecord(slot, state, capacity, content.slot_image() if content else None)
            )
        record = BootRecord(
            sequence=1,
            layout=layout,
            target=Slot.NORMAL,
            accepted=Slot.NORMAL,
            boot_attempts=0,
            max_boot_attempts=max_boot_attempts,
            slots=tuple(slots),
            last_normal=Slot.NORMAL,
        )
        encoded = encode_boot_record(record).ljust(RECORD_AREA_BYTES, b"\0")
        fs.write(RECORDS_FILE, 0, encoded + bytes(RECORD_AREA_BYTES))
        fs.fsync(RECORDS_FILE)
        fs.fsync_directory()
        return cls(directory)

    # ------------------------------------------------------------ boot decision

    def _boot(self) -> None:
        found = current_record(_read_copies(self.fs))
        if found is None:
            raise Bricked(f"{self.directory}: neither record copy is valid")
        self._index, self._record = found
        record = self._record
        if record.target != record.accepted:
            if record.boot_attempts < record.max_boot_attempts and _verifies(
                self.fs, record, record.target
            ):
                self._write(replace(record, boot_attempts=record.boot_attempts + 1))
                self._booted = record.target
            else:  # the trial failed max_boot_attempts times, or its image is not whole
                self._write(replace(record, target=record.accepted, boot_attempts=0))
                self._booted = record.accepted
        else:
            self._booted = record.accepted
        if self._booted == self._record.accepted and not _verifies(
            self.fs, self._record, self._booted
        ):
            raise Bricked(
                f"{self.directory}: the accepted slot {self._booted.name} does not verify"
            )
        self.boots += 1

    def _write(self, record: BootRecord) -> None:
        """Write ``record`` (next sequence number) over the copy that is not
        the current one, and fsync it: a torn write spoils only that copy."""
        record = replace(record, sequence=self._record.sequence + 1)
        area = 1 - self._index
        # Only the record's own bytes: what is left of an older one after them
        # is ignored (the length field), and a torn write tears the record itself.
        self.fs.write(RECORDS_FILE, area * RECORD_AREA_BYTES, encode_boot_record(record))
        self.fs.fsync(RECORDS_FILE)
        self._index, self._record = area, record

    def reboot(self) -> BootInfo:
        """Reboot (a clean one: what was written stays); runs the boot decision
        from the files again and returns what it booted."""
        self._boot()
        return self.booted()

    def power_cut(self) -> BootInfo:
        """Cut the power now (needs a :class:`PowerCutFs`: what was never
        fsync-ed is lost), switch on again, and return what booted."""
        if not isinstance(self.fs, PowerCutFs):
            raise TypeError("power_cut needs a PowerCutFs")
        self.fs.power_cut()
        self.fs = PowerCutFs(self.directory)
        self._boot()
        return self.booted()

    # ------------------------------------------------------------ the contract

    @property
    def layout(self) -> Layout:
        return self._record.layout

    def slots(self) -> tuple[Slot, ...]:
        return LAYOUT_SLOTS[self._record.layout]

    def record(self) -> BootRecord:
        return self._record

    def booted(self) -> BootInfo:
        record = self._record
        image = record.slot(self._booted).image
        assert image is not None  # the booted slot is VALID: it cannot be opened
        accepted = self._booted == record.accepted
        return BootInfo(self._booted, image, accepted, 0 if accepted else record.boot_attempts)

    def slot_record(self, slot: Slot) -> SlotRecord:
        return self._record.slot(slot)

    def read_slot(self, slot: Slot, offset: int, length: int) -> bytes:
        capacity = self._record.slot(slot).capacity
        if offset < 0 or length < 0 or offset + length > capacity:
            raise ValueError(f"{offset}+{length} is outside the slot ({capacity} bytes)")
        return self.fs.read(SLOT_FILES[slot], offset, length)

    def _check_writable(self, slot: Slot) -> SlotRecord:
        entry = self._record.slot(slot)
        if slot in (self._booted, self._record.accepted, self._record.target):
            raise SlotBusy(f"{slot.name} is booted, accepted or the boot target")
        return entry

    def _set_slot(self, slot: Slot, state: SlotState, image: SlotImage | None) -> None:
        record = self._record
        slots = tuple(
            SlotRecord(e.slot, state, e.capacity, image) if e.slot is slot else e
            for e in record.slots
        )
        # The slot's old image is gone: it is neither the last accepted Normal
        # image nor the one to roll back to any more.
        last = None if record.last_normal is slot else record.last_normal
        previous = None if record.previous_normal is slot else record.previous_normal
        self._write(replace(record, slots=slots, last_normal=last, previous_normal=previous))

    def open_slot(self, slot: Slot) -> SimulatedSlotWriter:
        entry = self._check_writable(slot)
        if entry.state is not SlotState.WRITING:
            self._set_slot(slot, SlotState.WRITING, None)
        return SimulatedSlotWriter(self, slot, entry.capacity)

    def erase_slot(self, slot: Slot) -> None:
        entry = self._check_writable(slot)
        if entry.state is not SlotState.EMPTY:
            self._set_slot(slot, SlotState.EMPTY, None)

    def set_boot_target(self, slot: Slot) -> None:
        record = self._record
        if record.slot(slot).state is not SlotState.VALID:
            raise SlotNotBootable(f"{slot.name} holds no whole image")
        if record.target != slot or record.boot_attempts:
            self._write(replace(record, target=slot, boot_attempts=0))

    def accept(self) -> None:
        record = self._record
        booted = self._booted
        if booted == record.accepted and record.target == booted:
            return
        last, previous = record.last_normal, record.previous_normal
        if booted.is_normal and last != booted:
            previous, last = last, booted
        elif booted.is_normal:
            last = booted
        self._write(
            replace(
                record,
                target=booted,
                accepted=booted,
                boot_attempts=0,
                last_normal=last,
                previous_normal=previous,
            )
        )

    def rollback_slot(self) -> Slot | None:
        return self._record.previous_normal

    def free_normal_slot(self) -> Slot | None:
        busy = {self._booted, self._record.accepted, self._record.target}
        for slot in self.slots():
            if slot.is_normal and slot not in busy:
                return slot
        return None


def inspect_device(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``dofpy device status --sim DIR`` shows, read without writing
    anything (no boot decision is run): both record copies, the current
    record, each slot (and whether its bytes match its image), what booted."""
    fs = OsFs(directory)
    if not fs.exists(RECORDS_FILE):
        raise FileNotFoundError(f"{fs.directory}: no simulated device (no records file)")
    copies = _read_copies(fs)
    described: list[dict[str, Any]] = []
    for index, data in enumerate(copies):
        try:
            copy = decode_boot_record_untrusted(data)
            described.append({"copy": index, "valid": True, "sequence": copy.sequence})
        except BadPacket as exc:
            described.append({"copy": index, "valid": False, "reason": str(exc)})
    found = current_record(copies)
    if found is None:
        return {"directory": str(fs.directory), "records": described, "current": None}
    index, record = found
    booted = record.target if record.target == record.accepted or record.boot_attempts else None
    booted = record.accepted if booted is None else booted
    slots = []
    for entry in record.slots:
        image = entry.image
        slots.append(
            {
                "slot": entry.slot.name.lower(),
                "state": entry.state.name.lower(),
                "capacity": entry.capacity,
                "version": image.version if image else None,
                "sequence": image.sequence if image else None,
                "size": image.size if image else None,
                "digest": image.digest.hex() if image else None,
                "verifies": _verifies(fs, record, entry.slot) if image else None,
            }
        )
    return {
        "directory": str(fs.directory),
        "records": described,
        "current": index,
        "sequence": record.sequence,
        "layout": record.layout.name.lower(),
        "booted": booted.name.lower(),
        "accepted": record.accepted.name.lower(),
        "target": record.target.name.lower(),
        "boot_attempts": record.boot_attempts,
        "max_boot_attempts": record.max_boot_attempts,
        "rollback": None if record.previous_normal is None else record.previous_normal.name.lower(),
        "slots": slots,
    }
