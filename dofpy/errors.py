"""The exception hierarchy of dofpy.

``DofError`` is the root. Untrusted input that does not parse raises
``BadPacket`` (and nothing else); protocol violations are ``ProtocolError``,
split into the ones we caused (``LocalProtocolError``) and the ones the peer
caused (``RemoteProtocolError``), each carrying the OpenDOF wire error code
where one applies.
"""

from __future__ import annotations

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


class DofError(Exception):
    """Root of every exception dofpy raises on purpose."""


class BadPacket(DofError):
    """Untrusted bytes (from the network or a file) do not parse.

    Every ``*_untrusted`` decoder raises this and only this.
    """


class ProtocolError(DofError):
    """A rule of the protocol was broken.

    ``code`` is the OpenDOF wire error code where one applies (for an OAP
    Exception, its exception code), else ``None``.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol, or refused our request with an error."""


class ClosedResourceError(DofError):
    """The resource (endpoint, session, requestor) was closed by us."""


class BrokenResourceError(DofError):
    """The resource was broken by the peer or the network."""


class DofTimeoutError(DofError, TimeoutError):
    """No answer came within the allowed time, retries included."""
