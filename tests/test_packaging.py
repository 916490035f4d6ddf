"""The package looks like one: license, metadata, a long description that reads
well on an index, an sdist with the docs and every test, docs paths that exist."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import dofpy
from dofpy_services.cli import main as dofpy_main

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_PAGE = ROOT / "docs" / "package.md"
DOCS_PATH = re.compile(r"(?<![\w/.])docs/[A-Za-z0-9_./-]*[A-Za-z0-9_]")


def _named_docs_paths() -> dict[str, set[str]]:
    named: dict[str, set[str]] = {}
    sources = [ROOT / "README.md", *ROOT.glob("docs/**/*.md")]
    for folder in ("dofpy", "dofpy_services", "interop", "benchmarks", "fuzz", "tests", "examples"):
        sources.extend((ROOT / folder).rglob("*.py"))
    for source in sources:
        for path in DOCS_PATH.findall(source.read_text(encoding="utf-8")):
            named.setdefault(path, set()).add(str(source.relative_to(ROOT)))
    return named


def test_every_docs_path_named_in_the_code_and_docs_exists() -> None:
    named = _named_docs_paths()
    assert "docs/protocol.md" in named  # the scan finds what it should
    missing = {path: sorted(where) for path, where in named.items() if not (ROOT / path).exists()}
    assert missing == {}


def test_the_version_is_one_value_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    # main returns argparse's exit status too (run_cli), rather than raising SystemExit.
    assert dofpy_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"dofpy {dofpy.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", dofpy.__version__)


def test_the_package_page_has_only_absolute_links_and_its_example_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = PACKAGE_PAGE.read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links, "the page links to OpenDOF and trio"
    assert [link for link in links if not link.startswith("https://")] == []
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None
    exec(compile(code.group(1), str(PACKAGE_PAGE), "exec"), {"__name__": "package_page"})
    assert capsys.readouterr().out.splitlines() == re.findall(r"# (.+)$", code.group(1), re.M)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "deprecat" not in (result.stdout + result.stderr).lower()
    (sdist,) = out.glob("dofpy-*.tar.gz")
    (wheel,) = out.glob("dofpy-*.whl")
    return sdist, wheel


def test_the_wheel_carries_the_license_and_metadata_but_no_tests(built: tuple[Path, Path]) -> None:
    _, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert metadata["License-Expression"] == "Apache-2.0"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    classifiers = metadata.get_all("Classifier") or []
    assert {"Typing :: Typed", "Framework :: Trio"} <= set(classifiers)
    assert metadata["Version"] == dofpy.__version__
    assert metadata.get_payload().startswith("# dofpy")
    assert "dofpy/py.typed" in names
    assert [n for n in names if n.startswith("tests/")] == []


def test_the_sdist_holds_the_docs_and_every_test(built: tuple[Path, Path]) -> None:
    sdist, _ = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")}
    docs = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*") if p.is_file()}
    examples = {str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*.py")}
    assert tests - names == set()
    assert docs - names == set()
    assert examples and examples - names == set()
    assert {"LICENSE", "README.md", "pyproject.toml"} <= names
    assert [n for n in names if "__pycache__" in n or n.endswith(".pyc")] == []
