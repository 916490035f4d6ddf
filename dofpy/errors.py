"""The exception hierarchy of dofpy.

``DofError`` is the root. Untrusted input that does not parse raises
``BadPacket`` (and nothing else); protocol violations are ``ProtocolError``,
split into the ones we caused (``LocalProtocolError``) and the ones the peer
caused (``RemoteProtocolError``), each carrying the OpenDOF wire error code
where one applies.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dofpy.wire.oid import OID

__all__ = [
    "BadPacket",
    "BrokenResourceError",
    "ClosedResourceError",
    "DofError",
    "DofTimeoutError",
    "IllegalTransition",
    "LocalProtocolError",
    "PeerIdentityMismatch",
    "ProtocolError",
    "ProviderNotPermitted",
    "RemoteProtocolError",
    "SecureSessionCause",
    "SecureSessionFailed",
    "SecureSessionRefused",
    "SecureSessionTimeout",
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


class IllegalTransition(LocalProtocolError):
    """A state machine was given an input its ``(state, input) -> state``
    table has no entry for in its current state: a bug of this node, never
    something a peer can cause. The one error of every state table (peer,
    handshake, subscription, sender, receiver)."""


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


class SecureSessionCause(enum.Enum):
    """Why a TEP handshake failed, as far as the node that reports it can tell.

    The values are short names (they appear in logs, audit entries and the
    responder's TEP Reject descriptions). The initiator's causes:

    - ``NO_ANSWER``: the peer answered no Rekey (down, unreachable, or not a
      secure node).
    - ``NO_ACCEPT``: the peer answered with a cookie, then sent no Accept (it
      is alive: it may be waiting for its Authenticator).
    - ``ACCEPT_NOT_VERIFIED``: Accepts came but none verified with this node's
      identity secret (that secret, or the Authenticator's record of it, is
      wrong; or the Accepts were forged).
    - ``NO_CONFIRM_ACK``: the Accept verified, the Confirm was not acknowledged.
    - ``BUSY``: the responder stayed busy until the deadline.
    - ``REJECTED``: another TEP Reject (wrong domain, no Authenticator...).

    Either side's:

    - ``AUTHENTICATOR_REFUSED``: the Authenticator refused the session (the
      TRP error names why).
    - ``AUTHENTICATOR_FAILED``: the responder got no answer from its
      Authenticator (down, unreachable, or its own handshake with it failed).
    - ``TICKET_NOT_VERIFIED``: the responder's ticket from the Authenticator
      did not verify with the responder's identity secret.
    - ``MODE_MISMATCH``: the two nodes use different security modes (TEP
      Reject ``0xC3``).

    The responder's:

    - ``NO_CONFIRM``: no Confirm after the Accept (the initiator could not
      verify the Accept, most likely, or went away).
    - ``CONFIRM_NOT_VERIFIED``: Confirms came but none verified.
    """

    NO_ANSWER = "no-answer"
    NO_ACCEPT = "no-accept"
    ACCEPT_NOT_VERIFIED = "accept-not-verified"
    NO_CONFIRM_ACK = "no-confirm-ack"
    BUSY = "busy"
    REJECTED = "rejected"
    AUTHENTICATOR_REFUSED = "authenticator-refused"
    AUTHENTICATOR_FAILED = "authenticator-failed"
    TICKET_NOT_VERIFIED = "ticket-not-verified"
    MODE_MISMATCH = "mode-mismatch"
    NO_CONFIRM = "no-confirm"
    CONFIRM_NOT_VERIFIED = "confirm-not-verified"


class SecureSessionFailed(DofError):
    """No secure session with ``peer``: ``cause`` (a :class:`SecureSessionCause`)
    names the likely reason and the message says what to check.

    Raised as :class:`SecureSessionRefused` when the peer refused (a TEP Reject:
    it fails the handshake at once) and as :class:`SecureSessionTimeout` when
    the handshake ran out of time (``cause`` is then the most likely reason
    seen meanwhile). ``code`` is the TEP Reject code where one came."""

    def __init__(
        self,
        peer: tuple[str, int],
        cause: SecureSessionCause,
        message: str,
        code: int | None = None,
    ) -> None:
        Exception.__init__(self, message)
        self.peer = peer
        self.cause = cause
        self.code = code

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.peer, self.cause, str(self), self.code))


class SecureSessionRefused(SecureSessionFailed, RemoteProtocolError):
    """The peer refused the handshake (a TEP Reject, ``code``)."""


class SecureSessionTimeout(SecureSessionFailed, DofTimeoutError):
    """The handshake was not done by its deadline; ``cause`` is the most likely
    reason seen (each observation could also have been forged)."""
