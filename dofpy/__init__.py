"""dofpy: the OpenDOF protocol stack on UDP, in Python."""

from dofpy.errors import (
    BadPacket,
    BrokenResourceError,
    ClosedResourceError,
    DofError,
    DofTimeoutError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)

__all__ = [
    "BadPacket",
    "BrokenResourceError",
    "ClosedResourceError",
    "DofError",
    "DofTimeoutError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]
