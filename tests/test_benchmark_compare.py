"""benchmarks.compare's report: every tree's median, and the first tree's
ratio to each other tree's."""

from __future__ import annotations

from benchmarks.compare import report


def test_report_gives_each_tree_its_median_and_the_first_its_ratios() -> None:
    def run(value: float) -> list[tuple[str, str, float, str]]:
        return [("dofpy imported from", "/x", 0.0, ""), ("transfer", "1 KiB", value, "MB/s")]

    figures = {
        "this (abc)": [run(20.0), run(22.0), run(30.0)],
        "old": [run(10.0), run(11.0), run(12.0)],
        "before": [run(40.0), run(44.0), run(48.0)],
    }
    lines = report(figures, ("this (abc)", "old", "before")).splitlines()
    assert "/ old" in lines[0] and "/ before" in lines[0]
    row = lines[2].split()
    # medians 22, 11, 44; ratios 22/11 and 22/44
    assert row[-6:] == ["22", "11", "44", "2.000x", "0.500x", "MB/s"]
    assert len(lines) == 3  # the import line is not a figure
