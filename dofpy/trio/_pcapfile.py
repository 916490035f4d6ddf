"""Append the datagrams an endpoint sends and receives to a pcap file.

A debugging aid: Wireshark or tshark read the file (use ``-d udp.port==N,dof``
for a port other than 3567). Timestamps are wall-clock time, because a capture
is read by people and tools that expect real dates; nothing in the protocol
depends on them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO

from dofpy.pcap import PCAP_GLOBAL_HEADER, pcap_record

__all__ = ["PcapWriter"]


class PcapWriter:
    """Writes one pcap file (LINKTYPE_RAW, IPv4 and IPv6 records).

    The file is created (truncated) when the writer is made; :meth:`close`
    flushes and closes it. Writes are buffered by the OS file object, so a
    record costs a memory copy, not a system call.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._file: BinaryIO | None = self._path.open("wb")
        self._file.write(PCAP_GLOBAL_HEADER)
        self._records = 0

    @property
    def path(self) -> Path:
        """Where the capture is written."""
        return self._path

    @property
    def records_written(self) -> int:
        """How many datagrams were recorded so far."""
        return self._records

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._file is None

    def write(self, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        """Record one UDP datagram from ``src`` to ``dst``, stamped with the wall clock.

        ``src`` and ``dst`` must be numeric addresses of the same family.
        """
        if self._file is None:
            raise ValueError("pcap writer is closed")
        self._file.write(pcap_record(time.time(), src, dst, payload))
        self._records += 1

    def flush(self) -> None:
        """Push buffered records to the file, so a reader sees them now."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file; closing twice is harmless."""
        if self._file is not None:
            file, self._file = self._file, None
            file.close()
