"""TEP key derivation, confirmations and AES-256-CCM."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from dofpy.errors import BadPacket
from dofpy.security import crypto
from dofpy.security.crypto import AuthenticationFailed
from dofpy.wire.oid import OID
from dofpy.wire.security import InitiatorBlock, KeyRequest, SecurityIdentity, Ticket
from dofpy.wire.tep import ResponderInit, TepAccept, TepConfirm, TepRekey

keys = st.binary(min_size=32, max_size=32)
DOMAIN = OID(6, b"example.org")
CLIENT = OID(3, b"client@example.org")
SERVER = OID(3, b"server@example.org")
SECRET = bytes(range(32))
SESSION_KEY = bytes(range(100, 132))
MAC = bytes(range(200, 232))


def aes_block(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


@given(keys, keys, keys)
def test_ticket_round_trip(session_key: bytes, secret: bytes, mac: bytes) -> None:
    ticket = crypto.make_ticket(session_key, secret, mac)
    assert ticket.mac == mac
    assert crypto.session_key_from_ticket(ticket, secret) == session_key


def test_ticket_matches_the_dissectors_construction() -> None:
    ticket = crypto.make_ticket(SESSION_KEY, SECRET, MAC)
    # K = KEY xor (AES(S, MAC[0:16]) || AES(S, MAC[16:32])), block by block.
    pad = aes_block(SECRET, MAC[:16]) + aes_block(SECRET, MAC[16:])
    assert bytes(a ^ b for a, b in zip(ticket.key, pad, strict=True)) == SESSION_KEY
    assert ticket.encode().hex() == (
        "c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7"
        "cd16e1facf54f01b34bb619d68e3858d2028d71d1911a55ea34efe108da9fd9a"
    )


def exchange() -> tuple[TepRekey, TepAccept]:
    rekey = crypto.build_rekey(DOMAIN, CLIENT, b"\x11" * 16)
    accept = crypto.build_accept(
        rekey.initiator,
        session_key=SESSION_KEY,
        ticket=crypto.make_ticket(SESSION_KEY, SECRET, MAC),
        responder=KeyRequest(SecurityIdentity(SERVER), b"\x22" * 5),
        responder_init=ResponderInit(5, b"\x09"),
    )
    return rekey, accept


def test_accept_confirmation_is_the_documented_hmac() -> None:
    _rekey, accept = exchange()
    assert accept.responder_init is not None
    message = (
        bytes(0)
        + b"\x11" * 16  # initiator nonce: 16 bytes, no padding
        + bytes(11)
        + b"\x22" * 5  # responder nonce, zero-padded in front
        + accept.responder_init.encode()
        + SERVER.encode()
    )
    expected = hmac.new(SESSION_KEY, message, hashlib.sha256).digest()
    assert accept.confirmation == expected


def test_full_exchange() -> None:
    rekey, accept = exchange()
    key = crypto.session_key_from_accept(accept, rekey.initiator, SECRET)
    assert key == SESSION_KEY
    confirm = crypto.build_confirm(key, rekey.initiator, accept)
    crypto.verify_confirm(confirm, SESSION_KEY, rekey.initiator, accept)
    # The Confirm is not a replay of the Accept's confirmation.
    assert confirm.confirmation != accept.confirmation


def test_wrong_secret_fails_the_accept() -> None:
    rekey, accept = exchange()
    with pytest.raises(AuthenticationFailed):
        crypto.session_key_from_accept(accept, rekey.initiator, bytes(32))


def flip_last_bit(data: bytes) -> bytes:
    return data[:-1] + bytes((data[-1] ^ 1,))


@pytest.mark.parametrize("field", ["confirmation", "ticket", "responder_init", "responder"])
def test_altered_accept_fails(field: str) -> None:
    rekey, accept = exchange()
    changed = {
        "confirmation": {"confirmation": b"\x00" + accept.confirmation[1:]},
        "ticket": {"ticket": Ticket(accept.ticket.mac, flip_last_bit(accept.ticket.key))},
        "responder_init": {"responder_init": ResponderInit(6, b"\x09")},
        "responder": {"responder": KeyRequest(SecurityIdentity(CLIENT), b"\x22" * 5)},
    }[field]
    altered = TepAccept(**{**{f: getattr(accept, f) for f in accept.__slots__}, **changed})  # type: ignore[arg-type]
    with pytest.raises(AuthenticationFailed):
        crypto.session_key_from_accept(altered, rekey.initiator, SECRET)


def test_wrong_confirm_fails() -> None:
    rekey, accept = exchange()
    with pytest.raises(AuthenticationFailed):
        crypto.verify_confirm(TepConfirm(accept.confirmation), SESSION_KEY, rekey.initiator, accept)
    confirm = crypto.build_confirm(SESSION_KEY, rekey.initiator, accept)
    with pytest.raises(AuthenticationFailed):
        crypto.verify_confirm(confirm, bytes(32), rekey.initiator, accept)


def test_accept_without_responder_init_cannot_be_confirmed() -> None:
    rekey, accept = exchange()
    bare = TepAccept(accept.ticket, accept.confirmation, None, accept.responder)
    with pytest.raises(AuthenticationFailed):
        crypto.session_key_from_accept(bare, rekey.initiator, SECRET)
    with pytest.raises(AuthenticationFailed):
        crypto.verify_confirm(TepConfirm(bytes(32)), SESSION_KEY, rekey.initiator, bare)
    with pytest.raises(ValueError):
        crypto.build_confirm(SESSION_KEY, rekey.initiator, bare)


def test_nonce_layout() -> None:
    assert crypto.ccm_nonce(1, 0x01020304).hex() == "0000000100000001020304"
    assert crypto.ccm_nonce(0, 5, slot=0x0A0B).hex() == "000000000a0b0000000005"
    for bad in ({"node_id": -1}, {"packet_number": 1 << 32}, {"slot": 0x10000}):
        args = {"node_id": 0, "packet_number": 0, **bad}
        with pytest.raises(ValueError):
            crypto.ccm_nonce(**args)


@given(
    keys, st.binary(max_size=64), st.binary(min_size=1, max_size=200), st.sampled_from([4, 8, 16])
)
def test_ccm_round_trip(key: bytes, aad: bytes, plaintext: bytes, tag: int) -> None:
    nonce = crypto.ccm_nonce(1, 7)
    sealed = crypto.ccm_seal(key, nonce, aad, plaintext, tag)
    assert len(sealed) == len(plaintext) + tag
    assert crypto.ccm_open(key, nonce, aad, sealed, tag) == plaintext


@given(keys, st.binary(min_size=1, max_size=40), st.data())
def test_ccm_refuses_any_flipped_bit(key: bytes, plaintext: bytes, data: st.DataObject) -> None:
    nonce = crypto.ccm_nonce(0, 1)
    aad = b"\x82\x20\x01\x00\x81\x05\x01\x01"
    sealed = crypto.ccm_seal(key, nonce, aad, plaintext, 16)
    joined = bytearray(aad + sealed)
    bit = data.draw(st.integers(0, 8 * len(joined) - 1))
    joined[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AuthenticationFailed):
        crypto.ccm_open(key, nonce, bytes(joined[: len(aad)]), bytes(joined[len(aad) :]), 16)


def test_ccm_wrong_key_nonce_or_tag_length_fails() -> None:
    nonce = crypto.ccm_nonce(0, 1)
    sealed = crypto.ccm_seal(SESSION_KEY, nonce, b"a", b"secret", 8)
    for key, n, tag in (
        (SECRET, nonce, 8),
        (SESSION_KEY, crypto.ccm_nonce(1, 1), 8),
        (SESSION_KEY, nonce, 4),
    ):
        with pytest.raises(AuthenticationFailed):
            crypto.ccm_open(key, n, b"a", sealed, tag)
    with pytest.raises(AuthenticationFailed):
        crypto.ccm_open(SESSION_KEY, nonce, b"a", sealed[:8], 8)
    assert issubclass(AuthenticationFailed, BadPacket)


@pytest.mark.parametrize(
    "call",
    [
        lambda: crypto.ccm_seal(bytes(16), crypto.ccm_nonce(0, 0), b"", b"x", 16),
        lambda: crypto.ccm_seal(bytes(32), bytes(12), b"", b"x", 16),
        lambda: crypto.ccm_seal(bytes(32), crypto.ccm_nonce(0, 0), b"", b"x", 5),
        lambda: crypto.ccm_open(bytes(32), bytes(7), b"", bytes(20), 16),
        lambda: crypto.make_ticket(bytes(32), bytes(32), bytes(31)),
        lambda: crypto.make_ticket(bytes(31), bytes(32), bytes(32)),
        lambda: crypto.session_key_from_ticket(bytes(64), bytes(32)),  # not a Ticket
        lambda: crypto.session_key_from_ticket(Ticket.from_bytes(bytes(64)), bytes(33)),
        lambda: crypto.accept_confirmation(bytes(31), *exchange_parts()),
    ],
)
def test_bad_arguments_are_value_errors(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


def exchange_parts() -> tuple[InitiatorBlock, ResponderInit, KeyRequest]:
    rekey, accept = exchange()
    assert accept.responder_init is not None
    return rekey.initiator, accept.responder_init, accept.responder
