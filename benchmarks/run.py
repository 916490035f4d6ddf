"""Run the benchmarks and print dofpy beside its peers, measured in one run.

``python -m benchmarks.run [--quick]``. Only same-run ratios mean anything: the
machines are shared and noisy. The output is a report, not a test.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from benchmarks import adaptive, image, oap_roundtrip, security, transfer, version


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args(argv)
    count = 500 if args.quick else 5000
    print(f"OAP round trips over loopback ({count} lock-step requests each)")
    for name, value, unit in trio.run(oap_roundtrip.run, count):
        print(f"  {name:42} {value:12.2f} {unit}")
    print("Secure sessions (TEP + AES-256-CCM)")
    for name, value, unit in security.run(args.quick):
        print(f"  {name:42} {value:12.2f} {unit}")
    print()
    print(transfer.run(args.quick), flush=True)
    print()
    print(adaptive.run(args.quick), flush=True)
    print()
    print(image.run(args.quick), flush=True)
    print(version.run(args.quick), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
