"""Fuzz target: the OAP decoder ``decode_oap_untrusted``.

The first input byte picks the direction (bit 0 set: a response); the rest
is the OAP payload.
"""

from __future__ import annotations

from dofpy.wire.oap import (
    AdvertiseCommand,
    Alias,
    Binding,
    ChangeCommand,
    CommandControl,
    DefineCommand,
    ExceptionResponse,
    GetCommand,
    GetResponse,
    InvokeCommand,
    InvokeResponse,
    OapPdu,
    OpenCommand,
    OpenResponse,
    ProvideCommand,
    RegisterCommand,
    RegisterResponse,
    SetCommand,
    SetResponse,
    SignalCommand,
    SubscribeCommand,
    SubscribeResponse,
    WatchCommand,
    decode_oap_untrusted,
    encode_oap,
)
from dofpy.wire.oid import IID, OID

_NODE = OID(3, b"node@example.org")
_BINDING = Binding(IID(1, b"\x01"), OID(6, b"example.org"))
_CONTROL = CommandControl(heuristic=9, acks=(_NODE,), verbosity=1, cache_delay=1000)

_PDUS: tuple[OapPdu, ...] = (
    GetCommand(1, _BINDING),
    GetCommand(200, Alias(7), _CONTROL),
    SetCommand(2, Alias(0x01020304, 4), (True,), CommandControl(no_execute=True)),
    InvokeCommand(3, _BINDING, ("arg", 1 << 40)),
    SubscribeCommand(4, Alias(7, 2), 250),
    RegisterCommand(5, _BINDING),
    WatchCommand(_BINDING, CommandControl(execution_delay=True)),
    AdvertiseCommand(_BINDING),
    ProvideCommand(Alias(7), _BINDING),
    OpenCommand(Alias(7), IID(2, b"\x00\x01\x00\x00"), _NODE),
    ChangeCommand(4, Alias(7), 17, (42,)),
    SignalCommand(5, _BINDING, 0x1235, ({"event": b"x"},)),
    DefineCommand(),
    GetResponse((1, "two", b"\x03"), _NODE),
    InvokeResponse(("result",)),
    SetResponse(_NODE),
    SubscribeResponse(),
    RegisterResponse(0x1234, _NODE),
    ExceptionResponse(0x1FF, ("denied",), internal=True, provider=_NODE),
    OpenResponse(),
)

SEEDS: tuple[bytes, ...] = tuple(bytes((int(pdu.IS_RESPONSE),)) + encode_oap(pdu) for pdu in _PDUS)


def target(data: bytes) -> None:
    """Decode; an accepted PDU must re-encode to exactly the same payload."""
    if not data:
        return
    pdu = decode_oap_untrusted(data[1:], is_response=bool(data[0] & 1))
    if encode_oap(pdu) != data[1:]:
        raise AssertionError("accepted an OAP payload that is not in minimal form")
