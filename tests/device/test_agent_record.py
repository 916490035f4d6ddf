"""The agent's record and its adaptive-transfer source, as the install
report's count of fetched image bytes needs them: the count survives a
reload (and a record written before it existed loads with none), carries
over an assignment of the same campaign again (a retry) but not another
campaign's; the local leaves hand out (and count) only bytes that still
match the hash asked for."""

from __future__ import annotations

import json
from pathlib import Path

from dofpy.transfer.manifest import leaf_hash
from dofpy_services.device.agent_record import RECORD_FILE, AgentRecord, load_record, save_record
from dofpy_services.device.fs import OsFs
from dofpy_services.device.local_leaves import SlotLeaves
from dofpy_services.device.state_file import write_atomically
from dofpy_services.update.device_interface import Assignment


def _assignment(campaign: str) -> Assignment:
    return Assignment(campaign, b"\x01" * 32, "2.0", 20, 0.0, 1e9)


def test_the_fetched_count_survives_a_reload_and_an_older_record_loads(tmp_path: Path) -> None:
    fs = OsFs(tmp_path)
    record = AgentRecord()
    record.remember(_assignment("spring"))
    record.bytes_fetched = 12_345
    save_record(fs, record)
    assert load_record(fs) == record
    older = {
        k: v for k, v in record.__dict__.items() if k not in ("bytes_fetched", "fetched_campaign")
    }
    write_atomically(fs, RECORD_FILE, json.dumps(older).encode())
    loaded = load_record(fs)
    assert (loaded.bytes_fetched, loaded.current_assignment()) == (0, _assignment("spring"))


def test_the_count_carries_over_a_retry_of_the_campaign_only() -> None:
    record = AgentRecord()
    record.remember(_assignment("spring"))
    record.bytes_fetched = 1000
    record.remember(None)  # the report sent
    record.remember(_assignment("spring"))  # assigned again: a retry
    assert record.bytes_fetched == 1000
    record.remember(_assignment("autumn"))
    assert (record.fetched_campaign, record.bytes_fetched) == ("autumn", 0)


def test_local_leaves_hand_out_only_bytes_that_still_match() -> None:
    slot = bytearray(b"a" * 100 + b"b" * 100 + b"c" * 50)
    leaves = SlotLeaves(lambda offset, length: bytes(slot[offset : offset + length]), 250, 100)
    assert leaves.leaf(leaf_hash(b"a" * 100), 100) == b"a" * 100
    slot[100:200] = b"x" * 100  # overwritten since it was indexed (the seed's layout)
    assert leaves.leaf(leaf_hash(b"b" * 100), 100) is None
    assert leaves.leaf(leaf_hash(b"c" * 50), 50) == b"c" * 50
    assert leaves.leaf(leaf_hash(b"c" * 50), 60) is None  # not the length asked for
    assert leaves.leaf(leaf_hash(b"z"), 1) is None
    assert leaves.bytes_copied == 150
