"""Memory of a provider (and its requestor) serving transfer after transfer.

``python -m benchmarks.transfer_memory [--count N] [--checkpoint M]``: one
provider serves one 4 KiB object to one requestor ``N`` times in a row on the
simulator (:class:`dofpy.testing.transfer.SequentialTransfers`), and the
memory traced (``tracemalloc``, after a collection) is printed after ``M``
transfers and after ``N``, with the sizes of the tables that once grew with
every transfer and the heap entries one ``get_timer`` visits. Bounded state
shows as equal figures at ``M`` and ``N``. The output is a report, not a test
(``tests/transfer/test_bounds.py`` asserts the bounds on a smaller count).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from collections.abc import Sequence

from dofpy.testing.transfer import SequentialTransfers


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _line(run: SequentialTransfers, base: int) -> str:
    provider, requestor = run.provider, run.requestor
    before = requestor._deadlines.visited
    requestor.get_timer()
    visited = requestor._deadlines.visited - before
    return (
        f"{run.completed:>9,} transfers  {(_traced() - base) / 1024:10.1f} KiB traced  "
        f"senders={len(provider._senders)} receivers={len(requestor._receivers)} "
        f"finished kept={len(requestor._finished)} "
        f"deadline entries={len(requestor._deadlines._heap)} "
        f"get_timer visited={visited}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--checkpoint", type=int, default=1_000)
    args = parser.parse_args(argv)
    if not 0 < args.checkpoint <= args.count:
        parser.error("need 0 < --checkpoint <= --count")
    run = SequentialTransfers()
    run.run(10)  # warm up: lazily built codecs, caches, first Retry and token
    tracemalloc.start()
    base = _traced()
    run.run(args.checkpoint - 10 if args.checkpoint > 10 else 0)
    print(_line(run, base), flush=True)
    run.run(args.count - run.completed)
    print(_line(run, base), flush=True)
    stats = run.provider.statistics()
    print(f"provider: fetches_received={stats.fetches_received} blocks_sent={stats.blocks_sent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
