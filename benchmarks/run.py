"""Run the benchmarks and print dofpy beside its peers, measured in one run.

``python -m benchmarks.run [--quick] [--skip SECTION]``. Each section prints
its detail as it finishes; the run ends with one summary table of the headline
figures, each beside its peer. Only same-run ratios mean anything: the
machines are shared and noisy. The output is a report, not a test.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from benchmarks import (
    adaptive,
    campaign_step,
    fleet,
    image,
    oap_roundtrip,
    security,
    transfer,
    version,
)
from benchmarks.summary import Summary

SECTIONS = ("oap", "security", "transfer", "adaptive", "image", "version", "campaign", "fleet")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument(
        "--skip", action="append", choices=SECTIONS, default=[], help="leave a section out"
    )
    args = parser.parse_args(argv)
    summary = Summary()
    count = 500 if args.quick else 5000
    if "oap" not in args.skip:
        print(f"OAP round trips over loopback ({count} lock-step requests each)")
        rows = trio.run(oap_roundtrip.run, count)
        for name, value, unit in rows:
            print(f"  {name:42} {value:12.2f} {unit}")
        rates = {name: value for name, value, _ in rows}
        summary.add(
            "OAP Get round trips, plaintext, lock-step",
            rates["dofpy OAP Get (plaintext)"],
            "round trips/s",
            "raw trio UDP ping-pong",
            rates["raw trio UDP ping-pong"],
        )
    if "security" not in args.skip:
        print("Secure sessions (TEP + AES-256-CCM)")
        rows = security.run(args.quick)
        for name, value, unit in rows:
            print(f"  {name:42} {value:12.2f} {unit}")
        rates = {name: value for name, value, _ in rows}
        summary.add(
            "TEP handshakes over loopback UDP (with the Authenticator)",
            rates["TEP handshakes over loopback UDP"],
            "handshakes/s",
        )
        summary.add(
            "OAP Get round trips in an AES-256-CCM session",
            rates["OAP Get, AES-256-CCM session"],
            "round trips/s",
            "the same, plaintext",
            rates["OAP Get, plaintext"],
        )
    if "transfer" not in args.skip:
        print()
        print(transfer.run(args.quick, summary=summary), flush=True)
    if "adaptive" not in args.skip:
        print()
        print(adaptive.run(args.quick, summary=summary), flush=True)
    if "image" not in args.skip:
        print()
        print(image.run(args.quick, summary=summary), flush=True)
    if "version" not in args.skip:
        print(version.run(args.quick, summary=summary), flush=True)
    if "campaign" not in args.skip:
        print()
        print(campaign_step.run(args.quick, summary=summary), flush=True)
    if "fleet" not in args.skip:
        print()
        print(fleet.run(args.quick, summary=summary), flush=True)
    print()
    print("Summary (one run; every figure beside its peer where one exists)")
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
