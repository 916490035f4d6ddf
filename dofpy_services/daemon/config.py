"""A daemon's configuration: one TOML file, every key also a flag, flags win.

A service declares its settings once, as a frozen dataclass whose fields carry
an :func:`option` (the kind of value, a help text, whether it is a secret). The
TOML keys (``metrics_listen``), the flags (``--metrics-listen``), their help
and the validation all come from that one declaration::

    @dataclass(frozen=True, slots=True)
    class ImageConfig(DaemonConfig):
        root: str = option(PATH, "folder of the image store", default="images")

:func:`load_config` reads the file, applies the flags over it and checks every
value; what is wrong raises :class:`ConfigError` with one line naming the file
(or the flag), the key and what was expected. :func:`config_to_toml` writes
the effective configuration back as TOML, secrets masked.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

from dofpy._core import Address
from dofpy.credentials import format_address, parse_address, toml_string
from dofpy.oap.config import OapConfig

__all__ = [
    "ADDRESS",
    "BOOL",
    "DURATION",
    "INT",
    "OPTIONAL_ADDRESS",
    "OPTIONAL_TEXT",
    "PATH",
    "REQUIRED",
    "TEXT",
    "ConfigError",
    "DaemonConfig",
    "Kind",
    "add_config_flags",
    "choice",
    "config_to_toml",
    "flag_values",
    "format_address",
    "load_config",
    "mask_url_password",
    "option",
]

_OPTION = "dofpy.option"
_log = logging.getLogger(__name__)
ConfigT = TypeVar("ConfigT", bound="DaemonConfig")


class ConfigError(Exception):
    """A configuration value is wrong; the message is the one line shown."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""The default of a setting that has none: it must be given."""


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of setting value: what is expected (said in errors), how a TOML
    value or a flag's text becomes the value, and how it is written back."""

    expected: str
    from_toml: Callable[[object], Any]
    """Raises ``ValueError`` (or ``TypeError``) when the value does not fit."""
    to_toml: Callable[[Any], str]
    from_text: Callable[[str], Any] | None = None
    """How a flag's text is read (default: as a TOML string through ``from_toml``)."""


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError
    return value


def _duration(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError
    return seconds


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError
    return value


def _bool_text(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError


def _address(value: object) -> Address:
    return parse_address(_text(value))


def _optional(parse: Callable[[object], Any]) -> Callable[[object], Any]:
    def read(value: object) -> Any:
        if value == "":
            return None
        return parse(value)

    return read


def _optional_toml(write: Callable[[Any], str]) -> Callable[[Any], str]:
    return lambda value: '""' if value is None else write(value)


TEXT = Kind("a string", _text, toml_string)
OPTIONAL_TEXT = Kind('a string ("" for none)', _optional(_text), _optional_toml(toml_string))
PATH = Kind(
    'a file path ("" for none)',
    _optional(_text),
    _optional_toml(toml_string),
)
INT = Kind("an integer", _int, str, from_text=lambda text: int(text, 10))
DURATION = Kind(
    "a number of seconds >= 0", _duration, repr, from_text=lambda t: _duration(float(t))
)
BOOL = Kind(
    "true or false", _bool, lambda value: "true" if value else "false", from_text=_bool_text
)
ADDRESS = Kind("HOST:PORT", _address, lambda value: toml_string(format_address(value)))
OPTIONAL_ADDRESS = Kind(
    'HOST:PORT ("" for none)',
    _optional(_address),
    _optional_toml(lambda value: toml_string(format_address(value))),
)


_OAP = OapConfig()  # the defaults of the request limits below


def at_least(low: int) -> Kind:
    """A kind that is an integer of at least ``low``."""

    def read(value: object) -> int:
        number = _int(value)
        if number < low:
            raise ValueError
        return number

    return Kind(f"an integer >= {low}", read, str, from_text=lambda text: read(int(text, 10)))


def choice(*choices: str) -> Kind:
    """A kind that is one of ``choices``."""

    def read(value: object) -> str:
        if _text(value) not in choices:
            raise ValueError
        return str(value)

    return Kind(" or ".join(choices), read, toml_string)


@dataclass(frozen=True, slots=True)
class _Option:
    kind: Kind
    help: str
    mask: Callable[[Any], Any] | None


def option(
    kind: Kind,
    help: str,
    *,
    default: Any = REQUIRED,
    mask: Callable[[Any], Any] | None = None,
) -> Any:
    """A dataclass field that is a setting: its kind, help text (the flag's and
    the TOML's), default (:data:`REQUIRED` for none) and, for a secret or a
    value that may hold one, ``mask(value)``: what ``--print-config`` shows."""
    return field(default=default, metadata={_OPTION: _Option(kind, help, mask)})


def mask_url_password(location: str | None) -> str | None:
    """``location`` fit to print: a URL's password replaced by ``***``."""
    if not location or "://" not in location:
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """The settings every daemon has. A service's configuration extends it.

    ``RETIRED``: keys an earlier release had and this one does not, each with
    why it went. A file that still sets one loads (existing files, and any
    ``--print-config`` output, keep working): the value is ignored and a
    warning names the key and the reason. Any other unknown key is an error."""

    RETIRED: ClassVar[Mapping[str, str]] = {}

    # option() is a dataclasses.field (RUF009 cannot tell).
    listen: Address = option(  # noqa: RUF009
        ADDRESS,
        "UDP address to serve on",
        default=("0.0.0.0", 3567),  # noqa: S104 - a daemon serves its network by default
    )
    credentials: str | None = option(
        PATH, "this daemon's node credentials file (mode 0600)", default=None
    )
    allow_plaintext: bool = option(
        BOOL,
        "serve without credentials (no security) on a non-loopback address: an explicit,"
        " logged choice",
        default=False,
    )
    db: str | None = option(
        OPTIONAL_TEXT,
        "database: a SQLite file or a postgresql://user@host/dbname URL",
        default=None,
        mask=mask_url_password,
    )
    log_format: str = option(choice("text", "json"), "log format", default="text")
    log_level: str = option(
        choice("debug", "info", "warning", "error"), "lowest level logged", default="info"
    )
    metrics_listen: Address | None = option(  # noqa: RUF009
        OPTIONAL_ADDRESS,
        "TCP address of the metrics and health endpoint (/metrics, /healthz, /readyz)",
        default=None,
    )
    keylog: str | None = option(
        PATH, "append session keys here, for Wireshark (a secret: keep it private)", default=None
    )
    pcap: str | None = option(PATH, "capture every datagram to this pcap file", default=None)
    drain_timeout: float = option(
        DURATION, "seconds in-flight requests may take to finish at shutdown", default=5.0
    )
    ready_file: str | None = option(
        PATH,
        "once serving, write the bound addresses here as JSON (for supervisors and tests)",
        default=None,
    )
    # The defaults are the OAP core's and the node's own.
    max_requests_in_progress: int = option(
        at_least(1),
        "requests received and not yet answered at most; more are refused BUSY",
        default=_OAP.max_incoming,
    )
    max_requests_per_peer: int = option(
        at_least(1),
        "of those, from one requestor (its authenticated identity) at most",
        default=_OAP.max_incoming_per_peer,
    )
    max_request_bytes: int = option(
        at_least(_OAP.node.max_datagram),
        "bytes of the requests in progress at most (their OAP payloads)",
        default=_OAP.max_incoming_bytes,
    )
    duplicate_bytes: int = option(
        at_least(_OAP.node.max_datagram),
        "bytes of answers kept for retransmitted requests at most",
        default=_OAP.node.duplicate_bytes,
    )


def _options(cls: type[DaemonConfig]) -> list[tuple[dataclasses.Field[Any], _Option]]:
    return [(f, f.metadata[_OPTION]) for f in dataclasses.fields(cls) if _OPTION in f.metadata]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, cls: type[DaemonConfig]) -> None:
    """One flag per setting of ``cls`` (``metrics_listen`` → ``--metrics-listen``),
    left ``None`` when not given so that the file's value stands."""
    group = parser.add_argument_group("settings (each also a key of the --config file)")
    for settings_field, spec in _options(cls):
        default = settings_field.default
        shown = "required" if default is REQUIRED else f"default {spec.kind.to_toml(default)}"
        help_text = f"{spec.help} ({spec.kind.expected}; {shown})"
        # A bool flag alone means true (``--sealed-only``); ``--sealed-only false`` too.
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if spec.kind is BOOL else {}
        group.add_argument(
            _flag(settings_field.name),
            dest=f"config_{settings_field.name}",
            metavar="VALUE",
            default=None,
            help=help_text,
            **extra,
        )


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a configuration file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_config(
    cls: type[ConfigT],
    path: str | Path | None = None,
    flags: Mapping[str, str | None] | None = None,
) -> ConfigT:
    """The configuration: defaults, then the TOML file at ``path``, then
    ``flags`` (setting name → the flag's text, ``None`` when not given).

    Raises :class:`ConfigError` (one line: the file or flag, the key, what is
    expected) on an unknown key (a retired one is only warned of: see
    :class:`DaemonConfig`), a value of the wrong type or form, or a
    required setting given nowhere."""
    fields = dict((f.name, (f, spec)) for f, spec in _options(cls))
    values: dict[str, Any] = {}
    source = str(path) if path is not None else ""
    if path is not None:
        data = _read_file(Path(path))
        where = Path(path).name
        for key, raw in data.items():
            if key not in fields and key in cls.RETIRED:
                _log.warning("%s: key %r is ignored: %s", where, key, cls.RETIRED[key])
                continue
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise ConfigError(f"{where}: unknown key {key!r} (known keys: {known})")
            spec = fields[key][1]
            try:
                values[key] = spec.kind.from_toml(raw)
            except (ValueError, TypeError):
                raise ConfigError(
                    f"{where}: key {key!r}: expected {spec.kind.expected}, got {_shown(raw)}"
                ) from None
    for key, text in (flags or {}).items():
        if text is None:
            continue
        spec = fields[key][1]
        try:
            parse = spec.kind.from_text
            values[key] = parse(text) if parse is not None else spec.kind.from_toml(text)
        except (ValueError, TypeError):
            raise ConfigError(
                f"{_flag(key)}: expected {spec.kind.expected}, got {_shown(text)}"
            ) from None
    for key, (settings_field, _spec) in fields.items():
        if key not in values and settings_field.default is REQUIRED:
            origin = f"{Path(source).name}: " if source else ""
            raise ConfigError(
                f"{origin}key {key!r}: expected a value; set it in the --config file "
                f"or with {_flag(key)}"
            )
    try:
        return cls(**values)
    except ValueError as exc:
        origin = f"{Path(source).name}: " if source else ""
        raise ConfigError(f"{origin}{exc}") from None


def _shown(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def config_to_toml(config: DaemonConfig, *, header: Sequence[str] = ()) -> str:
    """``config`` as TOML (the ``--config`` file it could have come from), each
    key after a comment with its help; secrets masked."""
    lines = [f"# {line}" for line in header]
    for settings_field, spec in _options(type(config)):
        value = getattr(config, settings_field.name)
        if spec.mask is not None:
            value = spec.mask(value)
        lines.append(f"# {spec.help}")
        lines.append(f"{settings_field.name} = {spec.kind.to_toml(value)}")
    return "\n".join(lines) + "\n"


def flag_values(args: argparse.Namespace, cls: type[DaemonConfig]) -> dict[str, str | None]:
    """The flags :func:`add_config_flags` added, as ``load_config`` takes them."""
    return {f.name: getattr(args, f"config_{f.name}", None) for f, _ in _options(cls)}
