"""What a provider's handlers see of the caller (current_request), and the check
of a provider against its interface when it is provided."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio

import dofpy
from dofpy.oap.core import IncomingRequest
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.oap.interface import ExceptionDef, Interface, Method, Param, Property, ValueType
from dofpy.testing import LocalDomain, grant, open_secure_node, open_secure_pair
from dofpy.trio import Provider, current_request, open_node
from dofpy.wire.oid import OID

REPORTS = Interface.define(
    "[1:{01000042}]",
    "Reports",
    [
        Method(
            1,
            "report",
            (Param("device", ValueType.TEXT), Param("status", ValueType.TEXT)),
            (Param("accepted", ValueType.INT),),
        ),
        Method(2, "whoami", (), (Param("identity", ValueType.TEXT),)),
        ExceptionDef(3, "NotYou", (Param("caller", ValueType.TEXT),)),
    ],
)
REPORTS_OID = OID(3, b"reports@reports.example")
DOMAIN = OID(6, b"reports.example")
SERVER_ID = OID(3, b"server@reports.example")
DEVICE_A = OID(3, b"device-a@reports.example")
DEVICE_B = OID(3, b"device-b@reports.example")


class Reports(Provider):
    """Accepts a device's report only from the device itself."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, str]] = []
        self.asked: list[IncomingRequest] = []

    async def report(self, device: str, status: str) -> int:
        caller = current_request().identity
        if caller is None or str(caller) != device:
            raise ProviderException(REPORTS.exception("NotYou"), [str(caller)])
        self.reports.append((device, status))
        return len(self.reports)

    def whoami(self) -> str:
        request = current_request()
        self.asked.append(request)
        return str(request.identity)


async def test_a_device_may_report_only_as_itself() -> None:
    local = LocalDomain(DOMAIN, rng=random.Random(7).randbytes)
    local.enrol(SERVER_ID, grant("p", interface=REPORTS.iid))
    local.enrol(DEVICE_A, grant("x", interface=REPORTS.iid))
    local.enrol(DEVICE_B, grant("x", interface=REPORTS.iid))
    reports = Reports()
    with trio.fail_after(20):
        async with (
            open_secure_pair(local, SERVER_ID, DEVICE_A) as pair,
            open_secure_node(local, DEVICE_B) as device_b,
        ):
            pair.provider.provide(REPORTS_OID, REPORTS, reports)
            device_a, peer = pair.requestor, pair.peer
            assert await device_a.invoke(
                peer, REPORTS_OID, REPORTS, "report", str(DEVICE_A), "ok"
            ) == (1,)
            assert await device_b.invoke(
                peer, REPORTS_OID, REPORTS, "report", str(DEVICE_B), "low battery"
            ) == (2,)
            with pytest.raises(ProviderException) as refused:
                await device_a.invoke(peer, REPORTS_OID, REPORTS, "report", str(DEVICE_B), "bad")
            assert refused.value.definition.name == "NotYou"
            assert refused.value.values == (str(DEVICE_A),)
            assert await device_b.invoke(peer, REPORTS_OID, REPORTS, "whoami") == (str(DEVICE_B),)
            device_b_address = device_b.local_address
    assert reports.reports == [(str(DEVICE_A), "ok"), (str(DEVICE_B), "low battery")]
    (request,) = reports.asked
    assert request.identity == DEVICE_B
    assert request.peer == device_b_address
    # The permissions the session granted: execute on the interface, no more.
    assert request.permissions == grant("x", interface=REPORTS.iid)


async def test_a_plaintext_request_has_no_identity() -> None:
    reports = Reports()
    async with open_node() as server, open_node() as client:
        server.provide(REPORTS_OID, REPORTS, reports)
        peer = server.local_address
        assert await client.invoke(peer, REPORTS_OID, REPORTS, "whoami") == ("None",)
        with pytest.raises(ProviderException) as refused:
            await client.invoke(peer, REPORTS_OID, REPORTS, "report", "anyone", "ok")
    assert refused.value.values == ("None",)
    assert reports.reports == []
    (request,) = reports.asked
    assert request.identity is None
    assert request.permissions is None
    assert request.item.name == "whoami"
    assert request.object_id == REPORTS_OID


def test_current_request_outside_a_handler_raises_lookup_error() -> None:
    with pytest.raises(LookupError, match="outside a provider handler"):
        current_request()
    assert dofpy.current_request is current_request


# -- the check at provide time ---------------------------------------------------------

DEVICE = Interface.define(
    "[1:{01000043}]",
    "Device",
    [
        Property(1, "name", ValueType.TEXT, writable=True),
        Property(2, "serial", ValueType.TEXT),
        Property(3, "secret", ValueType.BYTES, readable=False, writable=True),
        Method(4, "reboot", (), ()),
        Method(5, "label", (), (Param("label", ValueType.TEXT),)),
    ],
)


class SyncDevice(Provider):
    def __init__(self) -> None:
        self.device_name = "d"
        self.secret = b""
        self.reboots = 0

    def get_name(self) -> str:
        return self.device_name

    def set_name(self, value: str) -> None:
        self.device_name = value

    def get_serial(self) -> str:
        return "S1"

    def set_secret(self, value: bytes) -> None:
        self.secret = value

    def reboot(self) -> None:
        self.reboots += 1

    def label(self) -> str:
        return f"{self.device_name}/S1"


class AsyncDevice(Provider):
    def __init__(self) -> None:
        self.device_name = "a"

    async def get_name(self) -> str:
        return self.device_name

    async def set_name(self, value: str) -> None:
        self.device_name = value

    async def get_serial(self) -> str:
        return "S2"

    async def set_secret(self, value: bytes) -> None:
        pass

    async def reboot(self) -> None:
        pass

    async def label(self) -> str:
        return self.device_name


class HalfDevice(Provider):
    label = "not callable"  # a method of the interface: an attribute is not a handler

    def get_name(self) -> str:
        return "half"

    def get_secret(self) -> bytes:  # not readable: not wanted, not harmful
        return b""


class Dispatcher(Provider):
    """Dispatches by itself: no handler methods are required."""

    async def handle(self, request: IncomingRequest) -> tuple[Any, ...]:
        if request.item.name == "serial":
            return ("D",)
        raise OapError(OapErrorCode.NOT_SUPPORTED, request.item.name)


def test_missing_handlers_names_every_one() -> None:
    assert SyncDevice().missing_handlers(DEVICE) == []
    assert AsyncDevice().missing_handlers(DEVICE) == []
    assert HalfDevice().missing_handlers(DEVICE) == [
        "set_name",
        "get_serial",
        "set_secret",
        "reboot",
        "label",
    ]
    assert Dispatcher().missing_handlers(DEVICE) == []


async def test_provide_refuses_an_incomplete_provider_at_once() -> None:
    async with open_node() as server, open_node() as client:
        with pytest.raises(TypeError) as info:
            server.provide(REPORTS_OID, DEVICE, HalfDevice())
        message = str(info.value)
        assert message == (
            "HalfDevice cannot provide Device: "
            "it has no set_name, get_serial, set_secret, reboot, label"
        )
        # Nothing was provided: the object is unknown to requestors.
        with pytest.raises(OapError) as refused:
            await client.get(server.local_address, REPORTS_OID, DEVICE, "name")
        assert refused.value.error_code is OapErrorCode.NOT_FOUND


@pytest.mark.parametrize("device", [SyncDevice, AsyncDevice])
async def test_sync_and_async_handlers_both_serve(device: type[Provider]) -> None:
    async with open_node() as server, open_node() as client:
        server.provide(REPORTS_OID, DEVICE, device())
        peer = server.local_address
        await client.set(peer, REPORTS_OID, DEVICE, "name", "kitchen")
        assert await client.get(peer, REPORTS_OID, DEVICE, "name") == "kitchen"
        assert await client.invoke(peer, REPORTS_OID, DEVICE, "reboot") == ()
        await client.set(peer, REPORTS_OID, DEVICE, "secret", b"k")
        assert await client.get(peer, REPORTS_OID, DEVICE, "serial") in ("S1", "S2")


async def test_a_provider_that_overrides_handle_is_accepted() -> None:
    async with open_node() as server, open_node() as client:
        server.provide(REPORTS_OID, DEVICE, Dispatcher())
        peer = server.local_address
        assert await client.get(peer, REPORTS_OID, DEVICE, "serial") == "D"
        with pytest.raises(OapError) as refused:
            await client.get(peer, REPORTS_OID, DEVICE, "name")
        assert refused.value.error_code is OapErrorCode.NOT_SUPPORTED
