"""The device side: the failsafe bootloader contract
(:mod:`dofpy_services.device.bootloader`), its power-failure-safe records
(:mod:`~dofpy_services.device.boot_records`), the file-backed simulated
bootloader (:mod:`~dofpy_services.device.simulated`) and the
power-cut filesystem layer it is tested with (:mod:`~dofpy_services.device.fs`);
the device agent: its explicit state table (:mod:`~dofpy_services.device.table`)
and the machine that runs it with bounded, jittered retries
(:mod:`~dofpy_services.device.machine`), the agent that runs the table's steps
against the bootloader and the services (:mod:`~dofpy_services.device.agent`),
and the block store that writes verified leaves into a slot
(:mod:`~dofpy_services.device.slot_store`).
"""

from dofpy_services.device.agent import (
    AgentPorts,
    DeviceAgent,
    ImageToInstall,
    ManifestRefused,
    Rebooted,
    UserAnswer,
)
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
from dofpy_services.device.machine import AgentMachine, RetryPolicy
from dofpy_services.device.simulated import FirmwareImage, SimulatedBootloader, inspect_device
from dofpy_services.device.slot_store import SlotBlockStore
from dofpy_services.device.table import TRANSITIONS, Input, State

__all__ = [
    "TRANSITIONS",
    "AgentMachine",
    "AgentPorts",
    "BootInfo",
    "BootRecord",
    "Bootloader",
    "BootloaderError",
    "Bricked",
    "CutPoint",
    "DeviceAgent",
    "DeviceFs",
    "FirmwareImage",
    "ImageToInstall",
    "Input",
    "Layout",
    "ManifestRefused",
    "OsFs",
    "PowerCut",
    "PowerCutFs",
    "Rebooted",
    "RetryPolicy",
    "SimulatedBootloader",
    "Slot",
    "SlotBlockStore",
    "SlotBusy",
    "SlotImage",
    "SlotNotBootable",
    "SlotRecord",
    "SlotState",
    "SlotWriter",
    "State",
    "UserAnswer",
    "WrongImage",
    "cut_points",
    "inspect_device",
]
