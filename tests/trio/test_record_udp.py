"""Records as OAP values over real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import trio

from dofpy.oap.errors import OapErrorCode
from dofpy.trio import open_node
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, decode_frame_untrusted, encode_frame
from dofpy.wire.oap import (
    Binding,
    ExceptionResponse,
    InvokeCommand,
    decode_oap_untrusted,
    encode_oap,
)
from tests.oap.record_example import (
    DEVICES,
    FLEET,
    FLEET_OID,
    DeviceReport,
    DeviceState,
    Fleet,
    Query,
)


async def test_get_set_invoke_subscribe_with_records() -> None:
    fleet = Fleet()
    async with open_node() as provider, open_node() as requestor:
        provider.provide(FLEET_OID, FLEET, fleet)
        peer = provider.local_address
        assert await requestor.get(peer, FLEET_OID, FLEET, "last_report") == fleet.last_report
        report = DeviceReport(DEVICES[2], ("field", "eu"), note="ok")
        await requestor.set(peer, FLEET_OID, FLEET, "last_report", report)
        assert fleet.last_report == report
        devices, total = await requestor.invoke(
            peer, FLEET_OID, FLEET, "query", Query(state=DeviceState.NORMAL)
        )
        assert (devices, total) == ((DEVICES[0], DEVICES[2]), 2)
        assert fleet.filters == [Query(state=DeviceState.NORMAL)]
        async with requestor.subscribe(peer, FLEET_OID, FLEET, "reported") as reports:
            assert provider.signal(FLEET_OID, FLEET, "reported", report) == 1
            note = await reports.receive()
        assert note.values == (report,)


async def test_malformed_record_argument_is_refused_and_the_provider_keeps_serving() -> None:
    fleet = Fleet()
    async with open_node() as provider, open_node() as requestor:
        provider.provide(FLEET_OID, FLEET, fleet)
        peer = provider.local_address
        command = InvokeCommand(2, Binding(FLEET.iid, FLEET_OID), ({"state": "NORMAL"},))
        frame = DppPacket(
            AppId.OAP, encode_oap(command), op_id_type=OpIdType.IMPLIED_SENDER, op_count=77
        )
        with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as raw:
            await raw.bind(("127.0.0.1", 0))
            await raw.sendto(encode_frame(frame), peer)
            with trio.fail_after(5):
                datagram = await raw.recv(65536)
        reply = decode_oap_untrusted(decode_frame_untrusted(datagram)[1].payload, True)
        assert isinstance(reply, ExceptionResponse)
        assert (reply.code, reply.internal) == (OapErrorCode.INVALID_VALUE, True)
        assert "Query.state" in reply.values[0]
        assert fleet.filters == []
        devices, total = await requestor.invoke(peer, FLEET_OID, FLEET, "query", Query())
        assert (devices, total) == (DEVICES, 3)
        assert provider.statistics().oap.requests_refused == 1
