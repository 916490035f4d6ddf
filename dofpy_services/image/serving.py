"""Serving images: the ImageProvider OAP interface beside the block transfer,
a caching relay of both, and the requestor that fetches an image.

- :data:`IMAGE_INTERFACE` on :data:`IMAGE_OBJECT`: the latest manifest of a
  device class, a manifest by digest, the (current or a named) trust root, a
  key record by digest. Every answer is an object of the store, named by its
  SHA-256: the requestor checks what it gets against the digest it asked for
  (or, for ``latest``, verifies the manifest's signatures), so a provider or
  relay need not be trusted.
- :class:`ImageProvider` answers from an :class:`ImageStore` and serves the
  image of every published manifest through the node's block transfer (read
  from the store's files through the transfer's block cache). It picks up
  what another process published into the same store (``refresh``), so any
  number of providers may share one store, or serve copies of it.
- :class:`RelayProvider` is a caching relay: it answers the same interface by
  asking its upstream providers (keeping what it got, by digest) and relays
  the images of the manifests it forwarded through its own transfer store:
  its store holds only what is served, the ciphertext of a confidential image.
- :func:`fetch_image` is the device side: latest manifest, verified (by the
  caller's ``verify``, the manifest helper's verifier with the device's trust
  root and installed state), the image fetched by block into a
  :class:`~dofpy.transfer.store.FileStore` (resumable), then moved — or, for a
  confidential image, decrypted and checked — atomically into place.

Store calls block: they run in worker threads, never on the trio loop.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dofpy._core import Address
from dofpy.errors import BadPacket, DofError
from dofpy.oap.errors import ProviderException
from dofpy.oap.interface import ExceptionDef, Interface, Method, Param, ValueType
from dofpy.transfer.store import FileStore
from dofpy.trio import Provider, TransferNode
from dofpy.wire.oid import OID
from dofpy_services.image.encryption import (
    DecryptionError,
    EncryptionInfo,
    unwrap_content_key_untrusted,
)
from dofpy_services.image.manifests import manifest_named
from dofpy_services.image.publish import read_chunks, write_decrypted
from dofpy_services.image.store import ImageStore, ManifestReader, ManifestSummary

__all__ = [
    "IMAGE_INTERFACE",
    "IMAGE_OBJECT",
    "NOT_FOUND",
    "FetchedImage",
    "ImageProvider",
    "RelayProvider",
    "fetch_image",
]

logger = logging.getLogger("dofpy.image")

NOT_FOUND = ExceptionDef(10, "NotFound", (Param("what", ValueType.TEXT),))
"""Raised when the store has no such object (the value says which)."""

IMAGE_INTERFACE = Interface.define(
    "[1:{01000D01}]",
    "ImageProvider",
    [
        Method(
            1,
            "latest",
            (Param("device_class", ValueType.BYTES),),
            (Param("manifest", ValueType.BYTES),),
        ),
        Method(
            2,
            "manifest",
            (Param("digest", ValueType.BYTES),),
            (Param("manifest", ValueType.BYTES),),
        ),
        Method(
            3,
            "trust_root",
            (Param("digest", ValueType.BYTES, optional=True),),
            (Param("trust_root", ValueType.BYTES),),
        ),
        Method(
            4,
            "key_record",
            (Param("digest", ValueType.BYTES),),
            (Param("record", ValueType.BYTES),),
        ),
        NOT_FOUND,
    ],
)
IMAGE_OBJECT = OID(3, b"dofpy-image")
"""The object id of the Image provider, the same on every provider and relay."""


def _class_text(device_class: bytes) -> str:
    if len(device_class) != 16:
        raise ProviderException(NOT_FOUND, ("a device class is a 16-byte UUID",))
    return str(uuid.UUID(bytes=device_class))


def _digest(value: bytes, what: str) -> bytes:
    if len(value) != 32:
        raise ProviderException(NOT_FOUND, (f"a {what} digest is 32 bytes (SHA-256)",))
    return value


class ImageProvider(Provider):
    """The Image provider over ``store``; with ``transfer`` it also serves the
    image of every published manifest by block (call :meth:`refresh` once at
    start; requests refresh again, so images published later are served)."""

    def __init__(self, store: ImageStore, transfer: TransferNode | None = None) -> None:
        self._store = store
        self._transfer = transfer
        self._served: set[tuple[bytes, int]] = set()
        self._lock = trio.Lock()
        self.served_images = 0

    async def refresh(self) -> None:
        """Read what was published since, and serve its images."""
        async with self._lock:
            await trio.to_thread.run_sync(self._store.refresh)
            if self._transfer is None:
                return
            for summary in self._store.manifests().values():
                image = summary.image
                key = (image.object_id, image.leaf_size)
                if key in self._served:
                    continue
                try:
                    hashes = await trio.to_thread.run_sync(self._store.hashes, image)
                except (KeyError, OSError, ValueError) as exc:
                    logger.warning("cannot serve image %s: %s", image.object_id.hex()[:16], exc)
                    continue
                self._transfer.serve(hashes)
                self._served.add(key)
                self.served_images += 1

    async def latest(self, device_class: bytes) -> bytes:
        class_id = _class_text(device_class)
        await self.refresh()
        digest = self._store.latest(class_id)
        if digest is None:
            raise ProviderException(NOT_FOUND, (f"no manifest for device class {class_id}",))
        return await trio.to_thread.run_sync(self._store.manifest, digest)

    async def manifest(self, digest: bytes) -> bytes:
        _digest(digest, "manifest")
        await self.refresh()
        try:
            return await trio.to_thread.run_sync(self._store.manifest, digest)
        except KeyError:
            raise ProviderException(NOT_FOUND, (f"no manifest {digest.hex()}",)) from None

    async def trust_root(self, digest: bytes | None = None) -> bytes:
        store = self._store
        if digest is None:
            found = await trio.to_thread.run_sync(store.trust_root)
            if found is None:
                raise ProviderException(NOT_FOUND, ("no trust root set",))
            return found
        _digest(digest, "trust root")
        try:
            return await trio.to_thread.run_sync(store.read_object, "trust-roots", digest)
        except KeyError:
            raise ProviderException(NOT_FOUND, (f"no trust root {digest.hex()}",)) from None

    async def key_record(self, digest: bytes) -> bytes:
        _digest(digest, "key record")
        try:
            return await trio.to_thread.run_sync(self._store.read_object, "records", digest)
        except KeyError:
            raise ProviderException(NOT_FOUND, (f"no key record {digest.hex()}",)) from None


def _named(data: bytes, digest: bytes, what: str) -> bytes:
    """``data`` if it is the object named ``digest``; else ``BadPacket``."""
    if not hmac.compare_digest(hashlib.sha256(data).digest(), digest):
        raise BadPacket(f"the {what} received is not the one named {digest.hex()}")
    return data


class RelayProvider(Provider):
    """A caching relay of the Image interface and of the images: asks
    ``upstream`` (in order) for what it does not have, keeps what it got (by
    digest; ``latest`` is asked upstream each time, at most every
    ``latest_ttl`` seconds per class), and relays through ``transfer`` the image
    of every manifest it forwarded (fetched once into ``transfer``'s store, on
    the first Fetch). ``describe`` reads the image's verification data from a
    manifest (untrusted: every requestor verifies the signatures itself)."""

    def __init__(
        self,
        transfer: TransferNode,
        upstream: Sequence[Address],
        describe: ManifestReader,
        *,
        latest_ttl: float = 5.0,
        max_objects: int = 1024,
    ) -> None:
        if not upstream:
            raise ValueError("a relay needs at least one upstream provider")
        self._transfer = transfer
        self._upstream = list(upstream)
        self._describe = describe
        self._latest_ttl = latest_ttl
        self._max_objects = max_objects
        self._objects: dict[tuple[str, bytes], bytes] = {}
        self._latest: dict[bytes, tuple[float, bytes]] = {}
        self._relayed: set[bytes] = set()
        self.upstream_requests = 0

    async def _ask(self, method: str, *args: object) -> bytes:
        last: Exception | None = None
        for peer in self._upstream:
            self.upstream_requests += 1
            try:
                (value,) = await self._transfer.node.invoke(
                    peer, IMAGE_OBJECT, IMAGE_INTERFACE, method, *args
                )
            except ProviderException:
                raise  # the answer (NotFound): passed on as it is
            except DofError as exc:
                last = exc
                continue
            assert isinstance(value, bytes)
            return value
        assert last is not None
        raise last

    def _keep(self, kind: str, digest: bytes, data: bytes) -> None:
        if len(self._objects) >= self._max_objects:
            self._objects.pop(next(iter(self._objects)))  # the oldest kept
        self._objects[(kind, digest)] = data

    def _relay(self, manifest: bytes) -> None:
        try:
            summary = self._describe(manifest)
        except (BadPacket, ValueError) as exc:
            message = f"upstream sent an unreadable manifest: {exc}"
            raise ProviderException(NOT_FOUND, (message,)) from None
        image = summary.image
        if image.object_id not in self._relayed:
            self._transfer.relay(image, self._upstream)
            self._relayed.add(image.object_id)

    async def latest(self, device_class: bytes) -> bytes:
        _class_text(device_class)
        now = trio.current_time()
        cached = self._latest.get(device_class)
        if cached is not None and now - cached[0] < self._latest_ttl:
            return cached[1]
        manifest = await self._ask("latest", device_class)
        self._relay(manifest)
        self._latest[device_class] = (now, manifest)
        self._keep("manifest", hashlib.sha256(manifest).digest(), manifest)
        return manifest

    async def _named_object(self, kind: str, method: str, digest: bytes) -> bytes:
        found = self._objects.get((kind, digest))
        if found is None:
            found = _named(await self._ask(method, digest), digest, kind)
            self._keep(kind, digest, found)
        return found

    async def manifest(self, digest: bytes) -> bytes:
        _digest(digest, "manifest")
        found = self._objects.get(("manifest", digest))
        if found is None:
            found = await self._ask("manifest", digest)
            if not manifest_named(found, digest):
                raise BadPacket(f"the manifest received is not the one named {digest.hex()}")
            self._keep("manifest", digest, found)
        manifest = found
        self._relay(manifest)
        return manifest

    async def trust_root(self, digest: bytes | None = None) -> bytes:
        if digest is None:
            return await self._ask("trust_root")  # the current one: never cached
        _digest(digest, "trust root")
        return await self._named_object("trust root", "trust_root", digest)

    async def key_record(self, digest: bytes) -> bytes:
        _digest(digest, "key record")
        return await self._named_object("key record", "key_record", digest)


@dataclass(frozen=True, slots=True)
class FetchedImage:
    """What :func:`fetch_image` installed: the manifest (its bytes and summary)
    and the bytes written to the target."""

    manifest: bytes
    summary: ManifestSummary
    size: int


VerifyManifest = Callable[[bytes], ManifestSummary]
"""The device's check of a manifest's bytes: signatures against its trust
root, rollback, expiry, vendor and class... raising the manifest helper's
errors (or ``BadPacket``); returns what the fetch needs."""


async def fetch_image(
    node: TransferNode,
    providers: Sequence[Address],
    device_class: uuid.UUID,
    verify: VerifyManifest,
    target: str | os.PathLike[str],
    *,
    staging: str | os.PathLike[str],
    recipient_key: X25519PrivateKey | None = None,
    encryption_of: Callable[[bytes], EncryptionInfo | None] | None = None,
) -> FetchedImage:
    """Fetch and install the latest image of ``device_class``.

    The manifest comes from the first provider that answers; ``verify`` must
    accept it before anything else is fetched. The image is fetched by block
    (every block verified against the manifest's Merkle root) into a
    :class:`FileStore` in ``staging`` (a fetch cut short resumes from it),
    then moved to ``target`` atomically. A confidential image
    (``encryption_of(manifest)`` returns its :class:`EncryptionInfo`) is
    decrypted with ``recipient_key`` only once all of it verified, and
    installed only if the plaintext is the signed one.
    """
    if not providers:
        raise ValueError("fetch_image needs at least one provider")
    manifest = await _first_answer(node, providers, "latest", device_class.bytes)
    summary = verify(manifest)
    image = summary.image
    staging_path = Path(staging)
    store = FileStore(staging_path)
    try:
        await node.fetch(image, list(providers), store=store)
    finally:
        await trio.to_thread.run_sync(store.close)
    data_path = staging_path / f"{image.object_id.hex()}.data"
    marks_path = staging_path / f"{image.object_id.hex()}.verified"
    info = None if encryption_of is None else encryption_of(manifest)
    if info is None:
        await trio.to_thread.run_sync(_install, data_path, Path(target))
        size = image.size
    else:
        if recipient_key is None:
            raise DecryptionError("the image is encrypted and no recipient key was given")
        size = await _decrypt(node, providers, info, recipient_key, data_path, Path(target))
        await trio.to_thread.run_sync(data_path.unlink)
    await trio.to_thread.run_sync(lambda: marks_path.unlink(missing_ok=True))
    return FetchedImage(manifest, summary, size)


async def _first_answer(
    node: TransferNode, providers: Sequence[Address], method: str, *args: object
) -> bytes:
    last: Exception | None = None
    for peer in providers:
        try:
            (value,) = await node.node.invoke(peer, IMAGE_OBJECT, IMAGE_INTERFACE, method, *args)
        except DofError as exc:
            last = exc
            continue
        if not isinstance(value, bytes):
            raise BadPacket(f"{method}: the provider answered with {type(value).__name__}")
        return value
    assert last is not None
    raise last


def _install(source: Path, target: Path) -> None:
    """Move a complete, verified, fsync-ed object into place, durably."""
    os.replace(source, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


async def _decrypt(
    node: TransferNode,
    providers: Sequence[Address],
    info: EncryptionInfo,
    recipient_key: X25519PrivateKey,
    ciphertext: Path,
    target: Path,
) -> int:
    failures: list[str] = []
    for digest in info.records:
        try:
            record = _named(
                await _first_answer(node, providers, "key_record", digest), digest, "key record"
            )
            key = unwrap_content_key_untrusted(record, recipient_key)
        except (DofError, BadPacket) as exc:
            failures.append(str(exc))
            continue
        written: int = await trio.to_thread.run_sync(
            write_decrypted, read_chunks(ciphertext), key, info, target
        )
        return written
    raise DecryptionError(
        "no key record of this image opens with this device's key: " + "; ".join(failures)
    )
