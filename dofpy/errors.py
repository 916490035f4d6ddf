"""The exception hierarchy of dofpy.

``DofError`` is the root. Untrusted input that does not parse raises
``BadPacket`` (and nothing else); protocol violations are ``ProtocolError``,
split into the ones we caused (``LocalProtocolError``) and the ones the peer
caused (``RemoteProtocolError``), each carrying the OpenDOF wire error code
where one applies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dofpy.wire.oid import OID

__all__ = [
    "BadPacket",
    "BrokenResourceError",
    "ClosedResourceError",
    "DofError",
    "DofTimeoutError",
    "LocalProtocolError",
    "PeerIdentityMismatch",
    "ProtocolError",
    "ProviderNotPermitted",
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


class PeerIdentityMismatch(DofError):
    """The peer at ``peer`` authenticated as ``actual``, not the ``expected``
    identity a request asked for (``identity=`` or
    ``SecurityConfig.peer_identities``): nothing is sent to it or accepted
    from it for that request."""

    def __init__(self, peer: tuple[str, int], expected: OID, actual: OID) -> None:
        super().__init__(
            f"{peer[0]}:{peer[1]} authenticated as {actual}, not the expected {expected}"
        )
        self.peer = peer
        self.expected = expected
        self.actual = actual


class ProviderNotPermitted(DofError):
    """The peer answering a request bound to an identity is that identity, but
    the permissions its session was granted (authenticated by the
    Authenticator's ticket) do not let it provide the binding asked for: its
    answer is refused."""
