"""The Update service's audit trail: append-only, hash-chained, signed.

Each entry (:class:`AuditEntry`) holds its sequence number (0, 1, 2, ...),
the SHA-256 of the previous entry's signed bytes (32 zero bytes for the
first), the time, the actor, the action and a payload; approvals also carry
the party's own signed approval (:mod:`dofpy_services.update.approvals`), so
the trail proves who approved, not only that the service says so. Each entry
is a ``COSE_Sign1`` by the Update service's key (:mod:`dofpy.image.cose`,
content type :data:`AUDIT_ENTRY_CONTENT_TYPE`).

:func:`verify_trail` is pure and checks, in order, for every entry: that it
decodes, that the service's signature verifies (a *changed* entry fails
here: nobody without the key can re-sign it), that its sequence number is
its position (an entry *removed*, *reordered* or *inserted* fails here, a
replayed copy of a real entry too), that it names its predecessor's hash (an
entry spliced from another trail fails here), and that a carried approval is
validly signed by a key of its party (with a trust root given).

A trail cut short at its end is still a valid trail; what detects that is a
**checkpoint** (:func:`sign_checkpoint`): the service's signature over the
entry count and the head entry's hash, handed to someone who does not keep
the trail (the approving parties, the operator's ticket, a report).
:func:`verify_trail` with a checkpoint refuses a trail that does not
contain that head at that position: a trail shorter than the checkpoint, or
rewritten before it.

The file form (:class:`AuditLog`) is one entry per line, base64; each append
is written and fsynced before it returns, and a torn last line (a crash
mid-append, never acknowledged) is dropped when the file is opened again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import cbor2

from dofpy.errors import BadPacket
from dofpy.image.cose import (
    CoseSigned,
    PublicKey,
    SigningKey,
    decode_cose_untrusted,
    sign_payload,
)
from dofpy.image.trust import SignatureOutcome, TrustRoot, check_signatures
from dofpy.wire.values import _decode_canonical
from dofpy_services.update.approvals import Approval, decode_approval_untrusted

__all__ = [
    "AUDIT_CHECKPOINT_CONTENT_TYPE",
    "AUDIT_ENTRY_CONTENT_TYPE",
    "GENESIS",
    "AuditCheckpoint",
    "AuditEntry",
    "AuditLog",
    "TamperKind",
    "TrailReport",
    "TrailTampered",
    "decode_audit_entry_untrusted",
    "decode_checkpoint_untrusted",
    "entry_hash",
    "read_trail",
    "sign_checkpoint",
    "sign_entry",
    "verify_trail",
    "write_trail",
]

AUDIT_FORMAT = 1
AUDIT_ENTRY_CONTENT_TYPE = "application/vnd.dofpy.audit-entry+cbor"
AUDIT_CHECKPOINT_CONTENT_TYPE = "application/vnd.dofpy.audit-checkpoint+cbor"
GENESIS = bytes(32)
"""The previous-entry hash of the first entry."""
MAX_TEXT = 256


def _canonical(value: object) -> bytes:
    encoded: bytes = cbor2.dumps(value, canonical=True)
    return encoded


def entry_hash(signed: bytes) -> bytes:
    """The hash the next entry names: SHA-256 of an entry's signed bytes."""
    return hashlib.sha256(signed).digest()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One event of the trail. ``payload`` maps text to CBOR values (text,
    integers, booleans, bytes, lists and maps of them); ``approval`` is a
    party's signed approval for an ``approve`` action."""

    sequence: int
    previous: bytes
    time: int
    actor: str
    action: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    approval: bytes | None = None

    def to_cbor_map(self) -> dict[int, Any]:
        return {
            0: AUDIT_FORMAT,
            1: self.sequence,
            2: self.previous,
            3: self.time,
            4: self.actor,
            5: self.action,
            6: dict(self.payload),
            7: self.approval,
        }


def sign_entry(entry: AuditEntry, key: SigningKey) -> bytes:
    """``entry`` signed by the service's ``key``: the bytes the trail keeps."""
    message = sign_payload(
        _canonical(entry.to_cbor_map()), key, content_type=AUDIT_ENTRY_CONTENT_TYPE, single=True
    )
    return message.encode()


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise BadPacket(f"audit entry: {what} is a text of at most {MAX_TEXT} characters")
    return value


def _open(data: bytes, content_type: str, what: str) -> tuple[CoseSigned, dict[Any, Any]]:
    message = decode_cose_untrusted(data)
    if not message.single:
        raise BadPacket(f"{what}: a COSE_Sign1 message is expected")
    if message.content_type != content_type:
        raise BadPacket(f"{what}: wrong content type")
    value = _decode_canonical(message.payload, what)
    if not isinstance(value, dict):
        raise BadPacket(f"{what}: a map is expected")
    if value.get(0) != AUDIT_FORMAT:
        raise BadPacket(f"{what}: format {value.get(0)!r} is not {AUDIT_FORMAT}")
    return message, value


def decode_audit_entry_untrusted(data: bytes) -> tuple[AuditEntry, CoseSigned]:
    """An entry and its signed message from the trail's bytes; raises only
    ``BadPacket``. Neither the signature nor the chain is checked here."""
    message, value = _open(data, AUDIT_ENTRY_CONTENT_TYPE, "audit entry")
    if set(value) != set(range(8)):
        raise BadPacket("audit entry: a map with keys 0 to 7 is expected")
    sequence, previous, when = value[1], value[2], value[3]
    if type(sequence) is not int or sequence < 0:
        raise BadPacket("audit entry: the sequence is a non-negative integer")
    if not isinstance(previous, bytes) or len(previous) != 32:
        raise BadPacket("audit entry: the previous hash is 32 bytes")
    if type(when) is not int or when < 0:
        raise BadPacket("audit entry: the time is a non-negative integer")
    payload = value[6]
    if not isinstance(payload, dict) or not all(isinstance(k, str) for k in payload):
        raise BadPacket("audit entry: the payload is a map with text keys")
    approval = value[7]
    if approval is not None and not isinstance(approval, bytes):
        raise BadPacket("audit entry: the approval is bytes or null")
    entry = AuditEntry(
        sequence,
        previous,
        when,
        _text(value[4], "the actor"),
        _text(value[5], "the action"),
        payload,
        approval,
    )
    return entry, message


@dataclass(frozen=True, slots=True)
class AuditCheckpoint:
    """The trail's head as the service signed it: ``count`` entries, the last
    one's hash ``head``."""

    count: int
    head: bytes
    time: int


def sign_checkpoint(checkpoint: AuditCheckpoint, key: SigningKey) -> bytes:
    payload = {0: AUDIT_FORMAT, 1: checkpoint.count, 2: checkpoint.head, 3: checkpoint.time}
    message = sign_payload(
        _canonical(payload), key, content_type=AUDIT_CHECKPOINT_CONTENT_TYPE, single=True
    )
    return message.encode()


def decode_checkpoint_untrusted(data: bytes) -> tuple[AuditCheckpoint, CoseSigned]:
    """A checkpoint from its signed bytes; raises only ``BadPacket``."""
    message, value = _open(data, AUDIT_CHECKPOINT_CONTENT_TYPE, "audit checkpoint")
    if set(value) != {0, 1, 2, 3}:
        raise BadPacket("audit checkpoint: a map with keys 0 to 3 is expected")
    count, head, when = value[1], value[2], value[3]
    if type(count) is not int or count < 1:
        raise BadPacket("audit checkpoint: the count is an integer >= 1")
    if not isinstance(head, bytes) or len(head) != 32:
        raise BadPacket("audit checkpoint: the head hash is 32 bytes")
    if type(when) is not int or when < 0:
        raise BadPacket("audit checkpoint: the time is a non-negative integer")
    return AuditCheckpoint(count, head, when), message


class TamperKind(Enum):
    """How a trail fails verification."""

    MALFORMED = "malformed"
    """An entry that does not decode."""
    CHANGED = "changed"
    """The service's signature does not verify: the entry changed after signing."""
    OUT_OF_SEQUENCE = "out of sequence"
    """Sequence number not the entry's position: removed, reordered or inserted."""
    BROKEN_CHAIN = "broken chain"
    """An entry does not name its predecessor's hash."""
    BAD_APPROVAL = "bad approval"
    """A carried approval is malformed or not validly signed by its party."""
    TRUNCATED = "truncated"
    """The trail does not reach (or does not contain) the signed checkpoint."""
    BAD_CHECKPOINT = "bad checkpoint"
    """The checkpoint itself is malformed or not signed by the service."""


class TrailTampered(ValueError):
    """The trail is not what the service wrote: ``kind`` at ``index``."""

    def __init__(self, kind: TamperKind, index: int, message: str) -> None:
        super().__init__(f"audit trail: entry {index}: {kind.value}: {message}")
        self.kind = kind
        self.index = index


@dataclass(frozen=True, slots=True)
class TrailReport:
    """A verified trail: its entries, in order, and its head hash."""

    entries: tuple[AuditEntry, ...]
    head: bytes
    approvals: tuple[Approval, ...]


def verify_trail(
    trail: Sequence[bytes],
    service_key: PublicKey,
    *,
    checkpoint: bytes | None = None,
    root: TrustRoot | None = None,
) -> TrailReport:
    """Verify every entry of ``trail`` (signed bytes, in file order) against
    ``service_key``, and the whole against ``checkpoint`` when given; carried
    approvals against ``root`` when given. Raises :class:`TrailTampered`
    (the first fault found), else the report."""
    entries: list[AuditEntry] = []
    approvals: list[Approval] = []
    hashes: list[bytes] = []
    previous = GENESIS
    for index, signed in enumerate(trail):
        try:
            entry, message = decode_audit_entry_untrusted(signed)
        except BadPacket as exc:
            raise TrailTampered(TamperKind.MALFORMED, index, str(exc)) from None
        if not message.verify(message.signatures[0], service_key):
            raise TrailTampered(
                TamperKind.CHANGED, index, "the service's signature does not verify"
            )
        if entry.sequence != index:
            raise TrailTampered(
                TamperKind.OUT_OF_SEQUENCE,
                index,
                f"sequence {entry.sequence} at position {index} (an entry was removed, "
                "reordered or inserted)",
            )
        if entry.previous != previous:
            raise TrailTampered(
                TamperKind.BROKEN_CHAIN, index, "does not name the previous entry's hash"
            )
        if entry.approval is not None:
            approvals.append(_check_carried(entry.approval, index, root))
        entries.append(entry)
        previous = entry_hash(signed)
        hashes.append(previous)
    if checkpoint is not None:
        _check_checkpoint(checkpoint, service_key, hashes)
    return TrailReport(tuple(entries), previous, tuple(approvals))


def _check_carried(data: bytes, index: int, root: TrustRoot | None) -> Approval:
    try:
        approval = decode_approval_untrusted(data)
    except BadPacket as exc:
        raise TrailTampered(TamperKind.BAD_APPROVAL, index, str(exc)) from None
    if root is not None:
        assert approval.message is not None
        report = check_signatures(approval.message, root, {approval.party: 1})
        (signature,) = report.checks
        if signature.outcome is not SignatureOutcome.VALID:
            raise TrailTampered(TamperKind.BAD_APPROVAL, index, signature.describe())
    return approval


def _check_checkpoint(data: bytes, service_key: PublicKey, hashes: list[bytes]) -> None:
    try:
        point, message = decode_checkpoint_untrusted(data)
    except BadPacket as exc:
        raise TrailTampered(TamperKind.BAD_CHECKPOINT, len(hashes), str(exc)) from None
    if not message.verify(message.signatures[0], service_key):
        raise TrailTampered(
            TamperKind.BAD_CHECKPOINT, len(hashes), "not signed by the service's key"
        )
    if len(hashes) < point.count:
        raise TrailTampered(
            TamperKind.TRUNCATED,
            len(hashes),
            f"the trail has {len(hashes)} entries; the checkpoint signed {point.count}",
        )
    if hashes[point.count - 1] != point.head:
        raise TrailTampered(
            TamperKind.TRUNCATED,
            point.count - 1,
            "the entry at the checkpoint is not the one the service signed",
        )


def _encode_line(signed: bytes) -> bytes:
    return base64.b64encode(signed) + b"\n"


def read_trail(path: str | os.PathLike[str]) -> list[bytes]:
    """The signed entries of a trail file (one base64 line each). A line that
    is not base64 is kept as it is, for the verifier to refuse by position."""
    lines = Path(path).read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out: list[bytes] = []
    for line in lines:
        try:
            out.append(base64.b64decode(line, validate=True))
        except (binascii.Error, ValueError):
            out.append(line)
    return out


def write_trail(path: str | os.PathLike[str], trail: Iterable[bytes]) -> None:
    """Write a whole trail file (for exports and tests); not atomic."""
    Path(path).write_bytes(b"".join(_encode_line(s) for s in trail))


class AuditLog:
    """An audit trail file the service appends to, signing with ``key``.

    Opening verifies what is there (:class:`TrailTampered` if it is not the
    service's own trail) and drops a torn last line; :meth:`append` returns
    only once the entry is on disk."""

    def __init__(self, path: str | os.PathLike[str], key: SigningKey) -> None:
        self._path = Path(path)
        self._key = key
        if self._path.exists():
            raw = self._path.read_bytes()
            if raw and not raw.endswith(b"\n"):
                # A crash mid-append: the torn line was never acknowledged.
                keep = raw[: raw.rfind(b"\n") + 1]
                with self._path.open("r+b") as file:
                    file.truncate(len(keep))
                    os.fsync(file.fileno())
        else:
            self._path.touch()
        report = verify_trail(read_trail(self._path), key.public_key)
        self._count = len(report.entries)
        self._head = report.head

    @property
    def count(self) -> int:
        return self._count

    @property
    def head(self) -> bytes:
        return self._head

    def append(
        self,
        *,
        now: float,
        actor: str,
        action: str,
        payload: Mapping[str, Any] | None = None,
        approval: bytes | None = None,
    ) -> AuditEntry:
        entry = AuditEntry(
            self._count, self._head, int(now), actor, action, dict(payload or {}), approval
        )
        signed = sign_entry(entry, self._key)
        with self._path.open("ab") as file:
            file.write(_encode_line(signed))
            file.flush()
            os.fsync(file.fileno())
        self._count += 1
        self._head = entry_hash(signed)
        return entry

    def checkpoint(self, *, now: float) -> bytes:
        """The service's signed checkpoint of the trail as it is now."""
        if self._count == 0:
            raise ValueError("an empty trail has no checkpoint")
        return sign_checkpoint(AuditCheckpoint(self._count, self._head, int(now)), self._key)
