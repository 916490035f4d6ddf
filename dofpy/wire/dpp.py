"""DPP, the DOF Presentation Protocol (version 2, and the version 0 query).

DPP version 2, as Wireshark's DOF dissector reads it::

    header     1 byte  bit 7: a flags byte follows; bits 0-6: version (2)
    flags      1 byte  only if header bit 7; absent means 0 (and the dissector
                       notes an explicit 0 as "default flag value included")
                       0x80 secure (a security header follows)
                       0x60 operation-id type: 0 none, 1 implied sender SID,
                            2 implied receiver SID, 3 explicit SID OID
                       0x10 response (clear: command)
                       commands: 0x04 sequence byte, 0x02 retry byte,
                                 0x09 reserved zero
                       responses: 0x0F reserved zero
    SID        OID     only for operation-id type 3
    op count   c4      only for operation-id types 1..3
    sequence   1 byte  commands with flag 0x04
    retry      1 byte  commands with flag 0x02
    delay      1 byte  every command, never a response; seconds = value up to
                       128, else 128 + (value - 128) * 32
    security   ...     only if secure: flags (0x80 security-mode header
                       follows, 0x08 remote domain, 0x04 partition, 0x02 SSID
                       assigned by the Authentication Server, 0x01 SSID
                       present) · SSID (c4, flag 0x01) · remote domain id (c4)
                       and remote partition (flag 0x08) · partition (flag 0x04);
                       a partition is a c2 count of c4 permission-group ids
    app id     c2      then the application payload (0x7FFF = DPP common ops)

The operation id (SID, op count) links a command to its responses: the
dissector keys operations by (SID, op count). A node sends a command with the
implied *sender* SID and a fresh op count; the peer answers with the implied
*receiver* SID (which is the commander again) and the same op count.

When the packet is secure, :class:`DppPacket` keeps everything after the DPP
security header as ``payload`` (the security-mode header, e.g. CCM, and the
protected application data) and ``app_id`` is ``None``; the security layer
decrypts it and splits the application id off with :func:`split_app_untrusted`.

DPP version 0 is the version query: the header alone is a query; the header
followed by a list of non-zero versions is a query response.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from dofpy.errors import BadPacket
from dofpy.wire._codec import C2_MAX, C4_MAX, Reader, check_version_list, encode_c2, encode_c4
from dofpy.wire.dnp import DnpPacket, decode_dnp_untrusted, encode_dnp
from dofpy.wire.oid import OID, read_oid

__all__ = [
    "DPP_VERSION",
    "AppId",
    "DppPacket",
    "DppPdu",
    "DppSecurityHeader",
    "DppVersionQuery",
    "DppVersionResponse",
    "OpIdType",
    "SealedCommandHead",
    "decode_dpp_any_untrusted",
    "decode_dpp_untrusted",
    "decode_frame_untrusted",
    "delay_seconds",
    "encode_app",
    "encode_dpp",
    "encode_frame",
    "encode_sealed_command_head",
    "encode_secure_dpp_head",
    "probe_sealed_command",
    "split_app_untrusted",
]

DPP_VERSION = 2

_FLAG_SECURE = 0x80
_FLAG_RESPONSE = 0x10
_FLAG_SEQUENCE = 0x04
_FLAG_RETRY = 0x02
_COMMAND_RESERVED = 0x09
_RESPONSE_RESERVED = 0x0F

_SEC_MODE_HEADER = 0x80
_SEC_REMOTE_DOMAIN = 0x08
_SEC_PARTITION = 0x04
_SEC_AS_ASSIGNED = 0x02
_SEC_SSID = 0x01
_SEC_RESERVED = 0x70


class AppId(enum.IntEnum):
    """Application ids (the c2 that starts every application payload)."""

    DSP = 0
    OAP = 1
    TEP = 128
    TRP = 129
    SGMP = 130
    COMMON = 0x7FFF


class OpIdType(enum.IntEnum):
    """How a DPP packet names the SID half of its operation id."""

    NONE = 0
    IMPLIED_SENDER = 1
    IMPLIED_RECEIVER = 2
    EXPLICIT = 3


def delay_seconds(delay: int) -> int:
    """The command delay in seconds that a raw delay byte stands for."""
    return delay if delay <= 128 else 128 + (delay - 128) * 32


def _check_u8(value: int | None, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not 0 <= value <= 0xFF):
        raise ValueError(f"DPP {name} {value} outside 0..255")


def _check_c4(value: int | None, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not 0 <= value <= C4_MAX):
        raise ValueError(f"{name} {value} outside 0..{C4_MAX:#x}")


def _check_partition(ids: tuple[int, ...], name: str) -> None:
    if len(ids) > C2_MAX:
        raise ValueError(f"{name} has {len(ids)} ids, more than {C2_MAX}")
    for group in ids:
        _check_c4(group, f"{name} permission group")


@dataclass(frozen=True, slots=True)
class DppSecurityHeader:
    """The DPP security header of a secure packet (the part before the
    security-mode header).

    ``partition`` / ``remote_partition`` are permission-group id lists;
    ``remote_partition`` goes with ``remote_domain``. ``mode_header`` says a
    security-mode header (CCM) follows in the payload.
    """

    ssid: int | None = None
    as_assigned: bool = False
    remote_domain: int | None = None
    remote_partition: tuple[int, ...] = ()
    partition: tuple[int, ...] | None = None
    mode_header: bool = True

    def __post_init__(self) -> None:
        _check_c4(self.ssid, "SSID")
        _check_c4(self.remote_domain, "remote domain id")
        _check_partition(self.remote_partition, "remote partition")
        if self.remote_partition and self.remote_domain is None:
            raise ValueError("a remote partition needs a remote domain id")
        if self.partition is not None:
            _check_partition(self.partition, "partition")

    def encode(self) -> bytes:
        """The wire encoding of the security header."""
        flags = 0
        out = bytearray()
        if self.mode_header:
            flags |= _SEC_MODE_HEADER
        if self.as_assigned:
            flags |= _SEC_AS_ASSIGNED
        if self.ssid is not None:
            flags |= _SEC_SSID
            out += encode_c4(self.ssid)
        if self.remote_domain is not None:
            flags |= _SEC_REMOTE_DOMAIN
            out += encode_c4(self.remote_domain)
            out += _encode_partition(self.remote_partition)
        if self.partition is not None:
            flags |= _SEC_PARTITION
            out += _encode_partition(self.partition)
        return bytes((flags,)) + bytes(out)


def _encode_partition(ids: tuple[int, ...]) -> bytes:
    return encode_c2(len(ids)) + b"".join(encode_c4(group) for group in ids)


def _read_partition(reader: Reader) -> tuple[int, ...]:
    count = reader.c2()
    # Each id takes at least one byte: refuse counts the data cannot hold
    # before looping.
    if count > reader.remaining():
        raise BadPacket(f"partition of {count} ids in {reader.remaining()} bytes")
    return tuple(reader.c4() for _ in range(count))


def _read_security_header(reader: Reader) -> DppSecurityHeader:
    flags = reader.u8()
    if flags & _SEC_RESERVED:
        raise BadPacket(f"DPP security header reserved flag bits set: {flags:#04x}")
    ssid = reader.c4() if flags & _SEC_SSID else None
    remote_domain = None
    remote_partition: tuple[int, ...] = ()
    if flags & _SEC_REMOTE_DOMAIN:
        remote_domain = reader.c4()
        remote_partition = _read_partition(reader)
    partition = _read_partition(reader) if flags & _SEC_PARTITION else None
    return DppSecurityHeader(
        ssid=ssid,
        as_assigned=bool(flags & _SEC_AS_ASSIGNED),
        remote_domain=remote_domain,
        remote_partition=remote_partition,
        partition=partition,
        mode_header=bool(flags & _SEC_MODE_HEADER),
    )


@dataclass(frozen=True, slots=True)
class DppPacket:
    """A DPP version 2 packet.

    ``app_id``/``payload``: the application and its payload; for a secure
    packet (``security`` set) ``app_id`` is ``None`` and ``payload`` is
    everything after the security header. ``op_count`` is required with an
    operation-id type other than ``NONE``; ``sid`` exactly with ``EXPLICIT``.
    ``seq``, ``retry`` and ``delay`` exist on commands only; a command's
    ``delay`` defaults to 0.
    """

    app_id: int | None
    payload: bytes
    is_response: bool = False
    op_id_type: OpIdType = OpIdType.NONE
    sid: OID | None = None
    op_count: int | None = None
    seq: int | None = None
    retry: int | None = None
    delay: int | None = None
    security: DppSecurityHeader | None = None

    def __post_init__(self) -> None:
        if self.security is None:
            if self.app_id is None:
                raise ValueError("a DPP packet that is not secure needs an app_id")
            if isinstance(self.app_id, bool) or not 0 <= self.app_id <= C2_MAX:
                raise ValueError(f"app id {self.app_id} outside 0..{C2_MAX:#x}")
        elif self.app_id is not None:
            raise ValueError("a secure DPP packet keeps its app id inside the payload")
        op_id_type = OpIdType(self.op_id_type)
        object.__setattr__(self, "op_id_type", op_id_type)
        if (op_id_type is OpIdType.EXPLICIT) != (self.sid is not None):
            raise ValueError("sid is given exactly when op_id_type is EXPLICIT")
        if (op_id_type is OpIdType.NONE) != (self.op_count is None):
            raise ValueError("op_count is given exactly when op_id_type is not NONE")
        _check_c4(self.op_count, "operation count")
        if self.is_response:
            if self.seq is not None or self.retry is not None or self.delay is not None:
                raise ValueError("a DPP response has no seq, retry or delay")
        else:
            if self.delay is None:
                object.__setattr__(self, "delay", 0)
            _check_u8(self.seq, "sequence")
            _check_u8(self.retry, "retry")
            _check_u8(self.delay, "delay")

    @property
    def is_secure(self) -> bool:
        """True when the packet carries a security header."""
        return self.security is not None


@dataclass(frozen=True, slots=True)
class DppVersionQuery:
    """DPP version 0 query: "which DPP versions do you support?"."""


@dataclass(frozen=True, slots=True)
class DppVersionResponse:
    """DPP version 0 query response: the supported versions (1..255 each)."""

    versions: tuple[int, ...]

    def __post_init__(self) -> None:
        check_version_list(self.versions, "DPP")


DppPdu = DppPacket | DppVersionQuery | DppVersionResponse


def encode_app(app_id: int, payload: bytes) -> bytes:
    """An application payload with its c2 application id in front."""
    if 0 <= app_id < 0x80:  # the one-byte c2 of every application dofpy runs
        return bytes((app_id,)) + payload
    return encode_c2(app_id) + payload


def split_app_untrusted(data: bytes) -> tuple[int, bytes]:
    """Split an application payload into (app id, rest)."""
    if data and data[0] < 0x80:  # a one-byte c2, read without a Reader (every datagram)
        return data[0], data[1:]
    reader = Reader(data)
    app_id = reader.c2()
    return app_id, reader.rest()


def _write_fields(packet: DppPacket, flags: int, out: bytearray) -> int:
    """Append the header fields after the flags byte (SID, operation count,
    and for a command its sequence, retry and delay) to ``out``; ``flags``
    with the bits they set."""
    if packet.sid is not None:
        out += packet.sid.encode()
    if packet.op_count is not None:
        out += encode_c4(packet.op_count)
    if packet.is_response:
        return flags | _FLAG_RESPONSE
    if packet.seq is not None:
        flags |= _FLAG_SEQUENCE
        out.append(packet.seq)
    if packet.retry is not None:
        flags |= _FLAG_RETRY
        out.append(packet.retry)
    out.append(packet.delay or 0)
    return flags


def encode_dpp(packet: DppPdu) -> bytes:
    """Encode a DPP packet (or a version query / response)."""
    if isinstance(packet, DppVersionQuery):
        return b"\x00"
    if isinstance(packet, DppVersionResponse):
        return b"\x00" + bytes(packet.versions)
    body = bytearray()
    flags = _write_fields(packet, packet.op_id_type << 5, body)
    if packet.security is not None:
        flags |= _FLAG_SECURE
        body += packet.security.encode()
        body += packet.payload
    else:
        assert packet.app_id is not None  # guaranteed by __post_init__
        body += encode_app(packet.app_id, packet.payload)
    header = bytes((0x80 | DPP_VERSION, flags)) if flags else bytes((DPP_VERSION,))
    return header + bytes(body)


def decode_dpp_any_untrusted(data: bytes) -> DppPdu:
    """Decode a DPP packet of version 2, or a version 0 query / response."""
    reader = Reader(data)
    header = reader.u8()
    version = header & 0x7F
    if version == 0:
        if header & 0x80:
            raise BadPacket("DPP version 0 header with the flags bit set")
        versions = reader.rest()
        if not versions:
            return DppVersionQuery()
        if 0 in versions:
            raise BadPacket("DPP version list contains 0")
        return DppVersionResponse(tuple(versions))
    if version != DPP_VERSION:
        raise BadPacket(f"unsupported DPP version {version}")
    flags = 0
    if header & 0x80:
        flags = reader.u8()
        if flags == 0:
            raise BadPacket("DPP flags byte present but 0 (not minimal)")
    is_response = bool(flags & _FLAG_RESPONSE)
    reserved = _RESPONSE_RESERVED if is_response else _COMMAND_RESERVED
    if flags & reserved:
        raise BadPacket(f"DPP reserved flag bits set: {flags:#04x}")
    op_id_type = OpIdType((flags >> 5) & 0x03)
    sid = read_oid(reader) if op_id_type is OpIdType.EXPLICIT else None
    op_count = reader.c4() if op_id_type is not OpIdType.NONE else None
    seq = retry = delay = None
    if not is_response:
        seq = reader.u8() if flags & _FLAG_SEQUENCE else None
        retry = reader.u8() if flags & _FLAG_RETRY else None
        delay = reader.u8()
    security = None
    app_id = None
    if flags & _FLAG_SECURE:
        security = _read_security_header(reader)
    else:
        app_id = reader.c2()
    try:
        return DppPacket(
            app_id=app_id,
            payload=reader.rest(),
            is_response=is_response,
            op_id_type=op_id_type,
            sid=sid,
            op_count=op_count,
            seq=seq,
            retry=retry,
            delay=delay,
            security=security,
        )
    except ValueError as exc:  # pragma: no cover - decoded fields are always in range
        raise BadPacket(f"bad DPP packet: {exc}") from None


def decode_dpp_untrusted(data: bytes) -> DppPacket:
    """Decode a DPP version 2 packet; a version query is ``BadPacket`` here."""
    packet = decode_dpp_any_untrusted(data)
    if not isinstance(packet, DppPacket):
        raise BadPacket("DPP version query, not a DPP version 2 packet")
    return packet


def encode_frame(
    dpp: DppPdu,
    *,
    source: int | None = None,
    destination: int | None = None,
    length_size: int = 0,
) -> bytes:
    """A whole datagram: DNP version 1 around the encoded DPP packet."""
    return encode_dnp(DnpPacket(encode_dpp(dpp), source, destination, length_size))


def decode_frame_untrusted(datagram: bytes) -> tuple[DnpPacket, DppPacket]:
    """Decode a whole datagram: DNP version 1 and the DPP version 2 inside."""
    dnp = decode_dnp_untrusted(datagram)
    return dnp, decode_dpp_untrusted(dnp.payload)


def _c4_at(data: bytes, pos: int) -> tuple[int, int]:
    """The minimal c4 at ``pos`` and the position after it; (-1, pos) when
    there is none (truncated or not minimal)."""
    if pos >= len(data):
        return -1, pos
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    if first < 0xC0:
        if pos + 2 > len(data):
            return -1, pos
        value = ((first & 0x3F) << 8) | data[pos + 1]
        return (value, pos + 2) if value >= 0x80 else (-1, pos)
    if pos + 4 > len(data):
        return -1, pos
    value = int.from_bytes(data[pos : pos + 4], "big") & 0x3FFF_FFFF
    return (value, pos + 4) if value > 0x3FFF else (-1, pos)


class SealedCommandHead(NamedTuple):
    """What :func:`probe_sealed_command` reads of a sealed one-way command."""

    op_count: int
    delay: int
    ssid: int
    packet_number: int
    ciphertext_start: int  # the DPP bytes from offset 1 up to it are the associated data


def encode_sealed_command_head(
    op_count: int, retry: int | None, security_header: bytes, packet_number: int
) -> bytes:
    """The DPP bytes of a node's sealed command up to its ciphertext (its
    associated data): ``82`` · flags (secure, implied sender, retry byte?) ·
    op count c4 · [retry] · delay 0 · ``security_header`` (``81`` SSID c4) ·
    CCM header ``01`` · packet number c4. :func:`probe_sealed_command` reads
    the same layout back (without a retry byte)."""
    return b"".join(
        (
            b"\x82\xa0" if retry is None else b"\x82\xa2",
            encode_c4(op_count),
            b"\x00" if retry is None else bytes((retry, 0)),
            security_header,
            b"\x01",
            encode_c4(packet_number),
        )
    )


def encode_secure_dpp_head(packet: DppPacket, security_header: bytes, packet_number: int) -> bytes:
    """The DPP bytes of clear ``packet`` sealed, up to its ciphertext (its
    associated data): its header with the secure flag, ``security_header``
    (:meth:`DppSecurityHeader.encode`) and the CCM header ``01`` · packet
    number c4.

    The bytes :func:`encode_dpp` gives for the secure copy of ``packet``
    (no app id, that security header, the CCM header as payload; a Hypothesis
    test holds them equal), built without that copy: this runs for every
    datagram a secure session sends. :func:`decode_dpp_untrusted` and
    :func:`~dofpy.wire.ccm.read_ccm_header` read it back.
    """
    out = bytearray()
    flags = _write_fields(packet, (packet.op_id_type << 5) | _FLAG_SECURE, out)
    out += security_header
    out.append(0x01)  # CCM flags: the packet number follows
    out += encode_c4(packet_number)
    return bytes((0x80 | DPP_VERSION, flags)) + bytes(out)


def probe_sealed_command(datagram: bytes) -> SealedCommandHead | None:
    """The head of a datagram in the one shape a secure session's one-way
    commands take (DNP ``01`` · DPP ``82 A0`` op count c4 · delay · security
    header ``81`` SSID c4 · CCM header ``01`` packet number c4 · ciphertext,
    as :func:`encode_sealed_command_head` lays it out): the fields
    :func:`decode_frame_untrusted` gives for it, read without building
    packets. ``None`` for every other datagram (other shapes, truncated, not
    minimal), which the general decoder then judges; never raises.

    Every byte up to the ciphertext is checked here; the ciphertext (with the
    bytes before it as associated data) is for the channel to authenticate.
    """
    if datagram[:3] != b"\x01\x82\xa0":
        return None
    op_count, pos = _c4_at(datagram, 3)
    if op_count < 0 or pos + 2 > len(datagram) or datagram[pos + 1] != 0x81:
        return None
    delay = datagram[pos]
    ssid, pos = _c4_at(datagram, pos + 2)
    if ssid < 0 or datagram[pos : pos + 1] != b"\x01":
        return None
    packet_number, pos = _c4_at(datagram, pos + 1)
    if packet_number < 0:
        return None
    # tuple.__new__ makes the same named tuple as SealedCommandHead(...) without
    # the Python-level __new__ that namedtuple generates (a call per datagram).
    return tuple.__new__(SealedCommandHead, (op_count, delay, ssid, packet_number, pos))
