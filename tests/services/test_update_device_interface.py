"""The Update service's device interface: its records round-trip through the
wire as a peer decodes them (Hypothesis); a signed install report verifies
exactly when it is the enrolled device's signature over a report naming that
device; its decoder refuses with BadPacket only."""

from __future__ import annotations

from dataclasses import replace

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.oap.interface import incoming_values_untrusted, outgoing_values
from dofpy.wire.oid import OID
from dofpy.wire.record import encode_record
from dofpy.wire.values import decode_values_untrusted, encode_values
from dofpy_services.update.device_interface import (
    UPDATE_DEVICE,
    Assignment,
    Authorisation,
    InstallOutcome,
    InstallReport,
    InstallReportInvalid,
    Stage,
    decode_install_report_untrusted,
    sign_install_report,
    verify_install_report,
)

INT63 = st.integers(0, (1 << 63) - 1)
CLOCK = st.floats(allow_nan=False, allow_infinity=False)
CAMPAIGNS = st.text(min_size=1, max_size=16)
DIGESTS = st.binary(max_size=64)
OIDS = st.builds(OID, st.integers(1, 255), st.binary(max_size=63))


@st.composite
def assignments(draw: st.DrawFn) -> Assignment:
    start, end = sorted((draw(CLOCK), draw(CLOCK)))
    return Assignment(
        draw(CAMPAIGNS),
        draw(DIGESTS),
        draw(st.text(max_size=16)),
        draw(INT63),
        start,
        end,
        draw(st.booleans()),
        draw(st.booleans()),
        draw(st.booleans()),
    )


AUTHORISATIONS = st.builds(Authorisation, CAMPAIGNS, DIGESTS, CLOCK, st.binary(max_size=512))
REPORTS = st.builds(
    InstallReport,
    OIDS,
    CAMPAIGNS,
    DIGESTS,
    st.text(max_size=16),
    DIGESTS,
    st.text(max_size=16),
    st.sampled_from(InstallOutcome),
    CLOCK,
    st.none() | st.sampled_from(Stage),
    st.text(max_size=40),
    st.integers(0, 1 << 16),
    INT63,
)


def round_trip(params: tuple, values: tuple) -> tuple:  # type: ignore[type-arg]
    wire = encode_values(list(outgoing_values(params, values, "test")))
    return incoming_values_untrusted(params, decode_values_untrusted(wire), "test")


@settings(suppress_health_check=[HealthCheck.too_slow])  # slow only on a loaded machine
@given(st.lists(assignments(), max_size=1))
def test_an_assignment_round_trips(sent: list[Assignment]) -> None:
    params = UPDATE_DEVICE.method("poll").results
    (received,) = round_trip(params, (sent,))
    assert list(received) == sent


@given(AUTHORISATIONS)
def test_an_authorisation_round_trips(sent: Authorisation) -> None:
    params = UPDATE_DEVICE.method("authorise").results
    assert round_trip(params, (sent,)) == (sent,)


@given(REPORTS)
def test_an_install_report_round_trips_signed(sent: InstallReport) -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    data, signature = sign_install_report(key, sent)
    params = UPDATE_DEVICE.method("install_report").arguments
    wire_data, wire_signature = round_trip(params, (data, signature))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert verify_install_report(public, sent.device, wire_data, wire_signature) == sent


def test_a_window_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        Assignment("c", b"d", "1", 1, 10.0, 5.0)
    with pytest.raises(ValueError, match="window"):
        Assignment("c", b"d", "1", 1, float("nan"), 5.0)


DEVICE = OID(3, b"device-1@example.org")
OTHER = OID(3, b"device-2@example.org")


def signed_by(key: ed25519.Ed25519PrivateKey, device: OID = DEVICE) -> tuple[bytes, bytes]:
    report = InstallReport(
        device, "c1", b"\x01" * 32, "2.0", b"\x00" * 32, "1.0", InstallOutcome.FAILED, 5.0,
        Stage.NORMAL_MODE, "health check: service did not start", 2,
    )  # fmt: skip
    return sign_install_report(key, report)


def raw(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


FETCHED = InstallReport(
    DEVICE, "c1", b"\x01" * 32, "2.0", b"\x01" * 32, "2.0", InstallOutcome.SUCCEEDED, 5.0,
    bytes_fetched=4096,
)  # fmt: skip


def _encoded(**changes: object) -> bytes:
    """FETCHED's canonical CBOR map with fields changed (None: left out), as
    a peer might send it."""
    fields: dict[str, object] = cbor2.loads(encode_record(FETCHED))
    fields.update(changes)
    return cbor2.dumps({k: v for k, v in fields.items() if v is not None}, canonical=True)


def test_a_report_from_before_bytes_fetched_decodes_with_zero() -> None:
    assert decode_install_report_untrusted(_encoded()) == FETCHED
    older = decode_install_report_untrusted(_encoded(bytes_fetched=None))
    assert older == replace(FETCHED, bytes_fetched=0)


@pytest.mark.parametrize("count", [-1, 1 << 63, 1.5, "4096"])
def test_bytes_fetched_out_of_range_or_not_an_int_is_refused(count: object) -> None:
    with pytest.raises(BadPacket, match="bytes_fetched"):
        decode_install_report_untrusted(_encoded(bytes_fetched=count))
    if isinstance(count, int):
        with pytest.raises(ValueError, match="bytes_fetched"):
            encode_record(replace(FETCHED, bytes_fetched=count))


def test_a_report_verifies_only_with_the_enrolled_key_of_the_device_it_names() -> None:
    mine = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    theirs = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
    data, signature = signed_by(mine)
    report = verify_install_report(raw(mine), DEVICE, data, signature)
    assert (report.failed_stage, report.reason) == (Stage.NORMAL_MODE, report.reason)
    assert report.reason.startswith("health check")
    with pytest.raises(InstallReportInvalid, match="not the device's"):
        verify_install_report(raw(theirs), DEVICE, data, signature)
    # A device's own good signature over a report naming another device.
    data, signature = signed_by(mine, OTHER)
    with pytest.raises(InstallReportInvalid, match="another device"):
        verify_install_report(raw(mine), DEVICE, data, signature)


def test_a_tampered_report_or_signature_is_refused() -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    data, signature = signed_by(key)
    for n in range(len(data)):
        changed = bytearray(data)
        changed[n] ^= 0x01
        with pytest.raises(InstallReportInvalid):
            verify_install_report(raw(key), DEVICE, bytes(changed), signature)
    with pytest.raises(InstallReportInvalid, match="64 bytes"):
        verify_install_report(raw(key), DEVICE, data, signature[:-1])
    with pytest.raises(InstallReportInvalid, match="not the device's"):
        verify_install_report(raw(key), DEVICE, data, bytes(64))
    with pytest.raises(InstallReportInvalid, match="Ed25519"):
        verify_install_report(b"\x01" * 31, DEVICE, data, signature)


def test_the_signature_covers_only_install_reports() -> None:
    """A signature the device key made over the bare report bytes (no
    install-report context) does not verify: the context is part of what is signed."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    data, _ = signed_by(key)
    with pytest.raises(InstallReportInvalid, match="not the device's"):
        verify_install_report(raw(key), DEVICE, data, key.sign(data))


@given(st.binary(max_size=200))
def test_the_report_decoder_raises_only_bad_packet(data: bytes) -> None:
    """Any bytes: BadPacket, or a report that re-encodes to itself."""
    try:
        report = decode_install_report_untrusted(data)
    except BadPacket:
        return
    assert decode_install_report_untrusted(encode_record(report)) == report
