"""Fuzz target for ``decode_key_record_untrusted``, ``unwrap_content_key_untrusted``
and ``EncryptionInfo.from_cbor_map_untrusted`` (a confidential image's key
record and the manifest's encryption map)."""

from __future__ import annotations

import contextlib

import cbor2
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dofpy.errors import BadPacket
from dofpy_services.image.encryption import (
    ContentKey,
    EncryptionInfo,
    decode_key_record_untrusted,
    unwrap_content_key_untrusted,
    wrap_content_key,
)

_DEVICE = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
_KEY = ContentKey(bytes(32), bytes(16))

SEEDS: tuple[bytes, ...] = (
    wrap_content_key(_KEY, [_DEVICE.public_key()]),
    wrap_content_key(_KEY, [_DEVICE.public_key(), X25519PrivateKey.generate().public_key()]),
    cbor2.dumps(EncryptionInfo(bytes(16), 1, bytes(32), (bytes(32),)).to_cbor_map()),
)


def target(data: bytes) -> None:
    """Decode ``data`` as a key record, unwrap it, and as an encryption map;
    ``BadPacket`` is the only acceptable failure."""
    with contextlib.suppress(BadPacket):
        decode_key_record_untrusted(data)
    with contextlib.suppress(BadPacket):
        unwrap_content_key_untrusted(data, _DEVICE)
    try:
        value = cbor2.loads(data)
    except Exception:  # not CBOR at all: nothing more to decode
        return
    EncryptionInfo.from_cbor_map_untrusted(value)
