"""The examples run end to end through their driver (examples/run_all.py, as CI
and a newcomer run them), use only public names, and the driver fails when a
step does."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import dofpy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PROGRAMS = ["run_all.py", "secure_provider.py", "secure_requestor.py", "secure_transfer.py"]
DRIVER_TIMEOUT = 180  # seconds: the whole run takes about ten on a loaded 2-core machine


@pytest.fixture
def examples_on_path() -> Iterator[None]:
    # As `python examples/X.py` runs them: their folder first on sys.path.
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield
    finally:
        sys.path.remove(str(EXAMPLES))
        for name in ["thermostat", *(program.removesuffix(".py") for program in PROGRAMS)]:
            sys.modules.pop(name, None)


def load(name: str) -> ModuleType:
    return __import__(name)


def test_the_examples_run_end_to_end_through_the_driver(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "run_all.py"), "--transfer-size", str(200_000)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "all examples succeeded" in result.stdout
    for step in (
        "init-domain",
        "the Authenticator ready",
        "grant device@example.org x",
        "the requestor",
        "a requestor expecting another identity there is refused",
        "the provider stopped",
        "the transfer",
        "the Authenticator stopped",
    ):
        assert f"ok: {step}" in result.stdout
    # The temporary domain is gone, and nothing was written where it ran.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("examples_on_path")
@pytest.mark.parametrize("program", PROGRAMS)
def test_every_example_has_help(program: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = load(program.removesuffix(".py"))
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "example: python examples/" in out


@pytest.mark.parametrize("program", [*PROGRAMS, "thermostat.py"])
def test_the_examples_import_only_public_dofpy_names(program: str) -> None:
    tree = ast.parse((EXAMPLES / program).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dofpy"):
            assert node.module == "dofpy", f"{program} imports from {node.module}"
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("dofpy")]
            assert names == [], f"{program} imports {names}"
    assert imported - set(dofpy.__all__) == set()
    if program != "run_all.py":  # the driver runs the dofpy command instead
        assert imported, f"{program} uses dofpy"


@pytest.mark.usefixtures("examples_on_path")
def test_the_driver_fails_a_step_that_fails(tmp_path: Path) -> None:
    run_all = load("run_all")
    runner = run_all.Runner(tmp_path, timeout=30.0, verbose=False)
    assert runner.run("fine", [sys.executable, "-c", "print('done')"]) == "done\n"
    with pytest.raises(run_all.StepFailed, match="broken: exit status 3, expected 0"):
        runner.run("broken", [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(run_all.StepFailed, match="refusal: exit status 0, expected 1"):
        runner.run("refusal", [sys.executable, "-c", "pass"], expect_status=1)


@pytest.mark.usefixtures("examples_on_path")
def test_the_driver_fails_a_daemon_that_exits_before_it_is_ready(tmp_path: Path) -> None:
    run_all = load("run_all")
    runner = run_all.Runner(tmp_path, timeout=30.0, verbose=False)
    command = [sys.executable, "-c", "raise SystemExit(2)"]
    with (
        pytest.raises(run_all.StepFailed, match="exited with status 2 before it was ready"),
        runner.background("daemon", command, tmp_path / "daemon.ready"),
    ):
        pytest.fail("the body runs only once the daemon is ready")


@pytest.mark.usefixtures("examples_on_path")
def test_the_driver_fails_a_daemon_that_does_not_stop_cleanly(tmp_path: Path) -> None:
    run_all = load("run_all")
    runner = run_all.Runner(tmp_path, timeout=30.0, verbose=False)
    ready = tmp_path / "daemon.ready"
    # Ready at once, then killed by SIGTERM (Python's default): status -15, not 0.
    script = f"import pathlib, time; pathlib.Path({str(ready)!r}).write_text('{{}}')"
    script += "; time.sleep(60)"
    with (
        pytest.raises(run_all.StepFailed, match="exit status -15 at SIGTERM"),
        runner.background("daemon", [sys.executable, "-c", script], ready) as (process, data),
    ):
        assert data == {} and process.poll() is None
