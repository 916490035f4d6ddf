"""Records: declaration, the canonical CBOR map encoding, and the untrusted decoders."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import itertools
from typing import Annotated, Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.wire.oid import IID, OID
from dofpy.wire.record import (
    IntRange,
    MaxLen,
    UInt8,
    decode_record_untrusted,
    encode_record,
    is_record,
    record,
    record_from_value_untrusted,
    record_to_value,
)
from dofpy.wire.values import MAX_DEPTH


class Mode(enum.IntEnum):
    OFF = 0
    ON = 1
    BIG = 70000


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


@record
class Small:
    a: int
    bb: bytes = b""


@record
class Everything:
    flag: bool
    count: int
    ratio: float
    name: str
    blob: bytes
    oid: OID
    iid: IID
    mode: Mode
    colour: Colour
    small: Small
    smalls: tuple[Small, ...]
    grid: tuple[tuple[UInt8, ...], ...]
    level: Annotated[int, IntRange(-3, 3)] = 0
    label: Annotated[str, MaxLen(4)] = "x"
    note: str | None = None
    extra: Small | None = None


@record
class Tree:
    name: str
    children: tuple[Tree, ...] = ()


@record
class Positive:
    value: int

    def __post_init__(self) -> None:
        if self.value <= 0:
            raise ValueError("value must be positive")


EVERYTHING = Everything(
    flag=True,
    count=-(1 << 64),
    ratio=0.1,
    name="h\u00e9",
    blob=b"\x00\xff",
    oid=OID(3, b"device@example.org"),
    iid=IID(1, b"\x01\x00\x00\x01"),
    mode=Mode.BIG,
    colour=Colour.GREEN,
    small=Small(1, b"z"),
    smalls=(Small(2), Small(3, b"q")),
    grid=((1, 2), (), (255,)),
    level=-3,
    label="abcd",
    note="n",
)


def test_wire_form_is_a_canonical_map_keyed_by_field_name() -> None:
    assert encode_record(Small(1, b"\x07")) == bytes.fromhex("a2 6161 01 626262 4107")
    # OID and IID travel as their DOF wire bytes; None is an absent key.
    value = record_to_value(EVERYTHING)
    assert value["oid"] == EVERYTHING.oid.encode()
    assert value["iid"] == EVERYTHING.iid.encode()
    assert (value["mode"], value["colour"]) == (70000, "green")
    assert value["grid"] == [[1, 2], [], [255]]
    assert "extra" not in value
    assert value["note"] == "n"
    encoded = encode_record(EVERYTHING)
    assert encoded == cbor2.dumps(value, canonical=True)
    assert decode_record_untrusted(Everything, encoded) == EVERYTHING


def test_round_trip_of_nested_and_recursive_records() -> None:
    tree = Tree("root", (Tree("a"), Tree("b", (Tree("c"),))))
    assert decode_record_untrusted(Tree, encode_record(tree)) == tree
    assert record_from_value_untrusted(Tree, record_to_value(tree)) == tree
    assert is_record(Tree) and not is_record(Mode) and not is_record(3)


def test_missing_keys_take_defaults_and_unknown_keys_are_ignored() -> None:
    minimal = {"a": 5}
    assert record_from_value_untrusted(Small, minimal) == Small(5)
    future = cbor2.dumps({"a": 5, "zz_added_later": [1, {"x": 2}]}, canonical=True)
    assert decode_record_untrusted(Small, future) == Small(5)
    # Every field with a value is sent, defaulted or not.
    assert record_to_value(Small(5)) == {"a": 5, "bb": b""}


def test_float_fields_accept_ints_when_sending_and_only_floats_when_receiving() -> None:
    value = record_to_value(dataclasses.replace(EVERYTHING, ratio=3))
    assert value["ratio"] == 3.0 and type(value["ratio"]) is float
    with pytest.raises(BadPacket, match=r"Everything\.ratio: expected float, got int"):
        record_from_value_untrusted(Everything, {**record_to_value(EVERYTHING), "ratio": 3})


def _refusal(**changes: object) -> str:
    value = {**record_to_value(EVERYTHING), **changes}
    with pytest.raises(BadPacket) as info:
        record_from_value_untrusted(Everything, value)
    return str(info.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"flag": 1}, "Everything.flag: expected bool, got int"),
        ({"count": True}, "Everything.count: expected int, got bool"),
        ({"count": 1 << 64}, "Everything.count: 18446744073709551616 outside"),
        ({"level": 4}, "Everything.level: 4 outside -3 .. 3"),
        ({"name": b"x"}, "Everything.name: expected str, got bytes"),
        ({"label": "abcde"}, "Everything.label: 5 UTF-8 bytes exceed 4"),
        ({"blob": "x"}, "Everything.blob: expected bytes, got str"),
        ({"oid": b"\x03"}, "Everything.oid: "),
        ({"oid": "[3:x]"}, "Everything.oid: expected OID (bytes), got str"),
        ({"iid": b"\x03\x00"}, "Everything.iid: "),
        ({"mode": 2}, "Everything.mode: 2 is not a Mode"),
        ({"mode": "ON"}, "Everything.mode: expected Mode (int), got str"),
        ({"colour": "blue"}, "Everything.colour: 'blue' is not a Colour"),
        ({"small": [1]}, "Everything.small: expected Small (a map), got list"),
        ({"small": {"bb": b""}}, "Everything.small.a: required field missing"),
        ({"small": {"a": 1, 2: 3}}, "Everything.small: map key of type int"),
        ({"smalls": [{"a": 1}, {"a": "2"}]}, "Everything.smalls[1].a: expected int, got str"),
        ({"smalls": {"a": 1}}, "Everything.smalls: expected an array, got dict"),
        ({"grid": [[1, 256]]}, r"Everything.grid[0][1]: 256 outside 0 .. 255"),
        ({"note": None}, "Everything.note: null is never sent"),
        ({"extra": {"a": None}}, "Everything.extra.a: null is never sent"),
    ],
)
def test_refusals_name_the_field(changes: dict[str, object], message: str) -> None:
    assert message in _refusal(**changes)


def test_refusals_of_the_whole_record() -> None:
    with pytest.raises(BadPacket, match="Small: expected Small"):
        record_from_value_untrusted(Small, [1])
    with pytest.raises(BadPacket, match="required field missing"):
        decode_record_untrusted(Small, b"\xa0")
    with pytest.raises(BadPacket, match="one CBOR map"):
        decode_record_untrusted(Small, cbor2.dumps([1]))
    with pytest.raises(BadPacket, match="one CBOR map"):
        decode_record_untrusted(Small, b"")
    with pytest.raises(BadPacket, match="value must be positive"):
        record_from_value_untrusted(Positive, {"value": 0})
    assert record_from_value_untrusted(Positive, {"value": 1}) == Positive(1)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes.fromhex("a2 6262 62 40 6161 01"), "canonical"),  # keys out of order
        (bytes.fromhex("a1 6161 1801"), "minimally"),  # a non-minimal integer head
        (bytes.fromhex("a1 6161 fb3ff0000000000000"), "canonical"),  # 1.0 as a double
        (bytes.fromhex("a2 6161 01 6161 02"), "canonical"),  # a duplicate key
        (bytes.fromhex("a1 6161 c101"), "tags"),
        (bytes.fromhex("bf 6161 01 ff"), "indefinite"),
        (bytes.fromhex("a1 6161 01 00"), "trailing"),
        (bytes.fromhex("a1 6161"), "truncated"),
        (bytes.fromhex("a1 61ff 01"), "does not decode"),  # invalid UTF-8 in a key
    ],
)
def test_non_canonical_or_malformed_bytes_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(BadPacket, match=reason):
        decode_record_untrusted(Small, data)


def _deep_tree(levels: int) -> Tree:
    tree = Tree("leaf")
    for _ in range(levels):
        tree = Tree("n", (tree,))
    return tree


def test_nesting_is_bounded_both_ways() -> None:
    # Each level of the tree is a map and an array: 8 levels are 16 containers.
    fits = _deep_tree(MAX_DEPTH // 2 - 1)
    assert decode_record_untrusted(Tree, encode_record(fits)) == fits
    with pytest.raises(ValueError, match="deeper"):
        encode_record(_deep_tree(MAX_DEPTH))
    hostile: dict[str, Any] = {"name": "leaf"}
    for _ in range(10_000):
        hostile = {"name": "n", "children": [hostile]}
    with pytest.raises(BadPacket, match="deeper"):
        record_from_value_untrusted(Tree, hostile)
    deep_bytes = bytes.fromhex("a1 68 6368696c6472656e 81") * 40 + bytes.fromhex("a0")
    with pytest.raises(BadPacket, match="deeper"):
        decode_record_untrusted(Tree, deep_bytes)


def test_item_count_is_bounded() -> None:
    with pytest.raises(BadPacket, match="items"):
        record_from_value_untrusted(Tree, {"name": "n", "children": [{"name": "x"}] * 10_000})


def test_encoding_refuses_values_the_declaration_does_not_allow() -> None:
    with pytest.raises(TypeError, match=r"Small\.a: must be int, got str"):
        encode_record(Small("1"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Everything\.level: 9 outside"):
        encode_record(dataclasses.replace(EVERYTHING, level=9))
    with pytest.raises(ValueError, match="UTF-8 bytes exceed"):
        encode_record(dataclasses.replace(EVERYTHING, label="\u00e9\u00e9\u00e9"))
    with pytest.raises(TypeError, match=r"Everything\.mode: must be Mode"):
        encode_record(dataclasses.replace(EVERYTHING, mode=1))
    with pytest.raises(TypeError, match=r"Everything\.smalls\[0\]: must be Small"):
        encode_record(dataclasses.replace(EVERYTHING, smalls=({"a": 1},)))
    with pytest.raises(TypeError, match="not a record"):
        encode_record(3)


def test_records_are_frozen_slotted_dataclasses() -> None:
    small = Small(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        small.a = 2  # type: ignore[misc]
    assert not hasattr(small, "__dict__")

    @record
    @dataclasses.dataclass(frozen=True)
    class Already:
        x: int

    assert encode_record(Already(1)) == bytes.fromhex("a1 6178 01")


class Mixed(enum.Enum):
    A = 1
    B = "b"


class Floaty(enum.Enum):
    A = 1.5


class Empty(enum.Enum):
    pass


@dataclasses.dataclass(frozen=True)
class NotARecord:
    x: int


@pytest.mark.parametrize(
    ("annotation", "default", "message"),
    [
        (list[int], dataclasses.MISSING, "use tuple"),
        (dict[str, int], dataclasses.MISSING, "unsupported field type"),
        (tuple[int, str], dataclasses.MISSING, "only tuple"),
        (int | str, dataclasses.MISSING, "only T | None"),
        (tuple[int | None, ...], dataclasses.MISSING, "cannot be optional"),
        (int | None, 3, "must be None"),
        (Mixed, dataclasses.MISSING, "all int or all str"),
        (Floaty, dataclasses.MISSING, "all int or all str"),
        (Empty, dataclasses.MISSING, "no members"),
        (NotARecord, dataclasses.MISSING, "decorate it with @record"),
        (Annotated[str, IntRange(0, 1)], dataclasses.MISSING, "IntRange applies to int"),
        (Annotated[int, MaxLen(3)], dataclasses.MISSING, "MaxLen to str"),
        (Annotated[int, IntRange(0, 1), IntRange(0, 2)], dataclasses.MISSING, "more than one"),
        (object, dataclasses.MISSING, "unsupported field type"),
    ],
)
def test_unsupported_declarations_fail_at_declaration(
    annotation: object, default: object, message: str
) -> None:
    namespace: dict[str, object] = {"__annotations__": {"field": annotation}}
    if default is not dataclasses.MISSING:
        namespace["field"] = default
    with pytest.raises(TypeError, match=message):
        record(type("Bad", (), namespace))


def test_unresolvable_and_mutable_declarations_fail() -> None:
    with pytest.raises(TypeError, match="cannot resolve"):
        record(type("Forward", (), {"__annotations__": {"x": "NoSuchType"}}))

    with pytest.raises(TypeError, match="frozen"):

        @record
        @dataclasses.dataclass
        class Mutable:
            x: int

    with pytest.raises(ValueError, match="IntRange"):
        IntRange(2, 1)
    with pytest.raises(ValueError, match="negative"):
        MaxLen(-1)


# -- property-based: random record declarations ----------------------------------------

_LEAVES: list[tuple[object, st.SearchStrategy[Any]]] = [
    (bool, st.booleans()),
    (int, st.integers(-(1 << 64), (1 << 64) - 1)),
    (UInt8, st.integers(0, 255)),
    (Annotated[int, IntRange(-5, 5)], st.integers(-5, 5)),
    (float, st.floats(allow_nan=False)),
    (str, st.text(max_size=8)),
    (Annotated[bytes, MaxLen(4)], st.binary(max_size=4)),
    (OID, st.builds(OID, st.integers(1, 0x3FFF), st.binary(max_size=63))),
    (IID, st.builds(IID, st.integers(0, 63), st.sampled_from([b"\x01", b"\x00\x02", bytes(16)]))),
    (Mode, st.sampled_from(Mode)),
    (Colour, st.sampled_from(Colour)),
]
_names = itertools.count()


def _types(depth: int) -> st.SearchStrategy[tuple[object, st.SearchStrategy[Any]]]:
    """A field type and a strategy for its values, nesting tuples and records."""
    leaves = st.sampled_from(_LEAVES)
    if depth == 0:
        return leaves

    def tuple_of(item: tuple[object, st.SearchStrategy[Any]]) -> tuple[object, Any]:
        hint, values = item
        return tuple[hint, ...], st.lists(values, max_size=3).map(tuple)  # type: ignore[valid-type]

    return st.one_of(
        leaves,
        _types(depth - 1).map(tuple_of),
        _records(depth - 1),
    )


@st.composite
def _records(draw: st.DrawFn, depth: int) -> tuple[object, st.SearchStrategy[Any]]:
    """A freshly declared record class and a strategy for its instances."""
    fields = draw(st.lists(_types(depth), min_size=0, max_size=4))
    optional = draw(st.lists(st.booleans(), min_size=len(fields), max_size=len(fields)))
    annotations: dict[str, object] = {}
    strategies: dict[str, st.SearchStrategy[Any]] = {}
    for index, ((hint, values), is_optional) in enumerate(zip(fields, optional, strict=True)):
        name = f"f{index}_{'x' * index}"
        annotations[name] = hint | None if is_optional else hint  # type: ignore[operator]
        strategies[name] = st.none() | values if is_optional else values
    kind = record(type(f"Random{next(_names)}", (), {"__annotations__": annotations}))
    return kind, st.builds(kind, **strategies)


@st.composite
def _instances(draw: st.DrawFn) -> Any:
    _kind, instances = draw(_records(2))
    return draw(instances)


@settings(max_examples=300, deadline=None)
@given(_instances())
def test_random_records_round_trip_canonically(instance: Any) -> None:
    kind = type(instance)
    encoded = encode_record(instance)
    decoded = decode_record_untrusted(kind, encoded)
    assert decoded == instance
    assert encode_record(decoded) == encoded
    assert record_from_value_untrusted(kind, record_to_value(instance)) == instance


@settings(max_examples=300, deadline=None)
@given(_instances(), st.data())
def test_mutated_encodings_raise_only_bad_packet(instance: Any, data: st.DataObject) -> None:
    encoded = bytearray(encode_record(instance))
    position = data.draw(st.integers(0, len(encoded) - 1))
    match data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"])):
        case "flip":
            encoded[position] ^= 1 << data.draw(st.integers(0, 7))
        case "truncate":
            del encoded[position:]
        case "insert":
            encoded.insert(position, data.draw(st.integers(0, 255)))
        case "delete":
            del encoded[position]
    try:
        decoded = decode_record_untrusted(type(instance), bytes(encoded))
    except BadPacket:
        return
    # Accepted bytes were canonical CBOR; the record re-encodes canonically (a
    # mutation may have made an unknown key, which is dropped).
    again = encode_record(decoded)
    assert decode_record_untrusted(type(instance), again) == decoded


_cbor_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 65), 1 << 65)
    | st.floats()
    | st.text(max_size=6)
    | st.binary(max_size=6),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), _cbor_like)
def test_arbitrary_input_raises_only_bad_packet(data: bytes, value: object) -> None:
    for kind in (Everything, Tree, Small):
        with contextlib.suppress(BadPacket):
            decode_record_untrusted(kind, data)
        with contextlib.suppress(BadPacket):
            record_from_value_untrusted(kind, value)
