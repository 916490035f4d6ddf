"""A node's credentials in a file: the production way to join a domain.

The Authenticator's ``add-node --credentials-out FILE`` writes one; a daemon or
a device reads it with :func:`load_credentials` and turns it into the
:class:`~dofpy.session.config.SecurityConfig` of its node with
:meth:`NodeCredentials.security_config`. The file is TOML::

    # dofpy node credentials: the identity secret is a key; keep this file private.
    format = 1
    domain = "[{06}:example.org]"
    identity = "[{03}:device@example.org]"
    generation = 0
    secret = "9f...64 hex digits..."
    authenticator = "127.0.0.1:3567"
    authenticator_identity = "[{03}:authenticator@example.org]"

``authenticator_identity`` (optional) is who the node expects to answer at
``authenticator``: its sealed-TRP handshake fails with
:class:`~dofpy.errors.PeerIdentityMismatch` when anyone else does.

The identity secret lets whoever holds it act as the node, so the file is
written with mode 0600 (atomically: a crash leaves the old file or the new one,
never half of one), and :func:`load_credentials` refuses a file that its
group or others may read or write, as ``ssh`` refuses a private key.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dofpy._core import Address
from dofpy.errors import DofError
from dofpy.security.identity import SECRET_SIZE
from dofpy.session.node import NodeConfig, SecurityConfig
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet

__all__ = [
    "CREDENTIALS_FORMAT",
    "CredentialsError",
    "NodeCredentials",
    "format_address",
    "load_credentials",
    "parse_address",
    "toml_string",
    "write_credentials",
]

CREDENTIALS_FORMAT = 1
_KEYS = {
    "format",
    "domain",
    "identity",
    "generation",
    "secret",
    "authenticator",
    "authenticator_identity",
}


class CredentialsError(DofError):
    """A credentials file is missing, unsafe or malformed; the message names
    the file and what is wrong with it."""


def parse_address(text: str) -> Address:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as an address; ``ValueError``
    saying what is expected otherwise."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 0xFFFF:
        raise ValueError(f"expected HOST:PORT, not {text!r}")
    return host, int(port)


def format_address(address: Address) -> str:
    """``HOST:PORT`` (``[v6]:PORT``), as :func:`parse_address` reads it."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class NodeCredentials:
    """Who a node is in its domain, and where its Authenticator answers."""

    domain: OID
    identity: OID
    secret: bytes = field(repr=False)
    authenticator: Address | None = None
    generation: int = 0
    authenticator_identity: OID | None = None

    def __post_init__(self) -> None:
        if self.authenticator_identity is not None and self.authenticator is None:
            raise ValueError("authenticator_identity needs the authenticator's address")
        if len(self.secret) != SECRET_SIZE:
            raise ValueError(f"an identity secret is {SECRET_SIZE} bytes, not {len(self.secret)}")
        if self.generation < 0:
            raise ValueError("generation must be >= 0")

    def security_config(
        self,
        permissions: PermissionSet | None = None,
        *,
        rng: Callable[[int], bytes] = secrets.token_bytes,
        **options: Any,
    ) -> SecurityConfig:
        """The :class:`SecurityConfig` of this node: it asks for
        ``permissions`` in its sessions (default: none, a pure requestor of
        objects that need none) and is keyed by the Authenticator of the file,
        asked inside a secure session with it (``seal_authenticator``: the
        Authenticator answers TRP sealed only by default). ``options`` set any
        other :class:`SecurityConfig` field."""
        settings: dict[str, Any] = {
            "domain": self.domain,
            "identity": self.identity,
            "secret": self.secret,
            "rng": rng,
            "cookie_key": rng(32),
            "permissions": permissions if permissions is not None else PermissionSet(),
            "authenticator": self.authenticator,
            "seal_authenticator": self.authenticator is not None,
        }
        if self.authenticator is not None and self.authenticator_identity is not None:
            # Trust by identity: the Authenticator is whoever the file names,
            # not whoever answers at its address.
            settings["peer_identities"] = {self.authenticator: self.authenticator_identity}
        settings.update(options)
        return SecurityConfig(**settings)

    def node_config(self, permissions: PermissionSet | None = None, **options: Any) -> NodeConfig:
        """A :class:`NodeConfig` whose node id is this identity, secured with
        :meth:`security_config`."""
        return NodeConfig(
            node_id=self.identity, security=self.security_config(permissions, **options)
        )

    def to_toml(self) -> str:
        """The file's text (see the module docstring)."""
        lines = [
            "# dofpy node credentials: the identity secret is a key; keep this file private.",
            f"format = {CREDENTIALS_FORMAT}",
            f"domain = {toml_string(str(self.domain))}",
            f"identity = {toml_string(str(self.identity))}",
            f"generation = {self.generation}",
            f'secret = "{self.secret.hex()}"',
        ]
        if self.authenticator is not None:
            lines.append(f"authenticator = {toml_string(format_address(self.authenticator))}")
        if self.authenticator_identity is not None:
            lines.append(
                f"authenticator_identity = {toml_string(str(self.authenticator_identity))}"
            )
        return "\n".join(lines) + "\n"

    def with_authenticator(self, address: Address | None) -> NodeCredentials:
        """The same credentials with another Authenticator address."""
        return replace(self, authenticator=address)


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string, quotes included (what a settings or
    credentials file writes for a text value)."""
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def write_credentials(
    path: str | os.PathLike[str], credentials: NodeCredentials, *, overwrite: bool = False
) -> Path:
    """Write ``credentials`` to ``path``, mode 0600, atomically (a temporary
    file in the same folder, flushed to disk, then renamed over ``path``).
    Refuses to replace an existing file unless ``overwrite``."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise CredentialsError(f"{target} exists; refusing to overwrite credentials")
    folder = target.parent if str(target.parent) else Path()
    temporary = folder / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise CredentialsError(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(credentials.to_toml())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    with contextlib.suppress(OSError):  # the rename is durable once the folder is
        folder_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)
    return target


def load_credentials(path: str | os.PathLike[str]) -> NodeCredentials:
    """The credentials in the file at ``path``.

    Raises :class:`CredentialsError` naming the file when it is missing, when
    its group or others may read or write it (``chmod 600 FILE``), or when a
    key is missing, unknown or malformed."""
    source = Path(path)
    try:
        with source.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise CredentialsError(f"{source}: not a regular file")
            if mode & 0o077:
                raise CredentialsError(
                    f"{source}: credentials are readable by others "
                    f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {source}"
                )
            data = tomllib.load(file)
    except FileNotFoundError:
        raise CredentialsError(f"{source}: no such credentials file") from None
    except IsADirectoryError:
        raise CredentialsError(f"{source}: not a regular file") from None
    except PermissionError:
        raise CredentialsError(f"{source}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise CredentialsError(f"{source}: not a credentials file: {exc}") from None
    return _parse(source, data)


def _parse(source: Path, data: dict[str, Any]) -> NodeCredentials:
    def fail(key: str, expected: str) -> CredentialsError:
        return CredentialsError(f"{source}: key {key!r}: expected {expected}")

    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise CredentialsError(f"{source}: unknown key {unknown[0]!r}")
    for key in ("format", "domain", "identity", "secret"):
        if key not in data:
            raise fail(key, "a value (the key is missing)")
    if data["format"] != CREDENTIALS_FORMAT:
        raise fail("format", f"{CREDENTIALS_FORMAT} (this dofpy reads format {CREDENTIALS_FORMAT})")
    oids: dict[str, OID] = {}
    for key in ("domain", "identity", "authenticator_identity"):
        if key not in data:
            continue
        value = data[key]
        try:
            if not isinstance(value, str):
                raise ValueError
            oids[key] = OID.from_text(value)
        except ValueError:
            raise fail(key, "an OID in text form, e.g. [{03}:device@example.org]") from None
    secret_text = data["secret"]
    try:
        if not isinstance(secret_text, str):
            raise ValueError
        secret = bytes.fromhex(secret_text)
        if len(secret) != SECRET_SIZE:
            raise ValueError
    except ValueError:
        raise fail("secret", f"{SECRET_SIZE * 2} hex digits") from None
    generation = data.get("generation", 0)
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise fail("generation", "an integer >= 0")
    authenticator: Address | None = None
    if "authenticator" in data:
        try:
            if not isinstance(data["authenticator"], str):
                raise ValueError
            authenticator = parse_address(data["authenticator"])
        except ValueError:
            raise fail("authenticator", "HOST:PORT") from None
    if "authenticator_identity" in oids and authenticator is None:
        raise fail("authenticator_identity", "an authenticator address beside it")
    return NodeCredentials(
        oids["domain"],
        oids["identity"],
        secret,
        authenticator,
        generation,
        oids.get("authenticator_identity"),
    )
