"""Every ``*_untrusted`` parser and ``probe_*`` reader in dofpy (functions and
methods) has a fuzz target, and every target's seeds run cleanly."""

from __future__ import annotations

import contextlib
import importlib
import re
from pathlib import Path

import pytest

from dofpy.errors import BadPacket
from dofpy_services.update.device_interface import InstallOutcome, Stage
from fuzz.targets import device_agent, session_sequence, transfer_sequence
from fuzz.targets._sequence import MAX_DATAGRAMS, decode_sequence, encode_sequence

ROOT = Path(__file__).resolve().parent.parent
# Modules starting with "_" are the targets' helpers (as the runner skips them).
TARGETS = sorted(
    p.stem for p in (ROOT / "fuzz" / "targets").glob("*.py") if not p.stem.startswith("_")
)


def test_every_untrusted_parser_has_a_fuzz_target() -> None:
    defined = set()
    for path in (ROOT / "dofpy").rglob("*.py"):
        defined |= set(
            re.findall(r"^\s*def (probe_[a-z_]+|[a-z_]+_untrusted)\(", path.read_text(), re.M)
        )
    fuzzed = set()
    for name in TARGETS:
        fuzzed |= set(
            re.findall(
                r"probe_[a-z_]+|[a-z_]+_untrusted",
                (ROOT / "fuzz/targets" / f"{name}.py").read_text(),
            )
        )
    assert defined, "found no untrusted parsers"
    assert defined - fuzzed == set()


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_target_seeds_run(name: str) -> None:
    module = importlib.import_module(f"fuzz.targets.{name}")
    assert module.SEEDS
    for seed in module.SEEDS:
        with contextlib.suppress(BadPacket):
            module.target(seed)


def test_sequence_seeds_replay_deep_into_the_state_machines() -> None:
    # The sequence targets are worth their name only while their seeds still
    # reach an established session and a completed transfer on replay.
    (seed,) = session_sequence.SEEDS
    server, _now = session_sequence.replay(seed)
    assert server.node.peer_identity(session_sequence._CLIENT_ADDR) == session_sequence._CLIENT
    assert server.statistics().node.security.handshakes_completed == 1
    for seed in transfer_sequence.SEEDS:
        assert transfer_sequence.replay(seed)
        # Without the provider's last datagram it does not complete.
        records = [(to, data, round(step * 10)) for to, data, step in decode_sequence(seed)]
        last = max(i for i, (to, _, _) in enumerate(records) if to == 1)
        assert not transfer_sequence.replay(encode_sequence(records[:last]))


def test_device_agent_seeds_replay_whole_updates() -> None:
    # The honest seeds (each device and campaign, and a second campaign
    # after the first) replay to successful updates; the others reach the
    # failure they were recorded with.
    outcomes = [
        [r.outcome for r in device_agent.replay(seed).reports] for seed in device_agent.SEEDS
    ]
    ok, rolled_back, failed = (
        InstallOutcome.SUCCEEDED, InstallOutcome.ROLLED_BACK, InstallOutcome.FAILED,
    )  # fmt: skip
    honest = len(device_agent._HONEST_HEADERS)
    assert outcomes[:honest] == (
        [[ok]] * 8 + [[ok, rolled_back]] * 2 + [[ok, ok]] * 4 + [[ok]] * 8  # the window later
    )
    # The four refused manifests, then a newer image the service does not accept.
    assert outcomes[honest : honest + 5] == [[failed]] * 5


def test_device_agent_with_the_window_later_downloads_ahead_only_on_ab() -> None:
    """Bit 5 of the header: the window opens an hour on. The A/B device's
    plain update (honest services) is downloaded and verified before its
    authorisation; the seed's layout, and the updater's image, are
    authorised first."""
    for header, ahead in ((0x21, True), (0x23, True), (0x20, False), (0x25, False)):
        world = device_agent.run_with_faults(header)
        stages = [e.stage for e in world.updates.progress[device_agent._DEVICE].stages]
        first = stages.index(Stage.TRANSFERRING) < stages.index(Stage.AUTHORISED)
        assert first is ahead, (hex(header), stages)
        assert (Stage.VERIFYING in stages) is ahead, (hex(header), stages)
        assert [r.outcome for r in world.reports] == [InstallOutcome.SUCCEEDED]


def test_sequence_inputs_cut_short_end_the_sequence() -> None:
    whole = encode_sequence([(0, b"ab", 3), (1, b"", 0)])
    assert list(decode_sequence(whole)) == [(0, b"ab", 0.3), (1, b"", 0.0)]
    assert list(decode_sequence(whole[:-1])) == [(0, b"ab", 0.3)]
    assert list(decode_sequence(b"\x00\xff\xff")) == []
    many = encode_sequence([(0, b"x", 1)] * (MAX_DATAGRAMS + 5))
    assert len(list(decode_sequence(many))) == MAX_DATAGRAMS
