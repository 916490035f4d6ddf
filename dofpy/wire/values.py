"""OAP value lists as CBOR (a dofpy extension).

The DOF dissector treats an OAP value list as opaque bytes running to the end
of the OAP payload, and reports a malformed packet when such a list is empty
(zero bytes). dofpy therefore encodes a value list as exactly one CBOR array
(RFC 8949) holding the values: never empty (an empty list is the single byte
``0x80``) and self-delimiting.

Only a safe subset of CBOR is used, in deterministic form:

- integers in -2**64 .. 2**64-1 (major types 0 and 1; no bignum tags),
- byte strings, UTF-8 text strings, ``False``, ``True``, ``None``, floats,
- arrays and maps (map keys: ``int``, ``str`` or ``bytes``),
- no tags, no ``undefined`` or other simple values, no indefinite lengths,
- at most ``MAX_DEPTH`` levels of nesting, ``MAX_ITEMS`` data items and
  ``MAX_VALUES_SIZE`` bytes,
- the canonical encoding of ``cbor2.dumps(..., canonical=True)``: shortest
  heads, shortest exact float, sorted map keys, no duplicate keys.

Decoding refuses anything else with ``BadPacket``, so that a value list has
exactly one encoding; encoding refuses values outside the subset with
``ValueError``. Arrays decode to ``list``, maps to ``dict``; ``tuple`` is
accepted as an array when encoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import cbor2

from dofpy.errors import BadPacket

__all__ = [
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_VALUES_SIZE",
    "decode_values_untrusted",
    "encode_values",
]

MAX_DEPTH = 16
"""Containers that may nest inside the outer array (which itself is level 0)."""

MAX_ITEMS = 8192
"""Data items allowed in one value list, the outer array and map keys included."""

MAX_VALUES_SIZE = 1 << 20
"""Bytes allowed in one encoded value list."""

_INT_MIN = -(1 << 64)
_INT_MAX = (1 << 64) - 1

_MAJOR_UINT, _MAJOR_NINT, _MAJOR_BYTES, _MAJOR_TEXT = 0, 1, 2, 3
_MAJOR_ARRAY, _MAJOR_MAP, _MAJOR_TAG, _MAJOR_SIMPLE = 4, 5, 6, 7
# Simple values we allow: false (20), true (21), null (22); floats are 25-27.
_ALLOWED_SIMPLE = frozenset({20, 21, 22})
_FLOAT_INFO = frozenset({25, 26, 27})
_ARG_BYTES = {24: 1, 25: 2, 26: 4, 27: 8}
_ARG_MINIMUM = {24: 24, 25: 0x100, 26: 0x1_0000, 27: 0x1_0000_0000}


class _Budget:
    """Counts data items against ``MAX_ITEMS`` while scanning or walking."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items = 0

    def spend(self) -> bool:
        self.items += 1
        return self.items <= MAX_ITEMS


# -- encoding ------------------------------------------------------------------


def _check_value(value: object, depth: int, budget: _Budget) -> None:
    # One loop over an explicit stack rather than a recursive call per item:
    # a page of records is thousands of items (benchmarks/version.py).
    items = budget.items
    pending: list[tuple[object, int]] = [(value, depth)]
    while pending:
        value, depth = pending.pop()
        items += 1
        # Exact type checks: subclasses (IntEnum, bool-as-int, str subclasses)
        # could carry meaning that CBOR cannot round-trip.
        kind = type(value)
        if value is None or kind is bool or kind is float or kind is bytes:
            continue
        if kind is int:
            assert isinstance(value, int)
            if not _INT_MIN <= value <= _INT_MAX:
                raise ValueError(f"integer {value} outside the CBOR range -2**64 .. 2**64-1")
            continue
        if kind is str:
            assert isinstance(value, str)
            if value.isascii():
                continue
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("text value is not encodable as UTF-8") from None
            continue
        if kind is list or kind is tuple or kind is dict:
            assert isinstance(value, list | tuple | dict)
            if depth > MAX_DEPTH:
                raise ValueError(f"values nested deeper than {MAX_DEPTH} levels")
            # Every item pending is counted once popped: refuse at once what
            # would exceed the budget, so the stack never outgrows it.
            if items + len(pending) + len(value) * (2 if kind is dict else 1) > MAX_ITEMS:
                raise ValueError(f"value list has more than {MAX_ITEMS} items")
            inner = depth + 1
            if isinstance(value, dict):
                for key, item in value.items():
                    if type(key) not in (int, str, bytes):
                        raise ValueError(
                            f"map key of type {type(key).__name__}: use int, str or bytes"
                        )
                    pending.append((key, inner))
                    pending.append((item, inner))
            else:
                pending.extend([(item, inner) for item in value])
            continue
        raise ValueError(
            f"cannot encode a value of type {kind.__name__}: "
            "use int, float, bool, None, str, bytes, list, tuple or dict"
        )
    if items > MAX_ITEMS:
        raise ValueError(f"value list has more than {MAX_ITEMS} items")
    budget.items = items


def encode_values(values: Sequence[object]) -> bytes:
    """Encode ``values`` as one canonical CBOR array (the OAP value list).

    Raises ``ValueError`` for a value outside the supported subset or limits.
    """
    if isinstance(values, str | bytes | bytearray | memoryview):
        raise ValueError("values must be a sequence of values, not a string or bytes")
    items = list(values)
    _check_value(items, 0, _Budget())
    encoded: bytes = cbor2.dumps(items, canonical=True)
    if len(encoded) > MAX_VALUES_SIZE:
        raise ValueError(f"value list of {len(encoded)} bytes exceeds {MAX_VALUES_SIZE}")
    return encoded


# -- decoding ------------------------------------------------------------------


def _scan_item(data: bytes, pos: int, depth: int, budget: _Budget, what: str) -> int:
    """Check the structure of one CBOR data item at ``pos``; return its end.

    This runs before cbor2 sees the bytes, so that tags, indefinite lengths,
    excessive nesting, lengths that exceed the data and map keys other than
    integers, byte strings and text strings are refused without asking cbor2
    to allocate or interpret anything.

    One loop over an explicit stack of open containers rather than a
    recursive call per item: a page of records is thousands of items, and
    this scan was most of the time spent decoding one (benchmarks/version.py).
    """
    size = len(data)
    items = budget.items
    # Per open container: the items still to scan in it, and whether it is a
    # map (whose items alternate key, value). The bottom entry is the one item
    # asked for; an item's depth is ``depth + len(remaining) - 1``.
    remaining = [1]
    in_map = [False]
    while remaining:
        left = remaining[-1]
        if not left:
            remaining.pop()
            in_map.pop()
            continue
        remaining[-1] = left - 1
        items += 1
        if items > MAX_ITEMS:
            raise BadPacket(f"{what} has more than {MAX_ITEMS} items")
        if pos >= size:
            raise BadPacket(f"{what} truncated")
        initial = data[pos]
        pos += 1
        major, info = initial >> 5, initial & 0x1F
        # A map's items alternate key, value, so a key has an even count left.
        if major > _MAJOR_TEXT and in_map[-1] and not left & 1:
            raise BadPacket(f"{what}: map key of CBOR major type {major}; use int, str or bytes")
        if major == _MAJOR_SIMPLE:
            if info in _ALLOWED_SIMPLE:
                continue
            if info in _FLOAT_INFO:
                pos += _ARG_BYTES[info]
                if pos > size:
                    raise BadPacket(f"{what} truncated in a float")
                continue
            raise BadPacket(f"CBOR simple value or break (0x{initial:02x}) not allowed")
        if major == _MAJOR_TAG:
            raise BadPacket(f"CBOR tags are not allowed in a {what}")
        if info < 24:
            argument = info
        elif info in _ARG_BYTES:
            width = _ARG_BYTES[info]
            if pos + width > size:
                raise BadPacket(f"{what} truncated in a CBOR head")
            argument = int.from_bytes(data[pos : pos + width], "big")
            pos += width
            if argument < _ARG_MINIMUM[info]:
                raise BadPacket("CBOR head not minimally encoded")
        else:
            raise BadPacket(f"CBOR indefinite length or reserved head 0x{initial:02x} not allowed")
        if major <= _MAJOR_NINT:
            continue
        if major <= _MAJOR_TEXT:
            if argument > size - pos:
                raise BadPacket(f"CBOR string runs past the end of the {what}")
            pos += argument
            continue
        # An array or a map: every contained item takes at least one byte.
        count = argument if major == _MAJOR_ARRAY else 2 * argument
        if count > size - pos:
            raise BadPacket("CBOR container claims more items than bytes remain")
        if depth + len(remaining) - 1 > MAX_DEPTH:
            raise BadPacket(f"{what} nested deeper than {MAX_DEPTH} levels")
        if count:
            remaining.append(count)
            in_map.append(major == _MAJOR_MAP)
    budget.items = items
    return pos


def _decode_canonical(data: bytes, what: str) -> object:
    """Decode exactly one CBOR data item in the supported subset, in canonical
    form, within the limits; ``what`` names it in error messages.

    Untrusted input: raises only ``BadPacket``. Shared by the value-list and
    the record decoders (both ``*_untrusted``), so both refuse the same things.
    """
    raw = bytes(data)
    if len(raw) > MAX_VALUES_SIZE:
        raise BadPacket(f"{what} of {len(raw)} bytes exceeds {MAX_VALUES_SIZE}")
    end = _scan_item(raw, 0, 0, _Budget(), what)
    if end != len(raw):
        raise BadPacket(f"{what}: {len(raw) - end} trailing bytes after the item")
    try:
        decoded = cbor2.loads(raw, max_depth=MAX_DEPTH + 1, allow_indefinite=False)
        canonical = cbor2.dumps(decoded, canonical=True)
    except BadPacket:
        raise
    except Exception as exc:  # cbor2 raises several unrelated types (bad UTF-8, unhashable keys...)
        raise BadPacket(f"{what} does not decode: {exc}") from None
    if canonical != raw:
        raise BadPacket(f"{what} is not in canonical CBOR form")
    return decoded


def _decode_strict(data: bytes, what: str) -> object:
    """Like :func:`_decode_canonical`, but any encoding of the item is
    accepted (map keys in any order, longer heads than needed are still
    refused by the scan) as long as no map repeats a key.

    For bytes that are kept and compared as they are, never re-encoded: a COSE
    protected header is signed as bytes, so another tool's key order is
    harmless, while a repeated label could mean different things to two
    parsers. Untrusted input: raises only ``BadPacket``.
    """
    raw = bytes(data)
    if len(raw) > MAX_VALUES_SIZE:
        raise BadPacket(f"{what} of {len(raw)} bytes exceeds {MAX_VALUES_SIZE}")
    end = _scan_item(raw, 0, 0, _Budget(), what)
    if end != len(raw):
        raise BadPacket(f"{what}: {len(raw) - end} trailing bytes after the item")
    try:
        decoded = cbor2.loads(
            raw, max_depth=MAX_DEPTH + 1, allow_indefinite=False, allow_duplicate_keys=False
        )
    except BadPacket:
        raise
    except Exception as exc:  # cbor2 raises several unrelated types
        raise BadPacket(f"{what} does not decode: {exc}") from None
    return decoded


def decode_values_untrusted(data: bytes) -> tuple[object, ...]:
    """Decode an OAP value list (one canonical CBOR array) into a tuple.

    Raises only ``BadPacket``: on anything but exactly one array in the
    supported subset, in canonical form, within the limits.
    """
    raw = bytes(data)
    if len(raw) > MAX_VALUES_SIZE:
        raise BadPacket(f"value list of {len(raw)} bytes exceeds {MAX_VALUES_SIZE}")
    if not raw or raw[0] >> 5 != _MAJOR_ARRAY:
        raise BadPacket("a value list must be one CBOR array")
    decoded = _decode_canonical(raw, "value list")
    assert isinstance(decoded, list)
    return tuple(decoded)
