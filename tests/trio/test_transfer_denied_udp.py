"""Over real UDP on 127.0.0.1: a secure Fetch the provider's permissions refuse
fails at once with the provider's refusal, not after the transfer's timeouts."""

from __future__ import annotations

import random
import time

import pytest
import trio

from dofpy.errors import RemoteProtocolError
from dofpy.oap.core import OapConfig
from dofpy.testing import LocalDomain
from dofpy.testing import grant as grant_on
from dofpy.transfer.core import TransferConfig
from dofpy.transfer.messages import TRANSFER_IID
from dofpy.trio import open_transfer_node
from dofpy.wire.oid import OID

PROVIDER_ID = OID(3, b"provider@denied.example")
READER_ID = OID(3, b"reader@denied.example")


def config(local: LocalDomain, identity: OID) -> TransferConfig:
    return TransferConfig(oap=OapConfig(node=local.node_config(identity)))


async def test_secure_fetch_without_permission_fails_at_once() -> None:
    local = LocalDomain(OID(6, b"denied.example"), rng=random.Random(11).randbytes)
    local.enrol(PROVIDER_ID, grant_on("p", interface=TRANSFER_IID))
    local.enrol(READER_ID, grant_on("r", interface=TRANSFER_IID))  # no "x": no Fetch
    with trio.fail_after(20):
        async with (
            open_transfer_node(config=config(local, PROVIDER_ID)) as provider,
            open_transfer_node(config=config(local, READER_ID)) as requestor,
        ):
            manifest = provider.publish(random.Random(2).randbytes(256 << 10))
            started = time.monotonic()
            with pytest.raises(RemoteProtocolError, match="PERMISSION_DENIED"):
                await requestor.fetch(manifest, [provider.local_address])
            # The transfer's first retransmission timeout alone is about a second.
            assert time.monotonic() - started < 1.0
            assert requestor.node.core.node.peer_identity(provider.local_address) == PROVIDER_ID
            served = provider.statistics()
            assert served.oap.permission_denied >= 1
            assert served.transfer.refusals_sent >= 1
            assert served.transfer.blocks_sent == 0
