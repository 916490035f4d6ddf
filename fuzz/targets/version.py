"""Fuzz target: the Version service's requests and answers as a peer sends
them: an OAP value list (``decode_values_untrusted``) checked against the
arguments or results of each method of VERSION_REPORT and VERSION_QUERY and
the VERSION_CHANGES property (``incoming_values_untrusted``: records with
validation, record lists, OIDs)."""

from __future__ import annotations

import contextlib

from dofpy.errors import BadPacket
from dofpy.oap.interface import Method, Param, Property, incoming_values_untrusted
from dofpy.wire.oid import OID
from dofpy.wire.record import record_to_value
from dofpy.wire.values import decode_values_untrusted, encode_values
from dofpy_services.version.interface import (
    VERSION_CHANGES,
    VERSION_QUERY,
    VERSION_REPORT,
    BootState,
    DeviceChange,
    ImageKind,
    QueryFilter,
    VersionReport,
)

_SIGNATURES: list[tuple[Param, ...]] = []
for _interface in (VERSION_REPORT, VERSION_QUERY, VERSION_CHANGES):
    for _item in _interface.items:
        if isinstance(_item, Method):
            _SIGNATURES += [_item.arguments, _item.results]
        elif isinstance(_item, Property):
            _SIGNATURES.append(_item.params)

_BOOT = BootState(1, ImageKind.REPROGRAM, False, 3)
_REPORT = VersionReport("sensor", "2.4.1", 241, b"\x01" * 32, _BOOT, 4096, 1.7e9)
_FILTER = QueryFilter(device_class="sensor", not_version="2.4.1", identities=(OID(3, b"d@x"),))
_CHANGE = DeviceChange(OID(3, b"d@x"), 1.7e9, "2.4.1", 241, b"\x02" * 32, _BOOT, "2.4.0", 240)

SEEDS: tuple[bytes, ...] = (
    encode_values([record_to_value(_REPORT)]),
    encode_values([record_to_value(_FILTER), b"\x03\x03d@x", 128]),
    encode_values([[record_to_value(_CHANGE)]]),
    encode_values([b"\x03\x03d@x", 10]),
    encode_values(["sensor"]),
)


def target(data: bytes) -> None:
    values = decode_values_untrusted(data)
    for params in _SIGNATURES:
        with contextlib.suppress(BadPacket):
            incoming_values_untrusted(params, values, "fuzz")
