"""Whole secure datagrams: DNP · DPP with a security header · CCM header ·
AES-256-CCM ciphertext and tag.

Layout of the DPP part, as Wireshark's DOF dissector decrypts it::

    DPP header ... delay      (the usual DPP v2 fields, flag 0x80 set)
    security header           flags 0x81 (mode header follows, SSID present) · SSID c4
    CCM header                flags · packet number c4 (dofpy always sends it)
    ciphertext ‖ tag          AES-256-CCM of (application id c2 ‖ payload)

The associated data is the DPP bytes from the DPP header through the end of
the CCM header (the DNP header is not included). The nonce is
:func:`~dofpy.security.crypto.ccm_nonce` of the *sender's* node id (0 for the
TEP initiator, 1 for the responder) and the packet number.

:func:`seal_datagram` turns an ordinary (clear) :class:`DppPacket` into a
secure datagram; :func:`open_datagram_untrusted` gives the clear packet back.
:class:`SecureChannel` adds the per-direction packet numbers and replay window
of one session.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dofpy.errors import BadPacket, LocalProtocolError
from dofpy.security.crypto import (
    INITIATOR_NODE,
    RESPONDER_NODE,
    AuthenticationFailed,
    CcmKey,
    ccm_nonce,
    ccm_open,
    ccm_seal,
)
from dofpy.security.replay import PacketCounter, ReplayWindow
from dofpy.wire._codec import C4_MAX, Reader
from dofpy.wire.ccm import CcmHeader, read_ccm_header
from dofpy.wire.dnp import DnpPacket, encode_dnp
from dofpy.wire.dpp import (
    DppPacket,
    DppSecurityHeader,
    decode_frame_untrusted,
    encode_app,
    encode_dpp,
    encode_sealed_command_head,
    encode_secure_dpp_head,
    split_app_untrusted,
)

__all__ = [
    "AuthenticationFailed",
    "ChannelStatistics",
    "KeyExhausted",
    "OpenedFrame",
    "ReplayedPacket",
    "SecureChannel",
    "SecureFrame",
    "WrongSession",
    "open_datagram_untrusted",
    "open_secure_frame",
    "parse_secure_datagram_untrusted",
    "seal_datagram",
]


class ReplayedPacket(BadPacket):
    """The packet number was already accepted, or is below the replay window."""


class WrongSession(BadPacket):
    """The datagram is not protected for this session (no SSID match, not CCM)."""


class KeyExhausted(LocalProtocolError):
    """The channel's key protected as many packets as its usage limit allows:
    it seals nothing more (a new session key is needed). A node checks
    :attr:`SecureChannel.exhausted` before sealing, so this is never raised
    out of its send paths."""


@dataclass(frozen=True, slots=True)
class SecureFrame:
    """A parsed secure datagram, still encrypted.

    ``dpp.payload`` is the CCM header followed by ``sealed`` (ciphertext ‖
    tag); ``associated_data`` is what the tag covers besides the ciphertext.
    """

    dnp: DnpPacket
    dpp: DppPacket
    ccm: CcmHeader
    associated_data: bytes
    sealed: bytes

    @property
    def ssid(self) -> int | None:
        """The security state identifier naming the session."""
        assert self.dpp.security is not None  # guaranteed by the parser
        return self.dpp.security.ssid

    @property
    def packet_number(self) -> int:
        """The packet number (always present in frames this module accepts)."""
        assert self.ccm.packet_number is not None  # guaranteed by the parser
        return self.ccm.packet_number


@dataclass(frozen=True, slots=True)
class OpenedFrame:
    """A decrypted secure datagram: ``dpp`` is the clear packet (application
    id and payload restored, no security header), ``security`` and ``ccm``
    the headers it travelled under."""

    dnp: DnpPacket
    dpp: DppPacket
    security: DppSecurityHeader
    ccm: CcmHeader

    @property
    def packet_number(self) -> int:
        """The packet number the sender used."""
        assert self.ccm.packet_number is not None  # guaranteed by the parser
        return self.ccm.packet_number


def seal_datagram(
    packet: DppPacket,
    *,
    key: bytes,
    ssid: int,
    sender_node: int,
    packet_number: int,
    tag_length: int = 16,
    source: int | None = None,
    destination: int | None = None,
    length_size: int = 0,
) -> bytes:
    """Protect a clear DPP ``packet`` and frame it in DNP.

    The header fields of ``packet`` (command/response, operation id, seq,
    retry, delay) stay in clear and are authenticated; its application id and
    payload are encrypted. ``sender_node`` is ``INITIATOR_NODE`` or
    ``RESPONDER_NODE``.
    """
    if packet.security is not None or packet.app_id is None:
        raise ValueError("seal_datagram takes a clear DPP packet (with an app id)")
    ccm = CcmHeader(packet_number=packet_number)
    secure = dataclasses.replace(
        packet, app_id=None, security=DppSecurityHeader(ssid=ssid), payload=ccm.encode()
    )
    associated_data = encode_dpp(secure)
    sealed = ccm_seal(
        key,
        ccm_nonce(sender_node, packet_number),
        associated_data,
        encode_app(packet.app_id, packet.payload),
        tag_length,
    )
    return encode_dnp(DnpPacket(associated_data + sealed, source, destination, length_size))


def _packet_number(ccm: CcmHeader) -> int:
    if ccm.packet_number is None:
        # Implicit numbering needs both sides to count every packet, which
        # UDP loss makes impossible; dofpy always sends the number.
        raise BadPacket("CCM header without a packet number")
    return ccm.packet_number


def _secure_frame(dnp: DnpPacket, dpp: DppPacket) -> SecureFrame:
    if dpp.security is None or not dpp.security.mode_header:
        raise WrongSession("not a CCM-protected packet")
    reader = Reader(dpp.payload)
    ccm = read_ccm_header(reader)
    _packet_number(ccm)
    sealed = reader.rest()
    associated_data = dnp.payload[: len(dnp.payload) - len(sealed)]
    return SecureFrame(dnp, dpp, ccm, associated_data, sealed)


def parse_secure_datagram_untrusted(datagram: bytes) -> SecureFrame:
    """Split a secure datagram into its headers and sealed data (no key
    needed). Raises ``BadPacket`` for anything that is not a CCM-protected DPP
    packet with a packet number (:class:`WrongSession` for clear packets)."""
    dnp, dpp = decode_frame_untrusted(datagram)
    return _secure_frame(dnp, dpp)


def open_secure_frame(
    frame: SecureFrame, *, key: bytes, sender_node: int, tag_length: int = 16
) -> OpenedFrame:
    """Check and decrypt ``frame``; raises :class:`AuthenticationFailed` (a
    ``BadPacket``) when the tag does not verify."""
    plaintext = ccm_open(
        key,
        ccm_nonce(sender_node, frame.packet_number),
        frame.associated_data,
        frame.sealed,
        tag_length,
    )
    app_id, payload = split_app_untrusted(plaintext)
    assert frame.dpp.security is not None  # guaranteed by the parser
    clear = dataclasses.replace(frame.dpp, app_id=app_id, payload=payload, security=None)
    return OpenedFrame(frame.dnp, clear, frame.dpp.security, frame.ccm)


def open_datagram_untrusted(
    datagram: bytes, *, key: bytes, sender_node: int, tag_length: int = 16
) -> OpenedFrame:
    """Parse, check and decrypt a secure datagram in one step."""
    frame = parse_secure_datagram_untrusted(datagram)
    return open_secure_frame(frame, key=key, sender_node=sender_node, tag_length=tag_length)


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """Counts of one channel's received packets: accepted, refused as replays,
    refused as below the window, refused for failed authentication."""

    accepted: int
    replayed: int
    too_old: int
    failed_authentication: int


class SecureChannel:
    """One side of a two-party CCM session: its key, its SSID, the packet
    numbers it sends and the replay window of those it receives.

    ``initiator`` says whether this side ran the TEP exchange as initiator
    (node 0) or responder (node 1).

    The cipher, the security header and both nonce prefixes are made once
    here, not per packet: a block transfer seals and opens thousands of
    datagrams per second on one channel.
    """

    __slots__ = (
        "_ccm",
        "_counter",
        "_failed",
        "_first",
        "_limit",
        "_overhead",
        "_receive_nonce",
        "_security_header",
        "_send_nonce",
        "_ssid",
        "_window",
        "initiator",
    )

    def __init__(
        self,
        key: bytes,
        *,
        ssid: int,
        initiator: bool,
        tag_length: int = 16,
        window_size: int = 1024,
        first_packet_number: int = 1,
        usage_limit: int | None = None,
    ) -> None:
        # Fails now, not at the first packet, on a bad key, tag length or SSID.
        self._ccm = CcmKey(key, tag_length)
        self._security_header = DppSecurityHeader(ssid=ssid).encode()
        # The security header, the CCM header (flags, a c4 packet number of at
        # most 4 bytes) and the tag: what sealing adds to a clear datagram.
        self._overhead = len(self._security_header) + 1 + 4 + tag_length
        self._ssid = ssid
        self.initiator = initiator
        sender, receiver = (
            (INITIATOR_NODE, RESPONDER_NODE) if initiator else (RESPONDER_NODE, INITIATOR_NODE)
        )
        # node id (4) ‖ slot (2) ‖ 00: the nonce less its packet number.
        self._send_nonce = ccm_nonce(sender, 0)[:7]
        self._receive_nonce = ccm_nonce(receiver, 0)[:7]
        self._counter = PacketCounter(first_packet_number)
        self._window = ReplayWindow(window_size)
        self._failed = 0
        if usage_limit is not None and usage_limit < 1:
            raise ValueError("usage_limit must be >= 1")
        self._first = first_packet_number
        # Packets protected under this key (both directions) past which it
        # seals no more; None: only the packet-number space bounds it.
        self._limit = usage_limit

    @property
    def ssid(self) -> int:
        """The SSID this session's packets carry."""
        return self._ssid

    @property
    def max_overhead(self) -> int:
        """At most how many bytes longer a datagram sealed here is than the
        same packet in the clear (a short packet number takes less)."""
        return self._overhead

    @property
    def packets_remaining(self) -> int:
        """Packet numbers left to send before the session must be rekeyed."""
        return self._counter.remaining

    @property
    def packets_protected(self) -> int:
        """How many packets this key has protected, both directions: the ones
        sealed here and, for the peer's, the highest packet number accepted
        from it (dofpy numbers from 1, so that is how many it sealed; lost
        ones included). What the AEAD confidentiality limit counts: one key
        serves both directions."""
        highest = self._window.highest
        return self._counter.used + (0 if highest is None else highest)

    @property
    def failed_authentications(self) -> int:
        """Datagrams that named this session but failed authentication:
        forgery attempts, what the AEAD integrity limit counts."""
        return self._failed

    @property
    def usage_limit(self) -> int | None:
        """:attr:`packets_protected` at which this channel stops sealing."""
        return self._limit

    @property
    def exhausted(self) -> bool:
        """True when sealing one more packet would pass the usage limit (or
        the packet numbers are used up): a new session key is needed."""
        if self._counter.remaining <= 0:
            return True
        return self._limit is not None and self.packets_protected >= self._limit

    def _next_packet_number(self) -> int:
        if self._limit is not None and self.packets_protected >= self._limit:
            raise KeyExhausted("the session key reached its usage limit: rekey the session")
        return self._counter.next()

    def seal(
        self,
        packet: DppPacket,
        *,
        source: int | None = None,
        destination: int | None = None,
        final: bool = False,
    ) -> bytes:
        """Protect ``packet`` with the next packet number (the bytes of
        :func:`seal_datagram` with this channel's key, SSID and node).

        ``final``: the last packet of the session (its End Session), sealed
        even at the usage limit so that the peer learns the key is retired;
        only the packet numbers bound it."""
        app_id = packet.app_id
        if packet.security is not None or app_id is None:
            raise ValueError("seal takes a clear DPP packet (with an app id)")
        packet_number = self._counter.next() if final else self._next_packet_number()
        associated_data = encode_secure_dpp_head(packet, self._security_header, packet_number)
        plaintext = encode_app(app_id, packet.payload)
        sealed = self._ccm.seal(
            self._send_nonce + packet_number.to_bytes(4, "big"), associated_data, plaintext
        )
        if source is None and destination is None:
            # DNP version 1 without flags: its header is the version byte alone.
            return b"\x01" + associated_data + sealed
        return encode_dnp(DnpPacket(associated_data + sealed, source, destination))

    def seal_command(
        self, app_id: int, payload: bytes, op_count: int, retry: int | None = None
    ) -> bytes:
        """:meth:`seal` of the command ``DppPacket(app_id, payload,
        op_id_type=IMPLIED_SENDER, op_count=op_count, retry=retry)`` (a node's
        commands), the same bytes built without that packet."""
        if not (0 <= app_id <= 0x7FFF and 0 <= op_count <= C4_MAX) or (
            retry is not None and not 0 <= retry <= 0xFF
        ):
            raise ValueError("app id, op count or retry out of range")
        packet_number = self._next_packet_number()
        associated_data = encode_sealed_command_head(
            op_count, retry, self._security_header, packet_number
        )
        plaintext = encode_app(app_id, payload)
        sealed = self._ccm.seal(
            self._send_nonce + packet_number.to_bytes(4, "big"), associated_data, plaintext
        )
        return b"\x01" + associated_data + sealed

    def open_sealed_untrusted(self, datagram: bytes, packet_number: int, start: int) -> bytes:
        """The plaintext (application id and payload) of a datagram from the
        peer whose header :func:`~dofpy.wire.dpp.probe_sealed_command` read:
        ``packet_number`` and the ``start`` of its ciphertext (the DPP bytes
        before it are the associated data). Replay-checked and authenticated
        as :meth:`open_untrusted` does; raises :class:`ReplayedPacket` or
        :class:`AuthenticationFailed`."""
        return self._open(packet_number, datagram[1:start], datagram[start:])

    def _open(self, packet_number: int, associated_data: bytes, sealed: bytes) -> bytes:
        """The plaintext of ``sealed``: the one place a channel replay-checks,
        authenticates and decrypts (both open paths come here). Only an
        authenticated packet moves the replay window; a refusal is counted."""
        if not self._window.check(packet_number):
            self._window.accept(packet_number)  # counts the refusal
            raise ReplayedPacket(f"packet number {packet_number} replayed or too old")
        try:
            plaintext = self._ccm.open(
                self._receive_nonce + packet_number.to_bytes(4, "big"), associated_data, sealed
            )
        except AuthenticationFailed:
            self._failed += 1
            raise
        self._window.accept(packet_number)
        return plaintext

    def open_untrusted(self, datagram: bytes) -> OpenedFrame:
        """Check, decrypt and replay-check a datagram from the peer.

        Raises :class:`WrongSession` (other SSID or not secure),
        :class:`ReplayedPacket` or :class:`AuthenticationFailed`; all are
        ``BadPacket``. Only authenticated packets move the replay window.
        """
        dnp, dpp = decode_frame_untrusted(datagram)
        clear = self.open_packet_untrusted(dnp, dpp)
        assert dpp.security is not None  # checked by open_packet_untrusted
        frame = _secure_frame(dnp, dpp)
        return OpenedFrame(dnp, clear, dpp.security, frame.ccm)

    def open_packet_untrusted(self, dnp: DnpPacket, dpp: DppPacket) -> DppPacket:
        """:meth:`open_untrusted` of a datagram already decoded into ``dnp`` and
        ``dpp`` (so that a node parses each datagram once): the clear packet.

        Raises the same ``BadPacket`` subclasses as :meth:`open_untrusted`.
        """
        security = dpp.security
        if security is None or not security.mode_header:
            raise WrongSession("not a CCM-protected packet")
        if security.ssid != self._ssid:
            raise WrongSession(f"SSID {security.ssid} is not this session's ({self._ssid})")
        payload = dpp.payload
        if payload[:1] == b"\x01":
            # The CCM header dofpy sends: flags 0x01 and the packet number.
            reader = Reader(payload, 1)
            packet_number = reader.c4()
        else:
            reader = Reader(payload)
            packet_number = _packet_number(read_ccm_header(reader))
        sealed = reader.rest()
        whole = dnp.payload
        plaintext = self._open(packet_number, whole[: len(whole) - len(sealed)], sealed)
        app_id, payload = split_app_untrusted(plaintext)
        return DppPacket(
            app_id,
            payload,
            dpp.is_response,
            dpp.op_id_type,
            dpp.sid,
            dpp.op_count,
            dpp.seq,
            dpp.retry,
            dpp.delay,
        )

    def statistics(self) -> ChannelStatistics:
        """What this side accepted and refused so far."""
        window = self._window.statistics()
        return ChannelStatistics(window.accepted, window.replayed, window.too_old, self._failed)
