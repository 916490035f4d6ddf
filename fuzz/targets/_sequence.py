"""Datagram sequences as one fuzz input, for the state-machine targets.

An input is a run of records ``[to: u8][length: u16 big-endian][datagram]
[step: u8]``: ``to`` picks the receiving party (its low bit, where a target has
two), ``step`` the simulated time (in tenths of a second) that passes after
the datagram. A record cut short ends the sequence. So a fuzzer mutating one
byte changes one datagram, its order or its timing, and a seed is a real
exchange recorded as it happened.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

MAX_DATAGRAMS = 64


def encode_sequence(records: Iterable[tuple[int, bytes, int]]) -> bytes:
    """``(to, datagram, step)`` records as one input."""
    return b"".join(
        struct.pack(">BH", to, len(data)) + data + bytes((step,)) for to, data, step in records
    )


def decode_sequence(data: bytes) -> Iterator[tuple[int, bytes, float]]:
    """``(to, datagram, seconds after it)``, at most ``MAX_DATAGRAMS`` of them."""
    offset = 0
    for _ in range(MAX_DATAGRAMS):
        if offset + 3 > len(data):
            return
        to, length = struct.unpack_from(">BH", data, offset)
        end = offset + 3 + length
        if end + 1 > len(data):
            return
        yield to, data[offset + 3 : end], data[end] / 10
        offset = end + 1
