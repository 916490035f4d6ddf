"""Key files and signed-document files on disk: the only file IO of the
image signing tools (the verifier in :mod:`dofpy.image` is pure).

Private keys are PEM PKCS#8 files created with ``O_CREAT | O_EXCL`` and mode
0600 (never replacing a file), optionally encrypted with a passphrase
(``BestAvailableEncryption``); loading refuses a private key file that its
group or others may read or write, as ``ssh`` does. Public keys are PEM
SubjectPublicKeyInfo files, ``NAME.pub`` beside ``NAME``. Documents
(manifests, trust roots) are written atomically: a temporary file in the same
folder, flushed to disk, renamed over the target, the folder flushed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from dofpy.image.cose import PublicKey, SigningKey

__all__ = [
    "KeyFileError",
    "load_private_key",
    "load_public_key",
    "read_passphrase",
    "write_document",
    "write_private_key",
    "write_public_key",
]


class KeyFileError(ValueError):
    """A key file is missing, unsafe (others may read it) or not a key."""


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; refusing to overwrite a key") from None
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # a rename or create is durable once its folder is
        descriptor = os.open(folder if str(folder) else Path(), os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def write_private_key(
    path: str | os.PathLike[str], key: SigningKey, passphrase: bytes | None = None
) -> Path:
    """Create ``path`` (mode 0600, never replacing a file) holding ``key``,
    encrypted with ``passphrase`` when one is given."""
    target = Path(path)
    _create_exclusive(target, key.to_pem(passphrase), 0o600)
    return target


def write_public_key(path: str | os.PathLike[str], key: PublicKey) -> Path:
    """Create ``path`` (mode 0644, never replacing a file) holding ``key``."""
    target = Path(path)
    _create_exclusive(target, key.to_pem(), 0o644)
    return target


def load_private_key(path: str | os.PathLike[str], passphrase: bytes | None = None) -> SigningKey:
    """The signing key in ``path``. Refuses (:class:`KeyFileError`) a file its
    group or others may read or write, a wrong or missing passphrase, and
    anything but an Ed25519 or P-256 private key."""
    source = Path(path)
    try:
        with source.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise KeyFileError(f"{source} is not a regular file")
            if mode & 0o077:
                raise KeyFileError(
                    f"{source} is accessible by group or others (mode {stat.S_IMODE(mode):04o});"
                    f" a private key must be private: chmod 600 {source}"
                )
            data = file.read()
    except FileNotFoundError:
        raise KeyFileError(f"no private key at {source}") from None
    try:
        return SigningKey.from_pem(data, passphrase)
    except ValueError as exc:
        hint = "" if passphrase else " (is it passphrase-protected? give --passphrase-file)"
        raise KeyFileError(f"{source} is not a usable private key: {exc}{hint}") from None


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """The public key in ``path`` (PEM SubjectPublicKeyInfo)."""
    source = Path(path)
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"no public key at {source}") from None
    try:
        return PublicKey.from_pem(data)
    except ValueError as exc:
        raise KeyFileError(f"{source} is not an Ed25519 or P-256 public key: {exc}") from None


def read_passphrase(path: str | os.PathLike[str]) -> bytes:
    """A passphrase from the first line of ``path`` (its newline dropped)."""
    lines = Path(path).read_bytes().splitlines()
    if not lines or not lines[0]:
        raise KeyFileError(f"{path} holds no passphrase")
    return lines[0]


def write_document(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename,
    fsync of the folder); refuses to replace a file unless ``overwrite``."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise KeyFileError(f"{target} exists; refusing to overwrite it")
    folder = target.parent
    temporary = folder / f".{target.name}.{secrets.token_hex(4)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _sync_folder(folder)
    return target
