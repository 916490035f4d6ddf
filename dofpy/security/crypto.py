"""Pure cryptographic functions of TEP and the CCM security mode.

Nothing here draws randomness or keeps state: nonces, MACs and keys come in
as arguments, so every function is deterministic and testable.

Constructions, as Wireshark's DOF dissector verifies them:

- **Ticket** (Security.5) = MAC (32 bytes) ‖ KEY (32 bytes). The initiator,
  who knows its identity secret S, recovers the session key as
  ``K = KEY xor AES-256-ECB(S, MAC)`` (the MAC encrypted as two 16-byte
  blocks). :func:`make_ticket` is the inverse, for whoever issues tickets.
- **Accept confirmation** = ``HMAC-SHA256(K, pad16(initiator nonce) ‖
  pad16(responder nonce) ‖ responder init ‖ responder node OID)``, where
  ``pad16`` puts zero bytes *in front of* the nonce up to 16 bytes and the
  responder init and node OID are their exact wire encodings.
- **Confirm confirmation** (the initiator's proof; not public, a dofpy
  extension): the same HMAC with the roles swapped, ``HMAC-SHA256(K,
  pad16(responder nonce) ‖ pad16(initiator nonce) ‖ responder init ‖
  initiator node OID)``. The dissector shows it without checking it.
- **CCM**: AES-256-CCM with an 11-byte nonce ``node id (4, big-endian) ‖ slot
  (2) ‖ 00 ‖ packet number (4)`` and a 4..16-byte tag. In a two-party session
  the initiator is node 0 and the responder node 1, slot 0.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from dofpy.errors import BadPacket
from dofpy.wire.ccm import CcmOptions
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet
from dofpy.wire.security import (
    KEY_CREDENTIAL,
    TICKET_PART_SIZE,
    AuthenticatorBlock,
    InitiatorBlock,
    KeyRequest,
    SecurityIdentity,
    SecurityMode,
    Ticket,
)
from dofpy.wire.tep import ResponderInit, TepAccept, TepConfirm, TepRekey

__all__ = [
    "CCM_NONCE_SIZE",
    "INITIATOR_NODE",
    "KEY_SIZE",
    "RESPONDER_NODE",
    "TICKET_MAC_SIZE",
    "AuthenticationFailed",
    "CcmKey",
    "accept_confirmation",
    "build_accept",
    "build_confirm",
    "build_rekey",
    "ccm_nonce",
    "ccm_open",
    "ccm_seal",
    "confirm_confirmation",
    "make_ticket",
    "session_key_from_accept",
    "session_key_from_ticket",
    "verify_confirm",
]

KEY_SIZE = 32
TICKET_MAC_SIZE = TICKET_PART_SIZE
CCM_NONCE_SIZE = 11
INITIATOR_NODE = 0
RESPONDER_NODE = 1
_VALID_TAGS = frozenset(range(4, 17, 2))
_NONCE_PAD = 16


class AuthenticationFailed(BadPacket):
    """A MAC, tag or confirmation did not verify: wrong key, or the bytes were
    changed. A ``BadPacket``, so callers that drop bad input drop these too."""


def _check_key(key: bytes, name: str) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ValueError(f"{name} must be {KEY_SIZE} bytes")


def _aes_ecb(key: bytes, data: bytes) -> bytes:
    # ECB over exactly two blocks of a random MAC: this is the ticket
    # construction itself, not a general-purpose use of ECB.
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305
    return encryptor.update(data) + encryptor.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def session_key_from_ticket(ticket: Ticket, identity_secret: bytes) -> bytes:
    """The session key K in ``ticket`` (MAC ‖ KEY) for the holder of
    ``identity_secret``: ``KEY xor AES-256-ECB(secret, MAC)``."""
    if not isinstance(ticket, Ticket):
        raise ValueError("ticket must be a Ticket")
    _check_key(identity_secret, "identity secret")
    return _xor(ticket.key, _aes_ecb(identity_secret, ticket.mac))


def make_ticket(session_key: bytes, identity_secret: bytes, mac: bytes) -> Ticket:
    """A ticket carrying ``session_key`` to the holder of ``identity_secret``.

    ``mac`` is 32 bytes chosen by the issuer (fresh random bytes in practice;
    injected here). The ticket is MAC ‖ (K xor AES-256-ECB(secret, MAC)).
    """
    _check_key(session_key, "session key")
    _check_key(identity_secret, "identity secret")
    if not isinstance(mac, bytes) or len(mac) != TICKET_MAC_SIZE:
        raise ValueError("a ticket MAC is 32 bytes")
    return Ticket(mac, _xor(session_key, _aes_ecb(identity_secret, mac)))


def _pad16(nonce: bytes) -> bytes:
    # KeyRequest guarantees 1..16 bytes; the zeros go in front.
    return bytes(_NONCE_PAD - len(nonce)) + nonce


def _hmac(key: bytes, *parts: bytes) -> bytes:
    _check_key(key, "session key")
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


def accept_confirmation(
    session_key: bytes,
    initiator: InitiatorBlock,
    responder_init: ResponderInit,
    responder: KeyRequest,
) -> bytes:
    """The 32-byte confirmation an Accept carries (the dissector checks it)."""
    return _hmac(
        session_key,
        _pad16(initiator.request.nonce),
        _pad16(responder.nonce),
        responder_init.encode(),
        responder.identity.node.encode(),
    )


def confirm_confirmation(
    session_key: bytes,
    initiator: InitiatorBlock,
    responder_init: ResponderInit,
    responder: KeyRequest,
) -> bytes:
    """The 32-byte confirmation the initiator's Confirm carries (dofpy's
    construction: the Accept's with the roles swapped)."""
    return _hmac(
        session_key,
        _pad16(responder.nonce),
        _pad16(initiator.request.nonce),
        responder_init.encode(),
        initiator.request.identity.node.encode(),
    )


# -- the exchange, step by step ------------------------------------------------------


def build_rekey(
    domain: OID | None,
    node: OID,
    nonce: bytes,
    *,
    options: CcmOptions | None = None,
    permissions: PermissionSet | None = None,
    desired_duration: int = 0,
    credential_type: int = KEY_CREDENTIAL,
) -> TepRekey:
    """Initiator, step 1: the Rekey command for ``node`` in ``domain`` (give
    ``domain=None`` when the Rekey travels inside a secure session)."""
    identity = SecurityIdentity(node, credential_type)
    request = KeyRequest(identity, nonce, permissions or PermissionSet())
    block = InitiatorBlock(request, SecurityMode.ccm(options), desired_duration)
    return TepRekey(domain, block)


def build_accept(
    initiator: InitiatorBlock,
    *,
    session_key: bytes,
    ticket: Ticket,
    responder: KeyRequest,
    responder_init: ResponderInit,
    authenticator: AuthenticatorBlock | None = None,
) -> TepAccept:
    """Responder, step 2: the Accept for a Rekey whose initiator block is
    ``initiator``, given the session key and the initiator's ticket (both from
    the Authenticator) and the responder's own key request and init."""
    confirmation = accept_confirmation(session_key, initiator, responder_init, responder)
    return TepAccept(
        ticket, confirmation, responder_init, responder, authenticator or AuthenticatorBlock()
    )


def session_key_from_accept(
    accept: TepAccept, initiator: InitiatorBlock, identity_secret: bytes
) -> bytes:
    """Initiator, step 3: recover K from the Accept's ticket and check the
    Accept's confirmation; raises :class:`AuthenticationFailed` if it does
    not match (wrong secret, or a forged or altered Accept)."""
    if accept.responder_init is None:
        raise AuthenticationFailed("an Accept without a responder init cannot be confirmed")
    key = session_key_from_ticket(accept.ticket, identity_secret)
    expected = accept_confirmation(key, initiator, accept.responder_init, accept.responder)
    if not hmac.compare_digest(expected, accept.confirmation):
        raise AuthenticationFailed("TEP Accept confirmation does not match")
    return key


def build_confirm(session_key: bytes, initiator: InitiatorBlock, accept: TepAccept) -> TepConfirm:
    """Initiator, step 4: the Confirm command (send it with the Rekey's
    operation id)."""
    if accept.responder_init is None:
        raise ValueError("an Accept without a responder init cannot be confirmed")
    return TepConfirm(
        confirm_confirmation(session_key, initiator, accept.responder_init, accept.responder)
    )


def verify_confirm(
    confirm: TepConfirm, session_key: bytes, initiator: InitiatorBlock, accept: TepAccept
) -> None:
    """Responder, step 5: check the initiator's Confirm; raises
    :class:`AuthenticationFailed` when it does not prove knowledge of K."""
    if accept.responder_init is None:
        raise AuthenticationFailed("an Accept without a responder init cannot be confirmed")
    expected = confirm_confirmation(session_key, initiator, accept.responder_init, accept.responder)
    if not hmac.compare_digest(expected, confirm.confirmation):
        raise AuthenticationFailed("TEP Confirm confirmation does not match")


# -- CCM ----------------------------------------------------------------------------


def ccm_nonce(node_id: int, packet_number: int, slot: int = 0) -> bytes:
    """The 11-byte CCM nonce: node id (4) ‖ slot (2) ‖ 00 ‖ packet number (4)."""
    for name, value, limit in (
        ("node id", node_id, 0xFFFFFFFF),
        ("packet number", packet_number, 0xFFFFFFFF),
        ("slot", slot, 0xFFFF),
    ):
        if isinstance(value, bool) or not 0 <= value <= limit:
            raise ValueError(f"CCM {name} {value} outside 0..{limit:#x}")
    return (
        node_id.to_bytes(4, "big")
        + slot.to_bytes(2, "big")
        + b"\x00"
        + packet_number.to_bytes(4, "big")
    )


def _aesccm(key: bytes, tag_length: int) -> AESCCM:
    _check_key(key, "session key")
    if tag_length not in _VALID_TAGS:
        raise ValueError(f"CCM tag length {tag_length} is not one of 4, 6, ... 16")
    return AESCCM(key, tag_length=tag_length)


class CcmKey:
    """An AES-256-CCM key with its tag length, ready for many packets.

    Building the cipher object costs about as much as sealing a small packet,
    so a session keeps one per key instead of one per packet (the functions
    :func:`ccm_seal` and :func:`ccm_open` build one per call).
    """

    __slots__ = ("_aead", "tag_length")

    def __init__(self, key: bytes, tag_length: int) -> None:
        self._aead = _aesccm(key, tag_length)
        self.tag_length = tag_length

    def seal(self, nonce: bytes, associated_data: bytes, plaintext: bytes) -> bytes:
        """Ciphertext ‖ tag of ``plaintext`` (``nonce``: 11 bytes)."""
        if len(nonce) != CCM_NONCE_SIZE:
            raise ValueError("a CCM nonce is 11 bytes")
        return self._aead.encrypt(nonce, plaintext, associated_data)

    def open(self, nonce: bytes, associated_data: bytes, sealed: bytes) -> bytes:
        """Check and decrypt ciphertext ‖ tag; raises :class:`AuthenticationFailed`."""
        if len(nonce) != CCM_NONCE_SIZE:
            raise ValueError("a CCM nonce is 11 bytes")
        if len(sealed) <= self.tag_length:
            raise AuthenticationFailed("CCM data shorter than its tag")
        try:
            return self._aead.decrypt(nonce, sealed, associated_data)
        except InvalidTag:
            raise AuthenticationFailed("CCM tag does not verify") from None


def ccm_seal(
    key: bytes, nonce: bytes, associated_data: bytes, plaintext: bytes, tag_length: int
) -> bytes:
    """AES-256-CCM: ciphertext ‖ tag."""
    return CcmKey(key, tag_length).seal(nonce, associated_data, plaintext)


def ccm_open(
    key: bytes, nonce: bytes, associated_data: bytes, sealed: bytes, tag_length: int
) -> bytes:
    """Check and decrypt ciphertext ‖ tag; raises :class:`AuthenticationFailed`."""
    return CcmKey(key, tag_length).open(nonce, associated_data, sealed)
