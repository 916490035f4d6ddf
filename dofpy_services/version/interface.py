"""The Version service's OAP contract: its records, its three interfaces and
their object ids (documented message by message in docs/protocol.md).

- :data:`VERSION_REPORT` on :data:`VERSION_OBJECT`: a device's ``report``
  (who it is comes from its secure session, never from the report).
- :data:`VERSION_QUERY` on :data:`VERSION_OBJECT`: authorised clients'
  ``query`` (a page at a time, keyset cursor), ``count``, ``histogram``,
  ``show`` and ``watch``.
- :data:`VERSION_CHANGES` on :func:`changes_object` (one object per device
  class, provided once a client asks to ``watch`` it): the observable
  ``changes`` property, whose OAP Change commands carry the version and
  boot-state changes of that class.

Three interfaces, not one, so that the Authenticator's grants say who may do
what: a device is granted ``x`` on VERSION_REPORT only, a client ``x`` on
VERSION_QUERY and ``rs`` on VERSION_CHANGES; the OAP layer refuses the rest
with a PERMISSION_DENIED Exception before the service sees it.
"""

from __future__ import annotations

import enum
from typing import Annotated

from dofpy.oap.interface import (
    ExceptionDef,
    Interface,
    Method,
    Param,
    Property,
    RecordList,
    ValueType,
)
from dofpy.wire.oid import OID
from dofpy.wire.record import IntRange, MaxLen, UInt8, UInt32, record

__all__ = [
    "MAX_CLASS_LENGTH",
    "MAX_IDENTITIES",
    "MAX_PAGE",
    "VERSION_CHANGES",
    "VERSION_OBJECT",
    "VERSION_QUERY",
    "VERSION_REPORT",
    "BootState",
    "DeviceChange",
    "DeviceRecord",
    "HistoryEntry",
    "ImageKind",
    "QueryFilter",
    "VersionCount",
    "VersionReport",
    "changes_object",
]

MAX_CLASS_LENGTH = 48
"""Bytes of a device class name (it is part of its changes object's id)."""
MAX_PAGE = 128
"""Devices in one ``query`` page at most: a page of the largest records
(about 450 bytes each) fits one UDP datagram, sealed."""
MAX_IDENTITIES = 256
"""Identities one filter may list."""

# Integers the databases store as signed 64-bit (PostgreSQL BIGINT).
Int63 = Annotated[int, IntRange(0, (1 << 63) - 1)]
ClassName = Annotated[str, MaxLen(MAX_CLASS_LENGTH)]
VersionText = Annotated[str, MaxLen(64)]


class ImageKind(enum.Enum):
    """Which of the device's two images it runs (docs/architecture.md, device side)."""

    NORMAL = "normal"
    REPROGRAM = "reprogram"


@record
class BootState:
    """What the device booted: the slot, the kind of image in it, whether that
    image is accepted (confirmed after a good boot), and the boot counter."""

    slot: UInt8
    image_kind: ImageKind
    accepted: bool
    boot_count: UInt32


@record
class VersionReport:
    """A device's check-in. There is no identity field: the device is the
    authenticated identity of the session the report came through."""

    device_class: ClassName
    version: VersionText
    """The version as people read it (``"2.4.1"``)."""
    sequence: Int63
    """The version's order: later versions have larger sequence numbers."""
    image_digest: Annotated[bytes, MaxLen(64)]
    boot: BootState
    free_storage: Int63
    """Bytes free for a new image."""
    device_clock: float
    """The device's own clock (POSIX seconds), to spot devices whose clock is off."""

    def __post_init__(self) -> None:
        if not self.device_class:
            raise ValueError("device_class must not be empty")
        if self.device_clock != self.device_clock:  # NaN
            raise ValueError("device_clock must be a number")


@record
class DeviceRecord:
    """One device as the registry holds it."""

    identity: OID
    device_class: str
    version: str
    sequence: int
    image_digest: bytes
    boot: BootState
    free_storage: int
    device_clock: float
    first_seen: float
    last_seen: float
    changed_at: float
    """When its version or boot state last changed (first seen, if never)."""


@record
class HistoryEntry:
    """One version or boot-state change of a device (its first report included)."""

    at: float
    device_class: str
    version: str
    sequence: int
    image_digest: bytes
    boot: BootState


@record
class DeviceChange:
    """What a ``changes`` notification carries per device: its new state and
    the version it ran before (absent for a device seen the first time)."""

    identity: OID
    at: float
    version: str
    sequence: int
    image_digest: bytes
    boot: BootState
    previous_version: str | None = None
    previous_sequence: int | None = None


@record
class QueryFilter:
    """Which devices: every field given narrows the set (they combine with AND).

    ``version``/``not_version`` compare the display string; ``min_sequence`` and
    ``max_sequence`` bound the sequence number (inclusive); ``last_seen_before``
    and ``last_seen_after`` are POSIX times (strictly before, at or after);
    ``accepted`` selects devices running an accepted (True) or an unaccepted
    (False) image; ``identities`` lists devices by identity."""

    device_class: ClassName | None = None
    version: VersionText | None = None
    not_version: VersionText | None = None
    min_sequence: Int63 | None = None
    max_sequence: Int63 | None = None
    last_seen_before: float | None = None
    last_seen_after: float | None = None
    accepted: bool | None = None
    image_kind: ImageKind | None = None
    identities: Annotated[tuple[OID, ...], MaxLen(MAX_IDENTITIES)] = ()


@record
class VersionCount:
    """One bar of a class's version histogram."""

    version: str
    sequence: int
    devices: int


VERSION_OBJECT = OID(3, b"dofpy-version")
"""The object the Version service provides VERSION_REPORT and VERSION_QUERY on."""

_CHANGES_PREFIX = b"dofpy-version-changes:"


def changes_object(device_class: str) -> OID:
    """The object whose ``changes`` property carries ``device_class``'s changes."""
    data = _CHANGES_PREFIX + device_class.encode("utf-8")
    if not device_class or len(data) > 63:
        raise ValueError(f"device class {device_class!r}: 1..{63 - len(_CHANGES_PREFIX)} bytes")
    return OID(3, data)


VERSION_REPORT = Interface.define(
    "[1:{01001101}]",
    "VersionReport",
    [
        Method(
            1,
            "report",
            (Param("report", VersionReport),),
            (Param("changed", ValueType.BOOL),),
        ),
        ExceptionDef(2, "Refused", (Param("reason", ValueType.TEXT),)),
        ExceptionDef(3, "NotStored", (Param("retry_after", ValueType.FLOAT),)),
    ],
)
"""A device's check-in. ``report`` answers once the report is committed
(``changed``: its version or boot state differs from the last one stored, or
it is the first); ``Refused`` (the identity is denied) is final; ``NotStored``
means nothing was acknowledged: send the same report again after
``retry_after`` seconds."""

VERSION_QUERY = Interface.define(
    "[1:{01001102}]",
    "VersionQuery",
    [
        Method(
            1,
            "query",
            (
                Param("filter", QueryFilter),
                Param("after", ValueType.BYTES),
                Param("limit", ValueType.INT),
            ),
            (Param("devices", RecordList(DeviceRecord)), Param("more", ValueType.BOOL)),
        ),
        Method(2, "count", (Param("filter", QueryFilter),), (Param("devices", ValueType.INT),)),
        Method(
            3,
            "histogram",
            (Param("device_class", ValueType.TEXT),),
            (Param("versions", RecordList(VersionCount)),),
        ),
        Method(
            4,
            "show",
            (Param("identity", ValueType.BYTES), Param("history_limit", ValueType.INT)),
            (Param("device", RecordList(DeviceRecord)), Param("history", RecordList(HistoryEntry))),
        ),
        Method(
            5,
            "watch",
            (Param("device_class", ValueType.TEXT),),
            (Param("object", ValueType.BYTES),),
        ),
        Method(6, "classes", (), (Param("classes", ValueType.LIST),)),
        ExceptionDef(7, "BadQuery", (Param("reason", ValueType.TEXT),)),
        Method(
            8,
            "rows",
            (
                Param("filter", QueryFilter),
                Param("after", ValueType.BYTES),
                Param("limit", ValueType.INT),
            ),
            (Param("page", ValueType.BYTES), Param("more", ValueType.BOOL)),
        ),
    ],
)
"""Queries. ``query(filter, after, limit)``: up to ``limit`` (1..MAX_PAGE)
matching devices whose identity (its DOF encoding, bytewise) is greater than
``after`` (``b""`` first), in that order, and whether more may follow; the
next page's ``after`` is the last device's encoded identity.

``rows(filter, after, limit)``: the same devices as ``query``, up to
``limit`` (1..512) of them and as many as fit 60,000 bytes, as one byte string
(:mod:`dofpy_services.version.page`: the page's columns in one CBOR array),
and whether more may follow: the fast way to stream a result, for the
client's :meth:`~dofpy_services.version.client.VersionClient.devices`."""

VERSION_CHANGES = Interface.define(
    "[1:{01001103}]",
    "VersionChanges",
    [Property(1, "changes", RecordList(DeviceChange), observable=True)],
)
"""A device class's changes: subscribe to ``changes`` on
:func:`changes_object`; each Change command carries the changes one batch of
reports committed (at most 64)."""
