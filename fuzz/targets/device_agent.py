"""Fuzz target: the device agent (its state table, machine, record and steps)
on a simulated bootloader, fed arbitrary *sequences* of service answers.

Every call the agent makes through its ports (a Version check-in, each
UPDATE_DEVICE method, a manifest fetch, a block transfer, the health check,
the user's answer) takes the next record of the input
(:mod:`fuzz.targets._sequence`): ``to`` says what kind of answer it gets,
``step`` how long (tenths of a second) the answer takes, and the datagram is
the answer's bytes:

- ``0`` the honest services' answer (the Update service's own decisions,
  :class:`~dofpy_services.update.device_provider.DeviceUpdates`; the signed
  manifest; a real block transfer);
- ``1`` the datagram is the answer's OAP value list on the wire, checked by
  the same untrusted decoders as over a network (``decode_values_untrusted``,
  ``incoming_values_untrusted``) and then handled by the real clients
  (:class:`~dofpy_services.device.update_client.UpdateDeviceClient`,
  :class:`~dofpy_services.version.client.VersionClient`,
  :class:`~dofpy_services.device.images.ServiceImages`); for a transfer, the
  provider's datagrams garbled with these bytes (bad blocks); for the health
  check and the user, their answer;
- ``2`` an OAP exception answer: the first byte its code (a declared
  exception's values, e.g. ``NotNow``'s retry_after, decoded from the rest);
- ``3`` the session lost or timed out (after part of a transfer);
- ``4`` the device resets at that moment (the platform reboots, a fresh
  agent starts from its files);
- ``5`` for a manifest: the datagram *is* the manifest the Update service
  assigned (as if its digest matched), straight into the device's verifier;
  for a transfer: completed, then one byte of the slot goes bad (a flash
  write fault).

When the input runs out every answer is honest, so each run ends with the
device settled: the properties checked are that the agent raises nothing but
:class:`~dofpy_services.device.agent_ports.Rebooted` (anything else, a
``NoTransition`` included, is a crash); that every boot decision boots an
accepted image or a trial of an image the
:class:`~dofpy_services.device.verifier.DeviceVerifier` accepted, and no
slot ever holds a valid image it did not accept; that a success is reported
only running the intended image; and that every loop is bounded (in steps,
in boots and in virtual time, so a retry_after of a year or infinity is a
crash too).

The first byte of an input picks the device and the campaign: its low bit
the layout (seed's or A/B), the next two the campaign (an update, a manual
one, an update of the updater, a newer image), bits 3-4 the campaign after
it (none, a rollback, the updater's update, a newer image), bit 5 whether
the first campaign's window opens an hour on (an A/B device downloads
ahead of it; the device's clock is the virtual one, as the services'). The seeds are
honest runs of each, recorded as the wire answers they got, and a few with
faults.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, cast

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dofpy.errors import BrokenResourceError, DofError, DofTimeoutError
from dofpy.image import (
    CoseSigned,
    ImageManifest,
    Party,
    SigningKey,
    TrustedKey,
    TrustRoot,
    sign_manifest,
)
from dofpy.image.manifest import ImageKind as ManifestKind
from dofpy.oap.errors import OapError, ProviderException
from dofpy.oap.interface import Interface, incoming_values_untrusted, outgoing_values
from dofpy.transfer.core import TransferConfig, TransferCore
from dofpy.transfer.events import TransferCompleted, TransferFailed
from dofpy.transfer.manifest import Manifest, ObjectHashes
from dofpy.transfer.receiver import LocalLeaves
from dofpy.trio import DofNode, TransferNode
from dofpy.wire.oid import OID
from dofpy.wire.values import decode_values_untrusted, encode_values
from dofpy_services.device.agent import (
    AgentPorts,
    DeviceAgent,
    ImageToInstall,
    Installed,
    Rebooted,
    UserAnswer,
)
from dofpy_services.device.boot_records import Layout, Slot, SlotImage, SlotState
from dofpy_services.device.images import ServiceImages, check_manifest
from dofpy_services.device.machine import AgentMachine, RetryPolicy
from dofpy_services.device.simulated import FirmwareImage, SimulatedBootloader
from dofpy_services.device.slot_store import SlotBlockStore
from dofpy_services.device.table import Input, State
from dofpy_services.device.update_client import UpdateDeviceClient
from dofpy_services.device.verifier import DeviceVerifier
from dofpy_services.image.serving import IMAGE_INTERFACE
from dofpy_services.update import device_provider
from dofpy_services.update.device_interface import (
    UPDATE_DEVICE,
    Assignment,
    InstallOutcome,
    InstallReport,
)
from dofpy_services.update.device_provider import (
    DevicePlan,
    DeviceUpdates,
    EnrolledKeys,
    PlannedUpdate,
)
from dofpy_services.version.client import VersionClient
from dofpy_services.version.interface import VERSION_REPORT, VersionReport
from fuzz.targets._sequence import decode_sequence, encode_sequence

HONEST, RAW, EXCEPTION, LOST, RESET, SPECIAL = range(6)
_KINDS = 6

_DEVICE = OID(3, b"device@fuzz.example")
_REPORT_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x03" * 32)
_PEER = ("192.0.2.1", 3567)
_VENDOR = uuid.UUID(int=0xD0F)
_CLASS = uuid.UUID(int=0xC1A55)
_OTHER_CLASS = uuid.UUID(int=0xBAD)
_NOW = 1_800_000_000  # the device's clock at virtual time 0 (POSIX seconds)
_DAY = 86_400
_LEAF = 512

_MAX_BOOTS = 100
_MAX_STEPS = 500
_MAX_WAIT = _DAY
"""The longest a step may wait (the machine's bound on a retry_after)."""
_MAX_VIRTUAL_SECONDS = 100 * _DAY
_WINDOW_LATER = 3600.0
"""Where bit 5 of the header puts the first campaign's window_start (virtual seconds)."""
"""More than a run takes when each of its answers (at most 64) makes the
agent wait the longest it may: a run still going then waits on something
unbounded."""
_TRANSFER_ROUNDS = 400


def _firmware(size: int, seed: int, version: str, sequence: int) -> FirmwareImage:
    return FirmwareImage(random.Random(seed).randbytes(size), version, sequence)


_OLD = _firmware(4000, 1, "1.0", 10)
_NEW = _firmware(5000, 2, "2.0", 20)
_NEWER = _firmware(4500, 3, "3.0", 30)
_RESCUE = _firmware(1500, 4, "r1", 1)
_RESCUE_NEW = _firmware(1800, 5, "r2", 2)
_OLD_AGAIN = FirmwareImage(_OLD.data, "1.0-again", 40)  # the rollback campaign's image
_PROVISIONED = {_OLD.slot_image(), _RESCUE.slot_image()}
_NORMAL_CAPACITY = 8192
_REPROGRAM_CAPACITY = 4096


def _key(seed: int) -> SigningKey:
    return SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


_MAKERS = (_key(11), _key(12))
_PROVIDER_KEY = _key(13)
_ROOT = TrustRoot(
    _VENDOR,
    1,
    _NOW + 365 * _DAY,
    (
        *(TrustedKey(Party.MANUFACTURER, key.public_key) for key in _MAKERS),
        TrustedKey(Party.SERVICE_PROVIDER, _PROVIDER_KEY.public_key),
    ),
    {Party.MANUFACTURER: 2, Party.SERVICE_PROVIDER: 1},
    {Party.MANUFACTURER: 2},
)


def _signed(
    image: FirmwareImage,
    *,
    kind: ManifestKind = ManifestKind.NORMAL,
    device_class: uuid.UUID = _CLASS,
    sequence: int | None = None,
    created: int = _NOW - _DAY,
    expires: int = _NOW + 30 * _DAY,
    signers: tuple[tuple[SigningKey, Party], ...] = (
        (_MAKERS[0], Party.MANUFACTURER),
        (_MAKERS[1], Party.MANUFACTURER),
        (_PROVIDER_KEY, Party.SERVICE_PROVIDER),
    ),
) -> bytes:
    manifest = ImageManifest(
        vendor_id=_VENDOR,
        device_class=device_class,
        version=image.version,
        sequence=image.sequence if sequence is None else sequence,
        created=created,
        expires=expires,
        image=_HASHES_OF[image.data].manifest,
        kind=kind,
    )
    document: ImageManifest | CoseSigned = manifest
    for key, party in signers:
        document = sign_manifest(document, key, party)
    assert isinstance(document, CoseSigned)
    return document.encode()


_HASHES_OF = {
    image.data: ObjectHashes.build(image.data, _LEAF)
    for image in (_OLD, _NEW, _NEWER, _RESCUE, _RESCUE_NEW)
}
_IMAGE_DATA = {hashes.manifest.object_id: data for data, hashes in _HASHES_OF.items()}

_MANIFEST_NEW = _signed(_NEW)
_MANIFEST_NEWER = _signed(_NEWER)
_MANIFEST_UPDATER = _signed(_RESCUE_NEW, kind=ManifestKind.REPROGRAM)
_MANIFEST_OLD_AGAIN = _signed(_OLD_AGAIN)
_MANIFESTS = {
    hashlib.sha256(data).digest(): data
    for data in (_MANIFEST_NEW, _MANIFEST_NEWER, _MANIFEST_UPDATER, _MANIFEST_OLD_AGAIN)
}
_REFUSED_MANIFESTS = (  # well formed, each refused by the device's verifier
    _signed(_NEW, device_class=_OTHER_CLASS),
    _signed(_NEW, sequence=5),
    _signed(_NEW, created=_NOW - 9 * _DAY, expires=_NOW - _DAY),
    _signed(
        _NEW, signers=((_MAKERS[0], Party.MANUFACTURER), (_PROVIDER_KEY, Party.SERVICE_PROVIDER))
    ),
)


@dataclass(frozen=True)
class _Campaign:
    assignment: Assignment
    image: FirmwareImage
    previous: FirmwareImage


def _campaign(
    name: str, manifest: bytes, image: FirmwareImage, previous: FirmwareImage, **flags: bool
) -> _Campaign:
    digest = hashlib.sha256(manifest).digest()
    assignment = Assignment(name, digest, image.version, image.sequence, 0.0, 1e12, **flags)
    return _Campaign(assignment, image, previous)


_CAMPAIGNS = (
    _campaign("c1", _MANIFEST_NEW, _NEW, _OLD),
    _campaign("c1", _MANIFEST_NEW, _NEW, _OLD, manual=True),
    _campaign("c1", _MANIFEST_UPDATER, _RESCUE_NEW, _RESCUE, updater=True),
    _campaign("c1", _MANIFEST_NEWER, _NEWER, _OLD),
)


def _then(first: _Campaign, which: int) -> _Campaign | None:
    """The campaign assigned once c1 is reported: none, a rollback (on A/B
    to the kept slot; on the seed's layout, nothing kept, its image again
    signed with a newer sequence), the updater's update, a newer image."""
    if which == 1:
        return _campaign("c2", _MANIFEST_OLD_AGAIN, _OLD_AGAIN, first.image, rollback=True)
    if which == 2:
        return _campaign("c2", _MANIFEST_UPDATER, _RESCUE_NEW, _RESCUE, updater=True)
    if which == 3:
        return _campaign("c2", _MANIFEST_NEWER, _NEWER, first.image)
    return None


# ---------------------------------------------------------------- the device


class MemoryFs:
    """:class:`~dofpy_services.device.fs.DeviceFs` in memory: the simulated
    device's files (slots, boot records, the agent's record and marks)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = {name: bytearray(data) for name, data in files.items()}

    def exists(self, name: str) -> bool:
        return name in self.files

    def size(self, name: str) -> int:
        return len(self.files[name])

    def read(self, name: str, offset: int, length: int) -> bytes:
        return bytes(self.files[name][offset : offset + length])

    def write(self, name: str, offset: int, data: bytes) -> None:
        file = self.files.setdefault(name, bytearray())
        if len(file) < offset:
            file.extend(bytes(offset - len(file)))
        file[offset : offset + len(data)] = data

    def fsync(self, name: str) -> None:
        if name not in self.files:
            raise FileNotFoundError(name)

    def replace(self, source: str, target: str) -> None:
        self.files[target] = self.files.pop(source)

    def fsync_directory(self) -> None:
        pass


def _provisioned(layout: Layout) -> dict[str, bytes]:
    """A factory-fresh device's files (provisioned once, on disk, then kept)."""
    directory = tempfile.mkdtemp(prefix="fuzz-device-")
    try:
        boot = SimulatedBootloader.provision(
            directory, layout, normal=_OLD, reprogram=_RESCUE,
            normal_capacity=_NORMAL_CAPACITY, reprogram_capacity=_REPROGRAM_CAPACITY,
        )  # fmt: skip
        names = ("records", *(f"slot-{s}" for s in ("normal", "normal-b", "reprogram")))
        return {
            name: boot.fs.read(name, 0, boot.fs.size(name))
            for name in names
            if boot.fs.exists(name)
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


_FACTORY = {layout: _provisioned(layout) for layout in (Layout.SEED, Layout.AB)}


class _PlatformReset(Exception):
    """The device resets in the middle of a port call (watchdog, brown-out)."""


# ----------------------------------------------------------------- the world


@dataclass
class _Answer:
    kind: int
    data: bytes


@dataclass
class World:
    """One device, its services and the answers they give."""

    layout: Layout
    campaign: _Campaign
    then: _Campaign | None
    """The campaign assigned once c1 is reported."""
    answers: list[_Answer]
    waits: list[float]
    record: list[tuple[int, bytes, int]] | None = None
    """When given, every answer is appended here as a record (the seeds)."""
    cursor: int = 0
    accepted_images: set[SlotImage] = field(default_factory=set)
    assigned_manifests: dict[bytes, bytes] = field(default_factory=dict)
    fetched_manifests: set[bytes] = field(default_factory=set)
    """Digests whose manifest came from the provider (its bytes are _MANIFESTS')."""
    reset_pending: bool = False
    _recorded_instead: _Answer | None = None
    settled_at: float = 0.0
    """The virtual time the device settled at."""
    reports: list[InstallReport] = field(default_factory=list)
    boots: int = 0
    calls: list[str] = field(default_factory=list)
    """Each port call, in order (the position of an answer is its index)."""

    def __post_init__(self) -> None:
        self.fs = MemoryFs(_FACTORY[self.layout])
        self.boot = SimulatedBootloader("memory", fs=cast(Any, self.fs))
        plan = DevicePlan()
        self._plan(plan, self.campaign)
        keys = EnrolledKeys()
        keys.enrol(_DEVICE, _REPORT_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        self.updates = DeviceUpdates(plan, keys)
        node = cast(DofNode, _FakeNode(self))
        self.verifier = DeviceVerifier(_ROOT, _VENDOR, _CLASS, lambda: _NOW + trio.current_time())
        self.ports = AgentPorts(
            UpdateDeviceClient(node, _PEER),
            _Version(VersionClient(node, _PEER)),
            _Images(
                self,
                ServiceImages(cast(TransferNode, _FakeTransferNode(self)), [_PEER], self._verify),
            ),
            self._health_check,
            self._ask_user,
        )

    @staticmethod
    def _plan(plan: DevicePlan, campaign: _Campaign) -> None:
        plan.assign(
            _DEVICE,
            PlannedUpdate(
                campaign.assignment,
                campaign.image.slot_image().digest,
                campaign.previous.slot_image().digest,
            ),
        )

    # -- answers ---------------------------------------------------------------------------

    @property
    def exhausted(self) -> bool:
        return self.cursor >= len(self.answers)

    async def next_answer(self, call: str) -> _Answer:
        self.calls.append(call)
        if self.exhausted:
            answer, wait = _Answer(HONEST, b""), 0.0
        else:
            answer, wait = self.answers[self.cursor], self.waits[self.cursor]
            self.cursor += 1
        if wait:
            await trio.sleep(wait)
        if answer.kind == RESET and answer.data[:1] and answer.data[0] & 1:
            # Answered, and the device resets after the step, once its
            # record is saved (before the next step: see _done).
            self.reset_pending = True
            self._recorded_instead = answer
            return _Answer(HONEST, b"")
        return answer

    def peek_kind(self) -> int:
        return HONEST if self.exhausted else self.answers[self.cursor].kind

    def note(self, kind: int, data: bytes = b"") -> None:
        """Record the answer just given (each port call notes its own, once)."""
        instead, self._recorded_instead = self._recorded_instead, None
        if instead is not None:  # a reset after the step: recorded as such
            kind, data = instead.kind, instead.data
        if self.record is not None:
            self.record.append((kind, data, 0))

    def _verify(self, data: bytes, installed: Installed) -> Any:
        return self.verifier(data, installed)

    def verified(self, image: ImageToInstall) -> ImageToInstall:
        self.accepted_images.add(image.slot_image)
        return image

    # -- the device's hooks ----------------------------------------------------------------

    async def _health_check(self) -> str:
        answer = await self.next_answer("health_check")
        self.note(answer.kind, answer.data)
        if answer.kind == RESET:
            raise _PlatformReset()
        if answer.kind == RAW:
            return answer.data[:40].decode("utf-8", "replace")
        return ""

    async def _ask_user(self, assignment: Assignment) -> tuple[UserAnswer, float]:
        answer = await self.next_answer("ask_user")
        self.note(answer.kind, answer.data)
        if answer.kind == RESET:
            raise _PlatformReset()
        if answer.kind != RAW or not answer.data:
            return UserAnswer.ACCEPT, 0.0
        choice = (UserAnswer.ACCEPT, UserAnswer.DEFER, UserAnswer.REFUSE)[answer.data[0] % 3]
        later = 60.0 * (answer.data[1] if len(answer.data) > 1 else 1)
        return choice, trio.current_time() + later

    # -- the honest services ---------------------------------------------------------------

    def honest(self, interface: Interface, method: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """What the in-process services answer (raising what their providers raise)."""
        now = trio.current_time()
        if interface is VERSION_REPORT:
            return (True,)
        if interface is IMAGE_INTERFACE:
            data = _MANIFESTS.get(args[0])
            if data is None:
                raise OapError(1, "no such manifest")
            return (data,)
        updates = self.updates
        try:
            if method == "poll":
                return (updates.poll(_DEVICE, now),)
            if method == "authorise":
                return (updates.authorise(_DEVICE, args[0], args[1], now),)
            if method == "progress":
                updates.record_progress(_DEVICE, args[0], args[1], args[2], now)
                return ()
            if method == "accept_booted":
                return (updates.accept_booted(_DEVICE, args[0], args[1], args[2], now),)
            if method == "install_report":
                report = updates.install_report(_DEVICE, args[0], args[1], now)
                if report.campaign == "c1" and self.then is not None:
                    self._plan(updates.plan, self.then)
                return ()
            if method == "watch":
                # This stand-in Update service pushes nothing (it has no
                # subscriptions): the agent's wait falls back to its poll.
                raise OapError(1, "no pushes from this service")
        except device_provider.NotNow as exc:
            raise ProviderException(UPDATE_DEVICE.exception("NotNow"), [exc.retry_after]) from None
        except device_provider.Refused as exc:
            raise ProviderException(UPDATE_DEVICE.exception("Refused"), [exc.reason]) from None
        raise AssertionError(f"no such method {method}")

    async def invoke(
        self, interface: Interface, method: str, args: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        """An OAP invoke as the requestor hands its outcome to a client."""
        answer = await self.next_answer(method)
        results = interface.method(method).results
        if answer.kind == RAW:
            self.note(RAW, answer.data)
            values = decode_values_untrusted(answer.data)  # BadPacket: the invoke fails with it
            return incoming_values_untrusted(results, values, f"response of {method}")
        if answer.kind == EXCEPTION:
            self.note(EXCEPTION, answer.data)
            raise _exception(interface, answer.data)
        if answer.kind == LOST:
            self.note(LOST, answer.data)
            raise _lost(answer.data)
        if answer.kind == RESET:
            self.note(RESET)
            raise _PlatformReset()
        try:
            honest = self.honest(interface, method, args)
        except ProviderException as exc:
            self.note(EXCEPTION, bytes((exc.definition.item_id,)) + encode_values(list(exc.values)))
            raise
        except OapError as exc:
            self.note(EXCEPTION, bytes((exc.code or 0,)))
            raise
        self.note(RAW, encode_values(list(outgoing_values(results, honest, method))))
        return honest

    # -- the transfer ----------------------------------------------------------------------

    async def transfer(
        self, manifest: Manifest, store: SlotBlockStore, local: LocalLeaves | None
    ) -> None:
        answer = await self.next_answer("transfer")
        self.note(answer.kind, answer.data)
        data = _IMAGE_DATA.get(manifest.object_id)
        if data is None or _HASHES_OF[data].manifest != manifest:
            raise DofError("no provider holds this image")
        garble = answer.data if answer.kind == RAW else b""
        # A lost session or a reset: part of the transfer happened first.
        cut = answer.data[0] if answer.kind in (LOST, RESET) and answer.data else None
        provider = TransferCore(TransferConfig(address_token_key=bytes(32)), rng=random.Random(1))
        provider.publish(data, _LEAF)
        requestor = TransferCore(rng=random.Random(2))
        now = trio.current_time()
        requestor.fetch(manifest, [_PEER], now, store=store, local=local)
        delivered = 0
        for _ in range(_TRANSFER_ROUNDS):
            moved = False
            for datagram, _to in requestor.datagrams_to_send(now):
                moved = True
                provider.receive_datagram(datagram, ("192.0.2.2", 40000), now)
            for sent, _to in provider.datagrams_to_send(now):
                moved = True
                if cut is not None and delivered >= cut:
                    raise _PlatformReset() if answer.kind == RESET else _lost(answer.data[1:])
                received = bytearray(sent)
                if delivered < len(garble) // 2 and received:
                    # Bad blocks: byte ``at`` of the datagram xor-ed with ``mask``.
                    at, mask = garble[2 * delivered], garble[2 * delivered + 1]
                    received[at % len(received)] ^= mask or 1
                delivered += 1
                requestor.receive_datagram(bytes(received), _PEER, now)
            while (event := requestor.next_event()) is not None:
                if isinstance(event, TransferCompleted):
                    if answer.kind == SPECIAL and answer.data:
                        # The flash took one byte wrong (after the leaf verified).
                        at = int.from_bytes(answer.data[:2], "big") % manifest.size
                        wrong = store.writer.read(at, 1)[0] ^ (answer.data[-1] or 1)
                        store.writer.write(at, bytes((wrong,)))
                    return
                if isinstance(event, TransferFailed):
                    raise event.error
            if not moved:
                timers = [t for t in (requestor.get_timer(), provider.get_timer()) if t is not None]
                now = max(min(timers), now) + 0.01 if timers else now + 0.1
                requestor.handle_timer(now)
                provider.handle_timer(now)
        raise DofTimeoutError("the transfer did not end")

    # -- the run ---------------------------------------------------------------------------

    def _done(self, agent: DeviceAgent) -> bool:
        if self.reset_pending:
            self.reset_pending = False
            raise _PlatformReset()
        trail = agent.machine.trail
        return (
            self.exhausted
            and agent.machine.state is State.IDLE
            and bool(trail)
            and trail[-1][:2] == (State.POLL, Input.NOTHING)
        )

    def agent(self) -> DeviceAgent:
        policy = RetryPolicy(base=1.0, cap=60.0, max_attempts=4, max_wait=_MAX_WAIT)
        machine = AgentMachine(policy, random.Random(self.boots))
        return DeviceAgent(
            self.boot, self.ports, cast(Any, self.fs), identity=_DEVICE, key=_REPORT_KEY,
            device_class="sensor", machine=machine, check_in_interval=600.0,
            clock=trio.current_time,
        )  # fmt: skip

    async def run(self) -> None:
        """Boot, run a fresh agent until it settles or reboots, and again."""
        try:
            with trio.fail_after(_MAX_VIRTUAL_SECONDS):
                await self._boots()
        except trio.TooSlowError:
            raise AssertionError(
                f"the device did not settle in {_MAX_VIRTUAL_SECONDS} s of virtual time"
            ) from None

    async def _boots(self) -> None:
        while self.boots < _MAX_BOOTS:
            self.boots += 1
            self.check_boot()
            agent = self.agent()
            try:
                await agent.run(until=self._done, max_steps=_MAX_STEPS)
            except (Rebooted, _PlatformReset):
                self.reports += agent.reports_sent
                self.boot.reboot()
                continue
            self.reports += agent.reports_sent
            self.check_settled()
            self.settled_at = trio.current_time()
            return
        raise AssertionError(f"the device did not settle in {_MAX_BOOTS} boots")

    # -- the properties --------------------------------------------------------------------

    def _allowed(self, image: SlotImage | None) -> bool:
        return image is None or image in _PROVISIONED or image in self.accepted_images

    def check_boot(self) -> None:
        booted = self.boot.booted()
        if not (booted.accepted or self._allowed(booted.image)):
            raise AssertionError(f"booted a trial of {booted.image}, never verified")
        for slot in self.boot.slots():
            entry = self.boot.slot_record(slot)
            if entry.state is SlotState.VALID and not self._allowed(entry.image):
                raise AssertionError(f"{slot.name} holds {entry.image}, never verified")
        record = self.boot.record()
        if not self._allowed(record.slot(record.accepted).image):
            raise AssertionError("the accepted slot holds an image never verified")

    def check_settled(self) -> None:
        self.check_boot()
        booted = self.boot.booted()
        if not booted.accepted:
            raise AssertionError(f"settled running {booted.slot.name} on trial, not accepted")
        # A power-on now boots an accepted image whose bytes verify (no Bricked).
        again = SimulatedBootloader("memory", fs=cast(Any, self.fs))
        if not again.booted().accepted:
            raise AssertionError("a power-on after the run boots an image on trial")
        updater = self.boot.slot_record(Slot.REPROGRAM).image
        for report in self.reports:
            # Success: running the intended image, or (an updater's update,
            # back in Normal) holding it as the Reprogram image.
            holds = {report.running_digest, b"" if updater is None else updater.digest}
            if report.outcome is InstallOutcome.SUCCEEDED and report.intended_digest not in holds:
                raise AssertionError(f"reported success without the image: {report}")


def _exception(interface: Interface, data: bytes) -> DofError:
    """An OAP exception answer: a declared exception (its values decoded and
    checked as the requestor does) or a protocol-level OAP error."""
    code = data[0] if data else 0
    if code in (2, 3, 6, 7):
        try:
            definition = interface.exception(code)
        except (KeyError, TypeError):
            return OapError(code)
        values = decode_values_untrusted(data[1:])
        return ProviderException(
            definition, incoming_values_untrusted(definition.values, values, definition.name)
        )
    return OapError(code, data[1:].decode("utf-8", "replace"))


def _lost(data: bytes) -> Exception:
    """A lost session, as the node reports it (the first byte says how)."""
    choice = data[0] % 4 if data else 0
    if choice == 0:
        return DofTimeoutError("no answer")
    if choice == 1:
        return BrokenResourceError("the session was lost")
    if choice == 2:
        return trio.TooSlowError()
    return OSError("network is unreachable")


class _FakeNode:
    """What the clients use of a DofNode: ``invoke``, answered by the world."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def invoke(
        self, peer: Any, object_id: OID, interface: Interface, method: str, *args: Any,
        identity: OID | None = None,
    ) -> tuple[Any, ...]:  # fmt: skip
        return await self.world.invoke(interface, method, args)


class _FakeTransferNode:
    """What ServiceImages uses of a TransferNode: its node and ``fetch``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.node = _FakeNode(world)

    async def fetch(
        self, manifest: Manifest, providers: Any, *, store: Any = None, local: Any = None
    ) -> None:
        await self.world.transfer(manifest, store, local)


class _Version:
    """The VersionPort as ``dofpy device run`` builds it: one attempt per step."""

    def __init__(self, client: VersionClient) -> None:
        self.client = client
        self.rng = random.Random(5)

    async def report(self, report: VersionReport) -> bool:
        return await self.client.report(report, attempts=1, rng=self.rng)


class _Images:
    """The ImagePort: ServiceImages on the fake node, except that an answer of
    kind 5 is a manifest the Update service assigned, checked by the verifier
    without the provider's digest check (which no mutation gets past)."""

    def __init__(self, world: World, images: ServiceImages) -> None:
        self.world = world
        self.images = images

    async def verify(self, assignment: Assignment, installed: Installed) -> ImageToInstall:
        world = self.world
        digest = assignment.manifest_digest
        if world.peek_kind() != SPECIAL and digest not in world.assigned_manifests:
            image = await self.images.verify(assignment, installed)
            world.fetched_manifests.add(digest)
            return world.verified(image)
        answer = await world.next_answer("manifest")
        world.note(answer.kind, answer.data)
        if answer.kind == RESET:
            raise _PlatformReset()
        if answer.kind == LOST:
            raise _lost(answer.data)
        if answer.kind == EXCEPTION:
            raise _exception(IMAGE_INTERFACE, answer.data)
        # Manifests are named by their digest: once one stood for this
        # digest, the same bytes come back every time it is asked for.
        given = _MANIFESTS[digest] if digest in world.fetched_manifests else answer.data
        data = world.assigned_manifests.setdefault(digest, given)
        return world.verified(check_manifest(world._verify, data, installed))

    async def transfer(
        self, image: ImageToInstall, store: SlotBlockStore, local: LocalLeaves | None
    ) -> None:
        await self.images.transfer(image, store, local)


# ------------------------------------------------------------------ the target


def _world(data: bytes, record: list[tuple[int, bytes, int]] | None = None) -> World:
    header = data[0] if data else 0
    answers: list[_Answer] = []
    waits: list[float] = []
    for to, datagram, step in decode_sequence(data[1:]):
        answers.append(_Answer(to % _KINDS, datagram))
        waits.append(step)
    first = _CAMPAIGNS[(header >> 1) & 3]
    if header & 0x20:
        later = replace(first.assignment, window_start=_WINDOW_LATER)
        first = replace(first, assignment=later)
    return World(
        Layout.AB if header & 1 else Layout.SEED,
        first,
        _then(first, (header >> 3) & 3),
        answers,
        waits,
        record,
    )


def replay(data: bytes) -> World:
    """Run the device on ``data``'s answers until it settles; the world after."""
    world = _world(data)
    trio.run(world.run, clock=trio.testing.MockClock(autojump_threshold=0))
    return world


def target(data: bytes) -> None:
    """Replay ``data``; the properties are checked as it runs."""
    replay(data)


def run_with_faults(
    header: int, *faults: tuple[int, int, bytes], record: list[tuple[int, bytes, int]] | None = None
) -> World:
    """Run ``header``'s device and campaign with honest answers, except that
    the answer at each fault's position (position, kind, bytes) is that fault
    (positions count the port calls, as :attr:`World.calls` lists them)."""
    world = _world(bytes((header,)), record)
    given = {position: _Answer(kind, data) for position, kind, data in faults}
    world.answers = [given.get(i, _Answer(HONEST, b"")) for i in range(max(given, default=-1) + 1)]
    world.waits = [0.0] * len(world.answers)
    trio.run(world.run, clock=trio.testing.MockClock(autojump_threshold=0))
    return world


def _recorded(header: int, *faults: tuple[int, int, bytes]) -> bytes:
    """:func:`run_with_faults` recorded as the answers it got: a seed."""
    record: list[tuple[int, bytes, int]] = []
    run_with_faults(header, *faults, record=record)
    return bytes((header,)) + encode_sequence(record)


_HONEST_HEADERS = (*range(10), 0x10, 0x11, 0x18, 0x19, *range(0x20, 0x28))
"""Each device and campaign, each campaign after the first update, and
each device and campaign with the window an hour on (A/B: downloaded ahead)."""

SEEDS: tuple[bytes, ...] = (
    *(_recorded(header) for header in _HONEST_HEADERS),
    *(_recorded(0, (2, SPECIAL, refused)) for refused in _REFUSED_MANIFESTS),
    _recorded(1, (2, SPECIAL, _MANIFEST_NEWER)),
    _recorded(0, (3, RAW, b"\x05\x01\x02\x03")),
    _recorded(1, (4, LOST, b"\x02\x01"), (6, RESET, b"\x03")),
    _recorded(0, (9, SPECIAL, b"\x00\x10\x55")),  # the transfer: a byte of flash goes bad
    _recorded(0, (9, RAW, bytes(range(1, 41)))),  # the transfer: bad blocks
    _recorded(1, (9, LOST, b"\x03\x01")),  # the transfer: lost after 3 datagrams
    _recorded(3, (4, EXCEPTION, b"\x06" + encode_values([5.0]))),  # NotNow to authorise
)
