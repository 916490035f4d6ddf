"""Fuzz target: ``decode_audit_entry_untrusted``, ``decode_checkpoint_untrusted``
and ``verify_trail`` (which raises only ``TrailTampered``) on an entry, and
on a checkpoint after a valid one-entry trail."""

from __future__ import annotations

import contextlib

from cryptography.hazmat.primitives.asymmetric import ed25519

from dofpy.errors import BadPacket
from dofpy.image.cose import SigningKey
from dofpy_services.update.audit import (
    GENESIS,
    AuditCheckpoint,
    AuditEntry,
    TrailTampered,
    decode_audit_entry_untrusted,
    decode_checkpoint_untrusted,
    entry_hash,
    sign_checkpoint,
    sign_entry,
    verify_trail,
)

_KEY = SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
_FIRST = sign_entry(AuditEntry(0, GENESIS, 1, "alice", "create", {"n": 1, "b": b"x"}), _KEY)

SEEDS: tuple[bytes, ...] = (
    _FIRST,
    sign_entry(AuditEntry(1, entry_hash(_FIRST), 2, "op", "approve", {}, b"\xd2\x84"), _KEY),
    sign_checkpoint(AuditCheckpoint(1, entry_hash(_FIRST), 3), _KEY),
)


def target(data: bytes) -> None:
    with contextlib.suppress(BadPacket):
        decode_audit_entry_untrusted(data)
    with contextlib.suppress(BadPacket):
        decode_checkpoint_untrusted(data)
    with contextlib.suppress(TrailTampered):
        verify_trail([data], _KEY.public_key)
    with contextlib.suppress(TrailTampered):
        verify_trail([_FIRST], _KEY.public_key, checkpoint=data)
