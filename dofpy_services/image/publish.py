"""Adding an image to the store for publishing, and the device side of a
confidential one: one streaming pass each, in bounded memory.

:func:`add_image_file` stores the bytes that will be served — the image, or
for a confidential one its AES-256-CTR ciphertext under a fresh content key
(wrapped to the recipients into a key record stored beside it) — and returns
what the signed manifest must carry: the transfer's verification data of the
served bytes and, when encrypted, the :class:`EncryptionInfo` map.
:func:`write_decrypted` is what a device does after the ciphertext verified.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from dofpy.transfer.manifest import ObjectHashes
from dofpy_services.image.encryption import (
    ContentKey,
    DecryptionError,
    EncryptionInfo,
    PlaintextCheck,
    wrap_content_key,
)
from dofpy_services.image.store import DEFAULT_CHUNK_BYTES, ImageStore

__all__ = ["PreparedImage", "add_image_file", "read_chunks", "write_atomically", "write_decrypted"]


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An image in the store, not yet published: ``hashes`` of the bytes
    served (the ciphertext when ``encryption`` is set)."""

    hashes: ObjectHashes
    encryption: EncryptionInfo | None = None


def read_chunks(
    path: str | os.PathLike[str], chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[bytes]:
    """A file's bytes, ``chunk_bytes`` at a time."""
    with open(path, "rb") as source:
        while chunk := source.read(chunk_bytes):
            yield chunk


def add_image_file(
    store: ImageStore,
    path: str | os.PathLike[str],
    leaf_size: int = 1024,
    *,
    recipients: Sequence[X25519PublicKey] = (),
    content_key: ContentKey | None = None,
) -> PreparedImage:
    """Store the image at ``path`` (encrypted to ``recipients`` if any, under
    ``content_key`` or a fresh random one): one pass over the file."""
    chunks = read_chunks(path, store.chunk_bytes)
    if not recipients:
        return PreparedImage(store.add_image(chunks, leaf_size))
    key = content_key or ContentKey.generate()
    plaintext = hashlib.sha256()
    size = 0

    def measured(source: Iterable[bytes]) -> Iterator[bytes]:
        nonlocal size
        for chunk in source:
            plaintext.update(chunk)
            size += len(chunk)
            yield chunk

    hashes = store.add_image(key.apply(measured(chunks)), leaf_size)
    record = store.add_record(wrap_content_key(key, recipients))
    info = EncryptionInfo(key.iv, size, plaintext.digest(), (record,))
    return PreparedImage(hashes, info)


def write_atomically(target: str | os.PathLike[str], chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` to ``target`` through a temporary file in its directory
    (fsync-ed, renamed, the directory fsync-ed): ``target`` is either absent
    (or its old content) or complete. Returns the bytes written."""
    target = Path(target)
    temporary = target.with_name(f".{target.name}.partial")
    written = 0
    try:
        with open(temporary, "wb") as file:
            for chunk in chunks:
                file.write(chunk)
                written += len(chunk)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return written


def write_decrypted(
    ciphertext: Iterable[bytes],
    key: ContentKey,
    info: EncryptionInfo,
    target: str | os.PathLike[str],
) -> int:
    """Decrypt a verified ciphertext into ``target`` (atomically), accepted
    only when the plaintext is the signed one: else ``target`` is left as it
    was and :class:`~dofpy_services.image.encryption.DecryptionError` raised."""
    if key.iv != info.iv:
        raise DecryptionError("the key record's counter block is not the manifest's")
    check = PlaintextCheck(info)

    def checked() -> Iterator[bytes]:
        for chunk in key.apply(ciphertext):
            check.update(chunk)
            yield chunk
        check.verify()  # before the rename: a wrong plaintext is never installed

    return write_atomically(target, checked())
