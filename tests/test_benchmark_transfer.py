"""Smoke test of the block transfer benchmark: every code path on tiny objects.

It checks that the benchmark runs and reports (figures, targets, memory lines), not the
figures themselves: those are only meaningful in a full ``make bench`` run.
"""

from __future__ import annotations

import trio

from benchmarks import transfer


def test_secure_loopback_and_lossy_transfers_verify() -> None:
    image = transfer.make_image(48 * 1024, seed=5)
    plain = transfer.dofpy_transfer(image, 1024, deadline=30.0)
    assert plain.extra["verified"] is True and plain.nbytes == len(image)
    assert isinstance(plain.extra["datagram"], int) and plain.extra["datagram"] > 1024
    lossy = transfer.dofpy_transfer(image, 4096, loss=0.05, seed=3, deadline=60.0)
    assert lossy.extra["verified"] is True and lossy.extra["loss"] == 0.05


def test_scale_round_reports_memory_and_cache() -> None:
    found = trio.run(transfer._scale_round_async, 3, 32 * 1024, 2, 60.0)
    assert found.result.extra["verified"] is True
    assert found.result.nbytes == 3 * 32 * 1024
    report = found.provider
    assert report["cache_hits"] + report["cache_misses"] > 0
    assert 0.0 <= report["hit_rate"] <= 1.0
    assert report["rss_start"] > 0


def test_whole_report_on_a_tiny_plan() -> None:
    plan = transfer.Plan(
        loopback=64 * 1024,
        lossy=(32 * 1024,),
        tftpy_lossy=8 * 1024,
        scale_counts=(2,),
        scale_size=16 * 1024,
    )
    report = transfer.run(plan=plan)
    assert "dofpy secure 1024 B" in report and "dofpy secure 8192 B" in report
    assert "raw trio UDP" in report
    assert "target dofpy 0.03125 MiB completes at 30% loss" in report
    assert "dofpy 2 requestors" in report
    assert "provider memory" in report
    assert "target" in report
