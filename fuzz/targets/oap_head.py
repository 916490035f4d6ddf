"""Fuzz target: ``probe_command_head_untrusted`` (the head of an OAP command,
read to route it before the full decode).

Differential: whenever the full decoder accepts the payload as a command with
an item and a target, the head must give the same opcode, item and target.
"""

from __future__ import annotations

from dofpy.errors import BadPacket
from dofpy.wire.oap import (
    Alias,
    Binding,
    GetCommand,
    InvokeCommand,
    SignalCommand,
    SubscribeCommand,
    decode_oap_untrusted,
    encode_oap,
    probe_command_head_untrusted,
)
from dofpy.wire.oid import IID, OID

_BINDING = Binding(IID(1, b"\xd0\xf1"), OID(0x7F, bytes(range(32))))

SEEDS: tuple[bytes, ...] = tuple(
    encode_oap(pdu)
    for pdu in (
        GetCommand(3, _BINDING),
        InvokeCommand(1, _BINDING, (1, b"x", [2, 3])),
        SignalCommand(2, _BINDING, 77, (0, b"data", 1, 0)),
        SubscribeCommand(4, Alias(9, 2), 5),
    )
)


def target(data: bytes) -> None:
    """Read the head; compare it with the full decode where that succeeds."""
    head = probe_command_head_untrusted(data)
    try:
        pdu = decode_oap_untrusted(data, is_response=False)
    except BadPacket:
        return
    if head is None:
        return
    if (
        int(getattr(pdu, "OPCODE", -1)) != head.opcode
        or getattr(pdu, "item_id", None) != head.item_id
        or getattr(pdu, "target", None) != head.target
    ):
        raise AssertionError(f"head {head} disagrees with the full decode {pdu}")
