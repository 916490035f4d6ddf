"""Attacks on the block transfer's requestor and relay, mounted on the simulator.

Each test mounts the attack, shows it refused or bounded (counts), and shows
the genuine provider still served:

* third-party Block injection (a secure node enrolled with no permissions, a
  plaintext spoofer) against a requestor and against a relay: the injected
  messages are counted as unsolicited per source, never verified, never
  blamed on the provider asked, and the transfer completes from it;
* a relay whose upstream failed (down, then back; or the first upstream dead
  and the second back) retries with back-off and serves its downstream;
* a slow-drip provider is replaced by a fast one (and, alone, fails the
  transfer with a clear error).
"""

from __future__ import annotations

import itertools
import random

from dofpy._core import Address
from dofpy.errors import BrokenResourceError
from dofpy.oap.core import OapConfig
from dofpy.testing import LinkConditions, LocalDomain, Network
from dofpy.testing import grant as grant_on
from dofpy.testing.transfer import make_object, run_to_event
from dofpy.transfer.core import TransferCompleted, TransferConfig, TransferCore, TransferFailed
from dofpy.transfer.manifest import Manifest
from dofpy.transfer.messages import (
    TRANSFER_IID,
    BlockMessage,
    HashChunkMessage,
    RefuseCode,
    RefusedMessage,
    encode_transfer,
)
from dofpy.transfer.receiver import Receiver, ReceiverConfig
from dofpy.transfer.relay import RelayCore
from dofpy.wire.dpp import AppId
from dofpy.wire.oid import OID

P1: Address = ("10.0.0.1", 3567)
P2: Address = ("10.0.0.3", 3567)
RELAY: Address = ("10.0.0.4", 3567)
REQUESTOR: Address = ("10.0.0.2", 40000)
INTRUDER: Address = ("10.0.0.66", 3567)

SIZE = 256 * 1024
BOGUS = 200  # more than enough (129 did) to exhaust two providers' max_bad_blocks


def _identity(name: str) -> OID:
    return OID(3, f"{name}@transfer.example".encode())


def _secure_cores(
    names_grants: dict[str, str | None], *, relay_receiver: ReceiverConfig | None = None
) -> dict[str, TransferCore]:
    """Secure transfer cores of one domain (grants ``None``: enrolled with no
    permissions); the one named "relay" is a :class:`RelayCore` whose upstream
    transfers use ``relay_receiver``."""
    local = LocalDomain(OID(6, b"transfer.example"), rng=random.Random(4).randbytes)
    cores: dict[str, TransferCore] = {}
    for name, actions in names_grants.items():
        identity = _identity(name)
        local.enrol(
            identity, None if actions is None else grant_on(actions, interface=TRANSFER_IID)
        )
        oap = OapConfig(node=local.node_config(identity))
        if name == "relay":
            config = TransferConfig(oap=oap, receiver=relay_receiver or ReceiverConfig())
            cores[name] = RelayCore(config, rng=random.Random(7))
        else:
            cores[name] = TransferCore(TransferConfig(oap=oap))
    return cores


def _bogus_blocks(manifest: Manifest, count: int) -> list[bytes]:
    """``count`` Block payloads of the right length for leaves from the end of
    the object (not yet fetched), with the wrong bytes."""
    payloads = []
    for i in range(count):
        leaf = manifest.leaf_count - 1 - i % manifest.leaf_count
        length = manifest.span_length(leaf, leaf + 1)
        payloads.append(
            encode_transfer(BlockMessage(manifest.object_id, i, leaf, b"\xee" * length, 1, 0))
        )
    return payloads


def _inject_through_session(
    network: Network, intruder: TransferCore, target: Address, payloads: list[bytes]
) -> None:
    """The enrolled intruder opens a secure session with ``target`` and sends
    ``payloads`` through it (as a provider would send Blocks)."""
    node = intruder.oap.node
    node.secure_session(target, network.now)
    network.wakeup(INTRUDER)

    def established() -> bool:
        return node.peer_identity(target) is not None

    assert network.run_until(established, max_time=5.0)
    for payload in payloads:
        node.send_command(target, AppId.OAP, payload, network.now, expect_response=False)
    network.wakeup(INTRUDER)


def _hashes_known(receiver: Receiver) -> bool:
    return receiver.hashes_known()


def _check_not_blamed(receiver: Receiver, provider: Address, sent: int) -> None:
    stats = receiver.statistics(0.0)
    assert receiver.source(INTRUDER).unsolicited == sent
    assert receiver.source(INTRUDER).bad_blocks == 0
    assert receiver.source(provider).bad_blocks == 0
    assert stats.unsolicited >= sent
    assert stats.verification_failures == 0
    assert stats.provider == provider  # never replaced


# -- third-party injection against a requestor -------------------------------------------


def test_enrolled_node_without_permissions_cannot_inject_blocks_into_a_requestor() -> None:
    cores = _secure_cores({"p1": "p", "p2": "p", "requestor": "x", "intruder": None})
    provider, requestor, intruder = cores["p1"], cores["requestor"], cores["intruder"]
    data = make_object(SIZE, 3)
    manifest = provider.publish(data)
    cores["p2"].publish(data)
    network = Network(seed=11, default=LinkConditions(delay=0.005))
    # A paced provider link, so that the injection lands mid-transfer.
    network.set_direction(P1, REQUESTOR, LinkConditions(delay=0.005, rate=1 << 20))
    for name, address in (("p1", P1), ("p2", P2), ("requestor", REQUESTOR)):
        network.add(cores[name], address)
    network.add(intruder, INTRUDER)
    transfer = requestor.fetch(manifest, [P1, P2], network.now)
    network.wakeup(REQUESTOR)
    receiver = requestor.receiver(transfer)
    assert network.run_until(lambda: _hashes_known(receiver), max_time=30.0)
    refusal = encode_transfer(RefusedMessage(manifest.object_id, 1, RefuseCode.BUSY, 8192))
    chunk = encode_transfer(HashChunkMessage(manifest.object_id, 2, 0, bytes(32 * 8), (), 1, 0))
    _inject_through_session(
        network, intruder, REQUESTOR, [*_bogus_blocks(manifest, BOGUS), refusal, chunk]
    )

    event = run_to_event(network, requestor, max_time=120.0)

    assert isinstance(event, TransferCompleted), event
    assert requestor.store.read(manifest.object_id, 0, SIZE) == data
    _check_not_blamed(receiver, P1, BOGUS + 2)
    assert cores["p2"].statistics().blocks_sent == 0  # the genuine provider kept serving


def test_plaintext_spoofer_cannot_inject_blocks_into_a_plaintext_requestor() -> None:
    data = make_object(SIZE, 4)
    provider, second, requestor, spoofer = (TransferCore() for _ in range(4))
    manifest = provider.publish(data)
    second.publish(data)
    network = Network(seed=12, default=LinkConditions(delay=0.005))
    network.set_direction(P1, REQUESTOR, LinkConditions(delay=0.005, rate=1 << 20))
    network.add(provider, P1)
    network.add(second, P2)
    network.add(requestor, REQUESTOR)
    network.add(spoofer, INTRUDER)
    transfer = requestor.fetch(manifest, [P1, P2], network.now)
    network.wakeup(REQUESTOR)
    receiver = requestor.receiver(transfer)
    assert network.run_until(lambda: _hashes_known(receiver), max_time=30.0)
    for payload in _bogus_blocks(manifest, BOGUS):
        spoofer.oap.node.send_command(
            REQUESTOR, AppId.OAP, payload, network.now, expect_response=False
        )
    network.wakeup(INTRUDER)

    event = run_to_event(network, requestor, max_time=120.0)

    assert isinstance(event, TransferCompleted), event
    assert requestor.store.read(manifest.object_id, 0, SIZE) == data
    _check_not_blamed(receiver, P1, BOGUS)
    assert second.statistics().blocks_sent == 0


def test_plaintext_blocks_forged_from_the_providers_address_are_refused_by_a_secure_requestor() -> (
    None
):
    cores = _secure_cores({"p1": "p", "requestor": "x"})
    provider, requestor = cores["p1"], cores["requestor"]
    data = make_object(SIZE, 5)
    manifest = provider.publish(data)
    network = Network(seed=13, default=LinkConditions(delay=0.005))
    network.set_direction(P1, REQUESTOR, LinkConditions(delay=0.005, rate=1 << 20))
    network.add(provider, P1)
    network.add(requestor, REQUESTOR)
    transfer = requestor.fetch(manifest, [P1], network.now)
    network.wakeup(REQUESTOR)
    receiver = requestor.receiver(transfer)
    assert network.run_until(lambda: _hashes_known(receiver), max_time=30.0)
    forger = TransferCore()  # plaintext, off the network: its datagrams are injected
    for payload in _bogus_blocks(manifest, BOGUS):
        forger.oap.node.send_command(
            REQUESTOR, AppId.OAP, payload, network.now, expect_response=False
        )
    forged = forger.datagrams_to_send(network.now)
    assert len(forged) == BOGUS
    for datagram, destination in forged:
        network.inject(datagram, P1, destination)  # the provider's source address

    event = run_to_event(network, requestor, max_time=120.0)

    assert isinstance(event, TransferCompleted), event
    assert requestor.store.read(manifest.object_id, 0, SIZE) == data
    security = requestor.oap.node.statistics().security
    assert security is not None and security.plaintext_refused >= BOGUS
    stats = receiver.statistics(0.0)
    assert stats.verification_failures == 0 and stats.provider == P1


def test_messages_through_another_identitys_session_are_unsolicited() -> None:
    """The identity check itself: the provider's address, but a session of
    another identity than the one the Fetch went to."""
    data = make_object(8 * 1024, 6)
    manifest = TransferCore().publish(data)
    receiver = Receiver(manifest, [P1], TransferCore().store, 0.0, secure=True)
    receiver.take_fetches()
    receiver.fetch_sent(P1, _identity("p1"))
    bogus = BlockMessage(manifest.object_id, 1, 0, b"\xee" * 1024, 1, 0)
    receiver.receive(P1, bogus, 0.01, _identity("intruder"))
    receiver.receive(P1, bogus, 0.01, None)  # in the clear
    receiver.receive_block(P1, _identity("intruder"), 0, b"\xee" * 1024, 1, 0, 0.01)
    assert receiver.source(P1).unsolicited == 3
    assert receiver.statistics(0.01).verification_failures == 0
    refusal = RefusedMessage(manifest.object_id, 1, RefuseCode.UNKNOWN_OBJECT, 8192)
    receiver.receive(P1, refusal, 0.02, _identity("intruder"))
    assert not receiver.done and receiver.source(P1).unsolicited == 4
    receiver.receive(P1, refusal, 0.02, _identity("p1"))  # the provider itself
    assert receiver.done and receiver.error is not None


# -- third-party injection against a relay --------------------------------------------------


def test_enrolled_node_without_permissions_cannot_fail_a_relays_upstream() -> None:
    cores = _secure_cores({"p1": "p", "p2": "p", "relay": "px", "requestor": "x", "intruder": None})
    relay, requestor, intruder = cores["relay"], cores["requestor"], cores["intruder"]
    data = make_object(SIZE, 7)
    manifest = cores["p1"].publish(data)
    cores["p2"].publish(data)
    network = Network(seed=14, default=LinkConditions(delay=0.005))
    network.set_direction(P1, RELAY, LinkConditions(delay=0.005, rate=1 << 20))
    for name, address in (("p1", P1), ("p2", P2), ("relay", RELAY), ("requestor", REQUESTOR)):
        network.add(cores[name], address)
    network.add(intruder, INTRUDER)
    relay.relay(manifest, [P1, P2])
    requestor.fetch(manifest, [RELAY], network.now)
    network.wakeup(REQUESTOR)

    def upstream_hashes_known() -> bool:
        upstream = relay.relay_transfer(manifest.object_id)
        return upstream is not None and relay.receiver(upstream).hashes_known()

    assert network.run_until(upstream_hashes_known, max_time=30.0)
    _inject_through_session(network, intruder, RELAY, _bogus_blocks(manifest, BOGUS))

    event = run_to_event(network, requestor, max_time=120.0)

    assert isinstance(event, TransferCompleted), event
    assert requestor.store.read(manifest.object_id, 0, SIZE) == data
    upstream = relay.relay_transfer(manifest.object_id)
    assert upstream is not None
    _check_not_blamed(relay.receiver(upstream), P1, BOGUS)
    assert isinstance(relay.next_event(), TransferCompleted)  # the upstream never failed
    assert relay.statistics().relay_retries == 0


# -- a relay recovers after its upstream failed ----------------------------------------------


def _relay_network(seed: int) -> tuple[Network, RelayCore, TransferCore]:
    # The relay gives an upstream provider up after two timeouts (about 3 s).
    relay = RelayCore(
        TransferConfig(receiver=ReceiverConfig(max_timeouts=2)), rng=random.Random(seed)
    )
    requestor = TransferCore()
    network = Network(seed=seed, default=LinkConditions(delay=0.005))
    network.add(relay, RELAY)
    network.add(requestor, REQUESTOR)
    return network, relay, requestor


def _relay_failures(relay: TransferCore) -> int:
    failures = 0
    while (event := relay.next_event()) is not None:
        failures += isinstance(event, TransferFailed)
    return failures


def test_relay_retries_an_upstream_that_was_down_and_serves_downstream() -> None:
    network, relay, requestor = _relay_network(21)
    provider = TransferCore()
    data = make_object(SIZE, 8)
    manifest = provider.publish(data)  # the provider is not on the network yet: down
    relay.relay(manifest, [P1])
    requestor.fetch(manifest, [RELAY], network.now)
    network.wakeup(REQUESTOR)
    network.run_until(max_time=8.0)
    assert _relay_failures(relay) >= 1  # the upstream transfer failed, maybe more than once
    assert relay.statistics().relay_retries >= 1
    network.add(provider, P1)  # back up

    event = run_to_event(network, requestor, max_time=120.0)

    assert isinstance(event, TransferCompleted), event
    assert requestor.store.read(manifest.object_id, 0, SIZE) == data
    assert provider.served(RELAY).bytes >= SIZE  # fetched upstream once more
    assert relay.served(REQUESTOR).bytes >= SIZE


def test_secure_relay_retries_an_upstream_that_was_down_and_serves_downstream() -> None:
    cores = _secure_cores(
        {"p1": "p", "relay": "px", "requestor": "x"}, relay_receiver=ReceiverConfig(max_timeouts=2)
    )
    provider, relay, requestor = cores["p1"], cores["relay"], cores["requestor"]
    data = make_object(SIZE, 14)
    manifest = provider.publish(data)
    network = Network(seed=24, default=LinkConditions(delay=0.005))
    network.add(relay, RELAY)
    network.add(requestor, REQUESTOR)
    relay.relay(manifest, [P1])  # the provider is down
    requestor.fetch(manifest, [RELAY], network.now)
    network.wakeup(REQUESTOR)
    network.run_until(max_time=8.0)
    assert _relay_failures(relay) >= 1
    network.add(provider, P1)  # back up

    event = run_to_event(network, requestor, max_time=120.0)

    assert isinstance(event, TransferCompleted), event
    assert requestor.store.read(manifest.object_id, 0, SIZE) == data
    assert relay.statistics().relay_retries >= 1
    assert relay.oap.node.peer_identity(P1) == _identity("p1")
    assert provider.served(RELAY).bytes >= SIZE


def test_relay_moves_to_another_upstream_after_a_failure() -> None:
    network, relay, requestor = _relay_network(22)
    second = TransferCore()
    data = make_object(SIZE, 9)
    manifest = second.publish(data)
    relay.relay(manifest, [P1, P2])  # P1 never answers; P2 is down until t = 8 s
    requestor.fetch(manifest, [RELAY], network.now)
    network.wakeup(REQUESTOR)
    network.run_until(max_time=8.0)
    assert _relay_failures(relay) >= 1
    network.add(second, P2)

    event = run_to_event(network, requestor, max_time=120.0)

    assert isinstance(event, TransferCompleted), event
    assert requestor.store.read(manifest.object_id, 0, SIZE) == data
    assert relay.statistics().relay_retries >= 1
    assert second.served(RELAY).bytes >= SIZE


def test_relay_backs_off_and_stops_retrying_when_nobody_waits() -> None:
    """An upstream down for ten minutes: the retries back off (capped at 30 s)
    and stop once the downstream requestor gave up; a later Fetch starts the
    object afresh and is served."""
    network, relay, requestor = _relay_network(23)
    provider = TransferCore()
    data = make_object(64 * 1024, 10)
    manifest = provider.publish(data)
    relay.relay(manifest, [P1])
    requestor.fetch(manifest, [RELAY], network.now, config=ReceiverConfig(max_timeouts=3))
    network.wakeup(REQUESTOR)
    event = run_to_event(network, requestor, max_time=60.0)
    assert isinstance(event, TransferFailed)  # the downstream gave up
    network.run_until(max_time=600.0)
    # Attempts of about 3 s each, then 0.25..0.5, 0.5..1, 1..2 ... up to 15..30 s
    # apart, only while the downstream sender lives (30 s idle timeout).
    retries = relay.statistics().relay_retries
    assert 1 <= retries <= 12
    assert relay.relay_transfer(manifest.object_id) is None  # forgotten
    assert relay.statistics().active_transfers == 0
    network.add(provider, P1)
    requestor.fetch(manifest, [RELAY], network.now)
    network.wakeup(REQUESTOR)
    event = run_to_event(network, requestor, max_time=60.0)
    assert isinstance(event, TransferCompleted), event
    assert requestor.store.read(manifest.object_id, 0, len(data)) == data


def _retry_times(seed: int) -> list[float]:
    """When a relay whose only upstream never answers starts its retries,
    over 300 s, with a patient requestor waiting downstream."""
    relay = RelayCore(
        TransferConfig(receiver=ReceiverConfig(max_timeouts=1, min_rate=None)),
        rng=random.Random(seed),
    )
    requestor = TransferCore()
    network = Network(seed=25, default=LinkConditions(delay=0.005))
    network.add(relay, RELAY)
    network.add(requestor, REQUESTOR)
    manifest = TransferCore().publish(make_object(16 * 1024, 15))
    relay.relay(manifest, [P1])
    patient = ReceiverConfig(max_timeouts=1000, min_rate=None)
    requestor.fetch(manifest, [RELAY], network.now, config=patient)
    network.wakeup(REQUESTOR)
    times: list[float] = []
    start = network.now
    while network.now - start < 300.0:
        seen = relay.statistics().relay_retries

        def retried(seen: int = seen) -> bool:
            return relay.statistics().relay_retries > seen

        if network.run_until(retried, max_time=300.0 - (network.now - start)):
            times.append(network.now)
    return times


def test_relay_retries_back_off_exponentially_with_seeded_jitter_up_to_a_cap() -> None:
    times = _retry_times(seed=26)
    # Each attempt lasts one 1 s retransmission timeout; then the back-off:
    # drawn in [d/2, d] with d = 0.5 s doubled per failure, capped at 30 s.
    backoffs = [b - a - 1.0 for a, b in itertools.pairwise(times)]
    assert 8 <= len(times) <= 20  # 40 and more without a back-off
    for failure, backoff in enumerate(backoffs, start=2):
        ceiling = min(30.0, 0.5 * 2.0 ** (failure - 1))
        assert ceiling / 2 - 0.05 <= backoff <= ceiling + 0.05, (failure, backoffs)
    assert max(backoffs) > 15.0  # it did reach the cap's range
    assert _retry_times(seed=26) == times  # the same seed, the same run
    assert _retry_times(seed=27) != times  # the jitter comes from the rng


# -- slow drip -------------------------------------------------------------------------------

SLOW_RECEIVER = ReceiverConfig(block_size=1024, min_rate=16 * 1024, rate_window=4.0)


def test_slow_drip_provider_is_replaced_by_a_fast_one() -> None:
    data = make_object(128 * 1024, 11)
    slow, fast, requestor = TransferCore(), TransferCore(), TransferCore()
    manifest = slow.publish(data)
    fast.publish(data)
    network = Network(seed=31, default=LinkConditions(delay=0.01))
    network.set_direction(P1, REQUESTOR, LinkConditions(delay=0.01, rate=2000))  # a drip
    network.add(slow, P1)
    network.add(fast, P2)
    network.add(requestor, REQUESTOR)
    transfer = requestor.fetch(manifest, [P1, P2], network.now, config=SLOW_RECEIVER)
    network.wakeup(REQUESTOR)

    event = run_to_event(network, requestor, max_time=120.0)

    assert isinstance(event, TransferCompleted), event
    assert requestor.store.read(manifest.object_id, 0, len(data)) == data
    stats = requestor.transfer_statistics(transfer, network.now)
    assert stats.slow_providers == 1 and stats.provider == P2
    assert fast.served(REQUESTOR).bytes > len(data) // 2
    # At 2000 bytes/s the slow provider alone needs over a minute.
    assert network.now < 20.0


def test_a_slow_drip_provider_alone_fails_the_transfer_with_a_clear_error() -> None:
    data = make_object(128 * 1024, 12)
    slow, requestor = TransferCore(), TransferCore()
    manifest = slow.publish(data)
    network = Network(seed=32, default=LinkConditions(delay=0.01))
    network.set_direction(P1, REQUESTOR, LinkConditions(delay=0.01, rate=2000))
    network.add(slow, P1)
    network.add(requestor, REQUESTOR)
    transfer = requestor.fetch(manifest, [P1], network.now, config=SLOW_RECEIVER)
    network.wakeup(REQUESTOR)

    event = run_to_event(network, requestor, max_time=120.0)

    assert isinstance(event, TransferFailed), event
    assert isinstance(event.error, BrokenResourceError)
    assert "below the floor" in str(event.error) and "10.0.0.1:3567" in str(event.error)
    stats = requestor.transfer_statistics(transfer, network.now)
    assert stats.slow_providers == 1 and stats.timeouts < 6
    assert 4.0 <= network.now < 6.0  # one rate window, not the timeouts


def test_the_default_floor_leaves_a_modest_link_alone() -> None:
    """64 KiB/s is well above the default floor (1 KiB/s over 30 s)."""
    data = make_object(1 << 20, 13)
    provider, requestor = TransferCore(), TransferCore()
    manifest = provider.publish(data)
    network = Network(seed=33, default=LinkConditions(delay=0.02))
    network.set_direction(P1, REQUESTOR, LinkConditions(delay=0.02, rate=64 * 1024))
    network.add(provider, P1)
    network.add(requestor, REQUESTOR)
    transfer = requestor.fetch(manifest, [P1], network.now)
    network.wakeup(REQUESTOR)
    event = run_to_event(network, requestor, max_time=120.0)
    assert isinstance(event, TransferCompleted), event
    assert requestor.transfer_statistics(transfer, network.now).slow_providers == 0
    assert network.now > 15.0  # it did span rate windows
