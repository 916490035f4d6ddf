"""The session key log: one line per session key, for an operator's Wireshark.

Like ``SSLKEYLOGFILE`` for TLS: with it, Wireshark's DOF dissector decrypts a
capture. Each line is::

    DOF_SESSION_KEY <64 hex digits> initiator=<OID> responder=<OID>[ ssid=<n>]

Lines starting with ``#`` and unknown words are ignored by the parser, so the
format can grow. Feed the keys to tshark with :func:`tshark_key_options`.
Whoever holds this file can read the traffic: write it only where the
operator's capture files are kept. :func:`open_keylog`, which every key log
of dofpy is opened with, creates it mode 0600 and refuses a file others
could read, a symbolic link or anything but a regular file.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from typing import TextIO

from dofpy.wire.oid import OID

__all__ = ["format_keylog_line", "open_keylog", "parse_keylog", "tshark_key_options"]

_TAG = "DOF_SESSION_KEY"


def format_keylog_line(
    session_key: bytes, initiator: OID | None, responder: OID | None, ssid: int | None = None
) -> str:
    """One key-log line (with its newline)."""
    if len(session_key) != 32:
        raise ValueError("a session key is 32 bytes")
    line = f"{_TAG} {session_key.hex()} initiator={initiator} responder={responder}"
    if ssid is not None:
        line += f" ssid={ssid}"
    return line + "\n"


def parse_keylog(lines: Iterable[str]) -> list[bytes]:
    """The session keys in a key log, in order, without repeats."""
    keys: list[bytes] = []
    for line in lines:
        words = line.split()
        if len(words) < 2 or words[0] != _TAG:
            continue
        try:
            key = bytes.fromhex(words[1])
        except ValueError:
            continue
        if len(key) == 32 and key not in keys:
            keys.append(key)
    return keys


def tshark_key_options(keys: Iterable[bytes]) -> list[str]:
    """``tshark`` arguments that let the DOF dissector decrypt with ``keys``."""
    options: list[str] = []
    for key in keys:
        options += ["-o", f'uat:custom_dof_seckey_list:"{key.hex()}"']
    return options


def open_keylog(path: str | os.PathLike[str]) -> TextIO:
    """The key log at ``path``, opened to append: created mode 0600 when
    missing. Raises ``PermissionError`` (nothing written) when ``path`` is a
    symbolic link, not a regular file, or an existing file whose mode grants
    more than 0600 (its owner's read and write): session keys must not land
    where someone else reads them, nor be redirected there by a link."""
    flags = (
        os.O_WRONLY
        | os.O_CREAT
        | os.O_APPEND
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_CLOEXEC", 0)
        # A FIFO opened for writing would block until a reader comes: refuse it
        # (ENXIO, or the file-type check below) instead.
        | getattr(os, "O_NONBLOCK", 0)
    )
    try:
        descriptor = os.open(path, flags, 0o600)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EMLINK, errno.ENXIO):
            raise PermissionError(
                error.errno,
                "key log refused: a symbolic link or not a regular file",
                os.fspath(path),
            ) from error
        raise
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise PermissionError(
                errno.EPERM, "key log refused: not a regular file", os.fspath(path)
            )
        mode = stat.S_IMODE(status.st_mode)
        if mode & ~0o600:
            raise PermissionError(
                errno.EPERM,
                f"key log refused: mode {mode:04o} is wider than 0600"
                " (others could read the session keys; chmod 600 it)",
                os.fspath(path),
            )
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "a", encoding="ascii")
    except BaseException:
        os.close(descriptor)
        raise
