"""The fuzz runner, on toy targets written to a temporary directory.

The fallback mutator runs in-process with a fixed seed and a bounded number of
runs, so these tests are fast and deterministic; one test also drives atheris
(when installed) in its subprocess for about a second.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fuzz import run

CRASHY = """
from dofpy.errors import BadPacket

SEEDS = (b"\\xde\\xac\\x00\\x01",)


def target(data: bytes) -> None:
    if len(data) < 2:
        raise BadPacket("short")
    if data[:2] == b"\\xde\\xad":
        raise ZeroDivisionError("magic prefix")
"""

SAFE = """
from dofpy.errors import BadPacket

SEEDS = (b"abc", b"")


def target(data: bytes) -> None:
    if not data:
        raise BadPacket("empty")
"""


@pytest.fixture
def targets(tmp_path: Path) -> Path:
    directory = tmp_path / "targets"
    directory.mkdir()
    (directory / "crashy.py").write_text(CRASHY)
    (directory / "safe.py").write_text(SAFE)
    (directory / "_helper.py").write_text("raise AssertionError('not a target')\n")
    return directory


def fallback(targets: Path, *extra: str) -> list[str]:
    return [
        "--targets-dir", str(targets), "--mode", "fallback",
        "--seconds", "60", "--runs", "20000", "--seed", "1", *extra,
    ]  # fmt: skip


def test_fallback_finds_the_crash_and_reports_it(
    targets: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run.main(fallback(targets)) == 1
    out = capsys.readouterr().out
    assert "fuzz target crashy: mode=fallback" in out
    assert "crashes=1" in out
    assert "fuzz target safe: mode=fallback executions=20000 crashes=0" in out
    assert "fuzz: 2 target(s), 1 crashed: crashy" in out
    hex_line = next(line for line in out.splitlines() if line.startswith(run.CRASH_MARKER))
    assert hex_line.split()[1].startswith("dead")
    assert "ZeroDivisionError: magic prefix" in out


def test_fallback_is_deterministic(targets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run.main(fallback(targets, "--target", "crashy"))
    first = capsys.readouterr().out
    run.main(fallback(targets, "--target", "crashy"))
    second = capsys.readouterr().out
    strip = [line for line in first.splitlines() if "seconds=" not in line]
    assert strip == [line for line in second.splitlines() if "seconds=" not in line]


def test_no_crash_exits_zero(targets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(fallback(targets, "--target", "safe")) == 0
    assert "fuzz: 1 target(s), 0 crashed" in capsys.readouterr().out


def test_crashing_input_is_saved(targets: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "crashes"
    assert run.main(fallback(targets, "--target", "crashy", "--artifact-dir", str(artifacts))) == 1
    (saved,) = artifacts.iterdir()
    assert saved.read_bytes().startswith(b"\xde\xad")


def test_listing_and_usage_errors(targets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--targets-dir", str(targets), "--list"]) == 0
    assert capsys.readouterr().out.split() == ["crashy", "safe"]
    assert run.main(fallback(targets, "--target", "missing")) == 2
    assert "unknown target" in capsys.readouterr().err
    (targets / "broken.py").write_text("SEEDS = [b'not a tuple']\n")
    assert run.main(fallback(targets, "--target", "broken")) == 2
    assert "SEEDS must be a tuple of bytes" in capsys.readouterr().err
    assert run.main(["--targets-dir", str(targets / "nowhere")]) == 2


def test_mutations_stay_within_max_len() -> None:
    rng = random.Random(0)
    corpus = [bytes(range(40)), b"", b"\xff" * 3]
    for _ in range(2000):
        assert len(run.mutate(rng, corpus, 32)) <= 32


@pytest.mark.skipif(not run.atheris_available(), reason="atheris not installed")
def test_atheris_mode_finds_the_crash(targets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = [
        "--targets-dir",
        str(targets),
        "--mode",
        "atheris",
        "--seconds",
        "5",
        "--seed",
        "1",
    ]
    assert run.main([*arguments, "--target", "crashy", "--runs", "200000"]) == 1
    out = capsys.readouterr().out
    assert "fuzz target crashy: mode=atheris" in out
    assert f"{run.CRASH_MARKER} dead" in out
    assert run.main([*arguments, "--target", "safe", "--runs", "5000"]) == 0
    assert "fuzz target safe: mode=atheris executions=5000 crashes=0" in capsys.readouterr().out
