"""``dofpy version query | stats | show | deny | allow`` on a database
(SQLite and PostgreSQL): every format, pages streamed through to the end,
operator errors as one line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from dofpy_services.cli import main
from dofpy_services.version import open_version_store
from tests.services.version_helpers import device, fleet, report


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    status = main(["version", *argv])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def test_query_prints_every_match_in_every_format(
    db_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_version_store(db_location) as store:
        reported = fleet(store, 300)
    wanted = sorted(
        str(i)
        for i, (sent, _) in reported.items()
        if sent.device_class == "sensor" and sent.version != "2.0"
    )
    query = ["query", "--db", db_location, "--class", "sensor", "--not-version", "2.0"]
    as_json = json.loads(run(capsys, *query, "--format", "json", "--page-size", "7"))
    as_csv = list(csv.DictReader(io.StringIO(run(capsys, *query, "--format", "csv"))))
    table = run(capsys, *query).splitlines()
    count = run(capsys, *query, "--count")
    assert [row["identity"] for row in as_json] == wanted
    assert [row["identity"] for row in as_csv] == wanted
    assert {row["version"] for row in as_csv} == {"1.0", "1.1"}
    assert table[0].split()[:3] == ["identity", "class", "version"]
    assert [line.split()[0] for line in table[1:]] == wanted
    assert int(count) == len(wanted) == 100
    empty = ["query", "--db", db_location, "--class", "none"]
    assert json.loads(run(capsys, *empty, "--format", "json")) == []
    assert run(capsys, *empty, "--format", "csv").strip().startswith("identity,class")


def test_stats_show_deny_and_allow(db_location: str, capsys: pytest.CaptureFixture[str]) -> None:
    with open_version_store(db_location) as store:
        fleet(store, 30)
        store.report(device(0), report(version="3.0", sequence=30, accepted=False), 500.0)
    stats = list(
        csv.DictReader(io.StringIO(run(capsys, "stats", "--db", db_location, "--format", "csv")))
    )
    assert [(r["class"], r["version"], r["devices"]) for r in stats] == [
        ("gateway", "1.0", "5"),
        ("gateway", "1.1", "5"),
        ("gateway", "2.0", "5"),
        ("sensor", "1.0", "4"),
        ("sensor", "1.1", "5"),
        ("sensor", "2.0", "5"),
        ("sensor", "3.0", "1"),
    ]
    shown = json.loads(run(capsys, "show", "--db", db_location, str(device(0)), "--format", "json"))
    assert shown["device"]["version"] == "3.0" and shown["device"]["accepted"] is False
    assert [h["version"] for h in shown["history"]] == ["1.0", "3.0"]
    text = run(capsys, "show", "--db", db_location, "device-00000@example.org")
    assert "UNACCEPTED" in text and "history:" in text
    assert "denied" in run(capsys, "deny", "--db", db_location, "device-00001@example.org")
    with open_version_store(db_location) as store:
        assert store.report(device(1), report(), 600.0).denied
    assert "allowed" in run(capsys, "allow", "--db", db_location, "device-00001@example.org")
    assert "was not denied" in run(capsys, "allow", "--db", db_location, "device-00001@example.org")


def test_operator_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "version.db")
    assert main(["version", "show", "--db", db, "nobody@example.org"]) == 1  # not there
    assert capsys.readouterr().err.startswith("dofpy: error: no device")
    assert main(["version", "query", "--db", db, "--page-size", "0"]) == 2
    assert "--page-size" in capsys.readouterr().err
    assert main(["version", "query", "--service", "127.0.0.1:1"]) == 2
    assert "--credentials" in capsys.readouterr().err
    assert main(["version", "query"]) == 2  # --db or --service is required
    assert "one of the arguments --db --service is required" in capsys.readouterr().err
