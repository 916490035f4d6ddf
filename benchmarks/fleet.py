"""Fleet updates per minute, and per provider core: the demo's whole
process (``dofpy_services.fleet.demo``: real daemons, real agents, 2% loss,
power cuts, offline devices) on N devices, measured end to end.

``python -m benchmarks.fleet [--devices N]``. The figure per provider core is
the devices updated per minute of CPU time of the Image provider and its
relays (their processes' user and system time, from /proc): what one
provider core sustains while everything else (the fleet itself, the
Authenticator, Version and Update) shares the same machine. No peer runs
here (hawkBit, Mender and RAUC need their own servers and device clients);
the figure is dofpy's own, for sizing (docs/operations.md, "Scaling a
fleet")."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.summary import Summary
from dofpy_services.fleet.demo import DemoOptions, run_demo

__all__ = ["run"]


def run(quick: bool, summary: Summary | None = None, devices: int | None = None) -> str:
    count = devices if devices is not None else (150 if quick else 1000)
    with tempfile.TemporaryDirectory(prefix="dofpy-bench-fleet-") as folder:
        outcome = run_demo(
            DemoOptions(devices=count, report=Path(folder) / "report.html", quiet=True)
        )
    fleet = outcome.fleet
    succeeded = sum(1 for d in fleet.devices if d.outcome == "succeeded")
    lines = [
        f"Fleet updates (the demo's process: {count} devices, 1 MiB image, 2% loss, faults)",
        f"  {'campaign':42} {outcome.campaign_state:>12}",
        f"  {'devices updated':42} {succeeded:12d}",
        f"  {'updates per minute (first start to last end)':42} {fleet.updates_per_minute():12.1f}",
        f"  {'updates per minute per provider core':42}"
        f" {outcome.updates_per_provider_core_minute:12.1f}",
        f"  {'demo run time':42} {outcome.seconds:12.1f} s",
        "  service CPU: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in outcome.cpu.items()),
    ]
    if outcome.mismatches:
        lines.append(f"  {len(outcome.mismatches)} devices differ from their records")
    if summary is not None:
        summary.add(
            f"fleet updates per minute per provider core ({count} devices)",
            outcome.updates_per_provider_core_minute,
            "updates/min",
        )
        summary.add(
            f"fleet updates per minute, whole process ({count} devices)",
            fleet.updates_per_minute(),
            "updates/min",
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(run(args.quick, devices=args.devices))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
