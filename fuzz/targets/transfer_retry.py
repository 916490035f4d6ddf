"""Fuzz target: the address token a plaintext Fetch carries
(``read_address_token_untrusted``) and the Retry and tokened Fetch messages
(``decode_transfer_untrusted``).

The input is an OAP command payload: decoded as a transfer message (an
accepted one must re-encode to the input); a token it carries is read and
checked, which must never raise (an invalid token is just invalid).
"""

from __future__ import annotations

from dofpy.transfer.messages import (
    FetchRequest,
    RetryMessage,
    decode_transfer_untrusted,
    encode_transfer,
)
from dofpy.transfer.tokens import AddressTokens, read_address_token_untrusted
from dofpy.wire.oap import decode_oap_untrusted

_OBJECT = bytes(range(32))
_TOKENS = AddressTokens(b"\x07" * 32)
_TOKEN = _TOKENS.mint(("192.0.2.1", 40000), 100.0)

SEEDS: tuple[bytes, ...] = tuple(
    encode_transfer(message)
    for message in (
        RetryMessage(_OBJECT, 0, _TOKEN),
        RetryMessage(_OBJECT, 7, b"\x01"),
        FetchRequest(_OBJECT, 1, 1024, 0, 16, ((0, 2),), ((0, 40),), _TOKEN),
        FetchRequest(_OBJECT, 2, 1024, 0, 0, (), (), b"\xff" * 64),
    )
)


def target(data: bytes) -> None:
    """Decode; re-encode exactly; read and check any token."""
    message = decode_transfer_untrusted(decode_oap_untrusted(data, is_response=False))
    if encode_transfer(message) != data:
        raise AssertionError("accepted a transfer message that is not in minimal form")
    token = message.token if isinstance(message, RetryMessage | FetchRequest) else b""
    if token:
        _TOKENS.check(("192.0.2.1", 40000), token, 100.0)  # never raises
        read_address_token_untrusted(token)  # BadPacket unless TOKEN_SIZE bytes
