"""The audit trail: written by the service, verified end to end; a changed,
removed, reordered or inserted entry, a spliced chain, a forged approval and
a truncated tail (against a checkpoint) are each detected."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.image import Party
from dofpy_services.update.approvals import sign_approval
from dofpy_services.update.audit import (
    GENESIS,
    AuditEntry,
    AuditLog,
    TamperKind,
    TrailTampered,
    decode_audit_entry_untrusted,
    entry_hash,
    read_trail,
    sign_entry,
    verify_trail,
)
from tests.image.signing_fixtures import NOW, Keys, ed25519_key, make_root
from tests.update.test_approvals import terms

KEYS = Keys.make()
ROOT = make_root(KEYS)
SERVICE = ed25519_key(50)


def write_trail(path: Path) -> tuple[list[bytes], bytes]:
    """A five-entry trail and a checkpoint after the fifth."""
    log = AuditLog(path, SERVICE)
    campaign = terms()
    log.append(now=NOW, actor="alice", action="create", payload={"campaign": campaign.name})
    for index, (key, party) in enumerate(
        [(KEYS.m1, Party.MANUFACTURER), (KEYS.sp, Party.SERVICE_PROVIDER)]
    ):
        approval = sign_approval(campaign, key, party, now=NOW + index)
        log.append(
            now=NOW + 1 + index,
            actor=party.label,
            action="approve",
            payload={"campaign": campaign.digest},
            approval=approval,
        )
    log.append(now=NOW + 10, actor="alice", action="start")
    log.append(now=NOW + 20, actor="engine", action="wave", payload={"wave": 0, "devices": 10})
    return read_trail(path), log.checkpoint(now=NOW + 21)


def test_an_untouched_trail_verifies(tmp_path: Path) -> None:
    trail, checkpoint = write_trail(tmp_path / "audit.log")
    report = verify_trail(trail, SERVICE.public_key, checkpoint=checkpoint, root=ROOT)
    assert [e.action for e in report.entries] == ["create", "approve", "approve", "start", "wave"]
    assert [a.party for a in report.approvals] == [Party.MANUFACTURER, Party.SERVICE_PROVIDER]
    assert report.head == entry_hash(trail[-1])


def expect(kind: TamperKind, trail: list[bytes], **kw: object) -> TrailTampered:
    with pytest.raises(TrailTampered) as caught:
        verify_trail(trail, SERVICE.public_key, **kw)  # type: ignore[arg-type]
    assert caught.value.kind is kind, str(caught.value)
    return caught.value


def test_a_changed_entry_is_detected(tmp_path: Path) -> None:
    trail, _ = write_trail(tmp_path / "audit.log")
    changed = trail[4].replace(b"engine", b"mallet")
    assert changed != trail[4]
    error = expect(TamperKind.CHANGED, [*trail[:4], changed])
    assert error.index == 4


def test_a_removed_entry_is_detected(tmp_path: Path) -> None:
    trail, _ = write_trail(tmp_path / "audit.log")
    error = expect(TamperKind.OUT_OF_SEQUENCE, [*trail[:1], *trail[2:]])
    assert error.index == 1


def test_reordered_entries_are_detected(tmp_path: Path) -> None:
    trail, _ = write_trail(tmp_path / "audit.log")
    expect(TamperKind.OUT_OF_SEQUENCE, [trail[0], trail[2], trail[1], *trail[3:]])


def test_an_inserted_entry_is_detected(tmp_path: Path) -> None:
    trail, _ = write_trail(tmp_path / "audit.log")
    # A copy of a real, validly signed entry replayed in the middle.
    expect(TamperKind.OUT_OF_SEQUENCE, [*trail[:3], trail[1], *trail[3:]])
    # An entry signed by another key, with the right sequence and chain.
    forged = sign_entry(
        AuditEntry(3, entry_hash(trail[2]), NOW + 5, "mallet", "start"), ed25519_key(60)
    )
    expect(TamperKind.CHANGED, [*trail[:3], forged, *trail[3:]])


def test_a_spliced_chain_is_detected(tmp_path: Path) -> None:
    trail, _ = write_trail(tmp_path / "one.log")
    # An entry 3 the service signed for another trail: signed, in sequence, wrong predecessor.
    spliced = sign_entry(AuditEntry(3, GENESIS, NOW, "alice", "start"), SERVICE)
    error = expect(TamperKind.BROKEN_CHAIN, [*trail[:3], spliced, *trail[4:]])
    assert error.index == 3


def test_a_truncated_tail_is_detected_against_the_checkpoint(tmp_path: Path) -> None:
    trail, checkpoint = write_trail(tmp_path / "audit.log")
    # Without the checkpoint a trail cut short is still a valid trail...
    assert len(verify_trail(trail[:3], SERVICE.public_key).entries) == 3
    # ...against it, it is not.
    expect(TamperKind.TRUNCATED, trail[:3], checkpoint=checkpoint)
    # Nor is one rewritten up to the checkpoint by someone holding an older copy.
    rewritten = [
        *trail[:4],
        sign_entry(AuditEntry(4, entry_hash(trail[3]), NOW, "x", "y"), SERVICE),
    ]
    expect(TamperKind.TRUNCATED, rewritten, checkpoint=checkpoint)


def test_a_forged_checkpoint_is_refused(tmp_path: Path) -> None:
    trail, _ = write_trail(tmp_path / "audit.log")
    impostor = AuditLog(tmp_path / "other.log", ed25519_key(61))
    impostor.append(now=NOW, actor="x", action="y")
    expect(TamperKind.BAD_CHECKPOINT, trail, checkpoint=impostor.checkpoint(now=NOW))


def test_a_carried_approval_by_the_wrong_key_is_detected(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", SERVICE)
    forged = sign_approval(terms(), KEYS.outsider, Party.MANUFACTURER, now=NOW)
    log.append(now=NOW, actor="manufacturer", action="approve", approval=forged)
    trail = read_trail(tmp_path / "audit.log")
    expect(TamperKind.BAD_APPROVAL, trail, root=ROOT)


def test_reopening_continues_the_chain_and_drops_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    trail, _ = write_trail(path)
    with path.open("ab") as file:
        file.write(b"AAAAtorn")  # a crash mid-append: no newline
    log = AuditLog(path, SERVICE)
    assert log.count == 5
    log.append(now=NOW + 30, actor="alice", action="stop")
    after = read_trail(path)
    assert after[:5] == trail
    assert verify_trail(after, SERVICE.public_key).entries[-1].action == "stop"


def test_opening_someone_elses_trail_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_trail(path)
    with pytest.raises(TrailTampered):
        AuditLog(path, ed25519_key(62))


payloads = st.dictionaries(
    st.text(max_size=10),
    st.one_of(
        st.integers(-(2**40), 2**40), st.text(max_size=20), st.booleans(), st.binary(max_size=20)
    ),
    max_size=5,
)


@given(
    sequence=st.integers(0, 2**32),
    previous=st.binary(min_size=32, max_size=32),
    when=st.integers(0, 2**40),
    actor=st.text(max_size=30),
    action=st.text(max_size=30),
    payload=payloads,
    approval=st.one_of(st.none(), st.binary(max_size=64)),
)
def test_entry_round_trip(
    sequence: int,
    previous: bytes,
    when: int,
    actor: str,
    action: str,
    payload: dict[str, object],
    approval: bytes | None,
) -> None:
    entry = AuditEntry(sequence, previous, when, actor, action, payload, approval)
    decoded, message = decode_audit_entry_untrusted(sign_entry(entry, SERVICE))
    assert decoded == entry
    assert message.verify(message.signatures[0], SERVICE.public_key)
