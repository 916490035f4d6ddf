"""Smoke test of the Version benchmark on a tiny registry: every code path
(bulk load, enrolment, a real daemon, check-ins, every query kind, the stream,
the direct SQL) runs and reports. The figures mean nothing at this size."""

from __future__ import annotations

from pathlib import Path

from benchmarks import version
from dofpy_services.version import QueryFilter, open_version_store


def test_the_bulk_load_is_a_registry_the_service_reads(tmp_path: Path) -> None:
    path = tmp_path / "version.db"
    version.load_sqlite(path, 800)
    with open_version_store(path) as store:
        assert store.count(QueryFilter(device_class=version.TARGET_CLASS)) == 100
        assert store.classes() == [f"class-{n}" for n in range(version.CLASSES)]
        stale = store.count(QueryFilter(last_seen_before=version.STALE_BEFORE))
        assert 0 < stale < 40


def test_one_backend_reports_every_figure() -> None:
    figures = version.run_backend("sqlite", 2000, 1.0, 3, 2)
    assert isinstance(figures, version.Figures)
    names = [line[0] for line in figures.lines]
    assert "check-ins/s, 1 daemon" in names
    for kind, _ in version._kinds():
        assert f"query {kind} p50/p99" in names
    assert any(name.startswith("stream 'not running V'") for name in names)
    # The driver alone read the rows the service streamed, the same SQL.
    (stream,) = [name for name in names if name.startswith("stream 'not running V'")]
    (driver,) = [line for line in figures.lines if line[0].endswith("by sqlite3 module alone")]
    streamed = stream.split("(")[1].removesuffix(" rows)")
    assert driver[2].startswith(f"{streamed} rows in Python (") and streamed != "0"
    assert all(ratio > 0 for _, ratio, _ in figures.checks)
    assert "targets" in version.report([figures], 2000)
