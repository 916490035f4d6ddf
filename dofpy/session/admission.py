"""Which half-open handshakes make room for a new one (pure: the responder
evicts what this decides).

One source host, and one claimed identity, hold at most
``max_per_source`` half-open handshakes: the newest replaces the oldest, so a
host (or a stolen address, or many hosts claiming one identity) cannot fill
the table. When the whole table is full a random handshake (from ``draw``)
not waiting on the application is evicted, so a flood from many sources
displaces genuine initiators only by chance, and they come back (busy
back-off). A handshake is evicted at most once, even when it is both its
host's and its identity's oldest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dofpy.session.handshake import Handshake
from dofpy.wire.oid import OID

__all__ = ["plan_admission"]


def plan_admission(
    half_open: Sequence[Handshake],
    host: str,
    identity: OID,
    *,
    max_half_open: int,
    max_per_source: int,
    draw: Callable[[int], bytes],
) -> tuple[list[Handshake], bool]:
    """The handshakes to evict for one more from ``host`` claiming
    ``identity``, and whether it may then enter (False when the table is full
    of handshakes waiting on the application: they answer or time out)."""
    remaining = list(half_open)
    evict: list[Handshake] = []
    for by_identity in (False, True):
        # Counted after the previous eviction: one handshake goes once.
        same = [
            h
            for h in remaining
            if (h.block.request.identity.node == identity if by_identity else h.peer[0] == host)
        ]
        if len(same) >= max_per_source:
            oldest = min(same, key=lambda h: h.deadline)
            evict.append(oldest)
            remaining.remove(oldest)
    if len(remaining) < max_half_open:
        return evict, True
    evictable = [h for h in remaining if h.token is None]
    if not evictable:
        return evict, False
    evict.append(evictable[int.from_bytes(draw(4), "big") % len(evictable)])
    return evict, True
