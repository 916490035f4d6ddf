"""A channel's key usage: the packets it protected (both directions), the
forgeries it refused, and the usage limit past which it seals nothing."""

from __future__ import annotations

import pytest

from dofpy.security.crypto import AuthenticationFailed
from dofpy.security.secure_frame import KeyExhausted, SecureChannel
from dofpy.wire.dpp import DppPacket, OpIdType
from dofpy.wire.oap import OAP_APP_ID

KEY = bytes(range(100, 132))
GET = DppPacket(OAP_APP_ID, b"\x0a\x03\x01\x02", op_id_type=OpIdType.IMPLIED_SENDER, op_count=2)


def test_usage_counts_both_directions_and_the_limit_stops_sealing() -> None:
    client = SecureChannel(KEY, ssid=1, initiator=True, usage_limit=6)
    server = SecureChannel(KEY, ssid=1, initiator=False, usage_limit=6)
    for _ in range(2):
        server.open_untrusted(client.seal(GET))
        client.open_untrusted(server.seal(GET))
    assert client.packets_protected == server.packets_protected == 4
    server.open_untrusted(client.seal_command(OAP_APP_ID, b"\x01", 9))
    # A lost packet of the peer counts too: its packet number says it was sealed.
    client.seal(GET)
    assert client.packets_protected == 6 and client.exhausted
    assert server.packets_protected == 5 and not server.exhausted
    with pytest.raises(KeyExhausted):
        client.seal(GET)
    with pytest.raises(KeyExhausted):
        client.seal_command(OAP_APP_ID, b"\x01", 10)
    # The End Session that retires the key is still sealed, and opens.
    final = client.seal(GET, final=True)
    assert server.open_untrusted(final).packet_number == 5


def test_failed_authentications_are_counted_per_key() -> None:
    client = SecureChannel(KEY, ssid=1, initiator=True)
    server = SecureChannel(KEY, ssid=1, initiator=False)
    forged = bytearray(client.seal(GET))
    forged[-1] ^= 1
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            server.open_untrusted(bytes(forged))
    assert server.failed_authentications == 3 and server.packets_protected == 0
    assert client.failed_authentications == 0


def test_usage_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="usage_limit"):
        SecureChannel(KEY, ssid=1, initiator=True, usage_limit=0)
    assert SecureChannel(KEY, ssid=1, initiator=True).usage_limit is None
