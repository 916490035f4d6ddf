#!/usr/bin/env bash
# What a user of the package gets: build the wheel, install it into a clean
# virtual environment (dependencies from the package index), and run the
# examples' driver with that environment's Python from a folder outside the
# source tree, with no PYTHONPATH, so nothing in the checkout is importable:
# only the installed dofpy (and its dofpy command) can make the examples pass.
#
#   tools/wheel_check.sh            # PYTHON=... picks the interpreter that builds
#
# Exit status 0 only when the wheel builds, installs and runs every example.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dofpy-wheel-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
unset PYTHONPATH
started=$SECONDS

echo "# build the wheel"
# From the sdist (python -m build makes both, the wheel from the unpacked
# sdist): what an index serves, and no build/ left in the checkout whose stale
# files could slip into a later wheel.
"$PYTHON" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log"; exit 1; }
wheel=("$WORK"/dist/dofpy-*.whl)
echo "built ${wheel[0]##*/}"

echo "# install it into a clean virtual environment"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${wheel[0]}"

cd "$WORK"
# The installed package, not the checkout, is what the examples import.
"$WORK/venv/bin/python" - "$ROOT" <<'PY'
import sys
from pathlib import Path

import dofpy

root = Path(sys.argv[1]).resolve()
location = Path(dofpy.__file__).resolve()
assert root not in location.parents, f"dofpy imported from the checkout: {location}"
print(f"dofpy {dofpy.__version__} from {location.parent}")
PY
"$WORK/venv/bin/dofpy" --version

echo "# run the examples"
"$WORK/venv/bin/python" "$ROOT/examples/run_all.py"
echo "wheel check passed ($((SECONDS - started)) s)"
