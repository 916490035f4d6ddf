"""Whom a requestor listens to (:mod:`dofpy.transfer.receiver`).

Only the provider asked is listened to: a Block, hash chunk or Refused is
taken only from its address and, on a secure node, only through a session of
the identity the Fetch went to. Anything else is *unsolicited*: dropped before
it is verified and counted per source, so that a third party can neither
abort the transfer nor have its bad blocks blamed on the provider.
"""

from __future__ import annotations

from collections import OrderedDict

from dofpy._core import Address
from dofpy.transfer.fetch_state import SourceStatistics
from dofpy.wire.oid import OID

__all__ = ["AskedProvider"]

_MAX_SOURCES = 64  # per-source counters kept per transfer (least recent dropped)


class AskedProvider:
    """The provider asked, the identity its Fetch went to (secure node; None
    until known), and per-source counts of what was refused."""

    __slots__ = ("_sources", "identity", "peer", "secure")

    def __init__(self, peer: Address, *, secure: bool) -> None:
        self.peer = peer
        self.identity: OID | None = None
        self.secure = secure
        self._sources: OrderedDict[Address, SourceStatistics] = OrderedDict()

    def ask(self, peer: Address) -> None:
        """Listen to ``peer`` from now on (its identity learnt again)."""
        self.peer, self.identity = peer, None

    def fetch_sent(self, peer: Address, identity: OID | None) -> None:
        """A Fetch went to ``peer`` through a session of ``identity``."""
        if peer == self.peer and identity is not None:
            self.identity = identity

    def is_known_session(self, peer: Address, identity: OID | None) -> bool:
        """The provider asked, through the very session object seen before
        (the per-Block check; anything else is judged by :meth:`admits`)."""
        return (
            peer == self.peer
            and identity is self.identity
            and (identity is not None or not self.secure)
        )

    def admits(self, peer: Address, identity: OID | None) -> bool:
        """Whether a message from ``peer`` (through a session of ``identity``)
        comes from the provider asked; counts it as unsolicited if not."""
        if peer == self.peer:
            if not self.secure:
                return True
            if identity is not None:
                expected = self.identity
                if expected is None or identity == expected:
                    self.identity = identity  # binds it (or the same, reused)
                    return True
        self.counts(peer).unsolicited += 1
        return False

    def counts(self, peer: Address) -> SourceStatistics:
        """The (mutable) counters of ``peer``, kept for the most recent sources."""
        sources = self._sources
        found = sources.get(peer)
        if found is None:
            if len(sources) >= _MAX_SOURCES:
                sources.popitem(last=False)
            found = sources[peer] = SourceStatistics()
        else:
            sources.move_to_end(peer)
        return found

    def statistics(self, peer: Address) -> SourceStatistics:
        """What ``peer`` sent that was refused (zeros if nothing)."""
        found = self._sources.get(peer)
        return (
            SourceStatistics()
            if found is None
            else SourceStatistics(found.unsolicited, found.bad_blocks)
        )
