"""The Version interfaces' records round-trip through the wire as a peer
decodes them (Hypothesis), and what a peer may not send is refused with
BadPacket only."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.oap.interface import incoming_values_untrusted, outgoing_values
from dofpy.wire.oid import OID
from dofpy.wire.record import record_to_value
from dofpy.wire.values import decode_values_untrusted, encode_values
from dofpy_services.version.interface import (
    MAX_IDENTITIES,
    VERSION_CHANGES,
    VERSION_QUERY,
    VERSION_REPORT,
    BootState,
    DeviceChange,
    ImageKind,
    QueryFilter,
    VersionReport,
    changes_object,
)

INT63 = st.integers(0, (1 << 63) - 1)
NAMES = st.text(min_size=1, max_size=16)
CLOCK = st.floats(allow_nan=False, allow_infinity=False)
OIDS = st.builds(OID, st.integers(1, 255), st.binary(max_size=63))
BOOTS = st.builds(
    BootState,
    st.integers(0, 255),
    st.sampled_from(ImageKind),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
REPORTS = st.builds(
    VersionReport, NAMES, st.text(max_size=16), INT63, st.binary(max_size=64), BOOTS, INT63, CLOCK
)
FILTERS = st.builds(
    QueryFilter,
    device_class=st.none() | NAMES,
    version=st.none() | st.text(max_size=8),
    not_version=st.none() | st.text(max_size=8),
    min_sequence=st.none() | INT63,
    max_sequence=st.none() | INT63,
    last_seen_before=st.none() | CLOCK,
    last_seen_after=st.none() | CLOCK,
    accepted=st.none() | st.booleans(),
    image_kind=st.none() | st.sampled_from(ImageKind),
    identities=st.lists(OIDS, max_size=4).map(tuple),
)
CHANGES = st.builds(
    DeviceChange,
    OIDS,
    CLOCK,
    st.text(max_size=8),
    INT63,
    st.binary(max_size=32),
    BOOTS,
    st.none() | st.text(max_size=8),
    st.none() | INT63,
)


def round_trip(params: tuple, values: tuple) -> tuple:  # type: ignore[type-arg]
    wire = encode_values(list(outgoing_values(params, values, "test")))
    return incoming_values_untrusted(params, decode_values_untrusted(wire), "test")


@given(REPORTS)
def test_a_report_round_trips(sent: VersionReport) -> None:
    params = VERSION_REPORT.method("report").arguments
    assert round_trip(params, (sent,)) == (sent,)


@given(FILTERS, st.binary(max_size=32), st.integers(1, 128))
def test_a_query_round_trips(query: QueryFilter, after: bytes, limit: int) -> None:
    params = VERSION_QUERY.method("query").arguments
    assert round_trip(params, (query, after, limit)) == (query, after, limit)


@given(st.lists(CHANGES, max_size=3).map(tuple))
def test_changes_round_trip(changes: tuple[DeviceChange, ...]) -> None:
    params = VERSION_CHANGES.property("changes").params
    assert round_trip(params, (changes,)) == (changes,)


def _report_value(**fields: object) -> list[object]:
    good = VersionReport("s", "1", 1, b"", BootState(0, ImageKind.NORMAL, True, 0), 0, 0.0)
    value = record_to_value(good)
    value.update(fields)
    return [value]


@pytest.mark.parametrize(
    "bad",
    [
        {"device_class": ""},
        {"device_class": "x" * 49},
        {"device_clock": math.nan},
        {"sequence": -1},
        {"sequence": 1 << 63},
        {"boot": {"slot": 0, "image_kind": "golden", "accepted": True, "boot_count": 0}},
    ],
)
def test_a_report_a_peer_may_not_send_is_bad_packet(bad: dict[str, object]) -> None:
    with pytest.raises(BadPacket):
        incoming_values_untrusted(
            VERSION_REPORT.method("report").arguments, _report_value(**bad), "report"
        )


def test_a_report_carries_no_identity_and_one_sent_is_ignored() -> None:
    """A device cannot name another: the report has no identity field, and
    an ``identity`` key a peer adds is not read (unknown keys are ignored)."""
    (decoded,) = incoming_values_untrusted(
        VERSION_REPORT.method("report").arguments,
        _report_value(identity=OID(3, b"someone-else").encode()),
        "report",
    )
    assert "identity" not in VersionReport.__dataclass_fields__
    assert not hasattr(decoded, "identity")


def test_filters_list_at_most_max_identities() -> None:
    many = [OID(3, b"%d" % n).encode() for n in range(MAX_IDENTITIES + 1)]
    with pytest.raises(BadPacket):
        incoming_values_untrusted(
            VERSION_QUERY.method("count").arguments, [{"identities": many}], "count"
        )


def test_a_changes_object_is_named_by_its_class() -> None:
    assert changes_object("sensor") != changes_object("gateway")
    with pytest.raises(ValueError):
        changes_object("")
    with pytest.raises(ValueError):
        changes_object("x" * 42)
