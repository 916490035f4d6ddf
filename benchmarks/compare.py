"""This tree's transfer, handshake and round-trip figures beside another
revision's, measured in one run: ``python -m benchmarks.compare --against REV``.

A refactor claims "behaviour and speed unchanged"; on a shared, noisy machine
only figures measured side by side mean anything. This exports ``REV`` (``git
archive``) to a temporary directory, then runs the same benchmark modules
(``oap_roundtrip``, ``security``, ``transfer``) of each tree in its own child
process (the tree first on ``PYTHONPATH``, so its ``dofpy`` is the one
imported), alternating which tree goes first in each round, and prints the
median of each figure for both with their ratio. The peers (raw UDP, TFTP,
HTTP) are measured by both trees too: their ratios show how much the machine
moved between runs, the noise a dofpy ratio must be read against. Each part
starts after a full garbage collection (the same code for both trees: the
child calls the benchmark functions itself), so that where the collector's
next full pass falls does not decide a short part's figure.

``--this REV2`` measures revision ``REV2`` (exported the same way) in place of
the working tree, so that a long run is not changed by edits made meanwhile,
and two commits can be compared after the fact. ``--against`` may be given
more than once: every tree then runs in each round (the order rotating from
round to round), and each other tree gets its column and its ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Runs inside each tree: prints one JSON list of [section, name, value, unit].
_CHILD = r"""
import gc, json, re, sys, trio
import dofpy
from benchmarks import oap_roundtrip, security, transfer
quick = sys.argv[1] == "quick"
rows = [["dofpy imported from", dofpy.__file__, 0.0, ""]]
# A full collection before each measured part: otherwise when the collector's
# next full pass falls (it follows how many objects each tree's imports and
# earlier parts left) decides whether a short part pays for it (25 handshakes
# took 14 ms more with one inside). The parts and sizes are security.run's.
gc.collect()
for name, value, unit in trio.run(oap_roundtrip.run, 500 if quick else 5000):
    rows.append(["OAP round trips", name, value, unit])
handshakes, gets = (50, 500) if quick else (300, 5000)
gc.collect()
sansio = security.sansio_handshakes(handshakes)
gc.collect()
udp = trio.run(security.udp_handshakes, handshakes // 2)
gc.collect()
plain, secure = trio.run(security.get_rates, gets)
for name, value, unit in [
    ("TEP handshakes, sans-IO (both ends + AS)", sansio, "handshakes/s"),
    ("TEP handshakes over loopback UDP", udp, "handshakes/s"),
    ("OAP Get, plaintext", plain, "round trips/s"),
    ("OAP Get, AES-256-CCM session", secure, "round trips/s"),
    ("secure / plaintext ratio", secure / plain, ""),
]:
    rows.append(["secure sessions", name, value, unit])
gc.collect()
section = "transfer"
row = re.compile(
    r"^(?P<name>\S.*?)\s{2,}(?P<mib>[\d.]+)\s+(?P<s>[\d.]+)\s+(?P<mbs>[\d.]+)\s+[\d.]+x"
)
for line in transfer.run(quick).splitlines():
    found = row.match(line)
    if found:
        rows.append([section, found["name"].strip(), float(found["mbs"]), "MB/s"])
    elif line and not line.startswith(("peer", "-", "target", "(")) and "skipped" not in line:
        section = line.split(",")[0].split("(")[0].strip()[:48]
print("ROWS " + json.dumps(rows))
"""


def export(revision: str, directory: Path, name: str = "tree") -> Path:
    """``revision``'s files in ``directory / name`` (no .git): the tree to import from."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision],
        check=True,
        capture_output=True,
    ).stdout
    tree = directory / name
    tree.mkdir()
    with tempfile.TemporaryFile() as spool:
        spool.write(archive)
        spool.seek(0)
        with tarfile.open(fileobj=spool) as tar:
            tar.extractall(tree, filter="data")
    return tree


def measure(tree: Path, quick: bool) -> list[tuple[str, str, float, str]]:
    """One run of the child benchmarks in ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, "quick" if quick else "full"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("ROWS ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"benchmarks in {tree} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
        )
    return [tuple(row) for row in json.loads(lines[-1][5:])]  # type: ignore[misc]


def report(
    figures: dict[str, list[list[tuple[str, str, float, str]]]], labels: Sequence[str]
) -> str:
    """The median of every figure in every tree, and this tree's (the first
    label's) over each other tree's."""
    others = labels[1:]
    keys: list[tuple[str, str]] = []
    values: dict[tuple[str, str, str], list[float]] = {}
    units: dict[tuple[str, str], str] = {}
    for label, runs in figures.items():
        for run in runs:
            for section, name, value, unit in run:
                if section == "dofpy imported from":
                    continue
                key = (section, name)
                if key not in keys:
                    keys.append(key)
                units[key] = unit
                values.setdefault((label, section, name), []).append(value)
    width = max(len(f"{s}: {n}") for s, n in keys)
    header = f"{'figure':<{width}}  " + "  ".join(f"{label:>12}" for label in labels)
    header += "".join(f"  {'/ ' + other:>10}" for other in others) + "  unit"
    out = [header, "-" * len(header)]
    for section, name in keys:
        medians = []
        for label in labels:
            found = values.get((label, section, name))
            medians.append(statistics.median(found) if found else float("nan"))
        ours = medians[0]
        ratios = [ours / theirs if theirs else float("nan") for theirs in medians[1:]]
        out.append(
            f"{section + ': ' + name:<{width}}  "
            + "  ".join(f"{m:>12.5g}" for m in medians)
            + "".join(f"  {r:>9.3f}x" for r in ratios)
            + f"  {units[(section, name)]}"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--against",
        required=True,
        action="append",
        help="a git revision to compare with (may be given more than once)",
    )
    parser.add_argument(
        "--this",
        default=None,
        help="measure this git revision instead of the working tree",
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs of each tree (default 2)")
    parser.add_argument("--quick", action="store_true", help="the benchmarks' quick sizes")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    def short(revision: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", revision],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    revisions = [short(revision) for revision in args.against]
    head = short(args.this or "HEAD")
    if len(set(revisions)) < len(revisions) or (args.this is not None and head in revisions):
        parser.error("--this and --against name the same revision twice")
    labels = (head if args.this else f"this ({head})", *revisions)
    with tempfile.TemporaryDirectory(prefix="dofpy-compare-") as scratch:
        this = REPO if args.this is None else export(head, Path(scratch), "this")
        trees = {labels[0]: this}
        for revision in revisions:
            trees[revision] = export(revision, Path(scratch), revision)
        figures: dict[str, list[list[tuple[str, str, float, str]]]] = {
            label: [] for label in labels
        }
        for round_index in range(args.rounds):
            # Rotated every round (for two trees: alternating which goes first).
            shift = round_index % len(labels)
            order = labels[shift:] + labels[:shift]
            for label in order:
                print(
                    f"round {round_index + 1}/{args.rounds}: {label}", file=sys.stderr, flush=True
                )
                run = measure(trees[label], args.quick)
                imported = next(
                    name for section, name, _, _ in run if section == "dofpy imported from"
                )
                if not imported.startswith(str(trees[label])):
                    raise RuntimeError(f"{label} imported dofpy from {imported}")
                figures[label].append(run)
    print(
        f"{labels[0]} beside {', '.join(labels[1:])}, medians of {args.rounds} rotating run(s) each"
    )
    print(report(figures, labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
