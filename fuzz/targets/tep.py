"""Fuzz target for ``decode_tep_untrusted``.

The first byte's low three bits choose the decoder's context: 0x01 response,
0x02 secure packet, 0x04 an Accept that answers a Request (not a Rekey).
"""

from __future__ import annotations

from dofpy.security.crypto import build_rekey
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet, RawPermission, RequestorPermission
from dofpy.wire.security import KeyRequest, SecurityIdentity, Ticket
from dofpy.wire.tep import (
    ResponderInit,
    TepAccept,
    TepConfirm,
    TepReject,
    decode_tep_untrusted,
    encode_tep,
)

_REKEY = build_rekey(OID(6, b"example.org"), OID(3, b"a@example.org"), b"\x01" * 16)
_ACCEPT = TepAccept(
    Ticket.from_bytes(bytes(64)),
    bytes(32),
    ResponderInit(5, b"\x01"),
    KeyRequest(
        SecurityIdentity(OID(3, b"b@example.org")),
        b"\x02" * 8,
        PermissionSet((RawPermission(2), RequestorPermission())),
    ),
)

SEEDS: tuple[bytes, ...] = (
    b"\x00" + encode_tep(_REKEY),
    b"\x01" + encode_tep(_ACCEPT),
    b"\x00" + encode_tep(TepConfirm(bytes(32))),
    b"\x01" + encode_tep(TepReject(3, b"why")),
)


def target(data: bytes) -> None:
    """Decode ``data``; ``BadPacket`` is the only acceptable failure."""
    if data:
        decode_tep_untrusted(
            data[1:],
            is_response=bool(data[0] & 1),
            secure=bool(data[0] & 2),
            answers_rekey=not data[0] & 4,
        )
