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

from dofpy.errors import BadPacket
from dofpy.security.crypto import (
    INITIATOR_NODE,
    RESPONDER_NODE,
    AuthenticationFailed,
    ccm_nonce,
    ccm_open,
    ccm_seal,
)
from dofpy.security.replay import PacketCounter, ReplayWindow
from dofpy.wire._codec import Reader
from dofpy.wire.ccm import CcmHeader, read_ccm_header
from dofpy.wire.dnp import DnpPacket, encode_dnp
from dofpy.wire.dpp import (
    DppPacket,
    DppSecurityHeader,
    decode_frame_untrusted,
    encode_app,
    encode_dpp,
    split_app_untrusted,
)

__all__ = [
    "AuthenticationFailed",
    "ChannelStatistics",
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


def parse_secure_datagram_untrusted(datagram: bytes) -> SecureFrame:
    """Split a secure datagram into its headers and sealed data (no key
    needed). Raises ``BadPacket`` for anything that is not a CCM-protected DPP
    packet with a packet number (:class:`WrongSession` for clear packets)."""
    dnp, dpp = decode_frame_untrusted(datagram)
    if dpp.security is None or not dpp.security.mode_header:
        raise WrongSession("not a CCM-protected packet")
    reader = Reader(dpp.payload)
    ccm = read_ccm_header(reader)
    if ccm.packet_number is None:
        # Implicit numbering needs both sides to count every packet, which
        # UDP loss makes impossible; dofpy always sends the number.
        raise BadPacket("CCM header without a packet number")
    sealed = reader.rest()
    associated_data = dnp.payload[: len(dnp.payload) - len(sealed)]
    return SecureFrame(dnp, dpp, ccm, associated_data, sealed)


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
    """

    __slots__ = ("_counter", "_failed", "_key", "_ssid", "_tag_length", "_window", "initiator")

    def __init__(
        self,
        key: bytes,
        *,
        ssid: int,
        initiator: bool,
        tag_length: int = 16,
        window_size: int = 1024,
        first_packet_number: int = 1,
    ) -> None:
        # Fail now, not at the first packet, on a bad key or tag length.
        ccm_seal(key, ccm_nonce(0, 0), b"", b"", tag_length)
        DppSecurityHeader(ssid=ssid)
        self._key = key
        self._ssid = ssid
        self._tag_length = tag_length
        self.initiator = initiator
        self._counter = PacketCounter(first_packet_number)
        self._window = ReplayWindow(window_size)
        self._failed = 0

    @property
    def ssid(self) -> int:
        """The SSID this session's packets carry."""
        return self._ssid

    @property
    def packets_remaining(self) -> int:
        """Packet numbers left to send before the session must be rekeyed."""
        return self._counter.remaining

    def seal(
        self,
        packet: DppPacket,
        *,
        source: int | None = None,
        destination: int | None = None,
    ) -> bytes:
        """Protect ``packet`` with the next packet number."""
        return seal_datagram(
            packet,
            key=self._key,
            ssid=self._ssid,
            sender_node=INITIATOR_NODE if self.initiator else RESPONDER_NODE,
            packet_number=self._counter.next(),
            tag_length=self._tag_length,
            source=source,
            destination=destination,
        )

    def open_untrusted(self, datagram: bytes) -> OpenedFrame:
        """Check, decrypt and replay-check a datagram from the peer.

        Raises :class:`WrongSession` (other SSID or not secure),
        :class:`ReplayedPacket` or :class:`AuthenticationFailed`; all are
        ``BadPacket``. Only authenticated packets move the replay window.
        """
        frame = parse_secure_datagram_untrusted(datagram)
        if frame.ssid != self._ssid:
            raise WrongSession(f"SSID {frame.ssid} is not this session's ({self._ssid})")
        if not self._window.check(frame.packet_number):
            self._window.accept(frame.packet_number)  # counts the refusal
            raise ReplayedPacket(f"packet number {frame.packet_number} replayed or too old")
        try:
            opened = open_secure_frame(
                frame,
                key=self._key,
                sender_node=RESPONDER_NODE if self.initiator else INITIATOR_NODE,
                tag_length=self._tag_length,
            )
        except AuthenticationFailed:
            self._failed += 1
            raise
        self._window.accept(frame.packet_number)
        return opened

    def statistics(self) -> ChannelStatistics:
        """What this side accepted and refused so far."""
        window = self._window.statistics()
        return ChannelStatistics(window.accepted, window.replayed, window.too_old, self._failed)
