"""Fuzz target: the record decoders ``decode_record_untrusted`` and
``record_from_value_untrusted``, and ``incoming_values_untrusted`` (an OAP value
list whose parameters are records).

A map is decoded as a record (a short one as ``Part``, a longer one as
``Sample``); an array as a value list, then converted for parameters typed as a
record and a list of records.
"""

from __future__ import annotations

import contextlib
import enum
from typing import Annotated

from dofpy.errors import BadPacket
from dofpy.oap.interface import Param, RecordList, ValueType, incoming_values_untrusted
from dofpy.wire.oid import IID, OID
from dofpy.wire.record import (
    MaxLen,
    UInt16,
    decode_record_untrusted,
    encode_record,
    record,
    record_from_value_untrusted,
    record_to_value,
)
from dofpy.wire.values import decode_values_untrusted, encode_values


class Phase(enum.IntEnum):
    IDLE = 0
    RUNNING = 1


class Channel(enum.Enum):
    STABLE = "stable"
    BETA = "beta"


@record
class Part:
    name: Annotated[str, MaxLen(32)]
    size: UInt16 = 0


@record
class Sample:
    device: OID
    interface: IID
    phase: Phase
    channel: Channel
    ratio: float
    active: bool
    digest: bytes
    parts: tuple[Part, ...] = ()
    parent: Sample | None = None
    note: str | None = None


_SAMPLE = Sample(
    OID(3, b"device@example.org"),
    IID(1, b"\x01\x00\x00\x01"),
    Phase.RUNNING,
    Channel.BETA,
    0.5,
    True,
    bytes(8),
    (Part("boot", 512), Part("app")),
    Sample(OID(6, b"example.org"), IID(0, b"\x01"), Phase.IDLE, Channel.STABLE, -1.0, False, b""),
    note="n",
)
_PARAMS = (
    Param("sample", Sample),
    Param("parts", RecordList(Part)),
    Param("count", ValueType.INT, optional=True),
)

SEEDS: tuple[bytes, ...] = (
    encode_record(_SAMPLE),
    encode_record(Part("x")),
    encode_values([record_to_value(_SAMPLE), [record_to_value(Part("y", 7))], 3]),
    encode_values([record_to_value(_SAMPLE.parent), [], None]),
)


def target(data: bytes) -> None:
    """Decode; an accepted record must re-encode to bytes that decode to the same
    record (compared by encoding: a NaN is not equal to itself)."""
    if data[:1] and data[0] >> 5 == 4:  # an array: a value list
        values = decode_values_untrusted(data)
        for value in values:
            with contextlib.suppress(BadPacket):
                record_from_value_untrusted(Part, value)
        incoming_values_untrusted(_PARAMS, values, "fuzz")
        return
    kind = Part if len(data) < 32 else Sample  # so that both records' seeds decode
    encoded = encode_record(decode_record_untrusted(kind, data))
    if encode_record(decode_record_untrusted(kind, encoded)) != encoded:
        raise AssertionError("a decoded record does not survive re-encoding")
