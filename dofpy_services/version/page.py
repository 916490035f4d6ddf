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
by cbor2 in C, each column once (a page too large for a datagram is cut by
encoding again only the devices cut off); the receiver decodes it with cbor2
in C too, checks each column as a whole (its types, ranges and lengths by
``map``/``min``/``max``, C loops) and makes the records a field at a time
(one ``map`` per field over the page), so what is left per device in Python
is making its identity's ``OID``.

:func:`decode_device_page_untrusted` raises only ``BadPacket``: the page must
be exactly the canonical encoding of the columns (cbor2's ``canonical=True``,
as everywhere in dofpy), CBOR tags are refused before their content is
interpreted, and every value must be what a :class:`DeviceRecord` field
holds, identities strictly increasing. It is two phases, for a stream that
asks for its next page while it checks this one:
:func:`load_device_page_untrusted` (the size, the first byte, the CBOR
loaded; its :attr:`LoadedPage.last_key` is the candidate cursor) and
:meth:`LoadedPage.check` (everything else).
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import repeat
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
    "LoadedPage",
    "decode_device_page_untrusted",
    "encode_device_page",
    "fit_device_page",
    "load_device_page_untrusted",
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


def _wire_columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """``rows`` transposed into the page's columns, each in its wire type."""
    if len(rows) > MAX_ROWS:
        raise ValueError(f"a page holds at most {MAX_ROWS} devices, not {len(rows)}")
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
    if len(columns) != len(COLUMNS):
        raise ValueError(f"a device row has {len(COLUMNS)} columns, not {len(columns)}")
    # Each column in its wire type, in C loops (drivers give memoryview or
    # int where the page has bytes or bool). A column of bytes already (what
    # SQLite and psycopg give) is kept: its types are checked in a quarter of
    # the time a copy by bytes() takes.
    for index in _BYTES:
        if not set(map(type, columns[index])) <= {bytes}:
            columns[index] = list(map(bytes, columns[index]))
    for index in _FLOATS:
        columns[index] = list(map(float, columns[index]))
    columns[7] = list(map(bool, columns[7]))
    return columns


def encode_device_page(rows: Sequence[Sequence[Any]]) -> bytes:
    """The page of ``rows`` (the ``devices`` table's columns in
    :data:`COLUMNS` order, as the database driver returns them)."""
    encoded: bytes = cbor2.dumps(_wire_columns(rows), canonical=True)
    return encoded


def _array_head(count: int) -> bytes:
    """The canonical CBOR head of an array of ``count`` (< 65,536) items."""
    if count < 24:
        return bytes((0x80 + count,))
    if count < 0x100:
        return bytes((0x98, count))
    return bytes((0x99,)) + count.to_bytes(2, "big")


def fit_device_page(rows: Sequence[Sequence[Any]]) -> tuple[bytes, int]:
    """The page of as many of ``rows`` as fit :data:`MAX_PAGE_BYTES` (the
    first ones), and how many that is: the bytes ``encode_device_page``
    makes of them."""
    columns = _wire_columns(rows)
    count = len(rows)
    # A canonical array is its head and its items' canonical encodings one
    # after the other, each independent of the others: each column encoded
    # once (the items' bytes after its head), the page their concatenation.
    head = len(_array_head(count))
    items = [cbor2.dumps(column, canonical=True)[head:] for column in columns]
    size = 1 + len(COLUMNS) * head + sum(map(len, items))
    # Too large (usual: 512 of the benchmark's devices make 64,555 bytes;
    # larger devices fill a page sooner): the last devices go to the next
    # page (the cursor is the last one sent). Only the devices dropped are
    # encoded again, to learn how many bytes of each column are theirs.
    while size > MAX_PAGE_BYTES and count > 1:
        keep = max(1, min(count - 1, count * MAX_PAGE_BYTES // size))
        dropped = len(_array_head(count - keep))
        for index, column in enumerate(columns):
            tail = len(cbor2.dumps(column[keep:count], canonical=True)) - dropped
            items[index] = items[index][: len(items[index]) - tail]
        count = keep
        head = len(_array_head(count))
        size = 1 + len(COLUMNS) * head + sum(map(len, items))
    array_head = _array_head(count)
    page = _array_head(len(COLUMNS)) + b"".join(array_head + column for column in items)
    return page, count


def _bad(why: str) -> BadPacket:
    return BadPacket(f"device page: {why}")


_new = object.__new__
# OID's slots (member descriptors: OID is a frozen, slotted dataclass).
_set_class_id = vars(OID)["class_id"].__set__
_set_data = vars(OID)["data"].__set__
_set_attributes = vars(OID)["attributes"].__set__


def _decode_identity(key: bytes) -> OID:
    # The usual identity (a one-byte class 1..127, up to 63 data bytes, no
    # attributes: all OID.__post_init__ checks) without the reader, and made
    # without OID's __init__ (in about half the time): its slots set
    # directly, as dataclass's frozen __init__ sets them.
    if len(key) >= 2 and 0 < key[0] < 0x80 and key[1] < 0x40 and key[1] == len(key) - 2:
        oid = _new(OID)
        _set_class_id(oid, key[0])
        _set_data(oid, key[2:])
        _set_attributes(oid, ())
        return oid
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
        boots = map(
            _BootStates().__getitem__, zip(slots, kinds, accepted, boot_counts, strict=True)
        )
        values = (
            self.identities,
            classes,
            versions,
            sequences,
            digests,
            boots,
            free,
            clocks,
            first,
            last,
            changed,
        )
        if _RECORD_CHECKS_ON_INIT:
            return map(DeviceRecord, *values)
        return iter(_made_by_columns(DeviceRecord, _RECORD_FIELDS, values, len(self)))


_RECORD_FIELDS = tuple(field.name for field in fields(DeviceRecord))
# Whether DeviceRecord's __init__ checks anything (it does not): were it to,
# records are made by it, not by _made_by_columns.
_RECORD_CHECKS_ON_INIT = hasattr(DeviceRecord, "__post_init__")


def _made_by_columns(
    cls: type[Any], names: Sequence[str], columns: Sequence[Iterable[Any]], count: int
) -> list[Any]:
    """``count`` instances of the frozen, slotted dataclass ``cls`` (one
    without ``__post_init__``) whose field ``names[i]`` holds the items of
    ``columns[i]`` in turn: made without ``cls.__init__``, each slot set for
    all of them by ``map`` in C, as the frozen ``__init__`` sets it (half the
    time per device of making them one ``__init__`` call at a time)."""
    made = list(map(_new, repeat(cls, count)))
    for name, column in zip(names, columns, strict=True):
        deque(map(vars(cls)[name].__set__, made, column), maxlen=0)
    return made


class _BootStates(dict[tuple[int, str, bool, int], BootState]):
    """The boot state of each ``(slot, image kind, accepted, boot count)``,
    made once."""

    def __missing__(self, key: tuple[int, str, bool, int]) -> BootState:
        boot = self[key] = BootState(key[0], _KIND[key[1]], key[2], key[3])
        return boot


@dataclass(frozen=True, slots=True)
class LoadedPage:
    """A page's CBOR loaded, not yet checked (:func:`load_device_page_untrusted`):
    enough to learn its cursor (:attr:`last_key`) before the rest of the
    checks (:meth:`check`), so that a stream can ask for the next page while
    it checks this one."""

    raw: bytes
    columns: Any
    """What cbor2 made of ``raw``: anything its decoder makes, unchecked."""

    @property
    def last_key(self) -> bytes | None:
        """The last identity, unchecked (``None`` when the page is out of
        shape there or empty): what the page's cursor will be if :meth:`check`
        accepts it."""
        columns = self.columns
        if type(columns) is not list or not columns:
            return None
        identities = columns[0]
        if type(identities) is not list or not identities:
            return None
        last = identities[-1]
        return last if type(last) is bytes else None

    def check(self) -> DevicePage:
        """The page, checked: its columns, its canonical form and its
        identities. Raises only ``BadPacket``."""
        columns = self.columns
        _check_columns(columns)
        try:
            canonical = cbor2.dumps(columns, canonical=True)
        except Exception as exc:  # checked values all encode; this is a last guard
            raise _bad(f"does not encode: {exc}") from None
        if canonical != self.raw:
            raise _bad("not in canonical CBOR form")
        try:
            identities = tuple(map(_decode_identity, columns[0]))
        except BadPacket as exc:
            raise _bad(f"identity is no OID: {exc}") from None
        return DevicePage(tuple(columns), identities)


def load_device_page_untrusted(data: bytes) -> LoadedPage:
    """The first half of :func:`decode_device_page_untrusted`: ``data``'s size
    and first byte checked and its CBOR loaded (tags refused). Untrusted
    input: raises only ``BadPacket``; :meth:`LoadedPage.check` does the rest."""
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
    return LoadedPage(raw, columns)


def decode_device_page_untrusted(data: bytes) -> DevicePage:
    """The page ``data`` holds. Untrusted input: raises only ``BadPacket``."""
    return load_device_page_untrusted(data).check()
