"""A page of devices as one opaque byte string: the answer of VERSION_QUERY's
``rows`` method (docs/protocol.md section 9).

The page is one canonical CBOR array of 14 columns, each an array of the same
length (the devices of the page, in identity order), in the order of the
``devices`` table (:data:`COLUMNS`)::

    [identities, classes, versions, sequences, digests, slots, image_kinds,
     accepted, boot_counts, free_storage, device_clocks, first_seen,
     last_seen, changed_at]

Why columns and not 128 typed records: ``query`` answers each device as an
OAP record (a CBOR map with its field names), encoded, scanned and checked
item by item in Python on both sides, some 0.1-0.3 ms per device. A page of
columns is built from the database's rows by transposing them and encoded
by cbor2 in C; the receiver decodes it with cbor2 in C too and checks each
column as a whole (its types, ranges and lengths by ``map``/``min``/``max``,
C loops), so the only Python work per device is making its record.

:func:`decode_device_page_untrusted` raises only ``BadPacket``: the page must
be exactly the canonical encoding of the columns (cbor2's ``canonical=True``,
as everywhere in dofpy), CBOR tags are refused before their content is
interpreted, and every value must be what a :class:`DeviceRecord` field
holds, identities strictly increasing.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import cbor2

from dofpy.errors import BadPacket
from dofpy.wire.oid import OID, decode_oid_untrusted
from dofpy_services.version.interface import BootState, DeviceRecord, ImageKind

__all__ = [
    "COLUMNS",
    "MAX_PAGE_BYTES",
    "MAX_ROWS",
    "DevicePage",
    "decode_device_page_untrusted",
    "encode_device_page",
    "fit_device_page",
]

MAX_ROWS = 512
"""Devices in one ``rows`` page at most."""
MAX_PAGE_BYTES = 60_000
"""Bytes of an encoded page at most: with the OAP response around it and
sealed, it fits one UDP datagram (65,507 bytes) with room to spare
(tests/services/test_version_page.py sends one that large)."""

COLUMNS = (
    "identity",
    "device_class",
    "version",
    "sequence",
    "image_digest",
    "slot",
    "image_kind",
    "accepted",
    "boot_count",
    "free_storage",
    "device_clock",
    "first_seen",
    "last_seen",
    "changed_at",
)

_INT_MAX = (1 << 64) - 1
_INT_MIN = -(1 << 64)
_KINDS = frozenset(kind.value for kind in ImageKind)
_KIND = {kind.value: kind for kind in ImageKind}
# (type, low, high) of each integer column: what DeviceRecord's fields allow.
_INTEGERS = {3: (_INT_MIN, _INT_MAX), 5: (0, 0xFF), 8: (0, 0xFFFF_FFFF), 9: (_INT_MIN, _INT_MAX)}
_TEXTS = (1, 2)
_BYTES = (0, 4)
_FLOATS = (10, 11, 12, 13)


class _Tag(Exception):
    pass


def _refuse_tag(*_: object) -> NoReturn:
    raise _Tag


class _EveryTag(Mapping[int, Any]):
    """cbor2's ``semantic_decoders`` holding every tag number: each tag is
    refused before cbor2 interprets its content (a regular expression, a
    MIME message, shared references...). (cbor2 counts a tag as a level of
    nesting, so ``max_depth=2`` already refuses tags where a page may hold
    values; this is the guard should that change.)"""

    def __getitem__(self, tag: int) -> Any:
        return _refuse_tag

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


_NO_TAGS = _EveryTag()


def encode_device_page(rows: Sequence[Sequence[Any]]) -> bytes:
    """The page of ``rows`` (the ``devices`` table's columns in
    :data:`COLUMNS` order, as the database driver returns them)."""
    if len(rows) > MAX_ROWS:
        raise ValueError(f"a page holds at most {MAX_ROWS} devices, not {len(rows)}")
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
    if len(columns) != len(COLUMNS):
        raise ValueError(f"a device row has {len(COLUMNS)} columns, not {len(columns)}")
    # Each column in its wire type, in C loops (drivers give memoryview or
    # int where the page has bytes or bool).
    for index in _BYTES:
        columns[index] = list(map(bytes, columns[index]))
    for index in _FLOATS:
        columns[index] = list(map(float, columns[index]))
    columns[7] = list(map(bool, columns[7]))
    encoded: bytes = cbor2.dumps(columns, canonical=True)
    return encoded


def fit_device_page(rows: Sequence[Sequence[Any]]) -> tuple[bytes, int]:
    """The page of as many of ``rows`` as fit :data:`MAX_PAGE_BYTES` (the
    first ones), and how many that is."""
    count = len(rows)
    page = encode_device_page(rows)
    # Devices larger than usual (long classes, versions or identities): fewer
    # of them, the rest on the next page (the cursor is the last one sent).
    while len(page) > MAX_PAGE_BYTES and count > 1:
        count = max(1, min(count - 1, count * MAX_PAGE_BYTES // len(page)))
        page = encode_device_page(rows[:count])
    return page, count


def _bad(why: str) -> BadPacket:
    return BadPacket(f"device page: {why}")


def _decode_identity(key: bytes) -> OID:
    # The usual identity (a one-byte class, no attributes) without the reader.
    if len(key) >= 2 and 0 < key[0] < 0x80 and key[1] < 0x40 and key[1] == len(key) - 2:
        return OID(key[0], key[2:])
    return decode_oid_untrusted(key)


def _check_columns(columns: list[Any]) -> int:
    if type(columns) is not list or len(columns) != len(COLUMNS):
        raise _bad(f"must be an array of {len(COLUMNS)} columns")
    if any(type(column) is not list for column in columns):
        raise _bad("every column must be an array")
    count = len(columns[0])
    if count > MAX_ROWS or any(len(column) != count for column in columns):
        raise _bad(f"columns must be of one length, at most {MAX_ROWS}")
    if not count:
        return 0
    # Types by column: set(map(type, ...)) and min/max run in C.
    for index in _BYTES:
        if not set(map(type, columns[index])) <= {bytes}:
            raise _bad(f"{COLUMNS[index]} must be byte strings")
    for index in _TEXTS:
        if not set(map(type, columns[index])) <= {str}:
            raise _bad(f"{COLUMNS[index]} must be text strings")
    for index, (low, high) in _INTEGERS.items():
        column = columns[index]
        if not set(map(type, column)) <= {int}:
            raise _bad(f"{COLUMNS[index]} must be integers")
        if min(column) < low or max(column) > high:
            raise _bad(f"{COLUMNS[index]} outside {low}..{high}")
    for index in _FLOATS:
        if not set(map(type, columns[index])) <= {float}:
            raise _bad(f"{COLUMNS[index]} must be floats")
    if not set(map(type, columns[7])) <= {bool}:
        raise _bad("accepted must be booleans")
    if not set(columns[6]) <= _KINDS:
        raise _bad(f"image_kind must be one of {sorted(_KINDS)}")
    identities = columns[0]
    if not all(map(operator.lt, identities, identities[1:])):
        raise _bad("identities must be strictly increasing")
    return count


@dataclass(frozen=True, slots=True)
class DevicePage:
    """One decoded page: its columns (checked) and the devices' identities."""

    columns: tuple[list[Any], ...]
    identities: tuple[OID, ...]

    def __len__(self) -> int:
        return len(self.identities)

    @classmethod
    def of_records(cls, devices: Sequence[DeviceRecord]) -> DevicePage:
        """The page of ``devices`` (records the ``query`` method answered, from
        a service older than ``rows``): the same columns a ``rows`` page of
        them decodes to."""
        columns: tuple[list[Any], ...] = (
            [device.identity.encode() for device in devices],
            [device.device_class for device in devices],
            [device.version for device in devices],
            [device.sequence for device in devices],
            [device.image_digest for device in devices],
            [device.boot.slot for device in devices],
            [device.boot.image_kind.value for device in devices],
            [device.boot.accepted for device in devices],
            [device.boot.boot_count for device in devices],
            [device.free_storage for device in devices],
            [device.device_clock for device in devices],
            [device.first_seen for device in devices],
            [device.last_seen for device in devices],
            [device.changed_at for device in devices],
        )
        return cls(columns, tuple(device.identity for device in devices))

    @property
    def keys(self) -> list[bytes]:
        """The devices' encoded identities (the keyset cursor's values)."""
        keys: list[bytes] = self.columns[0]
        return keys

    def records(self) -> Iterator[DeviceRecord]:
        """The page's devices as records, in identity order."""
        (
            _,
            classes,
            versions,
            sequences,
            digests,
            slots,
            kinds,
            accepted,
            boot_counts,
            free,
            clocks,
            first,
            last,
            changed,
        ) = self.columns
        # Boot states repeat across a fleet: one record per distinct state
        # in this page (records are immutable, so sharing them is safe).
        boots: dict[tuple[int, str, bool, int], BootState] = {}
        for index, identity in enumerate(self.identities):
            key = (slots[index], kinds[index], accepted[index], boot_counts[index])
            boot = boots.get(key)
            if boot is None:
                boot = boots[key] = BootState(key[0], _KIND[key[1]], key[2], key[3])
            yield DeviceRecord(
                identity,
                classes[index],
                versions[index],
                sequences[index],
                digests[index],
                boot,
                free[index],
                clocks[index],
                first[index],
                last[index],
                changed[index],
            )


def decode_device_page_untrusted(data: bytes) -> DevicePage:
    """The page ``data`` holds. Untrusted input: raises only ``BadPacket``."""
    raw = bytes(data)
    if len(raw) > MAX_PAGE_BYTES:
        raise _bad(f"{len(raw)} bytes exceed {MAX_PAGE_BYTES}")
    if not raw or raw[0] != 0x80 + len(COLUMNS):
        raise _bad(f"must be an array of {len(COLUMNS)} columns")
    try:
        columns = cbor2.loads(
            raw,
            semantic_decoders=_NO_TAGS,
            tag_hook=_refuse_tag,
            max_depth=2,
            allow_indefinite=False,
        )
    except Exception as exc:  # cbor2 raises several unrelated types (bad UTF-8, EOF...)
        raise _bad(f"does not decode: {exc}") from None
    _check_columns(columns)
    try:
        canonical = cbor2.dumps(columns, canonical=True)
    except Exception as exc:  # checked values all encode; this is a last guard
        raise _bad(f"does not encode: {exc}") from None
    if canonical != raw:
        raise _bad("not in canonical CBOR form")
    try:
        identities = tuple(map(_decode_identity, columns[0]))
    except BadPacket as exc:
        raise _bad(f"identity is no OID: {exc}") from None
    return DevicePage(tuple(columns), identities)
