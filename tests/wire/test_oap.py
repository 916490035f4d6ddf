"""OAP PDUs: round trips, hostile input, and tshark's DOF dissector as the oracle."""

from __future__ import annotations

import re
import typing
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.testing.tshark import Datagram, check_datagrams
from dofpy.wire import oap_fields
from dofpy.wire._codec import C2_MAX, C4_MAX
from dofpy.wire.dpp import DppPacket, OpIdType, decode_frame_untrusted, encode_frame
from dofpy.wire.oap import (
    OAP_APP_ID,
    ActivateCommand,
    AdvertiseCommand,
    Alias,
    Binding,
    ChangeCommand,
    CommandControl,
    ConnectCommand,
    DefineCommand,
    DefineResponse,
    ExceptionResponse,
    FullConnectCommand,
    GetCommand,
    GetResponse,
    InvokeCommand,
    InvokeResponse,
    OapOpcode,
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
from dofpy.wire.oid import IID, OID, OIDAttribute
from tests.wire.test_values import value_lists

# -- strategies ----------------------------------------------------------------

c2s = st.integers(0, C2_MAX)
u16s = st.integers(0, 0xFFFF)
plain_oids = st.builds(OID, st.integers(1, C4_MAX), st.binary(max_size=16))
# Attributes 0 (provider) and 2 (group) hold a nested OID; the others are opaque.
attributes = st.builds(
    OIDAttribute, st.integers(0, 0x7F).filter(lambda i: i not in (0, 2)), st.binary(max_size=8)
) | st.builds(OIDAttribute.with_oid, st.sampled_from([0, 2]), plain_oids)
oids = st.just(OID(0)) | st.builds(
    OID,
    st.integers(1, C4_MAX),
    st.binary(max_size=63),
    st.lists(attributes, max_size=2).map(tuple),
)
iids = st.builds(
    IID,
    st.integers(0, 63),
    st.sampled_from([1, 2, 4, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)
aliases = st.sampled_from([1, 2, 4]).flatmap(
    lambda size: st.builds(Alias, st.integers(0, (1 << (8 * size)) - 1), st.just(size))
)
bindings = st.builds(Binding, iids, oids)
targets = aliases | bindings
providers = st.none() | oids
values = value_lists.map(tuple)


def _control(
    heuristic: int | None,
    execution_delay: bool,
    acks: tuple[OID, ...],
    no_execute: bool,
    verbosity: int,
    cache_delay: int | None,
) -> CommandControl | None:
    if not (heuristic is not None or execution_delay or acks or no_execute or verbosity) and (
        cache_delay is None
    ):
        return None
    return CommandControl(heuristic, execution_delay, acks, no_execute, verbosity, cache_delay)


controls = st.none() | st.builds(
    _control,
    st.none() | c2s,
    st.booleans(),
    st.lists(oids, max_size=3).map(tuple),
    st.booleans(),
    st.integers(0, 3),
    st.none() | c2s,
)

PDU_STRATEGIES: dict[type, st.SearchStrategy[OapPdu]] = {
    GetCommand: st.builds(GetCommand, c2s, targets, controls),
    SetCommand: st.builds(SetCommand, c2s, targets, values, controls),
    InvokeCommand: st.builds(InvokeCommand, c2s, targets, values, controls),
    SubscribeCommand: st.builds(SubscribeCommand, c2s, targets, c2s, controls),
    RegisterCommand: st.builds(RegisterCommand, c2s, targets, controls),
    WatchCommand: st.builds(WatchCommand, targets, controls),
    ActivateCommand: st.builds(ActivateCommand, targets, controls),
    ConnectCommand: st.builds(ConnectCommand, targets, controls),
    FullConnectCommand: st.builds(FullConnectCommand, targets, controls),
    AdvertiseCommand: st.builds(AdvertiseCommand, bindings),
    ProvideCommand: st.builds(ProvideCommand, aliases, bindings),
    OpenCommand: st.builds(OpenCommand, targets, iids, oids),
    ChangeCommand: st.builds(ChangeCommand, c2s, targets, u16s, values),
    SignalCommand: st.builds(SignalCommand, c2s, targets, u16s, values),
    DefineCommand: st.just(DefineCommand()),
    GetResponse: st.builds(GetResponse, values, providers),
    InvokeResponse: st.builds(InvokeResponse, values, providers),
    SetResponse: st.builds(SetResponse, providers),
    SubscribeResponse: st.builds(SubscribeResponse, providers),
    RegisterResponse: st.builds(RegisterResponse, u16s, providers),
    ExceptionResponse: st.builds(
        ExceptionResponse, c2s, values, st.booleans(), st.booleans(), providers
    ),
    DefineResponse: st.just(DefineResponse()),
    OpenResponse: st.just(OpenResponse()),
}
any_pdu = st.one_of(*PDU_STRATEGIES.values())


def test_every_pdu_class_has_a_strategy() -> None:
    assert set(typing.get_args(OapPdu)) == set(PDU_STRATEGIES)


# -- round trips and hostile input ----------------------------------------------


@pytest.mark.parametrize("cls", list(PDU_STRATEGIES), ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_round_trip(cls: type, data: st.DataObject) -> None:
    pdu = data.draw(PDU_STRATEGIES[cls])
    encoded = encode_oap(pdu)
    decoded = decode_oap_untrusted(encoded, pdu.IS_RESPONSE)
    assert decoded == pdu
    assert type(decoded) is cls
    assert encoded[0] & 0x1F == pdu.OPCODE


@given(any_pdu)
def test_every_truncation_is_refused(pdu: OapPdu) -> None:
    encoded = encode_oap(pdu)
    for end in range(len(encoded)):
        with pytest.raises(BadPacket):
            decode_oap_untrusted(encoded[:end], pdu.IS_RESPONSE)


@given(any_pdu)
def test_trailing_bytes_are_refused(pdu: OapPdu) -> None:
    with pytest.raises(BadPacket):
        decode_oap_untrusted(encode_oap(pdu) + b"\x00", pdu.IS_RESPONSE)


@given(any_pdu, st.data())
def test_mutations_raise_only_badpacket_or_are_canonical(pdu: OapPdu, data: st.DataObject) -> None:
    encoded = bytearray(encode_oap(pdu))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    is_response = data.draw(st.booleans())
    try:
        decoded = decode_oap_untrusted(bytes(encoded), is_response)
    except BadPacket:
        return
    # Whatever is accepted is in the one (minimal) encoding we produce.
    assert is_response == decoded.IS_RESPONSE
    assert encode_oap(decoded) == bytes(encoded)


@given(st.binary(max_size=48), st.booleans())
def test_arbitrary_bytes_raise_only_badpacket(blob: bytes, is_response: bool) -> None:
    try:
        decoded = decode_oap_untrusted(blob, is_response)
    except BadPacket:
        return
    assert encode_oap(decoded) == blob


# -- known layouts -------------------------------------------------------------

IID_1 = IID(1, b"\x01")  # wire 05 01
OBJ = OID(6, b"example.org")  # wire 06 0b "example.org"
OBJ_WIRE = b"\x06\x0b" + b"example.org"
BIND = Binding(IID_1, OBJ)
BIND_WIRE = b"\x05\x01" + OBJ_WIRE
NODE = OID(3, b"node@example.org")


def test_get_command_layout() -> None:
    assert encode_oap(GetCommand(1, BIND)) == b"\x0a\x01" + BIND_WIRE
    assert encode_oap(GetCommand(200, Alias(7))) == b"\x4a\x80\xc8\x07"
    assert encode_oap(GetCommand(1, Alias(0x0102, 2))) == b"\x8a\x01\x01\x02"
    assert encode_oap(GetCommand(1, Alias(0x01020304, 4))) == b"\xca\x01\x01\x02\x03\x04"


def test_command_control_layout() -> None:
    control = CommandControl(
        heuristic=5,
        execution_delay=True,
        acks=(NODE,),
        no_execute=True,
        verbosity=2,
        cache_delay=300,
    )
    encoded = encode_oap(GetCommand(1, Alias(7), control))
    assert encoded == b"\x6a" + b"\x6f\x05\x01" + NODE.encode() + b"\x81\x2c" + b"\x01\x07"


def test_subscribe_register_layouts() -> None:
    assert encode_oap(SubscribeCommand(3, Alias(7), 250)) == b"\x58\x03\x07\x80\xfa"
    assert encode_oap(RegisterCommand(3, Alias(7))) == b"\x59\x03\x07"
    assert encode_oap(RegisterResponse(0x1234)) == b"\x19\x12\x34"


def test_change_signal_layouts() -> None:
    assert encode_oap(SignalCommand(4, Alias(7), 0x0102, (True,))) == (
        b"\x56\x04\x07\x01\x02\x81\xf5"
    )
    assert encode_oap(ChangeCommand(4, BIND, 1, ())) == b"\x02\x04" + BIND_WIRE + b"\x00\x01\x80"


def test_provide_open_advertise_define_layouts() -> None:
    assert encode_oap(ProvideCommand(Alias(7), BIND)) == b"\x50\x07" + BIND_WIRE
    assert encode_oap(OpenCommand(BIND, IID_1, NODE)) == (
        b"\x0e" + BIND_WIRE + b"\x05\x01" + NODE.encode()
    )
    assert encode_oap(AdvertiseCommand(BIND)) == b"\x05" + BIND_WIRE
    assert encode_oap(DefineCommand()) == b"\x06"
    assert encode_oap(DefineResponse()) == b"\x06"
    assert encode_oap(OpenResponse()) == b"\x0e"


def test_response_layouts() -> None:
    assert encode_oap(GetResponse((1,))) == b"\x0a\x81\x01"
    assert encode_oap(GetResponse((), NODE)) == b"\x2a" + NODE.encode() + b"\x80"
    assert encode_oap(InvokeResponse(("ok",))) == b"\x0c\x81\x62ok"
    assert encode_oap(SetResponse()) == b"\x14"
    assert encode_oap(SubscribeResponse(NODE)) == b"\x38" + NODE.encode()
    assert encode_oap(ExceptionResponse(0x0201, ("why",), internal=True)) == (
        b"\xc9\x82\x01\x81\x63why"
    )
    assert encode_oap(ExceptionResponse(5, final=False, provider=NODE)) == (
        b"\x29" + NODE.encode() + b"\x05\x80"
    )


def test_lists_of_values_are_stored_as_tuples() -> None:
    pdu = SetCommand(1, Alias(7), [1, 2])  # type: ignore[arg-type]
    assert pdu.values == (1, 2)


@pytest.mark.parametrize(
    ("payload", "is_response", "reason"),
    [
        (b"", False, "empty"),
        (b"\x01", False, "unknown OAP opcode"),
        (b"\x09\x00\x80", False, "not a command"),
        (b"\x1c" + BIND_WIRE, True, "no response"),
        (b"\x2a\x80\x01" + BIND_WIRE, False, "reserved bit 7"),
        (b"\x2a\x00\x01" + BIND_WIRE, False, "not minimal"),
        (b"\x2a\x04\x00\x01" + BIND_WIRE, False, "empty ack list"),
        (b"\x25" + BIND_WIRE, False, "Advertise"),
        (b"\x45\x07" + BIND_WIRE, False, "Advertise"),
        (b"\x10\x05\x01" + OBJ_WIRE, False, "without an alias"),
        (b"\x70\x07" + BIND_WIRE, False, "Provide"),
        (b"\x2e" + BIND_WIRE + BIND_WIRE, False, "Open"),
        (b"\x22\x01\x07\x00\x00\x80", False, "Change"),
        (b"\x26", False, "Define"),
        (b"\x46", True, "Define response"),
        (b"\x4e", True, "Open response"),
        (b"\x4a\x80", True, "Get response"),
        (b"\x0a\x80\x05\x01" + BIND_WIRE, False, "c2 not minimally encoded"),
        (b"\x18\x01" + BIND_WIRE + b"\x80\x05", False, "c2 not minimally encoded"),
        (b"\x09\x80", True, "truncated"),
        (b"\x14\x80", True, "trailing"),
    ],
)
def test_refused_payloads(payload: bytes, is_response: bool, reason: str) -> None:
    with pytest.raises(BadPacket, match=reason):
        decode_oap_untrusted(payload, is_response)


def test_command_control_flag_zero_is_refused() -> None:
    with pytest.raises(BadPacket, match="not minimal"):
        decode_oap_untrusted(b"\x2a\x00\x01" + BIND_WIRE, False)


def test_constructor_errors_while_decoding_become_badpacket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every decoded field is in range by construction; this checks the safety
    # net that turns a constructor's ValueError into BadPacket regardless.
    def refuse(*args: object) -> object:
        raise ValueError("refused")

    monkeypatch.setattr(oap_fields, "read_iid", refuse)  # the target reader
    with pytest.raises(BadPacket, match="refused"):
        decode_oap_untrusted(b"\x0a\x01" + BIND_WIRE, False)


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: GetCommand(C2_MAX + 1, Alias(1)), "item id"),
        (lambda: GetCommand(-1, Alias(1)), "item id"),
        (lambda: GetCommand(True, Alias(1)), "item id"),
        (lambda: GetCommand(1, "alias"), "target"),  # type: ignore[arg-type]
        (lambda: SetCommand(1, Alias(1), "ab"), "tuple or list"),  # type: ignore[arg-type]
        (lambda: SubscribeCommand(1, Alias(1), C2_MAX + 1), "minimum delta"),
        (lambda: ChangeCommand(1, Alias(1), 0x10000), "sequence"),
        (lambda: RegisterResponse(-1), "sequence"),
        (lambda: ExceptionResponse(C2_MAX + 1), "exception code"),
        (lambda: GetResponse((), provider=b"\x00"), "provider"),  # type: ignore[arg-type]
        (lambda: Alias(256), "does not fit"),
        (lambda: Alias(-1), "does not fit"),
        (lambda: Alias(1, 3), "1, 2 or 4"),
        (CommandControl, "all-default"),
        (lambda: CommandControl(verbosity=4), "verbosity"),
        (lambda: CommandControl(heuristic=C2_MAX + 1), "heuristic"),
        (lambda: CommandControl(cache_delay=-1), "cache delay"),
        (lambda: CommandControl(acks=(OID(0),) * 256), "at most 255"),
        (lambda: CommandControl(acks=("node",)), "OIDs"),  # type: ignore[arg-type]
        (lambda: AdvertiseCommand(Alias(1)), "Binding"),  # type: ignore[arg-type]
        (lambda: ProvideCommand(BIND, BIND), "Alias"),  # type: ignore[arg-type]
        (lambda: ProvideCommand(Alias(1), Alias(1)), "Binding"),  # type: ignore[arg-type]
        (lambda: OpenCommand(None, IID_1, OBJ), "target"),  # type: ignore[arg-type]
    ],
)
def test_constructors_refuse_bad_values(build: Callable[[], object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        build()


def test_encoder_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode_oap(InvokeCommand(1, Alias(1), (object(),)))
    with pytest.raises(ValueError, match="command_control"):
        encode_oap(GetCommand(1, Alias(1), "cc"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not an OAP PDU"):
        encode_oap("get")  # type: ignore[arg-type]


# -- tshark oracle -------------------------------------------------------------


def dpp_frame(oap_payload: bytes, *, response: bool, op_count: int) -> bytes:
    """A DNP v1 + DPP v2 datagram around an OAP payload: a command names its
    operation with the implied sender SID, a response with the implied
    receiver SID and the same operation count."""
    op_id_type = OpIdType.IMPLIED_RECEIVER if response else OpIdType.IMPLIED_SENDER
    packet = DppPacket(
        OAP_APP_ID, oap_payload, is_response=response, op_id_type=op_id_type, op_count=op_count
    )
    return encode_frame(packet)


NAMES = {
    OapOpcode.FULL_CONNECT: "Full Connect",
}


def expected_info(pdu: OapPdu) -> str:
    name = NAMES.get(pdu.OPCODE, pdu.OPCODE.name.title())
    return f"OAP {name}" + (" Response" if pdu.IS_RESPONSE else "")


CONTROL = CommandControl(heuristic=9, acks=(NODE,), verbosity=1, cache_delay=1000)
ORACLE_PDUS: list[OapPdu] = [
    ProvideCommand(Alias(7), BIND),
    ProvideCommand(Alias(0x01020304, 4), BIND),
    GetCommand(1, BIND),
    GetCommand(200, Alias(7), CONTROL),
    GetResponse((1, "two", b"\x03", [4.5], {"k": None}), NODE),
    GetResponse(()),
    SetCommand(2, Alias(0x01020304, 4), (True,), CommandControl(no_execute=True)),
    SetResponse(NODE),
    SetResponse(),
    InvokeCommand(3, BIND, ("arg", 1 << 40), CommandControl(execution_delay=True)),
    InvokeResponse(("result",)),
    SubscribeCommand(4, Alias(7), 250),
    SubscribeResponse(NODE),
    ChangeCommand(4, Alias(7), 17, (42,)),
    RegisterCommand(5, BIND, CONTROL),
    RegisterResponse(0x1234, NODE),
    RegisterResponse(0),
    SignalCommand(5, BIND, 0x1235, ({"event": b"x"},)),
    ExceptionResponse(0x1FF, ("denied",), internal=True),
    ExceptionResponse(3, (), final=False, provider=NODE),
    WatchCommand(BIND),
    ActivateCommand(Alias(7), CommandControl(verbosity=3)),
    ConnectCommand(BIND),
    FullConnectCommand(Alias(7)),
    AdvertiseCommand(BIND),
    OpenCommand(Alias(7), IID(2, b"\x00\x01\x00\x00"), NODE),
    OpenResponse(),
    DefineCommand(),
    DefineResponse(),
]


def test_oracle_covers_every_pdu_class() -> None:
    assert {type(pdu) for pdu in ORACLE_PDUS} == set(PDU_STRATEGIES)


@pytest.mark.external
def test_tshark_decodes_every_pdu() -> None:
    frames = [
        Datagram(
            dpp_frame(encode_oap(pdu), response=pdu.IS_RESPONSE, op_count=index),
            from_client=not pdu.IS_RESPONSE,
        )
        for index, pdu in enumerate(ORACLE_PDUS)
    ]
    # Our own frame decoder takes the frames apart again.
    for frame, pdu in zip(frames, ORACLE_PDUS, strict=True):
        _, dpp = decode_frame_untrusted(frame.payload)
        assert dpp.app_id == OAP_APP_ID
        assert decode_oap_untrusted(dpp.payload, dpp.is_response) == pdu
    result = check_datagrams(frames)
    assert result.problems == []
    assert len(result.info) == len(ORACLE_PDUS)
    for pdu, protocols, info in zip(ORACLE_PDUS, result.protocols, result.info, strict=True):
        assert protocols.endswith("dof:dof.oap"), (pdu, protocols)
        assert info.strip() == expected_info(pdu), (pdu, info)


@pytest.mark.external
def test_tshark_shows_the_fields_we_meant() -> None:
    pdus: list[OapPdu] = [
        SubscribeCommand(4, Alias(7), 250),
        SignalCommand(5, BIND, 0x1235, (1,)),
        GetCommand(200, Alias(7), CONTROL),
        GetResponse((1,), NODE),
        ExceptionResponse(3, (), internal=True, final=True),
    ]
    frames = [
        Datagram(dpp_frame(encode_oap(pdu), response=pdu.IS_RESPONSE, op_count=1)) for pdu in pdus
    ]
    result = check_datagrams(frames)
    assert result.problems == []
    text = result.verbose
    assert "Item ID: 4" in text
    assert "Alias: 7" in text
    assert "Minimum Delta: 250" in text
    assert "Sequence: 4661" in text  # 0x1235
    assert "Object ID: [{06}:example.org]" in text
    assert "Item ID: 200" in text
    assert "Heuristic Value: 9" in text
    assert "Cache Delay: 1000" in text
    # The provider OID follows the response flags (tshark labels it Object ID).
    assert re.search(
        r"OAP Get Response \(10\)\n.*Flags: 1\n\s+Object ID: \[\{03\}:node@example\.org\]", text
    )
    assert re.search(r"OAP Value List: 8101", text)
    assert "Internal Exception" in text
