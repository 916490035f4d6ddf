"""The device side: the failsafe bootloader contract
(:mod:`dofpy_services.device.bootloader`), its power-failure-safe records
(:mod:`~dofpy_services.device.boot_records`), the file-backed simulated
bootloader (:mod:`~dofpy_services.device.simulated`) and the
power-cut filesystem layer it is tested with (:mod:`~dofpy_services.device.fs`);
the device agent: its explicit state table (:mod:`~dofpy_services.device.table`)
and the machine that runs it with bounded, jittered retries
(:mod:`~dofpy_services.device.machine`).
"""

from dofpy_services.device.boot_records import (
    BootRecord,
    Layout,
    Slot,
    SlotImage,
    SlotRecord,
    SlotState,
)
from dofpy_services.device.bootloader import (
    BootInfo,
    Bootloader,
    BootloaderError,
    Bricked,
    SlotBusy,
    SlotNotBootable,
    SlotWriter,
    WrongImage,
)

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
