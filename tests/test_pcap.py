"""Reading captures back (dofpy.pcap): round trips through the writer, the link
types tcpdump writes, and the split of a UDP GSO/GRO buffer captured as one
datagram into the datagrams the wire carried."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.pcap import (
    PCAP_GLOBAL_HEADER,
    pcap_record,
    read_pcap_untrusted,
    split_coalesced_untrusted,
)
from dofpy.security.crypto import RESPONDER_NODE
from dofpy.security.secure_frame import SecureChannel, seal_datagram
from dofpy.wire.dpp import AppId, DppPacket, OpIdType

KEY = bytes(range(32))

ports = st.integers(min_value=1, max_value=65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)


@given(
    st.lists(
        st.tuples(
            st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)),
            ports,
            ports,
            st.binary(max_size=300),
        ),
        max_size=8,
    )
)
def test_what_the_writer_writes_reads_back(
    records: list[tuple[tuple[str, str], int, int, bytes]],
) -> None:
    data = PCAP_GLOBAL_HEADER + b"".join(
        pcap_record(1_700_000_000 + i, (hosts[0], sport), (hosts[1], dport), payload)
        for i, (hosts, sport, dport, payload) in enumerate(records)
    )
    capture = read_pcap_untrusted(data)
    assert capture.other_records == 0
    assert [(d.frame, d.src, d.dst, d.payload, d.timestamp) for d in capture.datagrams] == [
        (i + 1, (h[0], s), (h[1], d), p, float(1_700_000_000 + i))
        for i, (h, s, d, p) in enumerate(records)
    ]


@given(st.binary(max_size=200))
def test_garbage_raises_only_bad_packet(data: bytes) -> None:
    for prefix in (b"", PCAP_GLOBAL_HEADER):
        try:
            capture = read_pcap_untrusted(prefix + data)
        except BadPacket:
            continue
        for datagram in capture.datagrams:
            split_coalesced_untrusted(datagram.payload)


def _ip_packet(payload: bytes) -> bytes:
    """An IPv4/UDP packet 10.0.0.1:4000 -> 10.0.0.2:3567 (as pcap_record builds it)."""
    return pcap_record(0.0, ("10.0.0.1", 4000), ("10.0.0.2", 3567), payload)[16:]


def _file(linktype: int, frames: list[bytes], magic: int = 0xA1B2C3D4) -> bytes:
    header = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    return header + b"".join(struct.pack("<IIII", 7, 500, len(f), len(f)) + f for f in frames)


@pytest.mark.parametrize(
    ("linktype", "prefix"),
    [
        (1, b"\x00" * 12 + b"\x08\x00"),  # Ethernet
        (1, b"\x00" * 12 + b"\x81\x00\x00\x05\x08\x00"),  # Ethernet, one VLAN tag
        (113, b"\x00" * 14 + b"\x08\x00"),  # Linux cooked v1
        (276, b"\x08\x00" + b"\x00" * 18),  # Linux cooked v2 (tcpdump -i any)
        (0, b"\x02\x00\x00\x00"),  # BSD loopback
    ],
)
def test_link_types_tcpdump_writes(linktype: int, prefix: bytes) -> None:
    arp = b"\x00" * 12 + b"\x08\x06" + b"\x00" * 28
    capture = read_pcap_untrusted(_file(linktype, [prefix + _ip_packet(b"\x01\x02"), arp]))
    (datagram,) = capture.datagrams
    assert (datagram.frame, datagram.src, datagram.dst) == (
        1,
        ("10.0.0.1", 4000),
        ("10.0.0.2", 3567),
    )
    assert datagram.payload == b"\x01\x02"
    assert datagram.timestamp == pytest.approx(7.0005)
    assert capture.other_records == 1


def test_nanosecond_and_big_endian_files() -> None:
    frame = _ip_packet(b"\x01")
    nanosecond = _file(101, [frame], magic=0xA1B23C4D)
    assert read_pcap_untrusted(nanosecond).datagrams[0].timestamp == pytest.approx(7.0000005)
    big = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    big += struct.pack(">IIII", 7, 0, len(frame), len(frame)) + frame
    assert read_pcap_untrusted(big).datagrams[0].payload == b"\x01"


def test_a_truncated_record_is_not_a_datagram_and_pcapng_is_refused() -> None:
    frame = _ip_packet(b"\x01\x02\x03")
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    cut = header + struct.pack("<IIII", 0, 0, len(frame) - 1, len(frame)) + frame[:-1]
    assert read_pcap_untrusted(cut).other_records == 1
    with pytest.raises(BadPacket, match="pcapng"):
        read_pcap_untrusted(b"\x0a\x0d\x0d\x0a" + b"\x00" * 40)
    with pytest.raises(BadPacket):
        read_pcap_untrusted(header + b"\x00" * 10)


def _command(channel: SecureChannel, op_count: int, body: bytes = b"\x0a\x03\x01") -> bytes:
    return channel.seal_command(AppId.OAP, body, op_count)


def test_a_gso_buffer_splits_into_the_datagrams_sent() -> None:
    channel = SecureChannel(KEY, ssid=7, initiator=True)
    sent = [_command(channel, n) for n in range(40, 44)]
    assert len({len(d) for d in sent}) == 1  # a GSO run: one size...
    last = _command(channel, 44, b"\x0a")  # ...but the last may be shorter
    assert split_coalesced_untrusted(b"".join(sent)) == sent
    assert split_coalesced_untrusted(b"".join([*sent, last])) == [*sent, last]
    # What the peer opens, in order: the split gave back the datagrams themselves.
    peer = SecureChannel(KEY, ssid=7, initiator=False)
    for datagram in split_coalesced_untrusted(b"".join(sent)) or []:
        peer.open_untrusted(datagram)
    assert peer.statistics().accepted == 4


def test_a_single_datagram_or_foreign_runs_are_not_split() -> None:
    channel = SecureChannel(KEY, ssid=7, initiator=True)
    one, two, three = (_command(channel, n) for n in range(3))
    assert split_coalesced_untrusted(one) is None
    # Not consecutive packet numbers (a datagram missing between): not one run.
    assert split_coalesced_untrusted(one + three) is None
    # Two sessions: not one sender's run.
    other = SecureChannel(KEY, ssid=8, initiator=True)
    assert split_coalesced_untrusted(two + _command(other, 9)) is None
    # Clear datagrams are never split (nothing proves where they end).
    clear = b"\x01\x82\x20\x05\x00\x01\x0a"
    assert split_coalesced_untrusted(clear * 3) is None
    assert split_coalesced_untrusted(b"") is None


def test_responder_runs_split_too() -> None:
    sealed = [
        seal_datagram(
            DppPacket(
                AppId.OAP, b"\x16" + bytes(60), op_id_type=OpIdType.IMPLIED_SENDER, op_count=3
            ),
            key=KEY,
            ssid=0x4000,
            sender_node=RESPONDER_NODE,
            packet_number=number,
        )
        for number in (0x3FFE, 0x3FFF, 0x4000)  # c4 packet number grows a byte at 0x4000
    ]
    # Different sizes (the packet number's c4 grew): the kernel would not have
    # put them in one GSO buffer, and the split does not pretend it did.
    assert len(sealed[1]) != len(sealed[2])
    assert split_coalesced_untrusted(sealed[0] + sealed[1]) == sealed[:2]
    assert split_coalesced_untrusted(b"".join(sealed)) is None
