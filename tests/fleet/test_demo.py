"""``make demo``'s code path on a small fleet (issue 15: CI runs a smaller
fleet through the same code as the demo): the services as real daemon
processes, the domain, keys, trust root and signed image made by the
``dofpy`` commands, three classes on three versions, lossy links, power
cuts, offline devices and one device failing its new image's health check;
the campaign planned, approved, run in waves and reported, and every
device checked against its records."""

from __future__ import annotations

from pathlib import Path

from dofpy_services.fleet.demo import CLASSES, DemoOptions, run_demo

DEVICES = 45  # 5 of each class and version: 15 of the campaign's class


def test_the_demo_reprograms_a_small_faulty_fleet_end_to_end(tmp_path: Path) -> None:
    outcome = run_demo(
        DemoOptions(
            devices=DEVICES,
            image_size=64 * 1024,
            loss=0.02,
            power_cuts=0.1,
            offline=0.05,
            unhealthy=1,
            poll_interval=1.0,
            silence_timeout=8.0,
            canary_share=0.4,
            # Which devices the canary holds follows the campaign's digest
            # (its terms carry the start time): with 15 targets it may hold
            # the unhealthy and both offline ones. Thresholds no such wave
            # crosses keep the test about the process, not the draw.
            success_threshold=0.3,
            failure_threshold=0.7,
            deadline="20s",
            duration=240.0,
            directory=tmp_path / "demo",
            report=tmp_path / "report.html",
            quiet=True,
        )
    )
    fleet = outcome.fleet
    assert len(fleet.devices) == DEVICES
    assert outcome.mismatches == []
    assert outcome.campaign_state == "completed"
    by_state = outcome.devices_by_state
    # The campaign's population: the first class, all on older versions.
    assert sum(by_state.values()) == DEVICES // len(CLASSES)
    # The unhealthy device rolled back; offline ones timed out; the rest
    # (power cuts survived) succeeded.
    offline_targets = by_state.get("timed-out", 0)
    assert by_state.get("rolled-back", 0) + by_state.get("failed", 0) == 1
    assert by_state["succeeded"] == DEVICES // len(CLASSES) - 1 - offline_targets
    assert fleet.dropped > 0
    assert sum(d.power_cuts for d in fleet.devices) >= 1
    assert [d.error for d in fleet.devices if d.error] == []
    html = (tmp_path / "report.html").read_text()
    assert "<svg" in html and "sensor-2.0" in html
    assert outcome.ok
