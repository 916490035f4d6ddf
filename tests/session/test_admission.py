"""The half-open admission plan (dofpy.session.admission): whatever the table
holds, the limits hold again once the plan is carried out and the newcomer
enters, no handshake is evicted twice, and only handshakes waiting on the
application keep a newcomer out."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from dofpy.security.crypto import build_rekey
from dofpy.session.admission import plan_admission
from dofpy.session.handshake import Handshake, Phase
from dofpy.wire.oid import OID

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
IDENTITIES = [OID(3, name.encode()) for name in ("a@x", "b@x", "c@x")]
_BLOCKS = {
    identity: build_rekey(OID(3, b"domain"), identity, b"\x01" * 16).initiator
    for identity in IDENTITIES
}


def handshake(index: int, host: int, identity: int, deferred: bool) -> Handshake:
    made = Handshake(
        (HOSTS[host], 40000 + index),
        Phase.ASKING_AUTHENTICATOR,
        float(index),
        _BLOCKS[IDENTITIES[identity]],
        index,
    )
    made.token = index if deferred else None
    return made


def within(table: list[Handshake], max_half_open: int, per_source: int) -> bool:
    hosts = Counter(h.peer[0] for h in table)
    identities = Counter(h.block.request.identity.node for h in table)
    return (
        len(table) <= max_half_open
        and all(n <= per_source for n in hosts.values())
        and all(n <= per_source for n in identities.values())
    )


@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.booleans()), max_size=30),
    st.integers(0, 2),
    st.integers(0, 2),
    st.integers(1, 12),
    st.integers(1, 5),
    st.integers(0, 2**32 - 1),
)
def test_the_limits_hold_after_every_admission(
    arrivals: list[tuple[int, int, bool]],
    host: int,
    identity: int,
    max_half_open: int,
    per_source: int,
    seed: int,
) -> None:
    rng = random.Random(seed)
    table: list[Handshake] = []
    for index, (h, i, deferred) in enumerate([*arrivals, (host, identity, False)]):
        evict, admitted = plan_admission(
            table,
            HOSTS[h],
            IDENTITIES[i],
            max_half_open=max_half_open,
            max_per_source=per_source,
            draw=rng.randbytes,
        )
        assert len({id(e) for e in evict}) == len(evict)  # each at most once
        assert all(any(e is t for t in table) for e in evict)  # only what is there
        table = [t for t in table if not any(t is e for e in evict)]
        if admitted:
            table.append(handshake(index, h, i, deferred))
        else:
            # Kept out only by handshakes that wait on the application.
            assert len(table) >= max_half_open and all(t.token is not None for t in table)
        assert within(table, max_half_open, per_source)


def test_a_host_claiming_one_identity_replaces_its_oldest_once() -> None:
    table = [handshake(index, 0, 0, False) for index in range(3)]
    evict, admitted = plan_admission(
        table, HOSTS[0], IDENTITIES[0], max_half_open=16, max_per_source=3, draw=bytes
    )
    assert admitted and evict == [table[0]]
