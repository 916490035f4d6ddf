"""The session key log: one line per session key, for an operator's Wireshark.

Like ``SSLKEYLOGFILE`` for TLS: with it, Wireshark's DOF dissector decrypts a
capture. Each line is::

    DOF_SESSION_KEY <64 hex digits> initiator=<OID> responder=<OID>[ ssid=<n>]

Lines starting with ``#`` and unknown words are ignored by the parser, so the
format can grow. Feed the keys to tshark with :func:`tshark_key_options`.
Whoever holds this file can read the traffic: write it only where the
operator's capture files are kept, mode 0600.
"""

from __future__ import annotations

from collections.abc import Iterable

from dofpy.wire.oid import OID

__all__ = ["format_keylog_line", "parse_keylog", "tshark_key_options"]

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
