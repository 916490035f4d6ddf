"""The failsafe promise: a power cut at any write, fsync or torn write of a
full update, a rollback and an updater update, on both layouts, leaves a
device that boots an accepted image (old or new, never neither), falls back
to one when a trial image never accepts, and finishes the operation when it
is carried on.

The random runs: 100 here; ``DOFPY_SOAK=1`` (``make soak``) runs 1,000.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.device.power_cut_harness import (
    SCENARIOS,
    Scenario,
    all_cut_points,
    cut_once,
    operations_of,
    provision,
    random_run,
)

RANDOM_RUNS = 1000 if os.environ.get("DOFPY_SOAK") else 100


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_power_cut_at_every_operation(tmp_path: Path, scenario: Scenario) -> None:
    template = tmp_path / "template"
    provision(template, scenario)
    points = all_cut_points(template, tmp_path / "work", scenario)
    torn = [point for point in points if point.torn_bytes]
    assert len(points) >= 10 and torn  # every scenario writes records at least
    for point in points:
        cut_once(template, tmp_path / "work", scenario, point)


def test_power_cut_at_random_points(tmp_path: Path) -> None:
    templates: dict[str, tuple[Path, int]] = {}
    for scenario in SCENARIOS:
        template = tmp_path / f"template-{scenario.name}"
        provision(template, scenario)
        operations = len(operations_of(template, tmp_path / "work", scenario))
        templates[scenario.name] = (template, operations)
    cuts = 0
    for seed in range(RANDOM_RUNS):
        scenario = SCENARIOS[seed % len(SCENARIOS)]
        template, operations = templates[scenario.name]
        fell = random_run(template, tmp_path / "work", scenario, operations, seed)
        assert fell >= 1  # the first cut falls within the run from the template
        cuts += fell
    assert cuts > RANDOM_RUNS  # and some runs are cut again while recovering
