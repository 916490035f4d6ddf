"""Fuzz target: a page of devices as the Version service's ``rows`` method
answers it (``decode_device_page_untrusted``: one canonical CBOR array of
columns, each checked whole), and the records made of what decodes."""

from __future__ import annotations

from dofpy.wire.oid import OID
from dofpy_services.version.page import decode_device_page_untrusted, encode_device_page


def _row(number: int, kind: str, accepted: int) -> tuple[object, ...]:
    identity = OID(3, f"device-{number:05d}".encode()).encode()
    return (identity, "sensor", "2.4.1", 241, b"\x01" * 32, 1, kind, accepted, 3, 4096)


SEEDS: tuple[bytes, ...] = (
    encode_device_page([]),
    encode_device_page([(*_row(1, "normal", 1), 1.7e9, 1.5, 100.0, 0.25)]),
    encode_device_page(
        [
            (*_row(1, "normal", 1), 1.7e9, 1.5, 100.0, 0.25),
            (*_row(2, "reprogram", 0), -1.0, 1e300, 2.0, 3.0),
        ]
    ),
)


def target(data: bytes) -> None:
    page = decode_device_page_untrusted(data)
    for _ in page.records():
        pass
