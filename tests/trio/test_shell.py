"""The trio shell: the endpoint's ``on_input`` hook, its typed configuration,
the GSO run planning (a pure function), ``open_node(security=...)``, and a
malformed response surfacing at ``await node.get(...)`` as
``RemoteProtocolError``."""

from __future__ import annotations

import random

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from dofpy._core import Address
from dofpy.errors import BadPacket, RemoteProtocolError
from dofpy.oap.core import OapConfig
from dofpy.session.node import NodeConfig
from dofpy.testing import LocalDomain
from dofpy.testing import grant as grant_on
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID, Thermostat
from dofpy.testing.transfer import make_object
from dofpy.transfer.messages import TRANSFER_IID
from dofpy.trio import EndpointConfig, open_node, open_transfer_node, open_udp_endpoint
from dofpy.trio._sockets import GSO_MAX_BYTES, GSO_MAX_SEGMENTS, segment_run_end
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, decode_frame_untrusted, encode_frame
from dofpy.wire.oap import GetResponse, encode_oap
from dofpy.wire.oid import OID

A: Address = ("127.0.0.1", 1000)
B: Address = ("127.0.0.1", 2000)


# -- GSO run planning ----------------------------------------------------------------------------


def _runs(out: list[tuple[bytes, Address]], limit: int) -> list[int]:
    """The length of each run, planned from the start."""
    lengths, index = [], 0
    while index < len(out):
        end = segment_run_end(out, index, limit)
        lengths.append(end - index)
        index = end
    return lengths


def test_equal_datagrams_to_one_peer_make_one_run_ended_by_a_shorter_one() -> None:
    out = [(b"x" * 100, A)] * 5 + [(b"x" * 40, A), (b"x" * 100, A)]
    assert _runs(out, 65536) == [6, 1]  # the short one ends the first run


def test_a_longer_datagram_or_another_peer_starts_a_new_run() -> None:
    out = [(b"x" * 100, A), (b"x" * 100, A), (b"x" * 200, A), (b"x" * 200, B), (b"x" * 200, B)]
    assert _runs(out, 65536) == [2, 1, 2]


def test_runs_are_capped_in_segments_and_bytes() -> None:
    assert _runs([(b"x" * 10, A)] * (GSO_MAX_SEGMENTS + 3), 65536) == [GSO_MAX_SEGMENTS, 3]
    size = 8274
    per_run = GSO_MAX_BYTES // size
    assert _runs([(b"x" * size, A)] * (per_run + 1), 65536) == [per_run, 1]


def test_sizes_at_the_limit_are_sent_alone_and_no_limit_means_no_runs() -> None:
    out = [(b"x" * 100, A)] * 3
    assert _runs(out, 100) == [1, 1, 1]
    assert _runs(out, 101) == [3]
    assert _runs(out, 0) == [1, 1, 1]


@given(
    st.lists(st.tuples(st.integers(1, 9000), st.sampled_from([A, B])), min_size=1, max_size=150),
    st.integers(0, 70000),
)
def test_runs_cover_everything_in_order_and_obey_the_rules(
    shape: list[tuple[int, Address]], limit: int
) -> None:
    out = [(bytes(size), addr) for size, addr in shape]
    index = 0
    while index < len(out):
        end = segment_run_end(out, index, limit)
        assert index < end <= len(out)
        run = out[index:end]
        if len(run) > 1:
            first = len(run[0][0])
            assert first < limit
            assert all(addr == run[0][1] for _, addr in run)
            assert all(len(data) == first for data, _ in run[:-1])
            assert len(run[-1][0]) <= first
            assert len(run) <= GSO_MAX_SEGMENTS
            assert sum(len(data) for data, _ in run) <= GSO_MAX_BYTES
        index = end
    assert index == len(out)


# -- endpoint configuration and the input hook ---------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"max_datagram": 0},
        {"max_datagram": 65536},
        {"send_queue_limit": 0},
        {"recv_batch": 0},
        {"recv_buffer": 0},
        {"send_buffer": -1},
    ],
)
def test_endpoint_configuration_refuses_bad_values(options: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        EndpointConfig(**options)  # type: ignore[arg-type]


class _Echo:
    """A core echoing every datagram, counting its inputs."""

    def __init__(self) -> None:
        self.out: list[tuple[bytes, Address]] = []
        self.inputs = 0
        self.timer: float | None = None

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if data == b"bad":
            raise BadPacket("bad")
        self.inputs += 1
        self.out.append((data, addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.out = self.out, []
        return out

    def get_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        self.timer = None
        self.inputs += 1


async def test_the_input_hook_runs_after_every_datagram_and_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    core = _Echo()
    seen: list[int] = []

    def on_input() -> None:
        seen.append(core.inputs)

    async with open_udp_endpoint(core, on_input=on_input) as endpoint:
        client = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        with client:
            await client.bind(("127.0.0.1", 0))
            for data in (b"one", b"bad", b"two"):
                await client.sendto(data, endpoint.local_address)
                if data != b"bad":
                    assert await client.recv(100) == data
            for _ in range(100):  # bounded: until the three were read
                if len(seen) == 3:
                    break
                await trio.sleep(0.01)
            # Every datagram, a malformed one too (its events, if any, flow on).
            assert seen == [1, 1, 2]
            core.timer = trio.current_time() + 1.0
            endpoint.wakeup()
            await trio.sleep(2.0)
            assert seen == [1, 1, 2, 3]
    assert endpoint.statistics().dropped_malformed == 1


# -- open_node(security=...) ------------------------------------------------------------------


def _domain() -> tuple[LocalDomain, OID, OID]:
    domain = LocalDomain(OID(6, b"shell.example"), rng=random.Random(5).randbytes)
    provider_id = OID(3, b"provider@shell.example")
    requestor_id = OID(3, b"requestor@shell.example")
    domain.enrol(provider_id, grant_on("p", THERMOSTAT_OID, THERMOSTAT.iid))
    domain.enrol(requestor_id, grant_on("r", THERMOSTAT_OID, THERMOSTAT.iid))
    return domain, provider_id, requestor_id


async def test_open_node_takes_a_security_configuration_directly() -> None:
    domain, provider_id, requestor_id = _domain()
    async with (
        open_node(security=domain.security(provider_id)) as provider,
        open_node(security=domain.security(requestor_id)) as requestor,
    ):
        assert provider.core.node.config.node_id == provider_id
        provider.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())
        value = await requestor.get(
            provider.local_address, THERMOSTAT_OID, THERMOSTAT, "temperature"
        )
        assert value == 21
        assert await requestor.secure_session(provider.local_address) == provider_id


async def test_open_transfer_node_takes_a_security_configuration_directly() -> None:
    domain = LocalDomain(OID(6, b"shell.example"), rng=random.Random(6).randbytes)
    provider_id = OID(3, b"provider@shell.example")
    requestor_id = OID(3, b"device@shell.example")
    domain.enrol(provider_id, grant_on("p", interface=TRANSFER_IID))
    domain.enrol(requestor_id, grant_on("x", interface=TRANSFER_IID))
    data = make_object(32 * 1024)
    async with (
        open_transfer_node(security=domain.security(provider_id)) as provider,
        open_transfer_node(security=domain.security(requestor_id)) as requestor,
    ):
        manifest = provider.publish(data)
        with trio.fail_after(30):
            statistics = await requestor.fetch(manifest, [provider.local_address])
        assert statistics.bytes_verified == len(data)
        assert requestor.node.core.node.peer_identity(provider.local_address) == provider_id


async def test_security_twice_is_refused() -> None:
    domain, provider_id, _ = _domain()
    config = OapConfig(node=NodeConfig(security=domain.security(provider_id)))
    with pytest.raises(ValueError, match="not both"):
        async with open_node(config=config, security=domain.security(provider_id)):
            pass  # pragma: no cover


# -- a malformed response ---------------------------------------------------------------------


async def _answer_once(sock: trio.socket.SocketType, payload: bytes) -> None:
    """Read one OAP command and answer it with ``payload`` as its response."""
    data, peer = await sock.recvfrom(65536)
    _dnp, command = decode_frame_untrusted(data)
    response = DppPacket(
        AppId.OAP,
        payload,
        is_response=True,
        op_id_type=OpIdType.IMPLIED_RECEIVER,
        op_count=command.op_count,
    )
    await sock.sendto(encode_frame(response), peer)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe\xfd",  # not an OAP PDU
        encode_oap(GetResponse(("not an int",))),  # a value the interface does not allow
    ],
    ids=["undecodable", "wrong-type"],
)
async def test_a_malformed_response_is_a_remote_protocol_error_at_the_await(
    payload: bytes,
) -> None:
    fake = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    with fake:
        await fake.bind(("127.0.0.1", 0))
        peer = fake.getsockname()
        async with open_node() as requestor, trio.open_nursery() as nursery:
            nursery.start_soon(_answer_once, fake, payload)
            with trio.fail_after(10), pytest.raises(RemoteProtocolError) as raised:
                await requestor.get(peer, THERMOSTAT_OID, THERMOSTAT, "temperature")
            assert isinstance(raised.value.__cause__, BadPacket)
            assert "malformed response" in str(raised.value)
