"""OIDs and IIDs: wire encoding, text form, and agreement with tshark."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.testing.tshark import check_datagrams
from dofpy.wire._codec import C4_MAX, Reader
from dofpy.wire.oid import (
    BROADCAST_OID,
    IID,
    OID,
    OIDAttribute,
    OIDAttributeType,
    decode_iid_untrusted,
    decode_oid_untrusted,
    parse_iid_text_untrusted,
    parse_oid_text_untrusted,
    read_iid,
    read_oid,
)

class_ids = st.one_of(st.integers(0, 0x7F), st.integers(0x80, 0x3FFF), st.integers(0x4000, C4_MAX))
oid_data = st.one_of(
    st.binary(max_size=63),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=63).map(str.encode),
)


def plain_oids() -> st.SearchStrategy[OID]:
    """OIDs without attributes (class 0 has no data)."""
    return st.builds(
        lambda class_id, data: OID(class_id, data if class_id else b""), class_ids, oid_data
    )


@st.composite
def attributes(draw: st.DrawFn) -> OIDAttribute:
    type_id = draw(st.integers(0, 0x7F))
    if type_id in (OIDAttributeType.PROVIDER, OIDAttributeType.GROUP):
        return OIDAttribute.with_oid(type_id, draw(plain_oids()))
    return OIDAttribute(type_id, draw(st.binary(max_size=40)))


def oids() -> st.SearchStrategy[OID]:
    """Any valid OID, attributes included."""
    return st.builds(
        lambda base, attrs: OID(base.class_id, base.data, tuple(attrs)),
        plain_oids(),
        st.lists(attributes(), max_size=3),
    )


iids = st.builds(
    IID,
    st.integers(0, 63),
    st.sampled_from([1, 2, 4, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)


@given(oids())
def test_oid_wire_round_trip(oid: OID) -> None:
    assert decode_oid_untrusted(oid.encode()) == oid


@given(oids())
def test_oid_text_round_trip(oid: OID) -> None:
    assert parse_oid_text_untrusted(str(oid)) == oid
    assert OID.from_text(str(oid)) == oid


@given(iids)
def test_iid_round_trips(iid: IID) -> None:
    assert decode_iid_untrusted(iid.encode()) == iid
    assert IID.from_text(str(iid)) == iid


@given(oids(), st.data())
def test_truncated_oid_raises_bad_packet(oid: OID, data: st.DataObject) -> None:
    encoded = oid.encode()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(BadPacket):
        decode_oid_untrusted(encoded[:cut])


@given(st.binary(max_size=80))
def test_oid_decoder_raises_only_bad_packet(data: bytes) -> None:
    try:
        oid = decode_oid_untrusted(data)
    except BadPacket:
        return
    assert oid.encode() == data


@given(st.binary(max_size=20))
def test_iid_decoder_raises_only_bad_packet(data: bytes) -> None:
    try:
        iid = decode_iid_untrusted(data)
    except BadPacket:
        return
    assert iid.encode() == data


@given(st.text(max_size=60))
def test_text_parsers_raise_only_bad_packet(text: str) -> None:
    for parse in (parse_oid_text_untrusted, parse_iid_text_untrusted):
        with contextlib.suppress(BadPacket):
            parse(text)


def test_broadcast_oid_is_class_zero_with_a_header_byte() -> None:
    # The dissector always reads the header byte (DOFObjectID needs 2 bytes).
    assert BROADCAST_OID.encode() == b"\x00\x00"
    assert BROADCAST_OID.is_broadcast
    assert str(BROADCAST_OID) == "[{00}:]"
    assert decode_oid_untrusted(b"\x00\x00") == BROADCAST_OID
    with pytest.raises(BadPacket):
        decode_oid_untrusted(b"\x00")
    with pytest.raises(BadPacket, match="broadcast"):
        decode_oid_untrusted(b"\x00\x01a")


@pytest.mark.parametrize(
    ("oid", "text", "wire"),
    [
        (OID(6, b"example.org"), "[{06}:example.org]", "060b6578616d706c652e6f7267"),
        (OID(3, b"\x01\x02\xab\xcd"), "[{03}:{0102ABCD}]", "030401 02abcd"),
        (OID(0x100, b"ab"), "[{0100}:ab]", "81000 26162"),
        (OID(0x10000), "[{010000}:]", "c0010000 00"),
        (OID(0x1000000), "[{01000000}:]", "c1000000 00"),
        (OID(6, b"a]b (x)|{y}\\[z"), "[{06}:a\\]b \\(x\\)\\|\\{y\\}\\\\\\[z]", None),
        (OID(6, b"a\x7fb"), "[{06}:{617F62}]", "0603617f62"),
        (OID(6, b"ab", (OIDAttribute(1, b"xy"),)), "[{06}:ab({01}:xy)]", "068261620102 7879"),
        (
            OID(
                6, b"ab", (OIDAttribute.with_oid(0, OID(0)), OIDAttribute.with_oid(2, OID(3, b"z")))
            ),
            "[{06}:ab({00}:[{00}:]|{02}:[{03}:z])]",
            "06826162 80020000 020303017a",
        ),
        (OID(0, b"", (OIDAttribute(1, b"z"),)), "[{00}:({01}:z)]", "008001017a"),
    ],
)
def test_known_oid_forms(oid: OID, text: str, wire: str | None) -> None:
    assert str(oid) == text
    assert OID.from_text(text) == oid
    if wire is not None:
        assert oid.encode() == bytes.fromhex(wire.replace(" ", ""))


def test_text_parser_accepts_decimal_class_and_lower_case_hex() -> None:
    assert OID.from_text("[6:example.org]") == OID(6, b"example.org")
    assert OID.from_text(" [{0a}:{ff00}] ") == OID(10, b"\xff\x00")
    assert OID.from_text("[6:ab(1:xy|0:[0:])]") == OID(
        6, b"ab", (OIDAttribute(1, b"xy"), OIDAttribute.with_oid(0, OID(0)))
    )
    assert IID.from_text("[1:{00010000}]") == IID(1, b"\x00\x01\x00\x00")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "6:x",
        "[6:x",
        "[6:x]]",
        "[{}:x]",
        "[{0102030405}:x]",
        "[{6}:x]",
        "[{zz}:x]",
        "[6:{abc}]",
        "[6:{ab]",
        "[6:a\\b]",
        "[6:a\\",
        "[6:é]",
        "[x:a]",
        "[0:a]",
        "[6:" + "a" * 64 + "]",
        "[6:a(0:b)]",
        "[6:a(1:b]",
        "[6:a(200:b)]",
        "[6:a(1" + ":[6:a(1" * 70 + ":x" + ")]" * 70 + ")]",
        "[6:a" + "b" * 5000 + "]",
    ],
)
def test_bad_oid_text_is_refused(text: str) -> None:
    with pytest.raises(BadPacket):
        parse_oid_text_untrusted(text)
    with pytest.raises(ValueError):
        OID.from_text(text)


@pytest.mark.parametrize("text", ["[1:00]", "[{1}:{00}]", "[64:{00}]", "[1:{000}]", "[1:{000000}]"])
def test_bad_iid_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        IID.from_text(text)


@pytest.mark.parametrize(
    "make",
    [
        lambda: OID(-1),
        lambda: OID(C4_MAX + 1),
        lambda: OID(True),
        lambda: OID(6, bytes(64)),
        lambda: OID(0, b"x"),
        lambda: OID(6, b"", [OIDAttribute(1, b"")]),  # type: ignore[arg-type]
        lambda: OIDAttribute(128, b""),
        lambda: OIDAttribute(1, bytes(256)),
        lambda: OIDAttribute(0, b"A"),
        lambda: OIDAttribute(2, b"\x06\x00\x00"),
        lambda: IID(64, b"\x00"),
        lambda: IID(1, b"\x00\x00\x00"),
    ],
)
def test_constructors_refuse_bad_values(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    "wire",
    [
        "0640",  # header bit 6
        "068101",  # attribute announced, missing
        "0680000141",  # provider attribute that is not an OID
        "0680010141 00",  # trailing byte
        "80 0600",  # non-minimal class
    ],
)
def test_bad_oid_wire_is_refused(wire: str) -> None:
    with pytest.raises(BadPacket):
        decode_oid_untrusted(bytes.fromhex(wire.replace(" ", "")))


def test_attribute_accessors_and_helpers() -> None:
    provider = OIDAttribute.with_oid(OIDAttributeType.PROVIDER, OID(6, b"p"))
    assert provider.oid == OID(6, b"p")
    assert OIDAttribute(1, b"s").oid is None
    oid = OID(6, b"x", (provider,))
    assert oid.without_attributes() == OID(6, b"x")
    assert OID(6, b"x").without_attributes() == OID(6, b"x")
    # A session attribute whose bytes happen to be an OID prints as that OID.
    assert str(OID(6, b"x", (OIDAttribute(1, b"\x00\x00"),))) == "[{06}:x({01}:[{00}:])]"
    reader = Reader(OID(6, b"x").encode() + IID(1, b"\x01").encode())
    assert read_oid(reader) == OID(6, b"x")
    assert read_iid(reader) == IID(1, b"\x01")
    assert str(IID(1, bytes(16))) == "[{01}:{" + "00" * 16 + "}]"


def _ping_with_explicit_sid(oid: OID) -> bytes:
    # DNP v1 · DPP flags: explicit SID command · SID · op count 5 · delay 0 ·
    # app 0x7FFF · ping.
    return b"\x01\x82\x60" + oid.encode() + b"\x05\x00\xff\xff\x03"


@pytest.mark.external
@settings(
    max_examples=3,
    derandomize=True,
    phases=[Phase.generate],
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.lists(oids(), min_size=40, max_size=40))
def test_tshark_prints_our_text_form(sample: list[OID]) -> None:
    sample = [*sample, OID(6, b"example.org"), BROADCAST_OID, OID(C4_MAX, b"\x00")]
    result = check_datagrams([_ping_with_explicit_sid(oid) for oid in sample])
    assert result.problems == []
    shown = re.findall(r"^ {8}Object ID: (.*)$", result.verbose, re.MULTILINE)
    assert shown == [str(oid) for oid in sample]
