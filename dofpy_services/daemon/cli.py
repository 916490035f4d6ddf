"""One command line for every service: ``dofpy <service> <command>``.

Built from the services' declarations with argparse: the standard library,
already what the Authenticator used, enough for two levels of subcommands with
help and epilogs, and one dependency fewer on every device and server (click
or typer would add little here: the settings' flags are derived from the
configuration dataclasses, not from decorated functions).

Every service gets ``serve`` (``--config FILE``, ``--print-config``, one flag
per setting) from the runner; its own commands come from its
:class:`~dofpy_services.daemon.service.Command` values. An operator's error
is one line, ``dofpy: error: ...``, never a traceback; its exit status is 2 for
a usage error (argparse's, :class:`UsageError`, an invalid configuration) and
1 for anything else that went wrong (a store's refusal, a missing file, ...).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NoReturn

import trio

from dofpy.credentials import CredentialsError
from dofpy_services.daemon.config import (
    ConfigError,
    add_config_flags,
    config_to_toml,
    flag_values,
    load_config,
)
from dofpy_services.daemon.lifecycle import run_daemon, version
from dofpy_services.daemon.logs import configure_logging
from dofpy_services.daemon.service import Service

__all__ = [
    "FORMATS",
    "USAGE_ERROR",
    "CliError",
    "UsageError",
    "add_format_flag",
    "build_parser",
    "print_records",
    "run_cli",
]

FORMATS = ("table", "json", "csv")

RUNTIME_ERROR = 1
USAGE_ERROR = 2
"""The exit status of a usage error (argparse's own)."""


class CliError(Exception):
    """An operator's request that could not be carried out, shown as
    ``dofpy: error: ...``, exit status 1."""


class UsageError(CliError):
    """A command line that makes no sense (options that do not go together,
    a value of the wrong form), exit status 2 like argparse's own errors."""


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (``dofpy: error: ...``, 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"dofpy: error: {self.prog.removeprefix('dofpy ')}: {message}\n")


def add_format_flag(
    parser: argparse.ArgumentParser, formats: Sequence[str] = FORMATS, default: str = "table"
) -> None:
    """``--format`` for a command that prints records, and ``--json`` (the
    same as ``--format json``) when JSON is one of ``formats``."""
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument(
        "--format",
        choices=formats,
        default=default,
        help=f"how records are printed (default {default})",
    )
    if "json" in formats:
        chosen.add_argument(
            "--json",
            dest="format",
            action="store_const",
            const="json",
            default=default,
            help="print a JSON array of objects (the same as --format json)",
        )


def print_records(
    records: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    fmt: str = "table",
    out: io.TextIOBase | Any = None,
) -> None:
    """Print ``records`` as an aligned table, a JSON array or CSV with a header.
    Values are shown with ``str`` (lists joined by ``; `` in table and CSV)."""
    stream = out if out is not None else sys.stdout

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, list | tuple):
            return "; ".join(str(v) for v in value)
        return str(value)

    if fmt == "json":
        stream.write(json.dumps([{c: r.get(c) for c in columns} for r in records], indent=2))
        stream.write("\n")
        return
    if fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(columns)
        for record in records:
            writer.writerow([cell(record.get(c)) for c in columns])
        return
    rows = [[cell(record.get(c)) for c in columns] for record in records]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
    for row in [list(columns), *rows]:
        stream.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        stream.write("\n")


def _serve(service: Service[Any], args: argparse.Namespace) -> int:
    config = load_config(service.config, args.config, flag_values(args, service.config))
    if service.check is not None:
        service.check(config)
    if args.print_config:
        sys.stdout.write(
            config_to_toml(
                config,
                header=(
                    f"dofpy {service.name} effective configuration (dofpy {version()});",
                    "secrets are masked.",
                ),
            )
        )
        return 0
    configure_logging(service.name, config.log_format, config.log_level)
    return trio.run(run_daemon, service, config)


def build_parser(services: Sequence[Service[Any]]) -> argparse.ArgumentParser:
    """The ``dofpy`` parser: one subcommand per service, one per command."""
    parser = _Parser(
        prog="dofpy",
        description="dofpy services: run and administer the daemons of a DOF domain.",
        epilog="example: dofpy authenticator serve --config /etc/dofpy/authenticator.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dofpy {version()}")
    chosen = parser.add_subparsers(dest="service", required=True, metavar="SERVICE")
    for service in services:
        names = ", ".join(["serve", *(c.name for c in service.commands)])
        service_parser = chosen.add_parser(
            service.name,
            help=service.summary,
            description=f"{service.summary}.",
            epilog=f"commands: {names}\nexample: {service.serve_example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        commands = service_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        serve = commands.add_parser(
            "serve",
            help=f"run the {service.name} daemon until SIGTERM",
            description=(
                f"Run the {service.name} daemon until SIGTERM or SIGINT, then drain and exit 0 "
                "(a second signal exits at once). Settings come from --config FILE, and each "
                "flag below overrides the file's key of the same name."
            ),
            epilog=f"example: {service.serve_example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        serve.add_argument("--config", metavar="FILE", help="the daemon's TOML configuration")
        serve.add_argument(
            "--print-config",
            action="store_true",
            help="print the effective configuration as TOML (secrets masked) and exit",
        )
        add_config_flags(serve, service.config)
        serve.set_defaults(run=partial(_serve, service))
        for command in service.commands:
            sub = commands.add_parser(
                command.name,
                help=command.help,
                description=command.description or command.help,
                epilog=f"example: {command.example}",
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            command.add_arguments(sub)
            sub.set_defaults(run=command.run)
    return parser


_USER_ERRORS: tuple[type[Exception], ...] = (
    CliError,
    ConfigError,
    CredentialsError,
    OSError,
    ValueError,
)


def _message(exc: Exception) -> str:
    """What went wrong, in one line that names the input at fault."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc).replace("\n", " ")


def _status(exc: Exception) -> int:
    return USAGE_ERROR if isinstance(exc, UsageError | ConfigError) else RUNTIME_ERROR


def _user_error(exc: BaseException, extra: tuple[type[Exception], ...]) -> Exception | None:
    """The operator's error ``exc`` is (the first, inside exception groups)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _user_error(inner, extra)
            if found is not None:
                return found
        return None
    if isinstance(exc, _USER_ERRORS + extra):
        return exc
    return None


def run_cli(
    services: Sequence[Service[Any]],
    argv: Sequence[str] | None = None,
    *,
    user_errors: tuple[type[Exception], ...] = (),
) -> int:
    """Parse ``argv`` and run the command; returns the exit status (argparse's
    too: ``--help``, ``--version`` and usage errors return rather than exit).
    Exceptions of ``user_errors`` (a store's, say) are one-line errors too,
    exit status 1."""
    try:
        args = build_parser(services).parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        found = _user_error(exc, user_errors)
        if found is None:
            raise
        print(f"dofpy: error: {_message(found)}", file=sys.stderr)
        return _status(found)
