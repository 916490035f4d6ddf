"""Over real UDP on 127.0.0.1: a response longer than a datagram fails at the
requestor at once with the provider's reason (not a timeout), the provider
counts a handler error, and a response of exactly the limit gets through."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dofpy.oap.errors import OapError, OapErrorCode
from dofpy.trio import Provider, open_node
from dofpy.wire.dpp import AppId
from dofpy.wire.oap import InvokeResponse, encode_oap
from tests.oap.test_response_size import BLOBS, BLOBS_OID


class Blobs(Provider):
    def dump(self, size: int) -> bytes:
        return bytes(size)

    async def get_blob(self) -> bytes:
        return bytes(100_000)


async def test_an_oversize_response_is_an_immediate_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_node() as provider, open_node() as requestor:
        provider.provide(BLOBS_OID, BLOBS, Blobs())
        blobs = BLOBS.client(requestor, provider.local_address, BLOBS_OID)
        with trio.fail_after(1):  # virtual time: the first retransmission is later
            with pytest.raises(OapError) as refused:
                await blobs.dump(70_000)
            with pytest.raises(OapError, match="datagram limit"):
                await blobs.blob.get()
        assert refused.value.error_code is OapErrorCode.INTERNAL
        assert "exceeds the 65507-byte datagram limit" in str(refused.value)
        assert requestor.statistics().oap.node.retransmissions == 0
        assert provider.statistics().handler_errors == 2
        assert provider.statistics().endpoint.send_errors == 0


async def test_a_response_of_exactly_the_limit_is_delivered() -> None:
    async with open_node() as provider, open_node() as requestor:
        provider.provide(BLOBS_OID, BLOBS, Blobs())
        blobs = BLOBS.client(requestor, provider.local_address, BLOBS_OID)
        peer = requestor.local_address

        def datagram_length(size: int) -> int:
            # The requestor's first operation counts fit in one byte, as 1 does.
            payload = encode_oap(InvokeResponse((bytes(size),)))
            return provider.core.node.response_size(peer, 1, AppId.OAP, payload)

        size = next(n for n in range(65_400, 65_507) if datagram_length(n) == 65_507)
        assert await blobs.dump(size) == bytes(size)
        with pytest.raises(OapError, match="response of 65508 bytes exceeds"):
            await blobs.dump(size + 1)
        assert provider.statistics().endpoint.send_errors == 0
        assert provider.statistics().handler_errors == 1
