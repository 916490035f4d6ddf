"""Address tokens: a provider's stateless proof that a requestor receives
what is sent to its address (as QUIC's Retry tokens, RFC 9000 section 8.1).

A plaintext Fetch names its source address only by the datagram's source,
which anyone can forge; served as asked, one such Fetch would make the
provider send a whole object to a victim. So a provider answers a plaintext
Fetch that carries no valid token with a small Retry message carrying a
token, keeps no state for it, and serves only Fetches that carry a valid
token: whoever repeats its Fetch with the token received what was sent to
that address.

A token is ``u32 time bucket || 16-byte HMAC-SHA256(key, label || bucket ||
address)``: valid for the address it was minted for while its bucket is at
most ``lifetime`` old, checked with one MAC and a constant-time compare. The
key never leaves the provider (a new random key per core by default: tokens
do not survive a restart, and the requestor is simply sent a new one).
"""

from __future__ import annotations

import hmac
import secrets

from dofpy._core import Address
from dofpy.errors import BadPacket

__all__ = ["TOKEN_SIZE", "AddressTokens", "read_address_token_untrusted"]

_BUCKET_SIZE = 4
_MAC_SIZE = 16
TOKEN_SIZE = _BUCKET_SIZE + _MAC_SIZE
"""Bytes of an address token."""
_LABEL = b"dofpy transfer address token\x00"
_BUCKETS = 1 << 32


def read_address_token_untrusted(token: bytes) -> tuple[int, bytes]:
    """``(time bucket, MAC)`` of a token from the network; raises only ``BadPacket``."""
    if type(token) is not bytes or len(token) != TOKEN_SIZE:
        raise BadPacket(f"address token: expected {TOKEN_SIZE} bytes")
    return int.from_bytes(token[:_BUCKET_SIZE], "big"), token[_BUCKET_SIZE:]


def _address_bytes(address: Address) -> bytes:
    host, port = address
    return host.encode("utf-8", "surrogatepass") + b"\x00" + port.to_bytes(2, "big")


class AddressTokens:
    """Mints and checks the address tokens of one provider."""

    def __init__(
        self, key: bytes | None = None, *, lifetime: float = 600.0, granularity: float = 10.0
    ) -> None:
        if key is not None and len(key) != 32:
            raise ValueError("an address token key is 32 bytes")
        if lifetime <= 0 or granularity <= 0 or granularity > lifetime:
            raise ValueError("need 0 < granularity <= lifetime")
        self._key = key if key is not None else secrets.token_bytes(32)
        self._granularity = granularity
        self._max_age = int(lifetime // granularity)

    def _bucket(self, now: float) -> int:
        return int(now // self._granularity) % _BUCKETS

    def _mac(self, bucket: int, address: Address) -> bytes:
        data = _LABEL + bucket.to_bytes(_BUCKET_SIZE, "big") + _address_bytes(address)
        return hmac.digest(self._key, data, "sha256")[:_MAC_SIZE]

    def mint(self, address: Address, now: float) -> bytes:
        """A token for ``address``, valid from ``now`` for the lifetime."""
        bucket = self._bucket(now)
        return bucket.to_bytes(_BUCKET_SIZE, "big") + self._mac(bucket, address)

    def check(self, address: Address, token: bytes, now: float) -> bool:
        """Whether ``token`` (from the network) was minted here for ``address``
        and has not expired."""
        try:
            bucket, mac = read_address_token_untrusted(token)
        except BadPacket:
            return False
        if (self._bucket(now) - bucket) % _BUCKETS > self._max_age:
            return False
        return hmac.compare_digest(mac, self._mac(bucket, address))
