"""The ``dofpy`` command line.

``dofpy authenticator init-domain | add-node | grant | revoke | rotate | list |
serve`` administers and runs the domain's Authenticator. A domain or identity
is given in OID text form (``[6:example.org]``, ``[{03}:dev@example.org]``) or
as a bare name: a bare domain name is class 6, a bare identity class 3.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import trio

from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import (
    Action,
    BindingPermission,
    IamPermission,
    Permission,
    ProviderPermission,
    RequestorPermission,
)
from dofpy_services.authenticator.daemon import serve
from dofpy_services.authenticator.store import (
    AuthenticatorStore,
    StoreError,
    is_postgres_url,
    open_store,
)

__all__ = ["main"]

_DOMAIN_CLASS = 6
_IDENTITY_CLASS = 3


class CliError(Exception):
    """A usage or operator error, shown as ``dofpy: error: ...``."""


def _oid(text: str, default_class: int, what: str) -> OID:
    text = text.strip()
    try:
        if text.startswith("["):
            return OID.from_text(text)
        return OID(default_class, text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise CliError(f"bad {what} {text!r}: {exc}") from None


def _domain(text: str) -> OID:
    return _oid(text, _DOMAIN_CLASS, "domain")


def _identity(text: str) -> OID:
    return _oid(text, _IDENTITY_CLASS, "identity")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 0xFFFF:
        raise CliError(f"--listen needs HOST:PORT, not {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an explicit operator choice


def _existing_db(location: str) -> AuthenticatorStore:
    # A PostgreSQL database is the operator's to create; its tables are made on
    # first use. A missing file is a typo more often than a wish for a new one.
    if not is_postgres_url(location) and not Path(location).exists():
        raise CliError(f"no database at {location} (create it with init-domain)")
    return open_store(location)


def _shown(location: str) -> str:
    """``location`` fit to print: a URL without its password."""
    if not is_postgres_url(location):
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _permission(args: argparse.Namespace) -> Permission:
    chosen = [args.requestor, args.provider, args.iam is not None, args.actions is not None]
    if sum(bool(c) for c in chosen) != 1:
        raise CliError("give exactly one of --actions, --requestor, --provider, --iam")
    if args.requestor:
        return RequestorPermission()
    if args.provider:
        return ProviderPermission()
    if args.iam is not None:
        return IamPermission(_identity(args.iam))
    try:
        actions = Action.parse(args.actions)
        if not actions:
            raise ValueError("no action given")
        interface = IID.from_text(args.interface) if args.interface else None
        if args.object in (None, "*"):
            pattern = OID(0)
        elif args.object.startswith("class:"):
            pattern = OID(int(args.object.removeprefix("class:"), 0))
        else:
            pattern = _identity(args.object)
        return BindingPermission(
            actions,
            pattern,
            interface,
            class_match=args.object is not None and args.object.startswith("class:"),
        )
    except ValueError as exc:
        raise CliError(f"bad binding permission: {exc}") from None


def _describe(permission: Permission) -> str:
    if isinstance(permission, BindingPermission):
        if permission.object_pattern.is_broadcast:
            target = "*"
        elif permission.class_match:
            target = f"class:{permission.object_pattern.class_id}"
        else:
            target = str(permission.object_pattern)
        interface = "*" if permission.interface is None else str(permission.interface)
        return f"{permission.actions.letters()} {target} {interface}"
    if isinstance(permission, IamPermission):
        return f"iam {permission.identity}"
    return type(permission).__name__.removesuffix("Permission").lower()


def _run(args: argparse.Namespace) -> int:
    now = time.time()
    command = args.command
    if command == "init-domain":
        domain = _domain(args.domain)
        if args.master_key_file:
            master_key = bytes.fromhex(Path(args.master_key_file).read_text().strip())
        else:
            master_key = secrets.token_bytes(32)
        with open_store(args.db) as store:
            store.init_domain(domain, master_key, now)
        print(f"domain {domain} created in {_shown(args.db)}")
        return 0
    if command == "serve":
        listen = _address(args.listen)
        _existing_db(args.db).close()
        own = None
        if args.identity:
            if not args.domain:
                raise CliError("--identity needs --domain (the domain it is enrolled in)")
            own = (_domain(args.domain), _identity(args.identity))
        elif args.sealed_only:
            raise CliError("--sealed-only needs --identity and --domain")
        print(f"authenticator serving on {listen[0]}:{listen[1]}", flush=True)
        trio.run(
            partial(serve, identity=own, sealed_only=args.sealed_only),
            listen,
            args.db,
            args.keylog,
        )
        return 0
    with _existing_db(args.db) as store:
        if command == "list":
            domain_filter = _domain(args.domain) if args.domain else None
            for summary in store.nodes(domain_filter):
                status = "revoked" if summary.revoked else "active"
                print(
                    f"{summary.identity} domain={summary.domain} {status}"
                    f" generation={summary.generation} max-duration={summary.max_duration}"
                )
                for permission in summary.permissions:
                    print(f"    {_describe(permission)}")
            return 0
        domain, identity = _domain(args.domain), _identity(args.identity)
        if command == "add-node":
            store.add_node(domain, identity, now, args.max_duration)
            credential = store.domain(domain).credential_for(identity)
            print(f"enrolled {identity} in {domain}")
            print(f"identity secret: {credential.secret.hex()}")
            print(f"wireshark identsecret: {credential.wireshark_uat()}")
        elif command == "grant":
            permission = _permission(args)
            store.grant(domain, identity, permission, now)
            print(f"granted {identity}: {_describe(permission)}")
        elif command == "revoke":
            store.revoke(domain, identity, args.reason, now)
            print(f"revoked {identity} in {domain}")
        elif command == "rotate":
            generation = store.rotate(domain, identity, now)
            credential = store.domain(domain).credential_for(identity, generation)
            print(f"rotated {identity}: generation {generation}")
            print(f"identity secret: {credential.secret.hex()}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dofpy", description="dofpy services")
    services = parser.add_subparsers(dest="service", required=True)
    auth = services.add_parser("authenticator", help="the domain's Authentication Server")
    commands = auth.add_subparsers(dest="command", required=True)

    def db(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--db",
            required=True,
            help="SQLite database file, or a postgresql://user@host/dbname URL",
        )

    def node(sub: argparse.ArgumentParser) -> None:
        db(sub)
        sub.add_argument("--domain", required=True, help="domain OID or name")
        sub.add_argument("identity", help="node identity OID or name")

    init = commands.add_parser("init-domain", help="create a domain and its master key")
    db(init)
    init.add_argument("domain", help="domain OID or name, e.g. example.org")
    init.add_argument("--master-key-file", help="hex master key (default: a fresh random one)")

    add = commands.add_parser("add-node", help="enrol a device or client")
    node(add)
    add.add_argument("--max-duration", type=int, default=255, help="longest session (0-255)")

    grant = commands.add_parser("grant", help="grant a permission")
    node(grant)
    grant.add_argument("--actions", help="binding actions: letters of rwxsp")
    grant.add_argument("--object", help="object OID, '*' (any) or class:N (default '*')")
    grant.add_argument("--interface", help="interface IID, e.g. [1:{01}] (default: any)")
    grant.add_argument("--requestor", action="store_true", help="may act as a requestor")
    grant.add_argument("--provider", action="store_true", help="may act as a provider")
    grant.add_argument("--iam", help="may claim this identity")

    revoke = commands.add_parser("revoke", help="revoke a node")
    node(revoke)
    revoke.add_argument("--reason", default="revoked by operator")

    rotate = commands.add_parser("rotate", help="give a node a new identity secret")
    node(rotate)

    listing = commands.add_parser("list", help="list nodes and their permissions")
    db(listing)
    listing.add_argument("--domain", help="only this domain")

    run = commands.add_parser("serve", help="run the Authentication Server")
    db(run)
    run.add_argument("--listen", default="0.0.0.0:3567", help="HOST:PORT (default 0.0.0.0:3567)")
    run.add_argument("--keylog", help="append granted session keys here (for Wireshark)")
    run.add_argument(
        "--identity",
        help="the Authenticator's own node (enrolled in --domain): lets responders talk "
        "TRP inside a secure session with it",
    )
    run.add_argument("--domain", help="the domain of --identity")
    run.add_argument(
        "--sealed-only", action="store_true", help="refuse TRP in the clear (needs --identity)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dofpy`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (CliError, StoreError, OSError, ValueError) as exc:
        print(f"dofpy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
