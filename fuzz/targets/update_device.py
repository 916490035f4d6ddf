"""Fuzz target: the Update service's device interface as a peer sends it: an
OAP value list checked against the arguments and results of each method of
UPDATE_DEVICE (``incoming_values_untrusted``), and the signed install
report's bytes (``decode_install_report_untrusted``)."""

from __future__ import annotations

import contextlib

from dofpy.errors import BadPacket
from dofpy.oap.interface import Method, Param, incoming_values_untrusted
from dofpy.wire.oid import OID
from dofpy.wire.record import encode_record, record_to_value
from dofpy.wire.values import decode_values_untrusted, encode_values
from dofpy_services.update.device_interface import (
    UPDATE_DEVICE,
    Assignment,
    Authorisation,
    InstallOutcome,
    InstallReport,
    Stage,
    decode_install_report_untrusted,
)

_SIGNATURES: list[tuple[Param, ...]] = []
for _item in UPDATE_DEVICE.items:
    if isinstance(_item, Method):
        _SIGNATURES += [_item.arguments, _item.results]

_ASSIGNMENT = Assignment("c1", b"\x01" * 32, "2.0", 20, 100.0, 200.0, manual=True)
_AUTHORISATION = Authorisation("c1", b"\x01" * 32, 180.0, b"\x02" * 80)
_REPORT = InstallReport(
    OID(3, b"d@x"), "c1", b"\x01" * 32, "2.0", b"\x00" * 32, "1.0", InstallOutcome.FAILED, 5.0,
    Stage.NORMAL_MODE, "health check", 2,
)  # fmt: skip

SEEDS: tuple[bytes, ...] = (
    encode_values([[record_to_value(_ASSIGNMENT)]]),
    encode_values([record_to_value(_AUTHORISATION)]),
    encode_values(["c1", b"\x01" * 32]),
    encode_values(["c1", "transferring", ""]),
    encode_values([encode_record(_REPORT), b"\x00" * 64]),
    encode_record(_REPORT),
)


def target(data: bytes) -> None:
    with contextlib.suppress(BadPacket):
        decode_install_report_untrusted(data)
    values = decode_values_untrusted(data)
    for params in _SIGNATURES:
        with contextlib.suppress(BadPacket):
            incoming_values_untrusted(params, values, "fuzz")
