"""The device side: the failsafe bootloader contract
(:mod:`dofpy_services.device.bootloader`), its power-failure-safe records
(:mod:`~dofpy_services.device.boot_records`), the file-backed simulated
bootloader (:mod:`~dofpy_services.device.simulated`) and the
power-cut filesystem layer it is tested with (:mod:`~dofpy_services.device.fs`).
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
from dofpy_services.device.fs import CutPoint, DeviceFs, OsFs, PowerCut, PowerCutFs, cut_points
from dofpy_services.device.simulated import FirmwareImage, SimulatedBootloader, inspect_device

__all__ = [
    "BootInfo",
    "BootRecord",
    "Bootloader",
    "BootloaderError",
    "Bricked",
    "CutPoint",
    "DeviceFs",
    "FirmwareImage",
    "Layout",
    "OsFs",
    "PowerCut",
    "PowerCutFs",
    "SimulatedBootloader",
    "Slot",
    "SlotBusy",
    "SlotImage",
    "SlotNotBootable",
    "SlotRecord",
    "SlotState",
    "SlotWriter",
    "WrongImage",
    "cut_points",
    "inspect_device",
]
