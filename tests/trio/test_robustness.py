"""An endpoint fed 100,000 random and mutated datagrams keeps serving a requestor,
and counts every datagram that does not parse."""

from __future__ import annotations

import random

import trio

from dofpy.errors import BadPacket
from dofpy.testing.example import THERMOSTAT, THERMOSTAT_OID, Thermostat
from dofpy.trio import open_node
from dofpy.wire.dpp import AppId, DppPacket, OpIdType, decode_frame_untrusted, encode_frame
from dofpy.wire.oap import Binding, GetCommand, InvokeCommand, encode_oap

JUNK = 100_000
BATCH = 250


def valid_frames() -> list[bytes]:
    """Well-formed datagrams to mutate: OAP commands and responses, DSP, ping."""
    binding = Binding(THERMOSTAT.iid, THERMOSTAT_OID)
    frames = []
    for op, payload in enumerate(
        [
            encode_oap(GetCommand(1, binding)),
            encode_oap(InvokeCommand(3, binding, (1, 2))),
            encode_oap(GetCommand(2, binding)),
        ]
    ):
        frames.append(
            encode_frame(
                DppPacket(AppId.OAP, payload, op_id_type=OpIdType.IMPLIED_SENDER, op_count=op)
            )
        )
        frames.append(
            encode_frame(
                DppPacket(
                    AppId.OAP,
                    payload,
                    is_response=True,
                    op_id_type=OpIdType.IMPLIED_RECEIVER,
                    op_count=op,
                )
            )
        )
    frames.append(
        encode_frame(DppPacket(AppId.DSP, b"\x06", op_id_type=OpIdType.IMPLIED_SENDER, op_count=7))
    )
    frames.append(
        encode_frame(
            DppPacket(AppId.COMMON, b"\x03", op_id_type=OpIdType.IMPLIED_SENDER, op_count=8)
        )
    )
    return frames


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        return rng.randbytes(rng.randrange(1, 64))
    data = bytearray(rng.choice(seeds))
    if choice == 1:
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif choice == 2:
        del data[rng.randrange(1, len(data)) :]
    else:
        data[rng.randrange(len(data)) : rng.randrange(len(data))] = rng.randbytes(rng.randrange(8))
    return bytes(data) or b"\x00"


def classify(data: bytes) -> str:
    """'bad' when the frame does not parse; 'session' for a DSP or common-op
    command (whose body the node parses itself: it may still be bad); else 'ok'."""
    try:
        _dnp, packet = decode_frame_untrusted(data)
    except BadPacket:
        return "bad"
    if not packet.is_response and packet.app_id in (AppId.DSP, AppId.COMMON):
        return "session"
    return "ok"


async def test_junk_flood_is_counted_while_requests_keep_working() -> None:
    rng = random.Random(20261125)
    seeds = valid_frames()
    junk = [mutate(rng, seeds) for _ in range(JUNK)]
    kinds = [classify(d) for d in junk]
    expected_bad = kinds.count("bad")
    session_commands = kinds.count("session")
    assert expected_bad > JUNK // 4  # a large share of the flood is malformed
    async with open_node() as provider, open_node() as requestor:
        provider.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())
        target = provider.local_address
        flood = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        with flood:
            await flood.bind(("127.0.0.1", 0))
            answers = 0
            for start in range(0, JUNK, BATCH):
                for data in junk[start : start + BATCH]:
                    await flood.sendto(data, target)
                # The requestor keeps being served in the middle of the flood.
                base = start % 500
                assert await requestor.invoke(
                    target, THERMOSTAT_OID, THERMOSTAT, "add", base, 1
                ) == (base + 1,)
                answers += 1
            for _ in range(1000):  # bounded wait for the last batch to be read
                if provider.statistics().endpoint.datagrams_received >= JUNK + answers:
                    break
                await trio.sleep(0.005)
        stats = provider.statistics()
        assert stats.endpoint.datagrams_received >= JUNK + answers
        # Every datagram that does not parse is counted; so are DSP / common-op
        # commands whose body is bad (at most all of them).
        assert expected_bad <= stats.oap.node.bad_datagrams <= expected_bad + session_commands
        assert answers == JUNK // BATCH
