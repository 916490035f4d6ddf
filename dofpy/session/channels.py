"""The channel table: the secure sessions of a node, by peer and by SSID.

It installs the key a handshake agreed, opens and seals through it, starts a
new handshake when a key is due for one (usage limits, RFC 9001 §6.6; expiry),
retires keys (End Session, integrity limit, the grace of a superseded key)
and keeps the plaintext policy. It reports what it did (:class:`ChannelOpened`,
:class:`ChannelClosed`, :class:`PlaintextUsed`) and never runs a handshake
itself: ``start_handshake`` and ``handshaking`` are the initiator's.

Expiries are kept in one heap of ``(when, order)`` entries; an entry whose
session was dropped or whose expiry moved is skipped when it comes up.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, TypeVarTuple

from dofpy._core import Address
from dofpy.errors import (
    BadPacket,
    BrokenResourceError,
    ClosedResourceError,
    DofError,
    DofTimeoutError,
)
from dofpy.security.crypto import AuthenticationFailed
from dofpy.security.secure_frame import ReplayedPacket, SecureChannel
from dofpy.session.commands import CommandTable
from dofpy.session.config import PlaintextPolicy, SecurityConfig
from dofpy.session.events import ChannelClosed, ChannelOpened, PlaintextUsed, Report
from dofpy.wire.dpp import AppId, DppPacket, OpIdType
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet
from dofpy.wire.tep import TepEndSession, decode_tep_untrusted, encode_tep

__all__ = ["ChannelTable", "Session"]

_Key = TypeVar("_Key")
_Opened = TypeVar("_Opened")
_OpenArgs = TypeVarTuple("_OpenArgs")

# A superseded key still opens the peer's packets sent before it switched;
# once the peer is seen using the new key, only reordered ones can follow.
_REORDER_GRACE = 2.0
# Peers remembered for the plaintext policy (secured once, announced once).
_MAX_REMEMBERED_PEERS = 4096
_SSID_MAX = 0x3FFFFFFF  # the largest c4
_SSID_HALF = 0x20000000  # the bit that splits the SSID space (see allocate_ssid)


@dataclass(slots=True, eq=False)
class Session:
    channel: SecureChannel
    peer_identity: OID
    permissions: PermissionSet
    established: float
    expires: float
    # packets_protected at which a new key is sought (half the limit for the
    # initiator, three quarters for the responder: the initiator goes first).
    rekey_at: int
    # A packet from the peer authenticated under this key: it switched to it.
    confirmed: bool = False
    # No usage rekey is started before then (one per handshake timeout, so a
    # peer that cannot take the handshake is not asked at every packet).
    rekey_not_before: float = 0.0
    order: int = 0  # when it was installed (expiries are handled in this order)
    # When a datagram from the peer last authenticated under this key (its
    # installation, until one does): a request that went unanswered since is
    # the one sign that the peer lost the key (it restarted).
    last_opened: float = 0.0
    # When this side first sealed to the peer after it was last heard from
    # (None: heard from since its last packet was sealed).
    unheard_since: float | None = None


class ChannelTable:
    """The secure sessions of one node (current and superseded keys)."""

    def __init__(
        self,
        config: SecurityConfig,
        counts: dict[str, int],
        commands: CommandTable,
        *,
        send: Callable[[bytes, Address], None],
        report: Report,
        start_handshake: Callable[[Address, float], None],
        handshaking: Callable[[Address], bool],
    ) -> None:
        self.config = config
        self._counts = counts
        self._commands = commands
        self._send = send
        self._report = report
        self._start_handshake = start_handshake
        self._handshaking = handshaking
        self._current: dict[Address, Session] = {}
        # At most one superseded session per peer, kept for in-flight packets.
        self._previous: dict[Address, Session] = {}
        self._by_ssid: dict[tuple[Address, int], Session] = {}
        self._expiries: list[tuple[float, int, Address, int]] = []
        self._installed = 0
        # Plaintext policy ALLOW: peers once secured (never clear again) and the
        # (peer, sent) pairs already announced with PlaintextUsed.
        self._secured_peers: dict[Address, None] = {}
        self._plaintext_announced: dict[tuple[Address, bool], None] = {}
        self._next_ssid = 1

    # -- queries -------------------------------------------------------------------

    def session(self, peer: Address) -> Session | None:
        return self._current.get(peer)

    def __len__(self) -> int:
        return len(self._current)

    @property
    def keys(self) -> int:
        return len(self._by_ssid)

    def keys_with(self, peer: Address) -> int:
        """Session keys held for ``peer`` (current and superseded)."""
        return sum(1 for key in self._by_ssid if key[0] == peer)

    def lookup(self, peer: Address, ssid: int | None) -> Session:
        """The session a secure datagram from ``peer`` names; ``BadPacket`` if none."""
        session = None if ssid is None else self._by_ssid.get((peer, ssid))
        if session is None:
            self._counts["unknown_sessions"] += 1
            raise BadPacket(f"no secure session {ssid} with {peer}")
        return session

    def allocate_ssid(self, peer: Address, initiator: OID) -> int:
        """An SSID for a session we answer. Two nodes that open sessions to
        each other at once both allocate one, and packets are found by
        (address, SSID): so the SSID space is split between the two by the
        order of their identities (the higher one allocates with bit
        ``_SSID_HALF`` set), and their SSIDs never collide. Two nodes of one
        identity cannot order themselves: they draw the SSID at random."""
        ours, theirs = self.config.identity.encode(), initiator.encode()
        if ours == theirs:
            for _ in range(8):
                ssid = 1 + int.from_bytes(self.config.rng(4), "big") % _SSID_MAX
                if (peer, ssid) not in self._by_ssid:
                    return ssid
        half = _SSID_HALF if ours > theirs else 0
        for _ in range(_SSID_HALF):
            ssid = half | self._next_ssid
            self._next_ssid = self._next_ssid + 1 if self._next_ssid < _SSID_HALF - 1 else 1
            if (peer, ssid) not in self._by_ssid:
                return ssid
        raise AssertionError("no free SSID")  # pragma: no cover

    # -- installing and retiring keys ---------------------------------------------------

    def install(
        self,
        peer: Address,
        key: bytes,
        ssid: int,
        peer_identity: OID,
        permissions: PermissionSet,
        now: float,
        expires: float,
        *,
        initiator: bool,
    ) -> None:
        cfg = self.config
        limit = cfg.confidentiality_limit
        channel = SecureChannel(
            key, ssid=ssid, initiator=initiator, tag_length=cfg.tag_length, usage_limit=limit
        )
        rekey_at = limit // 2 if initiator else limit * 3 // 4
        self._installed += 1
        session = Session(
            channel, peer_identity, permissions, now, expires, rekey_at, order=self._installed
        )
        # Current plus one superseded session per peer, never more: the one
        # superseded before is retired now, whatever its grace.
        older = self._previous.pop(peer, None)
        if older is not None:
            self._drop(peer, older)
        superseded = self._current.get(peer)
        if superseded is not None:
            self._counts["rekeys"] += 1
            if superseded.channel.initiator == initiator:
                # Our own rekey (or the peer's again): the peer switches to the
                # new key at once, so the old one only opens what is in flight.
                self._expire(peer, superseded, min(superseded.expires, now + cfg.superseded_grace))
            # Otherwise the two were started by opposite sides (a simultaneous
            # open, or the peer rekeying a session we started): the peer may go
            # on sending on the old one, so it stays until the peer is seen
            # using the new one (on_opened) or it expires.
            self._previous[peer] = superseded
        self._current[peer] = session
        self._by_ssid[(peer, ssid)] = session
        self._expire(peer, session, expires)
        if cfg.plaintext is PlaintextPolicy.ALLOW:
            _remember(self._secured_peers, peer)
        self._counts["handshakes_completed"] += 1
        self._report(ChannelOpened(peer, peer_identity, ssid, initiator, key), now)

    def _expire(self, peer: Address, session: Session, when: float) -> None:
        session.expires = when
        heapq.heappush(self._expiries, (when, session.order, peer, session.channel.ssid))

    def _drop(self, peer: Address, session: Session) -> None:
        """Let go of ``session``'s key (it opens and seals nothing more)."""
        key = (peer, session.channel.ssid)
        if self._by_ssid.get(key) is session:
            del self._by_ssid[key]
        self._counts["keys_retired"] += 1

    def end(self, peer: Address, error: DofError, now: float) -> None:
        """Retire the session with ``peer``, telling it with a sealed End
        Session while its key may still seal."""
        session = self._current[peer]
        if session.channel.packets_remaining > 0:
            packet = DppPacket(
                app_id=AppId.TEP,
                payload=encode_tep(TepEndSession()),
                op_id_type=OpIdType.IMPLIED_SENDER,
                op_count=self._commands.allocate_op(),
            )
            self._send(session.channel.seal(packet, final=True), peer)
        self.forget(peer, error, now)

    def on_sealed_tep_command(self, peer: Address, payload: bytes, now: float) -> None:
        """A TEP command that arrived inside the secure session with ``peer``."""
        pdu = decode_tep_untrusted(payload, is_response=False, secure=True)
        if not isinstance(pdu, TepEndSession):
            raise BadPacket(f"sealed TEP {type(pdu).__name__} is not handled")
        self.forget(peer, BrokenResourceError(f"{peer} ended the secure session"), now)

    def is_silent(self, peer: Address, since: float) -> bool:
        """Whether there is a current session with ``peer`` and nothing from
        ``peer`` authenticated under its key since ``since`` (what
        :meth:`retire_if_silent` retires; asking changes nothing)."""
        session = self._current.get(peer)
        return session is not None and max(session.last_opened, session.established) <= since

    def retire_if_silent(self, peer: Address, since: float, now: float) -> bool:
        """A request to ``peer`` sent at ``since`` went unanswered through every
        retransmission: if nothing from ``peer`` authenticated under the
        current key since then either (:meth:`is_silent`), the peer has most
        likely lost it (a restarted process keeps no session keys, and no
        unauthenticated "unknown session" notice can be trusted), so the
        session is retired here and the next request starts a new handshake
        instead of being sealed, unheard, until the key expires hours later.
        True when it was."""
        if not self.is_silent(peer, since):
            return False
        session = self._current[peer]
        self._counts["silent_sessions_retired"] += 1
        self.forget(
            peer,
            DofTimeoutError(
                f"secure session with {peer[0]}:{peer[1]} retired: nothing from it authenticated"
                f" for {now - max(session.last_opened, session.established):.1f} s while a"
                " request went unanswered (it may have restarted); the next request starts"
                " a new handshake"
            ),
            now,
        )
        return True

    def forget(self, peer: Address, error: DofError, now: float) -> None:
        """End the session with ``peer``: every key of it is retired now."""
        session = self._current.pop(peer, None)
        if session is None:
            return
        self._drop(peer, session)
        previous = self._previous.pop(peer, None)
        if previous is not None:
            self._drop(peer, previous)
        self._report(ChannelClosed(peer, error), now)

    # -- using keys ----------------------------------------------------------------------

    def open_from(
        self,
        peer: Address,
        ssid: int | None,
        now: float,
        opener: Callable[[SecureChannel, *_OpenArgs], _Opened],
        *args: *_OpenArgs,
    ) -> tuple[Session, _Opened] | None:
        """Open a secure datagram from ``peer`` naming ``ssid`` with
        ``opener(channel, *args)`` (one of the ``SecureChannel``
        methods ``open_*_untrusted``, unbound: no closure to build per
        datagram): the session and what it opened, or ``None`` for a replay
        or a forgery (counted; past the integrity limit the key is retired).
        ``BadPacket`` for an unknown session. The one place every secure
        datagram is opened."""
        session = self.lookup(peer, ssid)
        try:
            opened = opener(session.channel, *args)
        except ReplayedPacket:
            self._counts["replays"] += 1
            return None
        except AuthenticationFailed:
            self.on_authentication_failed(peer, session, now)
            return None
        self.on_opened(peer, session, now)
        return session, opened

    def on_opened(self, peer: Address, session: Session, now: float) -> None:
        """A datagram from ``peer`` authenticated under ``session``."""
        session.last_opened = now
        session.unheard_since = None
        if not session.confirmed:
            session.confirmed = True
            previous = self._previous.get(peer)
            if (
                previous is not None
                and self._current.get(peer) is session
                and now + _REORDER_GRACE < previous.expires
            ):
                # The peer sends under the new key: only reordered packets can
                # still come under the old one.
                self._expire(peer, previous, now + _REORDER_GRACE)
        if session.channel.packets_protected >= session.rekey_at:
            self._rekey_for_usage(peer, session, now)

    def on_authentication_failed(self, peer: Address, session: Session, now: float) -> None:
        """A datagram naming ``session`` failed authentication (a forgery, or
        damage). Past the integrity limit the key is retired."""
        self._counts["authentication_failures"] += 1
        if session.channel.failed_authentications < self.config.integrity_limit:
            return
        self._counts["integrity_retirements"] += 1
        if self._current.get(peer) is session:
            # Tell the peer (sealed: only it can read it) so that its next
            # packet starts a new handshake instead of going unheard.
            self.end(
                peer,
                ClosedResourceError(
                    f"secure session with {peer} retired: {self.config.integrity_limit}"
                    " datagrams failed authentication under its key"
                ),
                now,
            )
        elif self._previous.get(peer) is session:
            del self._previous[peer]
            self._drop(peer, session)

    def ready_to_seal(self, peer: Address, session: Session, now: float) -> bool:
        """Whether ``session`` (the current one with ``peer``) may seal one more
        packet now; starts a new handshake when its key is due for one. False
        (counted ``sends_held``) once the key reached its usage limit: the
        caller holds the packet for the new session, never sends it clear."""
        channel = session.channel
        used = channel.packets_protected
        if used >= session.rekey_at:
            self._rekey_for_usage(peer, session, now)
            if channel.exhausted:
                self._counts["sends_held"] += 1
                return False
        elif channel.initiator and (
            now >= session.expires or channel.packets_remaining <= self.config.rekey_packets_left
        ):
            self._start_handshake(peer, now)
        elif channel.initiator and self.config.silence_rekey > 0:
            self._watch_silence(peer, session, now)
        return True

    def _watch_silence(self, peer: Address, session: Session, now: float) -> None:
        """Sealing to ``peer`` for ``silence_rekey`` seconds with nothing
        authenticated back: a new handshake (see SecurityConfig)."""
        if session.unheard_since is None:
            session.unheard_since = now
        elif (
            now - session.unheard_since >= self.config.silence_rekey
            and now >= session.rekey_not_before
            and self._current.get(peer) is session
            and not self._handshaking(peer)
        ):
            session.rekey_not_before = now + self.config.handshake_timeout
            self._counts["silence_rekeys"] += 1
            self._start_handshake(peer, now)

    def _rekey_for_usage(self, peer: Address, session: Session, now: float) -> None:
        # Either side may start the handshake (TEP lets a responder initiate
        # one): the responder waits longer, so normally the initiator goes first.
        if (
            self._current.get(peer) is session
            and not self._handshaking(peer)
            and now >= session.rekey_not_before
        ):
            session.rekey_not_before = now + self.config.handshake_timeout
            self._counts["usage_rekeys"] += 1
            self._start_handshake(peer, now)

    # -- plaintext policy ---------------------------------------------------------------

    def plaintext_allowed(self, peer: Address) -> bool:
        """Whether application packets may go to, or come from, ``peer`` in
        the clear now: policy ``ALLOW``, no secure session with it (nor one
        being started by us), and none ever had (as far as remembered)."""
        return (
            self.config.plaintext is PlaintextPolicy.ALLOW
            and peer not in self._current
            and not self._handshaking(peer)
            and peer not in self._secured_peers
        )

    def used_plaintext(self, peer: Address, *, sent: bool, now: float) -> None:
        """Count one clear application packet with ``peer``; announce the first."""
        self._counts["plaintext_sent" if sent else "plaintext_accepted"] += 1
        if (peer, sent) not in self._plaintext_announced:
            _remember(self._plaintext_announced, (peer, sent))
            self._report(PlaintextUsed(peer, sent), now)

    # -- timers ----------------------------------------------------------------------------

    def _next_expiry(self) -> tuple[float, Address, Session] | None:
        heap = self._expiries
        while heap:
            when, _order, peer, ssid = heap[0]
            session = self._by_ssid.get((peer, ssid))
            if session is not None and session.expires == when:
                return when, peer, session
            heapq.heappop(heap)
        return None

    def get_timer(self) -> float | None:
        heap = self._expiries
        if heap:
            # Asked after every datagram: a live head (the usual case) is
            # answered here; _next_expiry drops the stale ones.
            when, _order, peer, ssid = heap[0]
            session = self._by_ssid.get((peer, ssid))
            if session is not None and session.expires == when:
                return when
        head = self._next_expiry()
        return None if head is None else head[0]

    def handle_timer(self, now: float) -> None:
        due: list[tuple[Address, Session]] = []
        while (head := self._next_expiry()) is not None and head[0] <= now:
            heapq.heappop(self._expiries)
            due.append((head[1], head[2]))
        # In the order the sessions were installed (as a scan would meet them).
        due.sort(key=lambda item: item[1].order)
        for peer, session in due:
            if self._by_ssid.get((peer, session.channel.ssid)) is not session:
                continue  # retired by an expiry handled before it
            if session.expires > now:
                continue  # given a new expiry by an entry handled before it
            if self._current.get(peer) is not session:
                # A superseded key at the end of its grace.
                if self._previous.get(peer) is session:
                    del self._previous[peer]
                self._drop(peer, session)
                continue
            if session.channel.initiator:
                # Our own session is due for a new key: start the handshake, keep
                # using the old key until the new one is in place.
                self._start_handshake(peer, now)
                self._expire(peer, session, now + self.config.session_grace)
                continue
            self.forget(peer, ClosedResourceError(f"secure session with {peer} expired"), now)


def _remember(table: dict[_Key, None], key: _Key) -> None:
    table.pop(key, None)
    table[key] = None
    if len(table) > _MAX_REMEMBERED_PEERS:
        del table[next(iter(table))]
