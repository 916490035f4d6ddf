"""A provider bounds what an unproved or flooding requestor costs it.

- Spoofed-source Fetches: a plaintext provider sends an address that has not
  proved it receives what is sent to it (no valid address token) at most 3x
  the bytes that came from it (a Retry, never a Block), while a genuine
  plaintext requestor (which answers the Retry) and a secure requestor are
  served.
- A Fetch flood: 5,000 Fetches from one (validated) requestor leave its
  sender queue within its bounds and the work per Fetch bounded, and the
  object is still delivered.
- The messages and tokens: round trips, refusals.
"""

from __future__ import annotations

import logging
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy._core import Address
from dofpy.errors import BadPacket, LocalProtocolError
from dofpy.oap.core import OapConfig
from dofpy.testing import LinkConditions, LocalDomain, Network
from dofpy.testing import grant as grant_on
from dofpy.testing.transfer import PROVIDER, REQUESTOR, make_object, run_to_event
from dofpy.transfer.core import TransferCompleted, TransferConfig, TransferCore
from dofpy.transfer.manifest import Manifest
from dofpy.transfer.messages import (
    MAX_TOKEN_SIZE,
    TRANSFER_IID,
    FetchRequest,
    RetryMessage,
    decode_transfer_untrusted,
    encode_transfer,
)
from dofpy.transfer.sender import SenderConfig
from dofpy.transfer.store import MemoryStore
from dofpy.transfer.tokens import TOKEN_SIZE, AddressTokens, read_address_token_untrusted
from dofpy.trio._open import check_plaintext_bind
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, decode_frame_untrusted, encode_frame
from dofpy.wire.oap import decode_oap_untrusted
from dofpy.wire.oid import OID

VICTIM: Address = ("10.0.0.66", 5000)
ATTACKER: Address = ("10.0.0.99", 6000)
SIZE = 512 * 1024  # 512 leaves of 1 KiB: the measured attack's object


def _fetch_datagram(request: FetchRequest, op: int) -> bytes:
    return encode_frame(
        DppPacket(
            app_id=AppId.OAP,
            payload=encode_transfer(request),
            op_id_type=OpIdType.IMPLIED_SENDER,
            op_count=op,
        )
    )


def _everything(manifest: Manifest, seq: int, token: bytes = b"") -> FetchRequest:
    """A Fetch for every hash chunk and leaf, unpaced, the largest window."""
    chunks = manifest.chunk_count_for(manifest.chunk_leaves_for(8192))
    return FetchRequest(
        manifest.object_id, seq, 8192, 0, 0xFFFF, ((0, chunks),), ((0, manifest.leaf_count),), token
    )


def _transfer_messages(datagrams: list[tuple[bytes, Address]]) -> list[object]:
    found: list[object] = []
    for data, _peer in datagrams:
        _dnp, packet = decode_frame_untrusted(data)
        found.append(decode_transfer_untrusted(decode_oap_untrusted(packet.payload, False)))
    return found


# -- spoofed-source amplification -------------------------------------------------------------


def test_spoofed_fetches_amplify_nothing_and_a_genuine_requestor_is_served() -> None:
    data = make_object(SIZE)
    provider = TransferCore()
    manifest = provider.publish(data)
    requestor = TransferCore()
    network = Network(seed=11, default=LinkConditions(delay=0.01))
    network.add(provider, PROVIDER)
    network.add(requestor, REQUESTOR)
    # The attacker learns a real token for its own address...
    attacker_token = b""
    for data_out, _ in _fetch_datagrams_answered(provider, ATTACKER, manifest):
        attacker_token = data_out
    assert len(attacker_token) == TOKEN_SIZE
    # ... then forges Fetches from the victim: no token, a token minted for
    # the attacker, a made-up token, and "done" (while a genuine transfer runs).
    forged = [b"", attacker_token, bytes(TOKEN_SIZE), b"\x01" * MAX_TOKEN_SIZE]
    transfer = requestor.fetch(manifest, [PROVIDER], network.now)
    network.wakeup(REQUESTOR)
    for i in range(400):
        token = forged[i % len(forged)]
        network.inject(_fetch_datagram(_everything(manifest, i, token), 1000 + i), VICTIM, PROVIDER)
        network.inject(
            _fetch_datagram(_everything(manifest, i, token), 5000 + i), REQUESTOR, PROVIDER
        )
    event = run_to_event(network, requestor, max_time=120)
    assert isinstance(event, TransferCompleted) and event.transfer_id == transfer
    store = requestor.store
    assert isinstance(store, MemoryStore) and store.data(manifest.object_id) == data

    from_victim = network.link_statistics(VICTIM, PROVIDER).bytes_sent
    to_victim = network.link_statistics(PROVIDER, VICTIM).bytes_sent
    assert from_victim > 400 * 80  # the attack was mounted: 400 Fetches of 80+ bytes
    assert 0 < to_victim <= 3 * from_victim
    assert provider.served(VICTIM).bytes == 0  # no Block, no hash chunk
    # The forged Fetches from the genuine requestor's own address were not
    # served either (the requestor's token was not in them): it got each
    # object's bytes about once, not 400 times.
    assert provider.served(REQUESTOR).bytes < 2 * SIZE
    stats = provider.statistics()
    assert stats.unvalidated_fetches >= 800
    assert stats.retries_sent >= 1
    assert requestor.statistics().retries_received >= 1


def _fetch_datagrams_answered(
    provider: TransferCore, source: Address, manifest: Manifest
) -> list[tuple[bytes, Address]]:
    """Send one token-less Fetch from ``source`` straight to ``provider``; the
    tokens of the Retries it answers with."""
    provider.receive_datagram(_fetch_datagram(_everything(manifest, 1), 1), source, 0.0)
    out = provider.datagrams_to_send(0.0)
    messages = _transfer_messages(out)
    assert all(isinstance(m, RetryMessage) for m in messages) and len(messages) == 1
    return [(m.token, source) for m in messages if isinstance(m, RetryMessage)]


def test_a_secure_provider_ignores_spoofed_plaintext_fetches_and_serves_its_requestor() -> None:
    domain = LocalDomain(OID(6, b"bounds.example"), rng=random.Random(8).randbytes)
    provider_id = OID(3, b"provider@bounds.example")
    requestor_id = OID(3, b"device@bounds.example")
    domain.enrol(provider_id, grant_on("p", interface=TRANSFER_IID))
    domain.enrol(requestor_id, grant_on("x", interface=TRANSFER_IID))
    provider = TransferCore(TransferConfig(oap=OapConfig(node=domain.node_config(provider_id))))
    requestor = TransferCore(TransferConfig(oap=OapConfig(node=domain.node_config(requestor_id))))
    network = Network(seed=12, default=LinkConditions(delay=0.01))
    network.add(provider, PROVIDER)
    network.add(requestor, REQUESTOR)
    data = make_object(128 * 1024)
    manifest = provider.publish(data)
    requestor.fetch(manifest, [PROVIDER], network.now)
    network.wakeup(REQUESTOR)
    for i in range(200):
        network.inject(_fetch_datagram(_everything(manifest, i), 100 + i), VICTIM, PROVIDER)
    assert isinstance(run_to_event(network, requestor, max_time=60), TransferCompleted)
    assert requestor.store.read(manifest.object_id, 0, len(data)) == data
    from_victim = network.link_statistics(VICTIM, PROVIDER).bytes_sent
    assert from_victim > 200 * 50
    assert network.link_statistics(PROVIDER, VICTIM).bytes_sent == 0
    assert provider.served(VICTIM).bytes == 0
    security = provider.oap.statistics().node.security
    assert security is not None and security.plaintext_refused >= 200


def test_a_lost_retry_is_recovered_and_the_transfer_completes() -> None:
    """The Retry is an ordinary datagram: losses of it cost timeouts, not the transfer."""
    data = make_object(64 * 1024)
    provider = TransferCore()
    manifest = provider.publish(data)
    requestor = TransferCore()
    network = Network(seed=3, default=LinkConditions(loss=0.3, delay=0.01))
    network.add(provider, PROVIDER)
    network.add(requestor, REQUESTOR)
    requestor.fetch(manifest, [PROVIDER], network.now)
    network.wakeup(REQUESTOR)
    assert isinstance(run_to_event(network, requestor, max_time=600), TransferCompleted)
    assert requestor.store.read(manifest.object_id, 0, len(data)) == data
    assert provider.statistics().retries_sent >= 1


# -- Fetch flood -------------------------------------------------------------------------------


def test_a_fetch_flood_keeps_the_sender_queue_and_its_work_bounded() -> None:
    config = SenderConfig()
    provider = TransferCore(TransferConfig(provider_rate_cap=1e6))  # slow: the queue stays full
    data = make_object(SIZE)
    manifest = provider.publish(data)
    ((token, _),) = _fetch_datagrams_answered(provider, REQUESTOR, manifest)
    now = 0.0
    fetches = 5000
    max_batches = 0
    sent = 0
    for i in range(fetches):
        now += 0.001
        # Most ask for one leaf each (a new batch each: the queue fills up and
        # its oldest batches are merged); every 100th re-asks everything
        # (what was asked before moves to the newest batch, the rest empties).
        if i % 100 == 99:
            request = _everything(manifest, i + 2, token)
        else:
            leaf = (i * 7) % manifest.leaf_count
            request = FetchRequest(
                manifest.object_id, i + 2, 8192, 0, 64, (), ((leaf, leaf + 1),), token
            )
        provider.receive_datagram(_fetch_datagram(request, 10 + i), REQUESTOR, now)
        sent += len(provider.datagrams_to_send(now))
        ((_, sender),) = provider._senders.items()
        max_batches = max(max_batches, sender.queued_batches)
    assert provider.statistics().fetches_received == fetches + 1
    assert provider.statistics().unvalidated_fetches == 1  # the first, answered by a Retry
    assert 1 < max_batches <= config.max_queued_batches
    assert sender.queued_batches <= config.max_queued_batches
    assert sender._queued_units() <= config.max_queued_units
    # Work: every Fetch walked at most the queue's bound of batches.
    assert sender.batches_visited <= fetches * (config.max_queued_batches + 1)
    assert sender.batches_merged > 0
    # Served at the provider's rate, not once per Fetch: 5 s at 1 MB/s.
    assert sent * 1024 <= 1e6 * now + 2 * config.burst_bytes + 8192
    # The requestor's object is still all there to serve: drain the queue.
    for _ in range(10_000):
        now += 0.01
        provider.handle_timer(now)
        provider.datagrams_to_send(now)
        if not sender.queued_batches:
            break
    assert sender.queued_batches == 0


def test_a_fetch_asking_again_queues_no_empty_batch() -> None:
    provider = TransferCore(TransferConfig(provider_rate_cap=1e3))
    manifest = provider.publish(make_object(64 * 1024))
    ((token, _),) = _fetch_datagrams_answered(provider, REQUESTOR, manifest)
    for i in range(100):
        provider.receive_datagram(
            _fetch_datagram(_everything(manifest, i + 2, token), 10 + i), REQUESTOR, 0.0
        )
        provider.datagrams_to_send(0.0)
    ((_, sender),) = provider._senders.items()
    assert sender.queued_batches == 1
    assert sender.batches_visited <= 2 * 100


def test_senders_per_requestor_are_capped() -> None:
    provider = TransferCore(TransferConfig(max_senders_per_peer=3, provider_rate_cap=1e3))
    manifests = [provider.publish(make_object(4096, seed)) for seed in range(5)]
    tokens = AddressTokens(b"k" * 32)
    provider._tokens = tokens
    token = tokens.mint(REQUESTOR, 0.0)
    for i, manifest in enumerate(manifests):
        request = FetchRequest(manifest.object_id, 1, 1024, 0, 4, (), ((0, 1),), token)
        provider.receive_datagram(_fetch_datagram(request, 10 + i), REQUESTOR, 0.0)
        provider.datagrams_to_send(0.0)
    assert provider.statistics().open_senders == 3
    assert provider.statistics().refusals_sent == 2
    other = tokens.mint(VICTIM, 0.0)
    request = FetchRequest(manifests[4].object_id, 1, 1024, 0, 4, (), ((0, 1),), other)
    provider.receive_datagram(_fetch_datagram(request, 99), VICTIM, 0.0)
    assert provider.statistics().open_senders == 4  # another requestor is served


# -- rate cap --------------------------------------------------------------------------------


def test_providers_have_a_default_rate_cap_and_honour_it() -> None:
    assert TransferConfig().provider_rate_cap is not None
    cap = 2e6
    data = make_object(SIZE)
    provider = TransferCore(TransferConfig(provider_rate_cap=cap))
    manifest = provider.publish(data)
    requestor = TransferCore()
    network = Network(seed=2, default=LinkConditions(delay=0.001))
    network.add(provider, PROVIDER)
    network.add(requestor, REQUESTOR)
    requestor.fetch(manifest, [PROVIDER], network.now)
    network.wakeup(REQUESTOR)
    assert isinstance(run_to_event(network, requestor, max_time=60), TransferCompleted)
    sent = provider.statistics().bytes_sent
    assert sent >= SIZE
    burst = SenderConfig().burst_bytes
    assert network.now >= (sent - burst) / cap


# -- messages and tokens ---------------------------------------------------------------------


_tokens = st.binary(min_size=1, max_size=MAX_TOKEN_SIZE)


@given(st.binary(min_size=32, max_size=32), st.integers(0, 0xFFFF), _tokens)
def test_retry_round_trip(object_id: bytes, sequence: int, token: bytes) -> None:
    message = RetryMessage(object_id, sequence, token)
    assert decode_transfer_untrusted(decode_oap_untrusted(encode_transfer(message), False)) == (
        message
    )


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=MAX_TOKEN_SIZE))
def test_fetch_with_a_token_round_trips(object_id: bytes, token: bytes) -> None:
    message = FetchRequest(object_id, 3, 1024, 10, 16, ((0, 2),), ((0, 9),), token)
    payload = encode_transfer(message)
    assert decode_transfer_untrusted(decode_oap_untrusted(payload, False)) == message
    if not token:  # no token: exactly the Fetch of before
        assert payload == encode_transfer(
            FetchRequest(object_id, 3, 1024, 10, 16, ((0, 2),), ((0, 9),))
        )


def test_retry_and_token_values_are_refused_out_of_range() -> None:
    with pytest.raises(ValueError):
        RetryMessage(bytes(32), 0, b"")
    with pytest.raises(ValueError):
        RetryMessage(bytes(32), 0, bytes(MAX_TOKEN_SIZE + 1))
    with pytest.raises(ValueError):
        FetchRequest(bytes(32), 0, 1024, 0, 0, (), (), bytes(MAX_TOKEN_SIZE + 1))
    with pytest.raises(BadPacket):
        read_address_token_untrusted(bytes(TOKEN_SIZE - 1))


def test_tokens_are_bound_to_the_address_and_expire() -> None:
    tokens = AddressTokens(b"s" * 32, lifetime=60.0, granularity=10.0)
    token = tokens.mint(REQUESTOR, 100.0)
    assert tokens.check(REQUESTOR, token, 100.0)
    assert tokens.check(REQUESTOR, token, 165.0)
    assert not tokens.check(REQUESTOR, token, 175.0)  # expired
    assert not tokens.check(REQUESTOR, token, 50.0)  # from the future
    assert not tokens.check(VICTIM, token, 100.0)
    assert not tokens.check((REQUESTOR[0], REQUESTOR[1] + 1), token, 100.0)
    tampered = bytearray(token)
    tampered[-1] ^= 1
    assert not tokens.check(REQUESTOR, bytes(tampered), 100.0)
    assert not tokens.check(REQUESTOR, token[:-1], 100.0)
    assert not AddressTokens(b"t" * 32).check(REQUESTOR, token, 100.0)  # another provider


# -- plaintext bind opt-in -------------------------------------------------------------------


def test_plaintext_on_a_non_loopback_address_needs_an_explicit_logged_opt_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost"):
        check_plaintext_bind((host, 0), secure=False, allow_plaintext=False)
    for host in ("192.0.2.10", "0.0.0.0", "", "::", "2001:db8::1", "example.org"):
        with pytest.raises(LocalProtocolError, match="allow_plaintext"):
            check_plaintext_bind((host, 3567), secure=False, allow_plaintext=False)
        check_plaintext_bind((host, 3567), secure=True, allow_plaintext=False)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="dofpy.node"):
        check_plaintext_bind(("192.0.2.10", 3567), secure=False, allow_plaintext=True)
    assert any("WITHOUT SECURITY" in r.getMessage() for r in caplog.records)
