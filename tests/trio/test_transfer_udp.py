"""The block transfer over real UDP sockets on 127.0.0.1 (``dofpy.trio.open_transfer_node``).

Real sockets and the real clock, so every test is bounded by ``trio.fail_after``
and none sleeps: each waits for a fetch to finish (or fail).
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import trio

from dofpy._core import Address
from dofpy.errors import (
    BrokenResourceError,
    ClosedResourceError,
    DofError,
    SecureSessionCause,
    SecureSessionTimeout,
)
from dofpy.oap.core import OapConfig
from dofpy.security.keylog import parse_keylog
from dofpy.testing import LocalDomain, grant, make_object
from dofpy.transfer.core import TransferConfig
from dofpy.transfer.manifest import Manifest
from dofpy.transfer.messages import TRANSFER_IID
from dofpy.transfer.receiver import FetchState, ReceiverConfig, ReceiverStatistics
from dofpy.transfer.rtt import RttConfig
from dofpy.transfer.store import MemoryStore
from dofpy.trio import open_transfer_node
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet

LAN = ReceiverConfig(block_size=8192)
"""Loopback is a LAN: 8 KiB blocks keep these tests fast."""


# -- plaintext ---------------------------------------------------------------------------


async def test_plaintext_fetch_is_byte_identical_and_reports_progress() -> None:
    data = make_object(3 << 20)
    calls: list[ReceiverStatistics] = []
    with trio.fail_after(30):
        async with open_transfer_node() as provider, open_transfer_node() as requestor:
            manifest = provider.publish(data)
            store = MemoryStore()
            stats = await requestor.fetch(
                manifest,
                [provider.local_address],
                store=store,
                config=LAN,
                progress=calls.append,
                progress_interval=0.01,
            )
            assert store.data(manifest.object_id) == data
            assert stats.state is FetchState.COMPLETE
            assert stats.bytes_verified == len(data)
            assert stats.verification_failures == 0
            # At least the closing call, with the final figures; the ones before
            # it (if the fetch took longer than an interval) never go backwards.
            assert calls and calls[-1] == stats
            verified = [c.bytes_verified for c in calls]
            assert verified == sorted(verified)
            node_stats = requestor.statistics()
            assert node_stats.transfer.active_transfers == 0
            assert node_stats.endpoint.datagrams_received > (3 << 20) // 8192
            served = provider.statistics().transfer
            assert served.bytes_sent >= len(data)


async def test_default_block_size_fits_the_ipv6_minimum_mtu() -> None:
    data = make_object(1 << 20, seed=2)
    with trio.fail_after(30):
        async with open_transfer_node() as provider, open_transfer_node() as requestor:
            manifest = provider.publish(data)
            store = MemoryStore()
            await requestor.fetch(manifest, [provider.local_address], store=store)
            assert store.data(manifest.object_id) == data
            endpoint = provider.statistics().endpoint
            # 1024-byte blocks: every datagram of the provider is within 1232 bytes.
            assert endpoint.bytes_sent <= endpoint.datagrams_sent * 1232


async def test_fetch_from_a_provider_that_is_gone_fails_clearly() -> None:
    data = make_object(1 << 20, seed=3)
    impatient = ReceiverConfig(
        block_size=8192, max_timeouts=3, rtt=RttConfig(initial_rto=0.05, min_rto=0.05, max_rto=0.1)
    )
    with trio.fail_after(30):
        async with open_transfer_node() as provider:
            manifest = provider.publish(data)
            gone = provider.local_address
        async with open_transfer_node() as requestor:
            with pytest.raises(BrokenResourceError, match=r"sent nothing for 3 retransmission"):
                await requestor.fetch(manifest, [gone], config=impatient)
            assert requestor.statistics().transfer.timeouts == 3


async def test_fetch_fails_over_to_a_second_provider() -> None:
    data = make_object(1 << 20, seed=4)
    impatient = ReceiverConfig(
        block_size=8192, max_timeouts=2, rtt=RttConfig(initial_rto=0.05, min_rto=0.05, max_rto=0.1)
    )
    with trio.fail_after(30):
        async with open_transfer_node() as gone_provider:
            gone = gone_provider.local_address
        async with open_transfer_node() as provider, open_transfer_node() as requestor:
            manifest = provider.publish(data)
            store = MemoryStore()
            stats = await requestor.fetch(
                manifest, [gone, provider.local_address], store=store, config=impatient
            )
            assert store.data(manifest.object_id) == data
            assert stats.provider == provider.local_address


async def test_fetch_refused_for_an_unknown_object() -> None:
    data = make_object(64 << 10, seed=5)
    with trio.fail_after(30):
        async with (
            open_transfer_node() as publisher,
            open_transfer_node() as stranger,
            open_transfer_node() as requestor,
        ):
            manifest = publisher.publish(data)
            with pytest.raises(DofError, match="UNKNOWN_OBJECT"):
                await requestor.fetch(manifest, [stranger.local_address])


async def test_methods_refuse_bad_arguments_and_a_closed_node() -> None:
    async with open_transfer_node() as provider:
        manifest = provider.publish(make_object(4096))
        with pytest.raises(ValueError, match="at least one provider"):
            await provider.fetch(manifest, [])
        with pytest.raises(ValueError, match="progress_interval"):
            await provider.fetch(manifest, [("127.0.0.1", 9)], progress_interval=0)
        address = provider.local_address
    with pytest.raises(ClosedResourceError):
        provider.relay(manifest, [address])
    with pytest.raises(ClosedResourceError):
        provider.publish(b"late")
    with pytest.raises(ClosedResourceError):
        await provider.fetch(manifest, [address])


# -- relay -------------------------------------------------------------------------------


async def test_caching_relay_serves_several_requestors_fetching_each_block_once() -> None:
    data = make_object(2 << 20, seed=6)
    requestors = 4
    stores = [MemoryStore() for _ in range(requestors)]
    with trio.fail_after(60):
        async with open_transfer_node() as provider, open_transfer_node() as relay:
            manifest = provider.publish(data)
            relay.relay(manifest, [provider.local_address])
            async with trio.open_nursery() as nursery:
                for store in stores:
                    nursery.start_soon(fetch_through, relay.local_address, manifest, store)
            for store in stores:
                assert store.data(manifest.object_id) == data
            upstream = relay.core.relay_transfer(manifest.object_id)
            assert upstream is not None
            relay_stats = relay.statistics().transfer
            # One upstream transfer, no upstream loss on loopback: each block once.
            # One upstream transfer: each block comes from the provider about once
            # (plus what loopback drops), not once per requestor.
            provider_sent = provider.statistics().transfer.blocks_sent
            upstream_blocks = manifest.leaf_count + manifest.chunk_count  # 1 KiB blocks
            assert relay_stats.blocks_received <= provider_sent < 2 * upstream_blocks
            assert relay_stats.blocks_sent >= requestors * (len(data) // 8192)
            assert relay_stats.cache.hits > 0


async def fetch_through(relay: Address, manifest: Manifest, store: MemoryStore) -> None:
    async with open_transfer_node() as requestor:
        await requestor.fetch(manifest, [relay], store=store, config=LAN)


# -- secure sessions ---------------------------------------------------------------------

DOMAIN = OID(6, b"transfer.example")
PROVIDER_ID = OID(3, b"provider@transfer.example")
RELAY_ID = OID(3, b"relay@transfer.example")


def requestor_id(index: int) -> OID:
    return OID(3, f"device-{index}@transfer.example".encode())


def transfer_grant(letters: str) -> PermissionSet:
    return grant(letters, interface=TRANSFER_IID)


class SecureDomain:
    """A domain whose responders hold the credential store (in-process Authenticator)."""

    def __init__(self, seed: int = 7, requestors: int = 4) -> None:
        self.local = LocalDomain(DOMAIN, rng=random.Random(seed).randbytes)
        for identity in [PROVIDER_ID, RELAY_ID] + [requestor_id(i) for i in range(requestors)]:
            self.local.enrol(identity, transfer_grant("rxp"))
        self.authenticator = self.local.authenticator

    def config(self, identity: OID, **overrides: float) -> TransferConfig:
        return TransferConfig(oap=OapConfig(node=self.local.node_config(identity, **overrides)))


async def test_secure_fetch_through_a_caching_relay_is_sealed_and_byte_identical(
    tmp_path: Path,
) -> None:
    data = make_object(2 << 20, seed=8)
    requestors = 3
    domain = SecureDomain(requestors=requestors)
    keylog = tmp_path / "keys.log"
    stores = [MemoryStore() for _ in range(requestors)]
    with trio.fail_after(60):
        async with (
            open_transfer_node(config=domain.config(PROVIDER_ID), keylog_path=keylog) as provider,
            open_transfer_node(config=domain.config(RELAY_ID), keylog_path=keylog) as relay,
        ):
            manifest = provider.publish(data)
            # First a direct secure fetch: its first Fetch waits for the handshake.
            async with open_transfer_node(config=domain.config(requestor_id(0))) as direct:
                stats = await direct.fetch(
                    manifest, [provider.local_address], store=stores[0], config=LAN
                )
                assert direct.node.core.node.peer_identity(provider.local_address) == PROVIDER_ID
                assert stats.verification_failures == 0
            relay.relay(manifest, [provider.local_address])

            async def through_relay(index: int) -> None:
                async with open_transfer_node(config=domain.config(requestor_id(index))) as node:
                    await node.fetch(
                        manifest, [relay.local_address], store=stores[index], config=LAN
                    )
                    assert node.node.core.node.peer_identity(relay.local_address) == RELAY_ID
                    assert node.statistics().oap.node.bad_datagrams == 0

            async with trio.open_nursery() as nursery:
                for index in range(1, requestors):
                    nursery.start_soon(through_relay, index)
            for store in stores:
                assert hashlib.sha256(store.data(manifest.object_id)).digest() == manifest.object_id
            relay_stats = relay.statistics()
            assert relay_stats.transfer.verification_failures == 0
            assert relay.node.core.node.peer_identity(provider.local_address) == PROVIDER_ID
    # Provider and relay logged a key per session they answered or opened.
    keys = parse_keylog(keylog.read_text().splitlines())
    assert len(keys) >= requestors + 1


async def test_secure_fetch_from_a_provider_that_is_gone_fails_with_the_handshake_error() -> None:
    domain = SecureDomain(requestors=1)
    with trio.fail_after(30):
        async with open_transfer_node(config=domain.config(PROVIDER_ID)) as provider:
            manifest = provider.publish(make_object(4096))
            gone = provider.local_address
        config = domain.config(requestor_id(0), handshake_timeout=0.3)
        async with open_transfer_node(config=config) as requestor:
            with pytest.raises(SecureSessionTimeout, match=r"did not answer the handshake") as info:
                await requestor.fetch(manifest, [gone])
            assert info.value.cause is SecureSessionCause.NO_ANSWER


async def test_relay_whose_upstream_is_gone_fails_downstream_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    impatient = ReceiverConfig(
        block_size=8192, max_timeouts=2, rtt=RttConfig(initial_rto=0.05, min_rto=0.05, max_rto=0.1)
    )
    with trio.fail_after(30):
        async with open_transfer_node() as provider:
            manifest = provider.publish(make_object(64 << 10, seed=9))
            gone = provider.local_address
        relay_config = TransferConfig(receiver=impatient)
        async with (
            open_transfer_node(config=relay_config) as relay,
            open_transfer_node() as requestor,
        ):
            relay.relay(manifest, [gone])
            slower = ReceiverConfig(
                block_size=8192,
                max_timeouts=3,
                rtt=RttConfig(initial_rto=0.2, min_rto=0.2, max_rto=0.4),
            )
            with pytest.raises(BrokenResourceError, match="sent nothing"):
                await requestor.fetch(manifest, [relay.local_address], config=slower)
    assert any("failed" in record.getMessage() for record in caplog.records)


async def test_cancelled_fetch_stops_the_transfer_and_frees_the_provider() -> None:
    data = make_object(8 << 20, seed=3)
    with trio.fail_after(30):
        async with open_transfer_node() as provider, open_transfer_node() as requestor:
            manifest = provider.publish(data)
            started = trio.Event()

            def progress(stats: ReceiverStatistics) -> None:
                if stats.bytes_verified > 0:
                    started.set()

            async with trio.open_nursery() as nursery:
                cancel_scope = trio.CancelScope()

                async def fetch() -> None:
                    with cancel_scope:
                        await requestor.fetch(
                            manifest,
                            [provider.local_address],
                            progress=progress,
                            progress_interval=0.001,
                        )

                nursery.start_soon(fetch)
                await started.wait()
                cancel_scope.cancel()
            assert requestor.statistics().transfer.active_transfers == 0
            # The "forget me" Fetch went out before this ping on the same path, so
            # once the ping is answered the provider has let the transfer go.
            await requestor.node.ping(provider.local_address)
            assert provider.statistics().transfer.open_senders == 0
