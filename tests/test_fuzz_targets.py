"""Every ``*_untrusted`` parser and ``probe_*`` reader in dofpy (functions and
methods) has a fuzz target, and every target's seeds run cleanly."""

from __future__ import annotations

import contextlib
import importlib
import re
from pathlib import Path

import pytest

from dofpy.errors import BadPacket

ROOT = Path(__file__).resolve().parent.parent
TARGETS = sorted(p.stem for p in (ROOT / "fuzz" / "targets").glob("*.py") if p.stem != "__init__")


def test_every_untrusted_parser_has_a_fuzz_target() -> None:
    defined = set()
    for path in (ROOT / "dofpy").rglob("*.py"):
        defined |= set(
            re.findall(r"^\s*def (probe_[a-z_]+|[a-z_]+_untrusted)\(", path.read_text(), re.M)
        )
    fuzzed = set()
    for name in TARGETS:
        fuzzed |= set(
            re.findall(
                r"probe_[a-z_]+|[a-z_]+_untrusted",
                (ROOT / "fuzz/targets" / f"{name}.py").read_text(),
            )
        )
    assert defined, "found no untrusted parsers"
    assert defined - fuzzed == set()


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_target_seeds_run(name: str) -> None:
    module = importlib.import_module(f"fuzz.targets.{name}")
    assert module.SEEDS
    for seed in module.SEEDS:
        with contextlib.suppress(BadPacket):
            module.target(seed)
