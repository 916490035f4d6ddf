"""Shared pieces of the benchmarks: results, timing, socket buffers and the report table.

Only ratios between figures measured in the same run mean anything (the machines are shared
and noisy), so the table prints every figure beside its ratio to a baseline of the same run,
and each target is a ratio checked against a floor.
"""

from __future__ import annotations

import selectors
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

# Throughput is reported in MB/s with MB = 10**6 bytes (what curl and most tools print).
MEGABYTE = 1_000_000


@dataclass(frozen=True, slots=True)
class Result:
    """One measured transfer: ``nbytes`` of payload moved in ``seconds`` of wall-clock time.

    ``extra`` holds figures particular to a peer (retransmissions, drops, block size...).
    """

    name: str
    nbytes: int
    seconds: float
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        """Throughput in MB/s (10**6 bytes per second); 0 for a zero-length run."""
        if self.seconds <= 0:
            return 0.0
        return self.nbytes / self.seconds / MEGABYTE


@dataclass(frozen=True, slots=True)
class Target:
    """A goal stated as a ratio: ``subject`` throughput >= ``min_ratio`` x ``reference``."""

    subject: str
    reference: str
    min_ratio: float


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """The outcome of one Target in one run; ``ratio`` is None if either side is missing."""

    target: Target
    ratio: float | None

    @property
    def met(self) -> bool | None:
        """True/False when both figures were measured, None when one of them was not."""
        if self.ratio is None:
            return None
        return self.ratio >= self.target.min_ratio


@dataclass(slots=True)
class Stopwatch:
    """Wall-clock seconds measured with ``time.perf_counter`` by :func:`stopwatch`."""

    start: float = 0.0
    seconds: float = 0.0


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """Time the body of a ``with`` block; the elapsed seconds are set when it exits."""
    watch = Stopwatch(start=time.perf_counter())
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - watch.start


def set_receive_buffer(sock: socket.socket, nbytes: int) -> int:
    """Ask for a receive buffer of at least ``nbytes``; return what the kernel granted.

    Linux caps SO_RCVBUF at ``net.core.rmem_max``; as root SO_RCVBUFFORCE passes the cap, so
    try it when the plain request fell short (a burst larger than the buffer is silently
    dropped and stalls a lock-step peer for a whole timeout).
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, nbytes)
    # Linux reports twice the requested size (it counts its own bookkeeping).
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if granted < nbytes and force is not None:
        with suppress(OSError):  # not privileged: keep what SO_RCVBUF gave
            sock.setsockopt(socket.SOL_SOCKET, force, nbytes)
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return granted


def read_first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """Read a child's first line of output without hanging if it dies or never prints."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise RuntimeError(f"{process.args!r} printed nothing within {timeout} s")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"{process.args!r} exited early (status {process.wait()})")
    return line


@contextmanager
def serving_process(command: Sequence[str], start_timeout: float = 10.0) -> Iterator[str]:
    """Run a server child for the duration of the block; yield its first line of output.

    The child must print one line (typically its address) once it is ready. It is terminated
    when the block ends, and killed if it does not exit promptly.
    """
    process = subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield read_first_line(process, start_timeout)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def check_targets(results: Sequence[Result], targets: Sequence[Target]) -> list[TargetCheck]:
    """Evaluate every target against the results of one run, by result name."""
    by_name = {result.name: result for result in results}
    checks = []
    for target in targets:
        subject = by_name.get(target.subject)
        reference = by_name.get(target.reference)
        ratio = None
        if subject is not None and reference is not None and reference.mb_per_s > 0:
            ratio = subject.mb_per_s / reference.mb_per_s
        checks.append(TargetCheck(target, ratio))
    return checks


def _format_extra(extra: Mapping[str, object]) -> str:
    parts = []
    for key, value in extra.items():
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def format_table(
    results: Sequence[Result],
    baseline: str | None = None,
    targets: Sequence[Target] = (),
    skipped: Mapping[str, str] | None = None,
) -> str:
    """Render results as a text table: size, seconds, MB/s, ratio to ``baseline``, extras.

    ``baseline`` names one of the results (default: the first). ``skipped`` maps the names of
    peers that did not run to the reason, and ``targets`` adds one line per target saying
    whether it was met in this run.
    """
    lines: list[str] = []
    if results:
        base = next((r for r in results if r.name == baseline), results[0])
        width = max(len("peer"), *(len(r.name) for r in results))
        header = f"{'peer':<{width}}  {'MiB':>8}  {'seconds':>8}  {'MB/s':>9}  {'x ' + base.name}"
        lines.append(header)
        lines.append("-" * len(header))
        for result in results:
            ratio = result.mb_per_s / base.mb_per_s if base.mb_per_s > 0 else float("nan")
            lines.append(
                f"{result.name:<{width}}  {result.nbytes / 2**20:>8.2f}  {result.seconds:>8.3f}"
                f"  {result.mb_per_s:>9.2f}  {ratio:>7.3f}x  {_format_extra(result.extra)}".rstrip()
            )
    for name, reason in (skipped or {}).items():
        lines.append(f"{name}: skipped ({reason})")
    for check in check_targets(results, targets):
        target = check.target
        goal = f"{target.subject} >= {target.min_ratio:g} x {target.reference}"
        if check.ratio is None:
            lines.append(f"target {goal}: not measured")
        else:
            verdict = "met" if check.met else "NOT met"
            lines.append(f"target {goal}: {check.ratio:.2f}x, {verdict}")
    return "\n".join(lines)
