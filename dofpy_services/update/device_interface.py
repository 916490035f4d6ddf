"""The Update service's device interface: what a device agent asks the Update
service (issue 14) and what it answers (docs/protocol.md, "The Update
service's device interface").

One interface, :data:`UPDATE_DEVICE` on :data:`UPDATE_OBJECT`, granted ``x``
to devices. Who asks is always the secure session's authenticated identity:
no argument names the device, so a device can only ever learn, claim or
report its own update (trust by identity, never by address or by a field).

- ``poll()``: the device's current assignment (a campaign, its image's
  manifest digest, the window it may install in, whether the user is asked),
  or none.
- ``authorise(campaign, manifest_digest)``: the authorisation to install that
  image now, and the image's content key wrapped to the device class (empty
  for a plain image); ``NotNow`` (retry after) or ``Refused`` (final).
- ``progress(campaign, stage, reason)``: the stage the device has reached (and
  why it failed, for a failure), so a silent device's last stage is known.
- ``accept_booted(campaign, image_kind, image_digest)``: the device booted
  that image (its Reprogram image in step B, the new Normal image in step D);
  the answer says whether the service accepts it, and the device marks the
  image accepted in its bootloader only then.
- ``install_report(report, signature)``: the signed install report (see
  :class:`InstallReport`): the canonical CBOR bytes of the report and the
  device's Ed25519 signature over them. The service verifies it with
  :func:`verify_install_report` against the public key registered for the
  device when it was enrolled (the Update service's device table: see
  :class:`~dofpy_services.update.device_provider.EnrolledKeys`).
- ``watch()``: the object this device's pushes go to (its *notice object*,
  answered only in the device's own secure session, and provided for its
  identity's subscription only): a device granted ``s``
  subscribes there to the observable ``assignment`` property and is told its
  assignment (the same list ``poll`` answers) the moment the campaign engine
  notifies it, instead of at its next poll. Polling stays the fallback: a
  notification is one datagram, and a device without a subscription, or
  whose push was lost, learns the same at its next poll.
"""

from __future__ import annotations

import enum
import random
from typing import Annotated

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from dofpy.errors import BadPacket
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
from dofpy.wire.record import IntRange, MaxLen, decode_record_untrusted, encode_record, record
from dofpy_services.version.interface import ImageKind

__all__ = [
    "MAX_REASON",
    "SIGNATURE_SIZE",
    "UPDATE_DEVICE",
    "UPDATE_OBJECT",
    "Assignment",
    "Authorisation",
    "InstallOutcome",
    "InstallReport",
    "InstallReportInvalid",
    "Stage",
    "decode_install_report_untrusted",
    "poll_interval",
    "sign_install_report",
    "verify_install_report",
]

MAX_REASON = 200
"""UTF-8 bytes of a failure reason."""
SIGNATURE_SIZE = 64
"""Bytes of an Ed25519 signature."""

Int63 = Annotated[int, IntRange(0, (1 << 63) - 1)]
CampaignId = Annotated[str, MaxLen(64)]
Digest = Annotated[bytes, MaxLen(64)]
VersionText = Annotated[str, MaxLen(64)]
Reason = Annotated[str, MaxLen(MAX_REASON)]


class Stage(enum.Enum):
    """The stages of one update on the device, in the order they happen
    (the agent's state table in docs/architecture.md names the same steps).
    A failure is reported with the stage it happened in."""

    NOTIFIED = "notified"
    AUTHORISED = "authorised"
    REPROGRAM_MODE = "reprogram_mode"
    TRANSFERRING = "transferring"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    NORMAL_MODE = "normal_mode"
    SUCCEEDED = "succeeded"
    DEFERRED = "deferred"
    REFUSED_BY_USER = "refused_by_user"
    ROLLED_BACK = "rolled_back"


class InstallOutcome(enum.Enum):
    """How an update ended on the device."""

    SUCCEEDED = "succeeded"
    """The new image booted, passed its health check and is accepted."""
    FAILED = "failed"
    """The device runs its previous image (reverted or never switched)."""
    REFUSED_BY_USER = "refused_by_user"
    ROLLED_BACK = "rolled_back"
    """Rolled back on command to the previous image."""


@record
class Assignment:
    """A campaign's assignment of one device. ``window_start``/``window_end``
    (POSIX seconds) bound when it may install (downloading may start before);
    ``manual``: the user is asked first (accept, defer until a time, refuse);
    ``updater``: the image is a Reprogram image (update the updater);
    ``rollback``: roll back to the previous image instead of installing."""

    campaign: CampaignId
    manifest_digest: Digest
    version: VersionText
    sequence: Int63
    window_start: float
    window_end: float
    manual: bool = False
    updater: bool = False
    rollback: bool = False

    def __post_init__(self) -> None:
        if not self.campaign:
            raise ValueError("campaign must not be empty")
        if not self.window_start <= self.window_end:  # also refuses NaN
            raise ValueError("window_start must not be after window_end")


@record
class Authorisation:
    """The service's authorisation to install one image on the asking device
    until ``not_after``; ``wrapped_key`` is the image's content key wrapped to
    the device's class (the Image service's ImageKeyRecord, encoded), empty
    for a plain image."""

    campaign: CampaignId
    manifest_digest: Digest
    not_after: float
    wrapped_key: Annotated[bytes, MaxLen(512)] = b""


@record
class InstallReport:
    """What the device signs when an update ends. It names the device (the
    signature binds the record to it, so it cannot be repudiated), the
    campaign, the image intended and the image the device actually runs
    afterwards (kept apart), the outcome, and for a failure its stage and
    reason. ``bytes_fetched``: the image bytes the device fetched over the
    network for this campaign, over all its attempts (verified leaves from
    providers or relays; not those it resumed from leaves it had verified
    before a reboot, nor those copied from its own slots); a device that
    does not send it (older) reports 0."""

    device: OID
    campaign: CampaignId
    intended_digest: Digest
    intended_version: VersionText
    running_digest: Digest
    running_version: VersionText
    outcome: InstallOutcome
    at: float
    failed_stage: Stage | None = None
    reason: Reason = ""
    attempts: Annotated[int, IntRange(0, 1 << 16)] = 1
    bytes_fetched: Int63 = 0


class InstallReportInvalid(Exception):
    """A signed install report that does not verify: its ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_SIGNING_CONTEXT = b"dofpy install report v1\x00"
"""Prefixed to the report's bytes before signing, so an install report
signature is never valid for any other message the device key signs."""


def sign_install_report(
    key: ed25519.Ed25519PrivateKey, report: InstallReport
) -> tuple[bytes, bytes]:
    """The report's canonical CBOR bytes and the device's signature over them."""
    data = encode_record(report)
    return data, key.sign(_SIGNING_CONTEXT + data)


def decode_install_report_untrusted(data: bytes) -> InstallReport:
    """An :class:`InstallReport` from its canonical CBOR bytes. Untrusted input:
    raises only ``BadPacket``."""
    return decode_record_untrusted(InstallReport, data)


def verify_install_report(
    public_key: bytes, identity: OID, data: bytes, signature: bytes
) -> InstallReport:
    """The install report in ``data`` if ``signature`` is ``identity``'s
    (``public_key``: the raw 32-byte Ed25519 key enrolled for it) and the report
    names that same device; else :class:`InstallReportInvalid`. A pure
    function: the Update service calls it with the key from its device table
    and the session's identity."""
    if len(signature) != SIGNATURE_SIZE:
        raise InstallReportInvalid(f"a signature has {SIGNATURE_SIZE} bytes, not {len(signature)}")
    try:
        key = ed25519.Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise InstallReportInvalid("the enrolled key is not an Ed25519 public key") from None
    try:
        key.verify(signature, _SIGNING_CONTEXT + data)
    except InvalidSignature:
        raise InstallReportInvalid("the signature is not the device's") from None
    try:
        report = decode_install_report_untrusted(data)
    except BadPacket as exc:
        raise InstallReportInvalid(f"not an install report: {exc}") from None
    if report.device != identity:
        # A device's key signs only its own reports; one naming another device
        # is refused even when the signature is good.
        raise InstallReportInvalid("the report names another device")
    return report


UPDATE_OBJECT = OID(3, b"dofpy-update")
"""The object the Update service provides UPDATE_DEVICE on."""

UPDATE_DEVICE = Interface.define(
    "[1:{01001201}]",
    "UpdateDevice",
    [
        Method(1, "poll", (), (Param("assignment", RecordList(Assignment)),)),
        Method(
            2,
            "authorise",
            (Param("campaign", ValueType.TEXT), Param("manifest_digest", ValueType.BYTES)),
            (Param("authorisation", Authorisation),),
        ),
        Method(
            3,
            "progress",
            (
                Param("campaign", ValueType.TEXT),
                Param("stage", ValueType.TEXT),
                Param("reason", ValueType.TEXT),
            ),
            (),
        ),
        Method(
            4,
            "accept_booted",
            (
                Param("campaign", ValueType.TEXT),
                Param("image_kind", ValueType.TEXT),
                Param("image_digest", ValueType.BYTES),
            ),
            (Param("accepted", ValueType.BOOL),),
        ),
        Method(
            5,
            "install_report",
            (Param("report", ValueType.BYTES), Param("signature", ValueType.BYTES)),
            (),
        ),
        ExceptionDef(6, "NotNow", (Param("retry_after", ValueType.FLOAT),)),
        ExceptionDef(7, "Refused", (Param("reason", ValueType.TEXT),)),
        Method(8, "watch", (), (Param("notices", ValueType.BYTES),)),
        Property(9, "assignment", RecordList(Assignment), readable=False, observable=True),
    ],
)
"""The device side of the Update service. ``poll`` answers a list of at most
one assignment (empty: nothing to do). ``progress``'s ``stage`` is a
:class:`Stage` value, ``accept_booted``'s ``image_kind`` an
:class:`~dofpy_services.version.interface.ImageKind` value. ``NotNow``: ask
again after ``retry_after`` seconds (outside the window, the campaign paused,
the service busy); ``Refused``: final for this campaign (not assigned, a
manifest other than the assigned one, a report that does not verify).
``watch`` answers the encoded OID of the asking device's notice object, on
which the service provides this same interface only to carry ``assignment``
Change commands, for that device's subscription only (every request there
is refused, and a Subscribe from any other identity too: ``NOT_FOUND``);
``assignment`` is not readable: its value is only ever pushed."""

IMAGE_KINDS = frozenset(kind.value for kind in ImageKind)


def poll_interval(base: float, jitter: float, rng: random.Random) -> float:
    """The seconds until a polling device's next check-in: ``base`` spread
    uniformly by ``±jitter`` of it (0 <= jitter < 1). Devices that all
    checked in together after an outage spread over ``2 * jitter * base``
    at their next check-in, and further at each one after. The device agent
    waits this long when a poll found nothing (and no push woke it first)."""
    if base <= 0 or not 0 <= jitter < 1:
        raise ValueError("a poll interval is > 0 and its jitter in [0, 1)")
    return rng.uniform(base * (1 - jitter), base * (1 + jitter))
