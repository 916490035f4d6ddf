"""Small files the device agent must find whole after a power cut: its own
record and the transfer's marks, written atomically on a
:class:`~dofpy_services.device.fs.DeviceFs`.

:func:`write_atomically` writes a new file (``NAME.new``) from offset 0,
fsyncs it, renames it over ``NAME`` and fsyncs the directory: a power cut at
any of those operations (a torn write of the new file included) leaves
``NAME`` as it was, and once the directory fsync returned ``NAME`` is the new
content. The content is framed (a magic, its length and its SHA-256), because
``DeviceFs`` has no truncate: a ``NAME.new`` left longer by an earlier cut
keeps stale bytes past the new content, which the length skips. The check of
the frame is what :func:`read_framed` answers: a file that is not a whole
frame (it never happens through this module; a disk can still rot) reads as
missing, and its owner starts from its safe default.

On the simulator the agent's files live in the device's own directory, on the
bootloader's ``DeviceFs``, so a :class:`~dofpy_services.device.fs.PowerCutFs`
numbers and cuts their writes together with the slots' and records'.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from dofpy_services.device.fs import DeviceFs

__all__ = ["FRAME_MAGIC", "read_framed", "write_atomically"]

FRAME_MAGIC = b"DAS1"
_HEADER = struct.Struct(">4sI32s")
_MAX_CONTENT = 1 << 20


def _frame(data: bytes) -> bytes:
    return _HEADER.pack(FRAME_MAGIC, len(data), hashlib.sha256(data).digest()) + data


def write_atomically(fs: DeviceFs, name: str, data: bytes) -> None:
    """Replace ``name``'s content with ``data``, all or nothing across a power cut."""
    if len(data) > _MAX_CONTENT:
        raise ValueError(f"{name}: {len(data)} bytes is more than a state file holds")
    temporary = name + ".new"
    fs.write(temporary, 0, _frame(data))
    fs.fsync(temporary)
    fs.replace(temporary, name)
    fs.fsync_directory()


def read_framed(fs: DeviceFs, name: str) -> bytes | None:
    """``name``'s content as :func:`write_atomically` wrote it; ``None`` when
    the file is missing or is not a whole, intact frame."""
    if not fs.exists(name):
        return None
    head = fs.read(name, 0, _HEADER.size)
    if len(head) < _HEADER.size:
        return None
    magic, length, digest = _HEADER.unpack(head)
    if magic != FRAME_MAGIC or length > _MAX_CONTENT:
        return None
    data = fs.read(name, _HEADER.size, length)
    if len(data) != length or not hmac.compare_digest(hashlib.sha256(data).digest(), digest):
        return None
    return data
