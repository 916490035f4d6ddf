"""The transfer's raw receive path and its refusals.

- ``decode_transfer_command_untrusted`` (Blocks read straight from their bytes)
  gives exactly what the general OAP + transfer decoders give, on valid and on
  mutated payloads;
- a Fetch the provider's permissions refuse is answered with a transfer
  Refused (PERMISSION_DENIED), so the fetch fails at once with a clear error.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.errors import BadPacket, RemoteProtocolError
from dofpy.oap.core import AccessDenied, OapConfig
from dofpy.testing import LinkConditions, LocalDomain, Network
from dofpy.testing import grant as grant_on
from dofpy.testing.transfer import PROVIDER, REQUESTOR, make_object, run_to_event
from dofpy.transfer.core import TransferCompleted, TransferConfig, TransferCore, TransferFailed
from dofpy.transfer.messages import (
    MAX_SEQ,
    TRANSFER_IID,
    BlockEncoder,
    BlockMessage,
    FetchRequest,
    HashChunkMessage,
    RefuseCode,
    RefusedMessage,
    TransferMessage,
    decode_transfer_command_untrusted,
    decode_transfer_untrusted,
    encode_transfer,
)
from dofpy.wire.oap import decode_oap_untrusted, probe_command_head_untrusted
from dofpy.wire.oid import OID

object_ids = st.binary(min_size=32, max_size=32)
indexes = st.integers(0, 1 << 32)
seqs = st.integers(0, MAX_SEQ)
ranges = st.lists(st.integers(0, 1 << 20), max_size=8, unique=True).map(
    lambda bounds: tuple((start, start + 1) for start in sorted(b * 2 for b in bounds))
)
blocks = st.builds(
    BlockMessage,
    object_ids,
    st.integers(0, 0xFFFF),
    indexes,
    st.binary(min_size=1, max_size=2000),
    seqs,
    seqs,
)
messages: st.SearchStrategy[TransferMessage] = (
    blocks
    | st.builds(
        FetchRequest,
        object_ids,
        seqs,
        st.integers(1, 1 << 16),
        st.integers(0, 1 << 40),
        st.integers(0, 0xFFFF),
        ranges,
        ranges,
    )
    | st.builds(
        HashChunkMessage,
        object_ids,
        st.integers(0, 0xFFFF),
        indexes,
        st.integers(1, 4).map(lambda n: bytes(32 * n)),
        st.lists(st.just(b"\x07" * 32), max_size=3).map(tuple),
        seqs,
        seqs,
    )
    | st.builds(
        RefusedMessage,
        object_ids,
        st.integers(0, 0xFFFF),
        st.sampled_from(RefuseCode),
        st.integers(0, 1 << 16),
    )
)


def general(payload: bytes) -> TransferMessage | None:
    try:
        return decode_transfer_untrusted(decode_oap_untrusted(payload, False))
    except BadPacket:
        return None


def raw(payload: bytes) -> TransferMessage | None:
    try:
        head = probe_command_head_untrusted(payload)
        if head is None:
            return general(payload)
        return decode_transfer_command_untrusted(head, payload)
    except BadPacket:
        return None


@settings(max_examples=300)
@given(messages, st.data())
def test_raw_decode_equals_the_general_decode(
    message: TransferMessage, data: st.DataObject
) -> None:
    payload = encode_transfer(message)
    assert raw(payload) == message == general(payload)
    if isinstance(message, BlockMessage):
        assert BlockEncoder(message.object_id).encode_message(message) == payload
    index = data.draw(st.integers(0, len(payload) - 1))
    flipped = bytearray(payload)
    flipped[index] ^= data.draw(st.integers(1, 255))
    inserted = payload[:index] + bytes([data.draw(st.integers(0, 255))]) + payload[index:]
    for mutated in (
        bytes(flipped),
        payload[:index],
        inserted,
        payload[:index] + payload[index + 1 :],
        payload + b"\x00",
    ):
        assert raw(mutated) == general(mutated)


@given(st.integers(24, 1 << 40), st.sampled_from([1, 2, 4, 8]))
def test_non_minimal_cbor_heads_in_a_block_are_refused_by_both(value: int, width: int) -> None:
    """A Block whose leaf is written with a wider CBOR head than needed."""
    message = BlockMessage(bytes(32), 1, 5, b"data", 1, 2)
    payload = encode_transfer(message)
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    if value >= 1 << (8 * width):
        return
    widened = payload.replace(
        b"\x84\x05\x44", b"\x84" + bytes([info]) + value.to_bytes(width, "big") + b"\x44", 1
    )
    expected = general(widened)
    assert raw(widened) == expected
    if value == 5:
        assert expected is None  # 5 in a wider head is not canonical


# -- refusals -----------------------------------------------------------------------------


def denied_domain(requestor_grant: str) -> tuple[Network, TransferCore, TransferCore]:
    local = LocalDomain(OID(6, b"transfer.example"), rng=random.Random(4).randbytes)
    provider_id = OID(3, b"provider@transfer.example")
    requestor_id = OID(3, b"device@transfer.example")
    local.enrol(provider_id, grant_on("p", interface=TRANSFER_IID))
    local.enrol(requestor_id, grant_on(requestor_grant, interface=TRANSFER_IID))
    network = Network(seed=5, default=LinkConditions(delay=0.005))
    provider = TransferCore(TransferConfig(oap=OapConfig(node=local.node_config(provider_id))))
    requestor = TransferCore(TransferConfig(oap=OapConfig(node=local.node_config(requestor_id))))
    network.add(provider, PROVIDER)
    network.add(requestor, REQUESTOR)
    return network, provider, requestor


def test_fetch_denied_by_permissions_fails_at_once_with_a_clear_error() -> None:
    network, provider, requestor = denied_domain("r")  # may read, not execute (Fetch)
    manifest = provider.publish(make_object(64 << 10))
    transfer = requestor.fetch(manifest, [PROVIDER], network.now)
    network.wakeup(REQUESTOR)
    event = run_to_event(network, requestor, max_time=60)
    assert isinstance(event, TransferFailed)
    assert event.transfer_id == transfer
    assert isinstance(event.error, RemoteProtocolError)
    assert "PERMISSION_DENIED" in str(event.error)
    # The handshake plus one round trip, not the transfer's timeouts.
    assert network.now < 1.0
    assert requestor.transfer_statistics(transfer, network.now).timeouts == 0
    stats = provider.statistics()
    assert stats.refusals_sent >= 1 and stats.fetches_received == 0
    assert provider.oap.statistics().permission_denied >= 1
    denied = [e for e in iter(provider.oap.next_event, None) if isinstance(e, AccessDenied)]
    assert denied and denied[0].interface == TRANSFER_IID


def test_fetch_with_the_permission_completes() -> None:
    network, provider, requestor = denied_domain("x")
    data = make_object(64 << 10)
    manifest = provider.publish(data)
    requestor.fetch(manifest, [PROVIDER], network.now)
    network.wakeup(REQUESTOR)
    event = run_to_event(network, requestor, max_time=60)
    assert isinstance(event, TransferCompleted)
    assert requestor.store.read(manifest.object_id, 0, len(data)) == data
    assert provider.oap.statistics().permission_denied == 0
