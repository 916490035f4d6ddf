"""Fuzz target: ``accept_trust_root`` and ``rotate_trust_root``, fed
arbitrary COSE.

The installed trust root needs 2 of 3 manufacturer keys to sign its
successor; the seeds are successors signed by enough old and new keys, by too
few old ones, and a first trust root. A refusal is a ``ManifestRefused``
(``Malformed`` for what does not decode); anything else is a crash. An
accepted successor must be the same vendor's, newer, unexpired, and signed by
a threshold of the installed root's manufacturer keys (checked here from the
keys the signatures name, independently of the tally code).
"""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.asymmetric import ed25519

from dofpy.image.cose import SigningKey, decode_cose_untrusted
from dofpy.image.errors import Malformed, ManifestRefused
from dofpy.image.trust import (
    Party,
    TrustedKey,
    TrustRoot,
    accept_trust_root,
    rotate_trust_root,
    sign_trust_root,
)

_VENDOR = uuid.UUID(int=0xD0F)
_NOW = 1_000_000.0


def _ed25519(seed: int) -> SigningKey:
    return SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


_OLD = (_ed25519(1), _ed25519(2), _ed25519(3))
_NEW = (_ed25519(1), _ed25519(2), _ed25519(6))  # key 3 rotated out, key 6 in


def _root(version: int, keys: tuple[SigningKey, ...], removed: tuple[bytes, ...] = ()) -> TrustRoot:
    return TrustRoot(
        _VENDOR,
        version,
        int(_NOW) + 10_000,
        tuple(TrustedKey(Party.MANUFACTURER, key.public_key) for key in keys),
        {Party.MANUFACTURER: 2},
        {Party.MANUFACTURER: 2},
        {},
        removed,
    )


_INSTALLED = _root(1, _OLD)
_SUCCESSOR = _root(2, _NEW, (_OLD[2].kid,))


def _signed(root: TrustRoot, *keys: SigningKey) -> bytes:
    first, *rest = keys
    message = sign_trust_root(root, first, Party.MANUFACTURER)
    for key in rest:
        message = sign_trust_root(message, key, Party.MANUFACTURER)
    return message.encode()


SEEDS: tuple[bytes, ...] = (
    _signed(_SUCCESSOR, _OLD[0], _OLD[1], _NEW[2]),
    _signed(_SUCCESSOR, _OLD[0], _NEW[2]),
    _signed(_SUCCESSOR, _OLD[2], _OLD[0], _OLD[1]),
    _signed(_INSTALLED, *_OLD),
)

_OLD_KIDS = {key.kid for key in _OLD}


def target(data: bytes) -> None:
    """Accept ``data`` as a first trust root and as the installed one's successor."""
    try:
        first = accept_trust_root(data, _NOW, vendor_id=_VENDOR)
    except Malformed:
        raise  # a BadPacket (and so for the rotation too): not kept by the runner
    except ManifestRefused:
        pass
    else:
        if first.vendor_id != _VENDOR or first.expires <= _NOW:
            raise AssertionError("accepted another vendor's or an expired trust root")
    try:
        new = rotate_trust_root(_INSTALLED, data, _NOW)
    except ManifestRefused:
        return
    if new.vendor_id != _VENDOR or new.version <= _INSTALLED.version or new.expires <= _NOW:
        raise AssertionError("rotated to another vendor's, an older or an expired trust root")
    named = {signature.kid for signature in decode_cose_untrusted(data).signatures}
    if len(named & _OLD_KIDS) < 2:
        raise AssertionError("rotated without 2 signatures naming installed manufacturer keys")
