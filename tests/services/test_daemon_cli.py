"""The one CLI: help with an example at every level, one-line usage errors,
records printed as table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from dofpy_services.cli import main
from dofpy_services.daemon.cli import print_records
from tests.services.test_authenticator import enrol


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["authenticator"],
        ["authenticator", "serve"],
        ["authenticator", "add-node"],
        ["authenticator", "list"],
    ],
)
def test_help_at_every_level_has_an_example(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status = main([*argv, "--help"])
    out = capsys.readouterr().out
    assert status == 0 and "example: dofpy" in out


def test_serve_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["authenticator", "serve", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--metrics-listen", "--log-format", "--drain-timeout", "--credentials", "--db"):
        assert flag in out


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["authenticator", "frobnicate"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("dofpy: error: authenticator: ") and err.count("\n") == 1


def test_list_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "as.db")
    enrol(db, capsys)
    assert main(["authenticator", "list", "--db", db, "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    client = next(r for r in records if r["identity"] == "[{03}:client@example.org]")
    assert client["status"] == "active" and client["permissions"] == ["rs * [{01}:{01}]"]
    assert main(["authenticator", "list", "--db", db, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["identity"] for r in rows} == {
        "[{03}:client@example.org]",
        "[{03}:device@example.org]",
    }
    assert main(["authenticator", "list", "--db", db, "--format", "table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "identity",
        "domain",
        "status",
        "generation",
        "max_duration",
        "permissions",
    ]
    assert len(lines) == 3


def test_print_records_aligns_a_table() -> None:
    out = io.StringIO()
    print_records([{"a": "x", "b": [1, 2]}, {"a": "longer", "b": None}], ("a", "b"), "table", out)
    assert out.getvalue().splitlines() == ["a       b", "x       1; 2", "longer"]
