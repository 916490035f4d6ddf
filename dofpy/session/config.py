"""What configures the session layer: :class:`NodeConfig` (the node's limits
and policies) and :class:`SecurityConfig` (who the node is in its domain and
how it secures its sessions), with :class:`PlaintextPolicy` and the AEAD usage
limits. Plain values, checked at construction; nothing here has state."""

from __future__ import annotations

import enum
import secrets
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dofpy._core import Address
from dofpy.security.authenticator import TrpAuthenticator
from dofpy.security.replay import MAX_PACKET_NUMBER
from dofpy.session._retry import RetryPolicy
from dofpy.wire._codec import C4_MAX
from dofpy.wire.dpp import AppId
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet

__all__ = [
    "CCM_CONFIDENTIALITY_LIMIT",
    "CCM_INTEGRITY_LIMIT",
    "NodeConfig",
    "PlaintextPolicy",
    "SecurityConfig",
]

CCM_CONFIDENTIALITY_LIMIT = 2_965_820
"""Packets one AES-CCM key may protect: 2^21.5, RFC 9001 §6.6 (AEAD_AES_128_CCM;
the bound depends on the block count, not the key size, so it holds for the
AES-256-CCM of DOF). One session key serves both directions, so both count."""
CCM_INTEGRITY_LIMIT = 2_965_820
"""Datagrams failing authentication under one key before it is retired:
2^21.5, RFC 9001 §6.6 (AEAD_AES_128_CCM)."""


class PlaintextPolicy(enum.Enum):
    """Whether a node with a :class:`SecurityConfig` ever uses the clear.

    ``REFUSE`` (the default): no application packet is sent or accepted
    outside a secure session; a command waits for the handshake.
    ``ALLOW``: with a peer that has no secure session (and never had one
    with this node), application packets go and are taken in the clear, for a
    domain that mixes secured and plaintext nodes. Each use is counted
    (``plaintext_sent``, ``plaintext_accepted``) and announced once per peer
    and direction with :class:`PlaintextUsed`. A peer once secured is never
    spoken to, nor heard from, in the clear again: a new handshake instead.
    """

    REFUSE = "refuse"
    ALLOW = "allow"


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Who this node is in its domain, and how it secures its sessions.

    ``rng(n)`` gives ``n`` unpredictable bytes: the only randomness of the
    core; the operating system's CSPRNG (``secrets.token_bytes``) unless told
    otherwise (a seeded generator is for deterministic tests only).
    ``cookie_key`` keys the stateless handshake cookies (32 random bytes,
    never shared; drawn from the CSPRNG by default). A responder gets session
    keys from the Authenticator at ``authenticator`` or, when it holds the
    credential store, from
    ``local_authenticator``. ``desired_duration`` is in minutes (a dofpy
    convention; the field is one byte): the initiator rekeys before it ends.
    With ``seal_authenticator`` a responder talks TRP to ``authenticator`` only inside a
    secure session with it (a TEP handshake with the Authenticator first), so
    the Authenticator knows who asks and nobody sees who talks to whom.
    With ``defer_authenticator`` the application is this responder's authenticator:
    every Request Session is handed up as :class:`AuthenticatorRequested` and
    answered later with :meth:`~dofpy.session.node.Node.answer_authenticator`, so
    a credential store in a database is never queried on the event loop (the
    Authenticator's own handshakes). It excludes ``authenticator`` and
    ``local_authenticator``: one place decides.
    ``peer_identities`` binds addresses to the identities expected there: a
    handshake this node starts with such an address fails with
    :class:`~dofpy.errors.PeerIdentityMismatch` when the responder
    authenticates as anyone else, and requests to it are bound to that
    identity as if sent with ``identity=`` (see :meth:`Node.send_command`).

    ``plaintext`` says whether the clear is ever used (:class:`PlaintextPolicy`;
    ``require_security`` is the older spelling: ``False`` alone still means
    ``ALLOW``, with a ``DeprecationWarning``; after construction it is True
    exactly when the policy is ``REFUSE``).

    Key usage (RFC 9001 §6.6): one session key protects at most
    ``confidentiality_limit`` packets (both directions). The initiator starts
    a new handshake at half of it, the responder (itself initiating one) at
    three quarters, and past the limit nothing more is sealed: sends wait for
    the new key. A key under which ``integrity_limit`` datagrams failed
    authentication is retired at once (the peer is told with a sealed End
    Session and the next packet starts a new handshake). A superseded key is
    kept only to open the peer's packets still in flight: until the peer is
    seen using the new one (then a short reorder grace) and at most
    ``superseded_grace`` seconds; End Session retires every key of the peer.

    A peer that lost its keys (a restarted process) cannot say so in a way
    that could be trusted, so the initiator of a session watches for it: once
    it has kept sealing to the peer for ``silence_rekey`` seconds with nothing
    authenticated back, it starts a new handshake (a rekey: a live peer just
    takes it; a restarted one gets a session it can read), at most once per
    ``handshake_timeout``. A peer that answers nothing at all (one-way
    commands only) is so rekeyed every ``silence_rekey`` seconds: cheap next
    to sealing into the void for hours. 0 turns this off.
    """

    domain: OID
    identity: OID
    secret: bytes = field(repr=False)
    rng: Callable[[int], bytes] = field(default=secrets.token_bytes, repr=False)
    cookie_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    permissions: PermissionSet = field(default_factory=PermissionSet)
    authenticator: Address | None = None
    local_authenticator: TrpAuthenticator | None = field(default=None, repr=False)
    require_security: bool = True
    plaintext: PlaintextPolicy | None = None
    tag_length: int = 16
    desired_duration: int = 60
    cookie_lifetime: float = 30.0
    handshake_timeout: float = 15.0
    silence_rekey: float = 20.0
    max_half_open: int = 256
    max_half_open_per_source: int = 8
    rekey_packets_left: int = 1 << 16
    session_grace: float = 30.0
    seal_authenticator: bool = False
    defer_authenticator: bool = False
    peer_identities: Mapping[Address, OID] = field(default_factory=dict)
    confidentiality_limit: int = CCM_CONFIDENTIALITY_LIMIT
    integrity_limit: int = CCM_INTEGRITY_LIMIT
    superseded_grace: float = 30.0

    def __post_init__(self) -> None:
        if self.plaintext is None:
            if not self.require_security:
                warnings.warn(
                    "require_security=False sends and accepts application packets in"
                    " the clear: say so with plaintext=PlaintextPolicy.ALLOW",
                    DeprecationWarning,
                    stacklevel=3,
                )
            object.__setattr__(
                self,
                "plaintext",
                PlaintextPolicy.REFUSE if self.require_security else PlaintextPolicy.ALLOW,
            )
        elif not isinstance(self.plaintext, PlaintextPolicy):
            raise TypeError("plaintext must be a PlaintextPolicy")
        elif self.plaintext is PlaintextPolicy.REFUSE and not self.require_security:
            raise ValueError(
                "plaintext=REFUSE contradicts require_security=False"
                " (to allow the clear, set plaintext=PlaintextPolicy.ALLOW)"
            )
        else:
            object.__setattr__(self, "require_security", self.plaintext is PlaintextPolicy.REFUSE)
        if not 4 <= self.confidentiality_limit <= MAX_PACKET_NUMBER:
            raise ValueError(f"confidentiality_limit must be 4..{MAX_PACKET_NUMBER}")
        if self.integrity_limit < 1 or self.superseded_grace < 0:
            raise ValueError("integrity_limit must be >= 1 and superseded_grace >= 0")
        if len(self.secret) != 32 or len(self.cookie_key) != 32:
            raise ValueError("secret and cookie_key must be 32 bytes each")
        if self.tag_length not in (8, 16):
            raise ValueError("tag_length must be 8 or 16")
        if not 1 <= self.desired_duration <= 255:
            raise ValueError("desired_duration must be 1..255 minutes")
        if self.max_half_open_per_source < 1:
            raise ValueError("max_half_open_per_source must be >= 1")
        if self.max_half_open < 1 or self.cookie_lifetime <= 0 or self.handshake_timeout <= 0:
            raise ValueError("max_half_open, cookie_lifetime, handshake_timeout must be > 0")
        if self.silence_rekey < 0:
            raise ValueError("silence_rekey must be >= 0 (0: off)")
        if self.defer_authenticator and (
            self.authenticator is not None or self.local_authenticator is not None
        ):
            raise ValueError(
                "defer_authenticator hands every decision to the application:"
                " authenticator and local_authenticator would never be asked"
            )


_UNNAMED = OID(3, b"node@localhost")
"""The identity of a node configured without one (compared by identity)."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Limits and policies of a node. Every queue and table is bounded here."""

    node_id: OID = field(default_factory=lambda: _UNNAMED)
    """This node's identity; with ``security`` it is the security identity
    (leave it unset, or give the same OID: a different one is refused)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    applications: tuple[int, ...] = (AppId.DSP, AppId.OAP, AppId.COMMON)
    max_pending_commands: int = 4096
    max_events: int = 16384
    max_peers: int = 4096
    duplicate_entries: int = 8192
    duplicate_lifetime: float = 60.0
    duplicate_bytes: int = 32 * 2**20
    """The bytes of the answers the duplicate cache keeps at most (their
    payloads), the least recently used dropped first and counted: with
    ``duplicate_entries`` alone, a node answering large pages would keep up
    to 8192 of them (some 480 MiB) for ``duplicate_lifetime``. At least
    ``max_datagram``."""
    first_op_count: int | None = None
    """The first operation id; by default 1 without security and a random
    value with it (an explicit value is for tests that replay an id)."""
    security: SecurityConfig | None = None
    max_datagram: int = 65507
    """The largest datagram this node sends: the most one IPv4 UDP datagram
    carries by default; lower it for a path (or peers) with a smaller limit."""
    fast_paths: bool = True
    """Take the fast paths of this node and of the layers above it: sealed
    one-way commands read with :func:`~dofpy.wire.dpp.probe_sealed_command`
    and opened without building packets, commands sealed straight from their
    fields; in the OAP gate, commands for a raw interceptor (the block
    transfer's Blocks and Fetches) read only up to their head, the last head
    and the last permission granted cached. Off, every datagram goes through
    the general decoder, every command through a packet and the full OAP
    decode, every permission is evaluated: the reference the fast paths are
    compared with (same events, statistics and datagrams); they are only
    faster. The block transfer's senders follow it too: on, Blocks are
    written by a :class:`~dofpy.transfer.messages.BlockEncoder` without
    building messages; off, built and encoded in general."""

    def __post_init__(self) -> None:
        for name in ("max_pending_commands", "max_events", "max_peers", "duplicate_entries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 64 <= self.max_datagram <= 65535:
            raise ValueError(f"max_datagram must be 64..65535, not {self.max_datagram}")
        if self.duplicate_bytes < self.max_datagram:
            raise ValueError(
                f"duplicate_bytes must be at least max_datagram ({self.max_datagram}),"
                f" not {self.duplicate_bytes}"
            )
        if self.first_op_count is not None and not 0 <= self.first_op_count <= C4_MAX:
            raise ValueError("first_op_count must be a c4")
        if self.security is not None:
            if self.node_id is _UNNAMED:
                object.__setattr__(self, "node_id", self.security.identity)
            elif self.node_id != self.security.identity:
                raise ValueError(
                    f"node_id {self.node_id} differs from the security identity "
                    f"{self.security.identity}: a secure node is who its credentials say"
                    " (leave node_id unset)"
                )
