"""The harnesses in dofpy.testing themselves: the secured pair, the skip-or-fail
of external tools, the PostgreSQL helpers, the tshark runner (on a stand-in
executable, so it is checked without tshark) and the transfer helpers."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from dofpy.errors import RemoteProtocolError
from dofpy.oap.core import OapConfig
from dofpy.oap.errors import OapError, OapErrorCode
from dofpy.testing import (
    THERMOSTAT,
    THERMOSTAT_OID,
    Datagram,
    LinkConditions,
    LocalDomain,
    Network,
    Thermostat,
    check_datagrams,
    make_object,
    open_secure_pair,
    run_to_event,
    unavailable,
)
from dofpy.testing.postgres import (
    ADMIN_URLS,
    candidate_urls,
    fresh_schema,
    require_postgres,
    with_options,
)
from dofpy.testing.secure import CLIENT_ID, DOMAIN_OID, PROVIDER_ID, thermostat_grant
from dofpy.testing.transfer import PROVIDER, REQUESTOR
from dofpy.testing.tshark import PORT, write_pcap
from dofpy.transfer.core import TransferConfig, TransferCore
from dofpy.wire.oid import OID
from interop.tshark_check import run_tshark as interop_run_tshark

ROOT = Path(__file__).resolve().parent.parent

# -- the secured pair over UDP -------------------------------------------------------


def thermostat_domain() -> LocalDomain:
    local = LocalDomain(DOMAIN_OID, rng=random.Random(3).randbytes)
    local.enrol(PROVIDER_ID, thermostat_grant("p"))
    local.enrol(CLIENT_ID, thermostat_grant("rx"))
    return local


async def test_the_secure_pair_is_authenticated_both_ways_and_serves() -> None:
    thermostat = Thermostat()
    with trio.fail_after(20):
        async with open_secure_pair(thermostat_domain(), PROVIDER_ID, CLIENT_ID) as pair:
            # Established before the block: each end knows the other's identity.
            assert pair.requestor.core.node.peer_identity(pair.peer) == PROVIDER_ID
            requestor_address = pair.requestor.local_address
            assert pair.provider.core.node.peer_identity(requestor_address) == CLIENT_ID
            pair.provider.provide(THERMOSTAT_OID, THERMOSTAT, thermostat)
            client = THERMOSTAT.client(pair.requestor, pair.peer, THERMOSTAT_OID)
            assert await client.add(2, 3) == 5
            assert await client.temperature.get() == 21
            # The grant is "rx": writing the label is refused, and nothing changes.
            with pytest.raises(OapError) as refused:
                await client.label.set("kitchen")
            assert refused.value.error_code is OapErrorCode.PERMISSION_DENIED
    assert thermostat.add_calls == 1
    assert thermostat.label == "hall"


async def test_without_establish_the_session_waits_for_the_first_request() -> None:
    with trio.fail_after(20):
        async with open_secure_pair(
            thermostat_domain(), PROVIDER_ID, CLIENT_ID, establish=False
        ) as pair:
            assert pair.requestor.core.node.peer_identity(pair.peer) is None
            pair.provider.provide(THERMOSTAT_OID, THERMOSTAT, Thermostat())
            assert await pair.requestor.get(pair.peer, THERMOSTAT_OID, THERMOSTAT, "temperature")
            assert pair.requestor.core.node.peer_identity(pair.peer) == PROVIDER_ID


async def test_a_requestor_the_domain_does_not_know_fails_at_open() -> None:
    stranger = OID(3, b"stranger@example.org")
    with trio.fail_after(40), pytest.raises(RemoteProtocolError, match="UNKNOWN_INITIATOR"):
        async with open_secure_pair(thermostat_domain(), PROVIDER_ID, stranger):
            pytest.fail("the pair opened for an identity that was never enrolled")


# -- external tools: skip locally, fail in CI ----------------------------------------


def test_an_unavailable_tool_skips_locally_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no frobnicator"):
        unavailable("no frobnicator")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no frobnicator -- required when CI=true"):
        unavailable("no frobnicator")


def test_importing_dofpy_testing_needs_neither_pytest_nor_psycopg() -> None:
    code = "import sys, dofpy.testing; print(sorted({'pytest', 'psycopg'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.strip() == "[]"


# -- PostgreSQL ------------------------------------------------------------------------


def test_with_options_puts_settings_in_the_libpq_options_parameter() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/test"
    assert with_options(url) == url
    assert with_options(url, search_path="s1") == f"{url}?options=-csearch_path%3Ds1"
    assert with_options(url, search_path="a,b", statement_timeout="5s") == (
        f"{url}?options=-csearch_path%3Da%2Cb%20-cstatement_timeout%3D5s"
    )
    assert with_options(f"{url}?sslmode=disable", search_path="s1") == (
        f"{url}?sslmode=disable&options=-csearch_path%3Ds1"
    )


def test_the_url_variable_alone_is_tried_when_set() -> None:
    assert candidate_urls({}) == ADMIN_URLS
    assert candidate_urls({"DOFPY_TEST_POSTGRES_URL": ""}) == ADMIN_URLS
    chosen = "postgresql://me@db.example:5433/ci"
    assert candidate_urls({"DOFPY_TEST_POSTGRES_URL": chosen}) == (chosen,)


def test_a_fresh_schema_is_empty_is_the_search_path_and_is_dropped() -> None:
    import psycopg  # noqa: PLC0415 - only once a server is known to be there

    admin_url = require_postgres()
    with fresh_schema(admin_url) as schema, fresh_schema(admin_url) as other:
        assert schema != other
        url = with_options(admin_url, search_path=schema)
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SHOW search_path").fetchone() == (schema,)
            conn.execute("CREATE TABLE t (x integer)")
        with psycopg.connect(with_options(admin_url, search_path=other)) as conn:
            found = conn.execute("SELECT to_regclass('t')").fetchone()
            assert found == (None,)  # tables in one schema are not seen from another
    with psycopg.connect(admin_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname IN (%s, %s)", (schema, other)
        ).fetchone()
    assert left == (0,)


# -- tshark, on a stand-in executable --------------------------------------------------

FAKE_TSHARK = """\
#!{python}
import sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(" ".join(args) + "\\n")
if "-Y" in args:
    print("2\\tOAP Get\\tMalformed Packet")
    print("   ")
elif "-V" in args:
    print("Frame 1: 60 bytes")
else:
    print("raw:ip:udp:dof:dof.oap|OAP Get [x]")
    print("raw:ip:udp:dof|DPP Ping ")
    print("raw:ip:udp:data|")
"""


@pytest.fixture
def fake_tshark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``tshark`` first on PATH that logs its arguments and prints canned output."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "tshark.log"
    script = bin_dir / "tshark"
    script.write_text(FAKE_TSHARK.format(python=sys.executable, log=str(log)))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_the_oracle_reports_problems_protocols_info_and_the_dump(fake_tshark: Path) -> None:
    result = check_datagrams([b"\x01", Datagram(b"\x02", from_client=False)], ["-o", "k:v"])
    assert result.problems == ["2\tOAP Get\tMalformed Packet"]
    assert result.protocols == ["raw:ip:udp:dof:dof.oap", "raw:ip:udp:dof", "raw:ip:udp:data"]
    assert result.info == ["OAP Get [x]", "DPP Ping ", ""]
    assert result.packets == 3
    assert result.verbose == "Frame 1: 60 bytes\n"
    runs = fake_tshark.read_text().splitlines()
    assert len(runs) == 3
    assert all(f"-d udp.port=={PORT},dof -o k:v" in run for run in runs)


def test_the_interop_report_counts_dof_applications_without_a_dump(fake_tshark: Path) -> None:
    pcap = fake_tshark.with_name("x.pcap")
    write_pcap(pcap, [b"\x01"])
    report = interop_run_tshark(pcap, 4000)
    assert report.packets == 3
    assert dict(report.protocols) == {"OAP": 1, "DPP": 1}
    assert report.infos == ["OAP Get [x]", "DPP Ping ", ""]
    assert report.problems == ["2\tOAP Get\tMalformed Packet"]
    runs = fake_tshark.read_text().splitlines()
    assert len(runs) == 2  # no -V: the dump is not wanted
    assert all("-d udp.port==4000,dof" in run for run in runs)


def test_write_pcap_puts_client_datagrams_towards_the_port(tmp_path: Path) -> None:
    pcap = tmp_path / "two.pcap"
    write_pcap(pcap, [b"ab", Datagram(b"cde", from_client=False)], port=4000)
    data = pcap.read_bytes()
    offset, seen = 24, []  # after the pcap global header
    while offset < len(data):
        length = int.from_bytes(data[offset + 8 : offset + 12], "little")
        packet = data[offset + 16 : offset + 16 + length]
        source, destination = (int.from_bytes(packet[i : i + 2], "big") for i in (20, 22))
        seen.append((source, destination, packet[28:]))
        offset += 16 + length
    assert seen == [(40001, 4000, b"ab"), (4000, 40001, b"cde")]


# -- transfer helpers -------------------------------------------------------------------


def test_make_object_is_seeded() -> None:
    assert make_object(64) == make_object(64, seed=1) != make_object(64, seed=2)
    assert len(make_object(1000)) == 1000


def test_run_to_event_fails_when_no_event_comes() -> None:
    network = Network(1, default=LinkConditions(delay=0.01))
    provider = TransferCore(TransferConfig(oap=OapConfig()))
    requestor = TransferCore(TransferConfig(oap=OapConfig()))
    network.add(provider, PROVIDER)
    network.add(requestor, REQUESTOR)
    with pytest.raises(AssertionError, match=r"no transfer event within 5\.0 virtual seconds"):
        run_to_event(network, requestor, max_time=5.0)
