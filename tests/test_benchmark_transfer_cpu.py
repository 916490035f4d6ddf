"""The in-memory transfer benchmark completes, verifies, and is deterministic:
the same tree makes the same datagrams and the same calls on every run (what
lets its instruction or call count compare two trees on a noisy machine)."""

from __future__ import annotations

import pytest

from benchmarks import transfer_cpu


def test_the_same_transfer_makes_the_same_datagrams_and_calls() -> None:
    first = transfer_cpu.run(64 * 1024, 1024, calls=True)
    second = transfer_cpu.run(64 * 1024, 1024, calls=True)
    assert first.datagrams == second.datagrams
    assert first.calls == second.calls and first.calls is not None and first.calls > 0
    # 64 one-leaf Blocks, their hash chunk and a few Fetches.
    assert 64 < first.datagrams < 80


def test_larger_blocks_take_fewer_datagrams() -> None:
    small, large = transfer_cpu.run(64 * 1024, 1024), transfer_cpu.run(64 * 1024, 8192)
    assert large.datagrams < small.datagrams
    assert large.calls is None and large.cpu_seconds >= 0.0


def test_main_prints_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert transfer_cpu.main(["--size", "16384", "--calls"]) == 0
    out = capsys.readouterr().out
    assert "datagrams" in out and "Python calls" in out
