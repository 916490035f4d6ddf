"""Run the fuzz targets: ``python -m fuzz.run --seconds N [--target NAME] [--runs N]``.

Each module in ``fuzz/targets/`` (name not starting with ``_``) defines
``SEEDS: tuple[bytes, ...]`` (valid encodings) and ``target(data: bytes) ->
None``, which hands ``data`` to one ``*_untrusted`` decoder. ``BadPacket`` out
of the target is the decoder doing its job; any other exception is a crash.

With atheris installed, each target runs in its own subprocess under atheris
(libFuzzer, coverage-guided, dofpy's modules instrumented on import), starting
from the seeds, for ``--seconds`` seconds. Without atheris (or with ``--mode
fallback``), a seeded random mutation loop (bit flips, byte changes,
truncation, insertion, deletion, duplication, splicing of seeds and of inputs
that parsed) runs in this process for the same time. A target stops at its
first crash; the crashing input is printed in hex with its traceback.

Exit status: 0 when no target crashed, 1 when one did, 2 for a usage error
(unknown target, a target module without ``SEEDS`` or ``target``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

TARGETS_DIR = Path(__file__).resolve().parent / "targets"
REPO_ROOT = Path(__file__).resolve().parent.parent
CRASH_MARKER = "CRASH-INPUT-HEX:"
DEFAULT_MAX_LEN = 4096
_CORPUS_LIMIT = 1000  # inputs kept by the fallback loop (seeds plus inputs that parsed)
_CHILD_GRACE_SECONDS = 120  # startup and instrumentation time allowed to an atheris child

Target = Callable[[bytes], None]


class UsageError(Exception):
    """The command line or a target module is unusable."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What fuzzing one target gave."""

    name: str
    mode: str
    executions: int
    crashed: bool
    seconds: float
    report: str = ""  # crashing input (hex) and traceback, when crashed


# ----------------------------------------------------------------- targets


def discover(targets_dir: Path) -> list[str]:
    """Names of the target modules in ``targets_dir``, sorted."""
    if not targets_dir.is_dir():
        raise UsageError(f"no targets directory: {targets_dir}")
    return sorted(
        path.stem
        for path in targets_dir.glob("*.py")
        if not path.name.startswith("_") and path.is_file()
    )


def load_target(targets_dir: Path, name: str) -> tuple[ModuleType, tuple[bytes, ...], Target]:
    """Import target ``name`` and check its ``SEEDS`` and ``target``."""
    path = targets_dir / f"{name}.py"
    if not path.is_file():
        raise UsageError(f"no fuzz target {name!r} in {targets_dir}")
    if targets_dir.resolve() == TARGETS_DIR:
        module = importlib.import_module(f"fuzz.targets.{name}")
    else:
        spec = importlib.util.spec_from_file_location(_module_name(name), path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    seeds = getattr(module, "SEEDS", None)
    function = getattr(module, "target", None)
    if not isinstance(seeds, tuple) or not all(isinstance(seed, bytes) for seed in seeds):
        raise UsageError(f"fuzz target {name!r}: SEEDS must be a tuple of bytes")
    if not callable(function):
        raise UsageError(f"fuzz target {name!r}: no target(data) function")
    return module, seeds, function


def _module_name(name: str) -> str:
    return f"_fuzz_target_{name}"


def _is_bad_packet() -> type[BaseException]:
    # Imported late: the atheris child must import dofpy under instrumentation.
    from dofpy.errors import BadPacket  # noqa: PLC0415

    return BadPacket


def _crash_report(data: bytes, error: BaseException) -> str:
    formatted = "".join(traceback.format_exception(error))
    return f"{CRASH_MARKER} {data.hex()}\ninput length: {len(data)}\n{formatted}"


# --------------------------------------------------------- fallback mutator


def mutate(rng: random.Random, corpus: Sequence[bytes], max_len: int) -> bytes:
    """One to four random mutations of a random corpus entry, at most ``max_len`` bytes."""
    data = bytearray(rng.choice(corpus))
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(8)
        if choice == 0 and data:  # flip one bit
            position = rng.randrange(len(data) * 8)
            data[position >> 3] ^= 0x80 >> (position & 7)
        elif choice == 1 and data:  # set a byte to a boundary or random value
            value = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)))
            data[rng.randrange(len(data))] = value
        elif choice == 2 and data:  # truncate
            del data[rng.randrange(len(data)) :]
        elif choice == 3:  # insert random bytes
            position = rng.randint(0, len(data))
            data[position:position] = rng.randbytes(rng.randint(1, 8))
        elif choice == 4 and data:  # delete a range
            start = rng.randrange(len(data))
            del data[start : start + rng.randint(1, 8)]
        elif choice == 5 and data:  # duplicate a chunk in place
            start = rng.randrange(len(data))
            chunk = data[start : start + rng.randint(1, 16)]
            data[start:start] = chunk
        elif choice == 6:  # splice: our prefix, another entry's suffix
            other = rng.choice(corpus)
            data = data[: rng.randint(0, len(data))] + other[rng.randint(0, len(other)) :]
        elif choice == 7 and data:  # add or subtract a little from a byte
            position = rng.randrange(len(data))
            data[position] = (data[position] + rng.choice((-2, -1, 1, 2))) & 0xFF
    return bytes(data[:max_len])


def fuzz_fallback(
    name: str,
    seeds: tuple[bytes, ...],
    function: Target,
    *,
    seconds: float,
    runs: int | None,
    seed: int,
    max_len: int,
) -> Outcome:
    """Random mutation without coverage feedback: seeds first, then mutants.

    Inputs that parse (the target returns) join the corpus, as a crude stand-in
    for coverage: they reach deeper than the ones the decoder rejects early.
    """
    bad_packet = _is_bad_packet()
    rng = random.Random(seed)
    corpus: list[bytes] = list(seeds) or [b""]
    started = time.monotonic()
    deadline = started + seconds
    executions = 0

    def attempt(data: bytes) -> Outcome | None:
        nonlocal executions
        executions += 1
        try:
            function(data)
        except bad_packet:
            return None
        except Exception as error:
            return Outcome(
                name,
                "fallback",
                executions,
                crashed=True,
                seconds=time.monotonic() - started,
                report=_crash_report(data, error),
            )
        if len(corpus) < _CORPUS_LIMIT:
            corpus.append(data)
        else:
            corpus[rng.randrange(len(seeds), _CORPUS_LIMIT)] = data
        return None

    for data in seeds:
        if runs is not None and executions >= runs:
            break
        crash = attempt(data)
        if crash is not None:
            return crash
    while runs is None or executions < runs:
        if executions % 64 == 0 and time.monotonic() >= deadline:
            break
        crash = attempt(mutate(rng, corpus, max_len))
        if crash is not None:
            return crash
    return Outcome(name, "fallback", executions, False, time.monotonic() - started)


# ---------------------------------------------------------- atheris mode


def atheris_available() -> bool:
    """Whether atheris can be imported."""
    return importlib.util.find_spec("atheris") is not None


def fuzz_atheris(
    name: str,
    seeds: tuple[bytes, ...],
    targets_dir: Path,
    *,
    seconds: float,
    runs: int | None,
    seed: int,
    max_len: int,
    artifact_dir: Path | None,
) -> Outcome:
    """Run target ``name`` under atheris in a subprocess, seeds as its corpus."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as scratch:
        corpus = Path(scratch) / "corpus"
        corpus.mkdir()
        for index, data in enumerate(seeds):
            (corpus / f"seed-{index:04d}").write_bytes(data)
        artifacts = artifact_dir if artifact_dir is not None else Path(scratch)
        artifacts.mkdir(parents=True, exist_ok=True)
        libfuzzer_args = [
            str(corpus),
            f"-max_total_time={max(1, math.ceil(seconds))}",
            f"-max_len={max_len}",
            "-timeout=10",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}{os.sep}",
            f"-seed={seed}",
        ]
        if runs is not None:
            libfuzzer_args.append(f"-runs={runs}")
        command = [
            sys.executable,
            "-m",
            "fuzz.run",
            "--child",
            name,
            "--targets-dir",
            str(targets_dir),
            "--",
            *libfuzzer_args,
        ]
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")])
        )
        try:
            finished = subprocess.run(
                command,
                capture_output=True,
                text=True,
                errors="replace",
                env=environment,
                cwd=scratch,
                timeout=seconds + _CHILD_GRACE_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as expired:
            output = _text(expired.stdout) + _text(expired.stderr)
            return Outcome(
                name,
                "atheris",
                _executions(output),
                crashed=True,
                seconds=time.monotonic() - started,
                report=f"atheris child did not finish in time\n{_tail(output)}",
            )
    output = finished.stdout + finished.stderr
    crashed = finished.returncode != 0
    report = ""
    if crashed:
        marker = output.find(CRASH_MARKER)
        report = output[marker:] if marker >= 0 else _tail(output)
        report = f"atheris exit status {finished.returncode}\n{report}"
    return Outcome(
        name, "atheris", _executions(output), crashed, time.monotonic() - started, report
    )


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _tail(output: str, lines: int = 40) -> str:
    return "\n".join(output.splitlines()[-lines:])


def _executions(output: str) -> int:
    final = re.findall(r"stat::number_of_executed_units:\s*(\d+)", output)
    if final:
        return int(final[-1])
    progress = re.findall(r"^#(\d+)\s", output, flags=re.MULTILINE)
    return int(progress[-1]) if progress else 0


def child_main(name: str, targets_dir: Path, libfuzzer_args: list[str]) -> None:
    """The atheris subprocess: instrument dofpy and the target, then fuzz."""
    import atheris  # noqa: PLC0415

    with atheris.instrument_imports(include=["dofpy", "fuzz.targets"]):
        bad_packet = _is_bad_packet()
        module, _, function = load_target(targets_dir, name)
    if not module.__name__.startswith("fuzz.targets."):
        # Loaded from a file path, past the import hook: instrument the entry point.
        function = atheris.instrument_func(function)

    def test_one_input(data: bytes) -> None:
        try:
            function(data)
        except bad_packet:
            return
        except Exception as error:
            sys.stderr.write(_crash_report(data, error))
            sys.stderr.flush()
            raise

    atheris.Setup([sys.argv[0], *libfuzzer_args], test_one_input)
    atheris.Fuzz()


# ------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fuzz.run", description="Fuzz dofpy's *_untrusted decoders."
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="time per target (default 10)")
    parser.add_argument("--target", action="append", help="fuzz only this target (repeatable)")
    parser.add_argument("--runs", type=int, help="at most this many executions per target")
    parser.add_argument(
        "--mode",
        choices=("auto", "atheris", "fallback"),
        default="auto",
        help="auto: atheris when installed, else the fallback mutator",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN)
    parser.add_argument("--targets-dir", type=Path, default=TARGETS_DIR)
    parser.add_argument("--artifact-dir", type=Path, help="keep crashing inputs here")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("libfuzzer_args", nargs="*", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Fuzz the selected targets; returns the exit status."""
    arguments = _parser().parse_args(argv)
    targets_dir: Path = arguments.targets_dir.resolve()
    if arguments.child is not None:
        child_main(arguments.child, targets_dir, arguments.libfuzzer_args)
        return 0
    try:
        return _run(arguments, targets_dir)
    except UsageError as error:
        print(f"fuzz: {error}", file=sys.stderr)
        return 2


def _run(arguments: argparse.Namespace, targets_dir: Path) -> int:
    if arguments.seconds <= 0 or (arguments.runs is not None and arguments.runs < 1):
        raise UsageError("--seconds must be positive and --runs at least 1")
    if arguments.max_len < 1:
        raise UsageError("--max-len must be at least 1")
    names = discover(targets_dir)
    if arguments.list:
        print("\n".join(names))
        return 0
    if arguments.target:
        unknown = sorted(set(arguments.target) - set(names))
        if unknown:
            raise UsageError(f"unknown target(s) {', '.join(unknown)}; have: {', '.join(names)}")
        names = [name for name in names if name in arguments.target]
    if not names:
        print(f"fuzz: no targets in {targets_dir}")
        return 0
    mode = arguments.mode
    if mode == "auto":
        mode = "atheris" if atheris_available() else "fallback"
    elif mode == "atheris" and not atheris_available():
        raise UsageError("atheris is not installed (pip install atheris)")
    outcomes = []
    for name in names:
        _, seeds, function = load_target(targets_dir, name)
        if mode == "atheris":
            outcome = fuzz_atheris(
                name,
                seeds,
                targets_dir,
                seconds=arguments.seconds,
                runs=arguments.runs,
                seed=arguments.seed,
                max_len=arguments.max_len,
                artifact_dir=arguments.artifact_dir,
            )
        else:
            outcome = fuzz_fallback(
                name,
                seeds,
                function,
                seconds=arguments.seconds,
                runs=arguments.runs,
                seed=arguments.seed,
                max_len=arguments.max_len,
            )
            if outcome.crashed and arguments.artifact_dir is not None:
                _save_fallback_crash(arguments.artifact_dir, name, outcome)
        outcomes.append(outcome)
        print(
            f"fuzz target {name}: mode={outcome.mode} executions={outcome.executions} "
            f"crashes={int(outcome.crashed)} seconds={outcome.seconds:.1f}",
            flush=True,
        )
        if outcome.crashed:
            print(outcome.report, flush=True)
    crashed = [outcome.name for outcome in outcomes if outcome.crashed]
    print(
        f"fuzz: {len(outcomes)} target(s), {len(crashed)} crashed"
        + (f": {', '.join(crashed)}" if crashed else "")
    )
    return 1 if crashed else 0


def _save_fallback_crash(directory: Path, name: str, outcome: Outcome) -> None:
    match = re.search(rf"{CRASH_MARKER} ([0-9a-f]*)", outcome.report)
    if match is not None:
        directory.mkdir(parents=True, exist_ok=True)
        data = bytes.fromhex(match.group(1))
        (directory / f"crash-{name}-{data.hex()[:40] or 'empty'}").write_bytes(data)


if __name__ == "__main__":
    sys.exit(main())
