"""The image store: immutable, content-addressed objects in a directory.

Layout under the store's root (every object named by the hex SHA-256 of its bytes)::

    images/<sha256>                 an image (the ciphertext, for a confidential one)
    images/<sha256>.<leaf>.leaves   its leaf hashes at leaf size <leaf> (derived:
                                    checked against a manifest's Merkle root on load)
    manifests/<sha256>              signed manifests (opaque here: ``describe`` reads them)
    trust-roots/<sha256>            trust-root documents
    records/<sha256>                small objects a manifest references (key records)
    refs/trust-root                 the hex digest of the current trust root
    lock                            held (``flock``) by every change: publish, gc

**Immutable and atomic.** Every object is written to a temporary file in its
own directory (``.tmp-*``), ``fsync``-ed, made read-only, renamed to its name
and the directory ``fsync``-ed; an object already present is never rewritten.
So a crash at any moment leaves each name either absent or complete, and what
it leaves behind is a temporary file, removed when the store is next opened.

**Commit order.** A publish writes the image (and its leaf hashes) first, the
manifest last: the manifest's rename is the commit. A crash before it leaves
an image no manifest references — invisible to requestors, removed by the next
:meth:`ImageStore.gc`. ``gc`` removes manifests first (those it was told to
drop) and only then the objects no remaining manifest references, so at no
moment does a manifest name an image that is gone.

**Streaming.** An image is read in ``chunk_bytes`` pieces, hashed (SHA-256
and the Merkle tree, :class:`~dofpy.transfer.hashing.ObjectHasher`) and
written as it streams: memory is the chunk plus 32 bytes per leaf, whatever
the image's size.

The operating-system calls go through ``fs`` (``os`` itself by default), so a
test can fail each one in turn. Blocking calls: run them in a worker thread
from async code.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dofpy.errors import BadPacket
from dofpy.transfer.hashing import ObjectHasher
from dofpy.transfer.manifest import HASH_SIZE, Manifest, ObjectHashes
from dofpy.transfer.rangeset import RangeSet

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "GcReport",
    "ImageBlockStore",
    "ImageStore",
    "ManifestReader",
    "ManifestSummary",
    "StoreError",
    "StoredImage",
]

DEFAULT_CHUNK_BYTES = 1 << 20
"""Bytes read, hashed and written at a time when an image is published."""

_HEX = re.compile(r"[0-9a-f]{64}")
_LEAVES = re.compile(r"([0-9a-f]{64})\.([0-9]+)\.leaves")
_TEMPORARY = ".tmp-"
_KINDS = ("images", "manifests", "trust-roots", "records")


class StoreError(Exception):
    """The store refuses an operation (the message says why, for an operator)."""


@dataclass(frozen=True, slots=True)
class ManifestSummary:
    """What the store needs to know of a signed manifest (read by ``describe``).

    ``image`` is the transfer's verification data of the image object the
    manifest covers (of the ciphertext, for a confidential image);
    ``references`` are the digests of other objects it needs kept (a key record).
    """

    vendor_id: str
    class_id: str
    version: str
    sequence: int
    image: Manifest
    expires: float | None = None
    signers: tuple[str, ...] = ()
    encrypted: bool = False
    references: tuple[bytes, ...] = ()
    payload_digest: bytes | None = None
    """The signed payload's digest, when the format has one: manifests with the
    same payload are one release with different signature sets."""
    signature_count: int = 0


ManifestReader = Callable[[bytes], ManifestSummary]
"""Reads a manifest's bytes (untrusted: raises ``BadPacket`` or ``ValueError``)."""


@dataclass(frozen=True, slots=True)
class StoredImage:
    """A published manifest as :meth:`ImageStore.published` lists it."""

    digest: bytes
    summary: ManifestSummary
    latest: bool


@dataclass(slots=True)
class GcReport:
    """What one :meth:`ImageStore.gc` removed."""

    manifests: list[bytes] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    derived: int = 0
    records: list[bytes] = field(default_factory=list)
    bytes_freed: int = 0


def _digest_name(digest: bytes) -> str:
    if len(digest) != HASH_SIZE:
        raise ValueError("a digest is 32 bytes (SHA-256)")
    return digest.hex()


class ImageStore:
    """The content-addressed image store at ``root`` (created if missing).

    ``describe`` reads a manifest's bytes into a :class:`ManifestSummary`;
    ``fs`` is the operating-system calls (``os``; tests give one that fails).
    Opening removes the temporary files a crash left.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        describe: ManifestReader,
        *,
        fs: Any = os,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be >= 1")
        self.root = Path(root)
        self._describe = describe
        self._fs = fs
        self.chunk_bytes = chunk_bytes
        self._summaries: dict[bytes, ManifestSummary] = {}
        self.unreadable: dict[bytes, str] = {}
        """Manifests in the store ``describe`` refused (digest: why); never served."""
        for directory in (self.root, *(self.root / kind for kind in _KINDS), self.root / "refs"):
            with suppress(FileExistsError):
                fs.mkdir(directory, 0o755)
        self.temporaries_removed = self._remove_temporaries()
        """Temporary files (left by a crash) removed when this store was opened."""
        self.refresh()

    # -- reading ----------------------------------------------------------------------------

    def _path(self, kind: str, digest: bytes) -> Path:
        return self.root / kind / _digest_name(digest)

    def _leaves_path(self, image: Manifest) -> Path:
        return self.root / "images" / f"{image.object_id.hex()}.{image.leaf_size}.leaves"

    def _names(self, kind: str) -> list[str]:
        return sorted(self._fs.listdir(self.root / kind))

    def _digests(self, kind: str) -> list[bytes]:
        return [bytes.fromhex(name) for name in self._names(kind) if _HEX.fullmatch(name)]

    def _remove_temporaries(self) -> int:
        removed = 0
        for kind in (*_KINDS, "refs"):
            for name in self._names(kind):
                if name.startswith(_TEMPORARY):
                    self._fs.unlink(self.root / kind / name)
                    removed += 1
        if removed:
            self._fsync_directories((*_KINDS, "refs"))
        return removed

    def refresh(self) -> list[bytes]:
        """Read manifests published since (by this or another process); returns
        the digests new to this store object, oldest name first."""
        new = []
        present = set(self._digests("manifests"))
        for gone in set(self._summaries) - present:
            del self._summaries[gone]
        for digest in sorted(present - set(self._summaries) - set(self.unreadable)):
            try:
                summary = self._describe(self.read_object("manifests", digest))
            except (BadPacket, ValueError) as exc:
                self.unreadable[digest] = str(exc)
                continue
            self._summaries[digest] = summary
            new.append(digest)
        return new

    def read_object(self, kind: str, digest: bytes, max_bytes: int = 1 << 20) -> bytes:
        """A small object's bytes (a manifest, trust root or record), checked
        against its digest; raises ``KeyError`` when absent, ``StoreError``
        when it does not match its name (the disk corrupted it)."""
        if kind not in _KINDS or kind == "images":
            raise ValueError(f"not a small-object kind: {kind!r}")
        data = self._read_file(self._path(kind, digest), max_bytes)
        if not hmac.compare_digest(hashlib.sha256(data).digest(), digest):
            raise StoreError(f"{kind}/{digest.hex()} does not match its digest (corrupted)")
        return data

    def _read_file(self, path: Path, max_bytes: int) -> bytes:
        fs = self._fs
        try:
            fd = fs.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise KeyError(path.name) from None
        try:
            size = fs.fstat(fd).st_size
            if size > max_bytes:
                raise StoreError(f"{path} is larger than {max_bytes} bytes")
            parts = []
            while chunk := fs.read(fd, max(size, 1)):
                parts.append(chunk)
                if sum(map(len, parts)) > max_bytes:
                    raise StoreError(f"{path} is larger than {max_bytes} bytes")
            return b"".join(parts)
        finally:
            fs.close(fd)

    def manifests(self) -> dict[bytes, ManifestSummary]:
        """Every readable published manifest, by digest."""
        return dict(self._summaries)

    def summary(self, digest: bytes) -> ManifestSummary:
        return self._summaries[digest]

    def manifest(self, digest: bytes) -> bytes:
        """A published manifest's bytes (``KeyError`` when not published):
        the one whose bytes have SHA-256 ``digest`` or, failing that, the
        most signed copy of the release whose payload has it."""
        if digest not in self._summaries:
            copies = [
                (summary.signature_count, name)
                for name, summary in self._summaries.items()
                if summary.payload_digest == digest
            ]
            if not copies:
                raise KeyError(digest.hex())
            digest = max(copies)[1]
        return self.read_object("manifests", digest)

    def latest(self, class_id: str) -> bytes | None:
        """The digest of the manifest with the highest sequence number for
        ``class_id`` (``None``: none published)."""
        best: tuple[int, int, bytes] | None = None
        for digest, summary in self._summaries.items():
            # The same release signed by more parties is preferred.
            rank = (summary.sequence, summary.signature_count, digest)
            if summary.class_id == class_id and (best is None or rank > best):
                best = rank
        return None if best is None else best[2]

    def published(self) -> list[StoredImage]:
        """Every published manifest, by class then sequence."""
        latest = {
            digest
            for digest in (self.latest(s.class_id) for s in self._summaries.values())
            if digest is not None
        }
        entries = [StoredImage(d, s, d in latest) for d, s in self._summaries.items()]
        return sorted(entries, key=lambda e: (e.summary.class_id, e.summary.sequence, e.digest))

    def has_image(self, object_id: bytes) -> bool:
        try:
            self._fs.stat(self._path("images", object_id))
        except FileNotFoundError:
            return False
        return True

    def image_path(self, object_id: bytes) -> Path:
        """Where the image's bytes are (read-only)."""
        return self._path("images", object_id)

    def open_image(self, object_id: bytes) -> int:
        """A read-only descriptor of the image (the caller closes it)."""
        fd: int = self._fs.open(self._path("images", object_id), os.O_RDONLY)
        return fd

    def image_chunks(self, object_id: bytes) -> Iterator[bytes]:
        """The image's bytes, ``chunk_bytes`` at a time."""
        fd = self.open_image(object_id)
        try:
            while chunk := self._fs.read(fd, self.chunk_bytes):
                yield chunk
        finally:
            self._fs.close(fd)

    def hashes(self, image: Manifest) -> ObjectHashes:
        """The image's leaf hashes, for serving: read from its ``.leaves`` file
        (checked against ``image``'s Merkle root), else computed from the image
        (one streaming pass) and written for next time."""
        if not self.has_image(image.object_id):
            raise KeyError(image.object_id.hex())
        found = self._stored_hashes(image)
        if found is not None:
            return found
        with self._locked():
            return self._rehash(image)

    def _stored_hashes(self, image: Manifest) -> ObjectHashes | None:
        """The leaf hashes in the image's ``.leaves`` file, if they are
        ``image``'s tree (``None``: absent, torn or another tree)."""
        try:
            leaves = self._read_file(self._leaves_path(image), image.leaf_count * HASH_SIZE)
            return ObjectHashes(image, leaves)
        except (KeyError, StoreError, ValueError):
            return None

    def _rehash(self, image: Manifest) -> ObjectHashes:
        """Hash the stored image again (one streaming pass), check it is
        ``image`` and write its leaf hashes (the lock held)."""
        hasher = ObjectHasher(image.leaf_size)
        for chunk in self.image_chunks(image.object_id):
            hasher.update(chunk)
        hashes = hasher.finish()
        if hashes.manifest != image:
            raise StoreError(
                f"images/{image.object_id.hex()} does not match the manifest's"
                " verification data (size, leaf size or Merkle root)"
            )
        self._write_named(self._leaves_path(image), [hashes.leaf_hashes])
        return hashes

    def trust_root(self) -> bytes | None:
        """The current trust root's bytes (``None``: none set)."""
        digest = self.trust_root_digest()
        return None if digest is None else self.read_object("trust-roots", digest)

    def trust_root_digest(self) -> bytes | None:
        try:
            text = self._read_file(self.root / "refs" / "trust-root", 64).decode("ascii")
        except KeyError:
            return None
        if not _HEX.fullmatch(text):
            raise StoreError("refs/trust-root is not a digest")
        return bytes.fromhex(text)

    # -- writing ----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the store's lock: one change at a time, across processes."""
        fs = self._fs
        fd = fs.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fs.close(fd)  # closing releases the lock

    def _fsync_directories(self, kinds: Iterable[str]) -> None:
        for kind in kinds:
            fd = self._fs.open(self.root / kind, os.O_RDONLY)
            try:
                self._fs.fsync(fd)
            finally:
                self._fs.close(fd)

    def _temporary(self, directory: Path) -> tuple[int, Path]:
        path = directory / f"{_TEMPORARY}{secrets.token_hex(8)}"
        fd: int = self._fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return fd, path

    def _write_all(self, fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[self._fs.write(fd, view) :]

    def _commit(self, fd: int, temporary: Path, target: Path) -> None:
        """Make the temporary file durable, read-only, and ``target``."""
        fs = self._fs
        fs.fsync(fd)
        fs.fchmod(fd, 0o444)
        fs.close(fd)
        fs.replace(temporary, target)
        self._fsync_directories([target.parent.name])

    def _discard(self, fd: int | None, temporary: Path) -> None:
        """Undo a write that failed (best effort: what is left, the next open removes)."""
        if fd is not None:
            with suppress(OSError):
                self._fs.close(fd)
        with suppress(OSError):
            self._fs.unlink(temporary)

    def _write_named(self, target: Path, chunks: Iterable[bytes]) -> None:
        fd, temporary = self._temporary(target.parent)
        try:
            for chunk in chunks:
                self._write_all(fd, chunk)
            self._commit(fd, temporary, target)
        except BaseException:
            self._discard(fd, temporary)
            raise

    def _add_small(self, kind: str, data: bytes) -> bytes:
        digest = hashlib.sha256(data).digest()
        target = self._path(kind, digest)
        if not self._exists(target):
            self._write_named(target, [data])
        return digest

    def _exists(self, path: Path) -> bool:
        try:
            self._fs.stat(path)
        except FileNotFoundError:
            return False
        return True

    def add_image(self, chunks: Iterable[bytes], leaf_size: int = 1024) -> ObjectHashes:
        """Store the image whose bytes ``chunks`` yields (streamed: hashed and
        written piece by piece); returns its transfer manifest and leaf hashes.
        Until a manifest references it, it is garbage to :meth:`gc`."""
        with self._locked():
            directory = self.root / "images"
            fd: int | None
            fd, temporary = self._temporary(directory)
            try:
                hasher = ObjectHasher(leaf_size)
                for chunk in chunks:
                    hasher.update(chunk)
                    self._write_all(fd, chunk)
                hashes = hasher.finish()
                target = self._path("images", hashes.manifest.object_id)
                if self._exists(target):
                    self._discard(fd, temporary)  # the same bytes are already stored
                    fd = None
                else:
                    self._commit(fd, temporary, target)
                    fd = None
            except BaseException:
                self._discard(fd, temporary)
                raise
            leaves = self._leaves_path(hashes.manifest)
            if not self._exists(leaves):
                self._write_named(leaves, [hashes.leaf_hashes])
            return hashes

    def add_image_file(self, path: str | os.PathLike[str], leaf_size: int = 1024) -> ObjectHashes:
        """:meth:`add_image` from a file, read ``chunk_bytes`` at a time."""
        with open(path, "rb") as source:
            return self.add_image(iter(lambda: source.read(self.chunk_bytes), b""), leaf_size)

    def add_record(self, data: bytes) -> bytes:
        """Store a small object a manifest will reference (a key record); its digest."""
        with self._locked():
            return self._add_small("records", data)

    def add_manifest(self, data: bytes) -> bytes:
        """Publish a manifest (the commit of a publish): refused unless it reads,
        its image is stored and matches it, and every object it references is
        stored. Idempotent; returns its digest."""
        try:
            summary = self._describe(data)
        except (BadPacket, ValueError) as exc:
            raise StoreError(f"not a manifest this store can read: {exc}") from None
        with self._locked():
            image = summary.image
            if not self.has_image(image.object_id):
                raise StoreError(f"image {image.object_id.hex()} is not in the store: add it first")
            size = self._fs.stat(self._path("images", image.object_id)).st_size
            if size != image.size:
                raise StoreError(
                    f"image {image.object_id.hex()} is {size} bytes, the manifest says {image.size}"
                )
            for reference in summary.references:
                if not self._exists(self._path("records", reference)):
                    raise StoreError(f"record {reference.hex()} is not in the store: add it first")
            if self._stored_hashes(image) is None:
                # Another leaf size than the image was added at, or verification
                # data that does not match it (refused there): hash it again.
                self._rehash(image)
            digest = self._add_small("manifests", data)
        self._summaries[digest] = summary
        self.unreadable.pop(digest, None)
        return digest

    def set_trust_root(self, data: bytes) -> bytes:
        """Store a trust root and make it the current one (atomically); its digest."""
        with self._locked():
            digest = self._add_small("trust-roots", data)
            self._write_named(self.root / "refs" / "trust-root", [digest.hex().encode("ascii")])
        return digest

    # -- gc ---------------------------------------------------------------------------------

    def gc(
        self,
        *,
        keep: int | None = None,
        expired_before: float | None = None,
        dry_run: bool = False,
    ) -> GcReport:
        """Remove what no manifest references; first drop the manifests that
        ``keep`` (the newest ``keep`` per class stay) or ``expired_before``
        (manifests expired at that time, the latest of a class excepted) say.
        Crash-safe: manifests go (each removal made durable) before anything
        they referenced, so no manifest ever names a missing object."""
        if keep is not None and keep < 1:
            raise ValueError("keep must be >= 1")
        report = GcReport()
        with self._locked():
            self.refresh()
            by_class: dict[str, list[tuple[tuple[int, int], bytes]]] = {}
            for digest, summary in self._summaries.items():
                order = (summary.sequence, summary.signature_count)
                by_class.setdefault(summary.class_id, []).append((order, digest))
            for entries in by_class.values():
                entries.sort(reverse=True)
                # Newest first, and of one release (payload) the most signed
                # first: any later copy of a payload is superseded.
                releases: set[bytes] = set()
                superseded: list[bytes] = []
                for _, digest in entries:
                    payload = self._summaries[digest].payload_digest
                    if payload is None:
                        continue
                    if payload in releases:
                        superseded.append(digest)
                    releases.add(payload)
                report.manifests.extend(superseded)
                current = [(s, d) for s, d in entries if d not in superseded]
                for position, (_, digest) in enumerate(current):
                    summary = self._summaries[digest]
                    too_old = keep is not None and position >= keep
                    expired = (
                        expired_before is not None
                        and position > 0
                        and summary.expires is not None
                        and summary.expires <= expired_before
                    )
                    if too_old or expired:
                        report.manifests.append(digest)
            if not dry_run:
                for digest in report.manifests:
                    self._remove(self._path("manifests", digest), report)
                if report.manifests:
                    self._fsync_directories(["manifests"])
                for digest in report.manifests:
                    del self._summaries[digest]
            dropped = set(report.manifests)
            live = [s for d, s in self._summaries.items() if d not in dropped]
            images = {s.image.object_id for s in live}
            leaves = {(s.image.object_id.hex(), s.image.leaf_size) for s in live}
            records = {r for s in live for r in s.references}
            for name in self._names("images"):
                matched = _LEAVES.fullmatch(name)
                if matched and (matched[1], int(matched[2])) not in leaves:
                    report.derived += 1
                    if not dry_run:
                        self._remove(self.root / "images" / name, report)
                elif _HEX.fullmatch(name) and bytes.fromhex(name) not in images:
                    report.images.append(bytes.fromhex(name))
                    if not dry_run:
                        self._remove(self.root / "images" / name, report)
            for digest in self._digests("records"):
                if digest not in records:
                    report.records.append(digest)
                    if not dry_run:
                        self._remove(self._path("records", digest), report)
            # Trust roots are never removed: a device that missed rotations
            # needs the chain from the root it trusts to the current one.
            if not dry_run:
                self._fsync_directories(["images", "records"])
        return report

    def _remove(self, path: Path, report: GcReport) -> None:
        fs = self._fs
        try:
            report.bytes_freed += fs.stat(path).st_size
            fs.unlink(path)
        except FileNotFoundError:
            pass  # another gc (or a crash after the unlink) already removed it

    # -- checking ---------------------------------------------------------------------------

    def check(self) -> list[str]:
        """Every problem found: an object that does not hash to its name, a
        manifest whose image or records are missing or do not match, a
        writable object. Empty when the store is sound (reads every image)."""
        problems: list[str] = []
        for kind in ("manifests", "trust-roots", "records"):
            for digest in self._digests(kind):
                try:
                    self.read_object(kind, digest, max_bytes=1 << 30)
                except StoreError as exc:
                    problems.append(str(exc))
        for digest, reason in self.unreadable.items():
            problems.append(f"manifests/{digest.hex()} unreadable: {reason}")
        for digest in self._digests("images"):
            sha = hashlib.sha256()
            for chunk in self.image_chunks(digest):
                sha.update(chunk)
            if not hmac.compare_digest(sha.digest(), digest):
                problems.append(f"images/{digest.hex()} does not match its digest")
        for kind in _KINDS:
            for name in self._names(kind):
                mode = self._fs.stat(self.root / kind / name).st_mode
                if mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
                    problems.append(f"{kind}/{name} is writable (objects are read-only)")
        for digest, summary in self._summaries.items():
            image = summary.image
            if not self.has_image(image.object_id):
                problems.append(f"manifest {digest.hex()}: image {image.object_id.hex()} missing")
                continue
            try:
                self.hashes(image)
            except StoreError as exc:
                problems.append(f"manifest {digest.hex()}: {exc}")
            for reference in summary.references:
                if not self._exists(self._path("records", reference)):
                    problems.append(f"manifest {digest.hex()}: record {reference.hex()} missing")
        return problems


class ImageBlockStore:
    """A read-only :class:`~dofpy.transfer.store.BlockStore` over an
    :class:`ImageStore`'s images, for a provider's transfer core: every leaf of
    a stored image is verified (the store checked it when it was published);
    nothing is ever written (the images are immutable)."""

    def __init__(self, store: ImageStore) -> None:
        self._store = store
        self._open: dict[bytes, tuple[Manifest, int]] = {}

    def open(self, manifest: Manifest) -> RangeSet:
        known = self._open.get(manifest.object_id)
        if known is None:
            fd = self._store.open_image(manifest.object_id)
            size = os.fstat(fd).st_size
            if size != manifest.size:
                os.close(fd)
                raise ValueError(f"image {manifest.object_id.hex()} is not {manifest.size} bytes")
            self._open[manifest.object_id] = known = (manifest, fd)
        return RangeSet([(0, known[0].leaf_count)])

    def verified(self, object_id: bytes) -> RangeSet:
        known = self._open.get(object_id)
        return RangeSet() if known is None else RangeSet([(0, known[0].leaf_count)])

    def read(self, object_id: bytes, offset: int, length: int) -> bytes:
        fd = self._open[object_id][1]
        parts = []
        while length > 0:
            chunk = os.pread(fd, length, offset)
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(parts)

    def write_verified(self, object_id: bytes, leaf: int, data: bytes) -> None:
        raise OSError(errno.EROFS, "the image store is read-only to the block transfer")

    def close(self) -> None:
        for _, fd in self._open.values():
            os.close(fd)
        self._open.clear()
