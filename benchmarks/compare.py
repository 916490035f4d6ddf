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
moved between runs, the noise a dofpy ratio must be read against.

``--this REV2`` measures revision ``REV2`` (exported the same way) in place of
the working tree, so that a long run is not changed by edits made meanwhile,
and two commits can be compared after the fact.
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
import json, re, sys, trio
import dofpy
from benchmarks import oap_roundtrip, security, transfer
quick = sys.argv[1] == "quick"
rows = [["dofpy imported from", dofpy.__file__, 0.0, ""]]
for name, value, unit in trio.run(oap_roundtrip.run, 500 if quick else 5000):
    rows.append(["OAP round trips", name, value, unit])
for name, value, unit in security.run(quick):
    rows.append(["secure sessions", name, value, unit])
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
    """The median of every figure in both trees, and this tree's over the other's."""
    this, other = labels
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
    out = [f"{'figure':<{width}}  {this:>12}  {other:>12}  {'ratio':>7}  unit"]
    out.append("-" * len(out[0]))
    for section, name in keys:
        ours = values.get((this, section, name))
        theirs = values.get((other, section, name))
        a = statistics.median(ours) if ours else float("nan")
        b = statistics.median(theirs) if theirs else float("nan")
        ratio = a / b if ours and theirs and b else float("nan")
        out.append(
            f"{section + ': ' + name:<{width}}  {a:>12.5g}  {b:>12.5g}  {ratio:>6.3f}x  "
            f"{units[(section, name)]}"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--against", required=True, help="the git revision to compare with")
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
    if args.this is not None and args.this == args.against:
        parser.error("--this and --against name the same revision")
    revision = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", args.against],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", args.this or "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    labels = (head if args.this else f"this ({head})", revision)
    with tempfile.TemporaryDirectory(prefix="dofpy-compare-") as scratch:
        this = REPO if args.this is None else export(head, Path(scratch), "this")
        trees = {labels[0]: this, labels[1]: export(revision, Path(scratch))}
        figures: dict[str, list[list[tuple[str, str, float, str]]]] = {
            label: [] for label in labels
        }
        for round_index in range(args.rounds):
            order = labels if round_index % 2 == 0 else labels[::-1]
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
    print(f"{labels[0]} beside {labels[1]}, medians of {args.rounds} alternating run(s) each")
    print(report(figures, labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
