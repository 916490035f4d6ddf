"""The failsafe bootloader contract the device agent programs against.

A device has *slots* of real bytes: one Normal slot and the small Reprogram
slot (:attr:`Layout.SEED`), or two Normal slots and the Reprogram slot
(:attr:`Layout.AB`). The bootloader keeps a :class:`BootRecord`
(double-buffered, sequence-numbered, checksummed: see
:mod:`dofpy_services.device.boot_records`) saying which slot to boot next
(the *target*), which was last *accepted*, how many times the target has been
booted without being accepted, and what image each slot holds. Every call
that changes the record is atomic: after a power cut at any point the record
is either the old one or the new one.

At every boot the bootloader decides (the *boot decision*):

- if the target is the accepted slot: boot it;
- else, if the target's bytes match its recorded digest and it has been booted
  fewer than ``max_boot_attempts`` times: count one more attempt (durably,
  before booting it) and boot it, not accepted (a *trial* boot);
- else: make the accepted slot the target again and boot it (the fallback).

So the accepted slot is never written (:meth:`Bootloader.open_slot` refuses
it, the booted slot and the target), and every boot ends in an accepted image
or a trial of a whole, verified one that falls back to the accepted image
after ``max_boot_attempts`` failed boots.

How the agent uses it
---------------------
Reboots come from the platform: on a device ``reboot()`` does not return; in
the simulator :meth:`SimulatedBootloader.reboot
<dofpy_services.device.simulated.SimulatedBootloader.reboot>` re-runs the
boot decision from the files on disk and returns, and the agent must then act
as a freshly started program: forget what it held in memory, read
:meth:`Bootloader.booted` and its own persisted state, and continue.
:meth:`~dofpy_services.device.simulated.SimulatedBootloader.power_cut`
(in tests, with :class:`~dofpy_services.device.fs.PowerCutFs`) drops what was
never ``fsync``-ed and reboots.

**A normal update on the seed's layout** (running Normal, accepted):

1. ``set_boot_target(Slot.REPROGRAM)``; reboot. Booted: Reprogram, a trial.
   (If Reprogram fails to come up, the bootloader falls back to Normal after
   ``max_boot_attempts`` boots: nothing changed.)
2. In Reprogram: ``accept()`` (Reprogram is now the fallback, so the Normal
   slot may be written).
3. ``writer = open_slot(Slot.NORMAL)``; ``writer.write(offset, block)`` for
   each verified block, ``writer.sync()`` now and then (what was synced
   survives a power cut; after a reboot, ``open_slot`` again resumes: the
   bytes already there stay, read them back to see which blocks are whole);
   ``writer.finish(SlotImage(size, sha256, sequence, version))`` (checks the
   digest of the slot's first ``size`` bytes, then records the image).
4. ``set_boot_target(Slot.NORMAL)``; reboot. Booted: Normal, a trial: check
   health, then ``accept()``. (A failed write or a new image that never
   accepts leaves the device in Reprogram mode, which retries.)

**A normal update on the A/B layout** (running Normal in slot S, accepted):
write the other Normal slot (``free_normal_slot()``) as in step 3, without
going through Reprogram, then step 4 with that slot. ``accept()`` records S as
``rollback_slot()``.

**A rollback**: A/B: ``set_boot_target(rollback_slot())``; reboot; ``accept()``
(instant: the previous image is still in its slot). Seed's layout
(``rollback_slot()`` is ``None``): re-install the previous image through
Reprogram mode exactly as a normal update.

**An updater update** (a new Reprogram image; running Normal, accepted, which
stays the safety net): ``open_slot(Slot.REPROGRAM)``, write, ``finish``. To try
it: ``set_boot_target(Slot.REPROGRAM)``; reboot; if it comes up ``accept()``,
then ``set_boot_target`` back to the Normal slot; reboot; ``accept()``. If it
does not come up, the bootloader falls back to Normal; the agent writes the
Reprogram slot again. While the Reprogram slot is being written the device
cannot enter Reprogram mode (``set_boot_target`` refuses a slot that is not
VALID).

Porting: docs/architecture.md maps each operation onto U-Boot, GRUB, barebox
and MCUboot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dofpy_services.device.boot_records import (
    BootRecord,
    Layout,
    Slot,
    SlotImage,
    SlotRecord,
    SlotState,
)
from dofpy_services.version.interface import BootState, ImageKind

__all__ = [
    "BootInfo",
    "BootRecord",
    "Bootloader",
    "BootloaderError",
    "Bricked",
    "Layout",
    "Slot",
    "SlotBusy",
    "SlotImage",
    "SlotNotBootable",
    "SlotRecord",
    "SlotState",
    "SlotWriter",
    "WrongImage",
]


class BootloaderError(Exception):
    """A bootloader operation the contract does not allow; nothing was changed."""


class SlotBusy(BootloaderError):
    """The slot is booted, accepted or the boot target: it cannot be written."""


class SlotNotBootable(BootloaderError):
    """The slot holds no whole image (EMPTY or WRITING): it cannot be the target."""


class WrongImage(BootloaderError):
    """The bytes in the slot do not match the image ``finish`` was given, or
    the image does not fit in the slot."""


class Bricked(Exception):
    """Neither record copy is valid, or the accepted slot does not verify:
    what the failsafe design must never let happen."""


@dataclass(frozen=True, slots=True)
class BootInfo:
    """What is running now: the slot, its image, whether that image is
    accepted, and how many trial boots it has had (0 once accepted)."""

    slot: Slot
    image: SlotImage
    accepted: bool
    boot_attempts: int

    @property
    def kind(self) -> ImageKind:
        return ImageKind.NORMAL if self.slot.is_normal else ImageKind.REPROGRAM

    def boot_state(self) -> BootState:
        """As the Version service records it."""
        return BootState(int(self.slot), self.kind, self.accepted, self.boot_attempts)


class SlotWriter(Protocol):
    """A slot opened for writing (its record says WRITING: never booted)."""

    @property
    def slot(self) -> Slot: ...

    @property
    def capacity(self) -> int:
        """Bytes the slot holds at most."""
        ...

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (ValueError beyond the capacity)."""
        ...

    def read(self, offset: int, length: int) -> bytes:
        """What the slot holds at ``offset`` (written or not yet)."""
        ...

    def sync(self) -> None:
        """Make what was written durable (survives a power cut)."""
        ...

    def finish(self, image: SlotImage) -> None:
        """Sync, check the slot's first ``image.size`` bytes have the SHA-256
        ``image.digest`` (else :class:`WrongImage`, the slot stays WRITING),
        then atomically record the slot VALID with ``image``."""
        ...


class Bootloader(Protocol):
    """The failsafe bootloader (see the module docstring for the call order)."""

    @property
    def layout(self) -> Layout: ...

    def slots(self) -> tuple[Slot, ...]:
        """The layout's slots."""
        ...

    def record(self) -> BootRecord:
        """The current record (what a reboot would decide from)."""
        ...

    def booted(self) -> BootInfo:
        """What the last boot decision booted, and whether it is accepted."""
        ...

    def slot_record(self, slot: Slot) -> SlotRecord:
        """``slot``'s state, capacity and image."""
        ...

    def read_slot(self, slot: Slot, offset: int, length: int) -> bytes:
        """Bytes of ``slot`` (e.g. the running image's blocks, for an adaptive
        transfer that copies unchanged blocks locally)."""
        ...

    def open_slot(self, slot: Slot) -> SlotWriter:
        """Open ``slot`` for writing: atomically record it WRITING (a VALID
        image there is gone: not bootable, not a rollback slot) unless it is
        already WRITING, whose bytes are kept (resume). Raises
        :class:`SlotBusy` for the booted, accepted or target slot."""
        ...

    def erase_slot(self, slot: Slot) -> None:
        """Atomically record ``slot`` EMPTY (same refusals as ``open_slot``)."""
        ...

    def set_boot_target(self, slot: Slot) -> None:
        """Atomically make ``slot`` the one the next boot tries (0 attempts so
        far). Raises :class:`SlotNotBootable` unless it is VALID."""
        ...

    def accept(self) -> None:
        """Atomically accept the booted image: it becomes the fallback and
        the target (no-op when already accepted)."""
        ...

    def rollback_slot(self) -> Slot | None:
        """The Normal slot holding the image accepted before the running Normal
        one (A/B), or ``None`` (the seed's layout, or it was overwritten)."""
        ...

    def free_normal_slot(self) -> Slot | None:
        """A Normal slot that may be written now (not booted, accepted or the
        target), or ``None``."""
        ...
