"""The Authenticator on the daemon framework: its settings, its store, its
TRP serving and its ``dofpy authenticator ...`` commands, declared once as
:data:`AUTHENTICATOR`.

``dofpy authenticator init-domain | add-node | grant | revoke | rotate | list |
serve`` administers and runs the domain's Authenticator. A domain or identity
is given in OID text form (``[6:example.org]``, ``[{03}:dev@example.org]``) or
as a bare name: a bare domain name is class 6, a bare identity class 3.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram

from dofpy._core import Address
from dofpy.credentials import NodeCredentials, parse_address, write_credentials
from dofpy.security.authenticator import Decision, TrpAuthenticator
from dofpy.session.node import NodeConfig
from dofpy.trio import DofNode
from dofpy.wire.dpp import AppId
from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import (
    Action,
    BindingPermission,
    IamPermission,
    Permission,
    ProviderPermission,
    RequestorPermission,
)
from dofpy_services.authenticator.daemon import (
    AUTHENTICATOR_APPLICATIONS,
    AUTHENTICATOR_NODE,
    TrpCommand,
    TrpResponder,
    TrpShell,
    open_keylog,
    own_security,
)
from dofpy_services.authenticator.limits import DEFAULT_RATE_LIMIT, RateLimit
from dofpy_services.authenticator.store import (
    AsyncAuthenticatorStore,
    AuthenticatorStore,
    StoreError,
    is_postgres_url,
    open_async_store,
    open_store,
)
from dofpy_services.daemon.cli import CliError, add_format_flag, print_records
from dofpy_services.daemon.config import (
    BOOL,
    INT,
    OPTIONAL_TEXT,
    TEXT,
    ConfigError,
    DaemonConfig,
    format_address,
    mask_url_password,
    option,
)
from dofpy_services.daemon.lifecycle import run_daemon
from dofpy_services.daemon.logs import log_event
from dofpy_services.daemon.service import Command, Service, ServiceContext

__all__ = ["AUTHENTICATOR", "AuthenticatorConfig", "AuthenticatorMetrics", "serve"]

_DOMAIN_CLASS = 6
_IDENTITY_CLASS = 3


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


def _existing_db(location: str) -> AuthenticatorStore:
    # A PostgreSQL database is the operator's to create; its tables are made on
    # first use. A missing file is a typo more often than a wish for a new one.
    if not is_postgres_url(location) and not Path(location).exists():
        raise CliError(f"no database at {location} (create it with init-domain)")
    return open_store(location)


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


@dataclass(frozen=True, slots=True)
class AuthenticatorConfig(DaemonConfig):
    """The Authenticator's settings: the common ones and its own."""

    db: str = option(
        TEXT,
        "the Authenticator's database: a SQLite file or a postgresql://user@host/dbname URL",
        mask=mask_url_password,
    )
    sealed_only: bool = option(
        BOOL,
        "answer TRP only inside a secure session (needs the Authenticator's own identity); "
        "false answers TRP in the clear too, telling anyone who asks who is enrolled",
        default=True,
    )
    rate_limit: int = option(
        INT,
        "TRP commands and handshakes per second served from one host (0: no limit); "
        "more are dropped and counted",
        default=int(DEFAULT_RATE_LIMIT.rate),
    )
    rate_burst: int = option(
        INT,
        "TRP commands and handshakes one host may send at once",
        default=DEFAULT_RATE_LIMIT.burst,
    )
    rate_hosts: int = option(
        INT,
        "hosts whose rate is tracked at once (the least recently seen is forgotten)",
        default=DEFAULT_RATE_LIMIT.max_hosts,
    )
    identity: str | None = option(
        OPTIONAL_TEXT,
        "the Authenticator's own node, enrolled in 'domain' (instead of 'credentials'): "
        "lets responders talk TRP inside a secure session with it",
        default=None,
    )
    domain: str | None = option(OPTIONAL_TEXT, "the domain of 'identity'", default=None)
    max_pending: int = option(
        INT, "TRP commands waiting for the store at most; more are answered High Load", default=1024
    )
    store_pool: int = option(
        INT, "database connections (and store calls at once) of this process", default=4
    )


def _check(config: AuthenticatorConfig) -> None:
    if config.identity and config.credentials:
        raise ConfigError("give the Authenticator's identity by --credentials or by --identity")
    if config.identity and not config.domain:
        raise ConfigError("--identity needs --domain (the domain it is enrolled in)")
    if config.sealed_only and not (config.identity or config.credentials):
        raise ConfigError(
            "the Authenticator answers TRP only sealed (sealed_only, the default) and needs "
            "its own identity: give --credentials, or --identity and --domain; "
            "--sealed-only false answers TRP in the clear (anyone may ask who is enrolled)"
        )
    if config.identity:
        _identity(config.identity)
        _domain(config.domain or "")
    if config.max_pending < 1:
        raise ConfigError("key 'max_pending': expected an integer >= 1")
    if config.store_pool < 1:
        raise ConfigError("key 'store_pool': expected an integer >= 1")
    if config.rate_limit < 0:
        raise ConfigError("key 'rate_limit': expected an integer >= 0")
    if config.rate_burst < 1 or config.rate_hosts < 1:
        raise ConfigError("keys 'rate_burst' and 'rate_hosts': expected integers >= 1")


def _rate_limit(config: AuthenticatorConfig) -> RateLimit | None:
    if config.rate_limit == 0:
        return None
    return RateLimit(config.rate_limit, config.rate_burst, config.rate_hosts)


@asynccontextmanager
async def _open_store(config: AuthenticatorConfig) -> AsyncIterator[AsyncAuthenticatorStore]:
    # A missing SQLite file is a typo more often than a wish for a new domain.
    await trio.to_thread.run_sync(_require_existing, config.db)
    async with open_async_store(config.db, pool_size=config.store_pool) as store:
        yield store


def _require_existing(location: str) -> None:
    if not is_postgres_url(location) and not Path(location).exists():
        raise StoreError(f"no database at {location} (create it with init-domain)")


def _store_statistics(store: AsyncAuthenticatorStore) -> dict[str, float]:
    stats = store.statistics()
    return {
        "calls": stats.calls,
        "errors": stats.errors,
        "unavailable": stats.unavailable,
        "reconnects": stats.reconnects,
        "in_flight": stats.in_flight,
    }


class AuthenticatorMetrics:
    """The Authenticator's own metrics: TRP decisions by outcome, and how long
    each took from arrival to answer (the store lookups and the audit write)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "dofpy_authenticator_decisions",
            "TRP commands answered, by outcome",
            ("outcome",),
            registry=registry,
        )
        self.unserved = Counter(
            "dofpy_authenticator_unserved",
            "TRP commands and handshakes not decided: 'clear' (TRP in the clear, sealed only) "
            "or 'rate-limited' (over the per-host rate)",
            ("reason",),
            registry=registry,
        )
        self.duration = Histogram(
            "dofpy_authenticator_decision_duration_seconds",
            "Time from a TRP command's arrival to its answer, by outcome",
            ("outcome",),
            registry=registry,
        )


async def _node_config(context: ServiceContext) -> NodeConfig:
    """The Authenticator's node: plaintext, or its own identity (from its
    credentials file, or --identity/--domain) keying its sessions itself."""
    config: AuthenticatorConfig = context.config
    store: AsyncAuthenticatorStore = context.store
    own: tuple[OID, OID, bytes | None] | None = None
    if context.credentials is not None:
        credentials = context.credentials
        own = (credentials.domain, credentials.identity, credentials.secret)
    elif config.identity:
        own = (_domain(config.domain or ""), _identity(config.identity), None)
    if own is None:
        return NodeConfig(node_id=AUTHENTICATOR_NODE, applications=AUTHENTICATOR_APPLICATIONS)
    security = await context.in_thread(own_security, store.sync, *own)
    return NodeConfig(
        node_id=security.identity, applications=AUTHENTICATOR_APPLICATIONS, security=security
    )


async def _attach_trp(context: ServiceContext, node: DofNode, nursery: trio.Nursery) -> None:
    """Answer TRP on the daemon's node: decisions in worker threads, audit
    lines batched, the key log written, metrics and log events per answer."""
    config: AuthenticatorConfig = context.config
    store: AsyncAuthenticatorStore = context.store
    metrics: AuthenticatorMetrics = context.metrics
    keylog = open_keylog(config.keylog) if config.keylog is not None else None
    authenticator = TrpAuthenticator(store.sync, secrets.token_bytes)
    arrivals: dict[int, float] = {}

    def answered(command: TrpCommand, decision: Decision, now: float) -> None:
        outcome = "granted" if decision.granted else "refused"
        started = arrivals.pop(id(command), now)
        metrics.decisions.labels(outcome).inc()
        metrics.duration.labels(outcome).observe(max(0.0, now - started))
        log_event(
            context.logger,
            f"trp-{outcome}",
            peer=format_address(command.peer),
            initiator=decision.initiator,
            responder=decision.responder,
            reason=decision.reason,
            handshake=command.token is not None,
        )

    shell = TrpShell(
        authenticator,
        store,
        context.in_thread,
        keylog=keylog,
        max_pending=config.max_pending,
        on_answer=answered,
        in_flight=context.in_flight,
    )

    def take(command: TrpCommand) -> bool:
        if context.draining:
            shell.accepting = False
        taken = shell.take(command)
        if taken:
            arrivals[id(command)] = trio.current_time()
        else:
            metrics.decisions.labels("busy").inc()
        return taken

    responder = TrpResponder(
        node.core.node,
        authenticator,
        sealed_only=config.sealed_only,
        rate_limit=_rate_limit(config),
        on_command=take,
        on_unserved=lambda reason: metrics.unserved.labels(reason).inc(),
        on_audit=shell.audit_soon,
    )
    node.set_application_handler(
        AppId.TRP, lambda event: responder.on_event(event, trio.current_time())
    )
    node.set_handshake_failure_handler(
        lambda event: responder.on_handshake_failed(event, trio.current_time())
    )
    await store.audit(time.time(), "serve", f"listen={node.local_address}")

    async def run_shell() -> None:
        try:
            await shell.run(responder, node.wakeup, context.service.store_threads)
        finally:
            if keylog is not None:
                keylog.close()

    nursery.start_soon(run_shell)


async def serve(
    listen: Address,
    db_path: str | os.PathLike[str],
    keylog_path: str | os.PathLike[str] | None = None,
    *,
    identity: tuple[OID, OID] | None = None,
    sealed_only: bool = True,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the Authenticator on UDP ``listen`` until cancelled, on the store at
    ``db_path`` (a SQLite file or a ``postgresql://`` URL, see
    :func:`~dofpy_services.authenticator.store.open_store`); reports the bound
    address through ``task_status`` (for ``nursery.start``). The daemon
    framework's runner without signals: ``dofpy authenticator serve`` in-process.

    ``identity`` = (domain, node): the Authenticator's own identity, enrolled in
    that domain; with it, responders talk TRP inside a secure session. TRP in
    the clear is refused unless ``sealed_only=False`` (which serving without
    ``identity`` needs: an explicit choice)."""
    config = AuthenticatorConfig(
        listen=listen,
        db=str(db_path),
        keylog=None if keylog_path is None else str(keylog_path),
        identity=None if identity is None else str(identity[1]),
        domain=None if identity is None else str(identity[0]),
        sealed_only=sealed_only,
    )
    _check(config)
    never: trio.MemoryReceiveChannel[int]
    _, never = trio.open_memory_channel[int](0)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(partial(run_daemon, AUTHENTICATOR, config, signals=never))
        task_status.started(parse_address(addresses["udp"]))


# -- commands --------------------------------------------------------------------------


def _db_flag(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--db", required=True, help="SQLite database file, or a postgresql://user@host/dbname URL"
    )


def _node_flags(sub: argparse.ArgumentParser) -> None:
    _db_flag(sub)
    sub.add_argument("--domain", required=True, help="domain OID or name")
    sub.add_argument("identity", help="node identity OID or name")


def _init_domain_flags(sub: argparse.ArgumentParser) -> None:
    _db_flag(sub)
    sub.add_argument("domain", help="domain OID or name, e.g. example.org")
    sub.add_argument("--master-key-file", help="hex master key (default: a fresh random one)")


def _init_domain(args: argparse.Namespace) -> int:
    domain = _domain(args.domain)
    if args.master_key_file:
        master_key = bytes.fromhex(Path(args.master_key_file).read_text().strip())
    else:
        master_key = secrets.token_bytes(32)
    with open_store(args.db) as store:
        store.init_domain(domain, master_key, time.time())
    print(f"domain {domain} created in {mask_url_password(args.db)}")
    return 0


def _add_node_flags(sub: argparse.ArgumentParser) -> None:
    _node_flags(sub)
    sub.add_argument("--max-duration", type=int, default=255, help="longest session (0-255)")
    sub.add_argument(
        "--credentials-out",
        metavar="FILE",
        help="write the node's credentials file here (mode 0600) instead of printing its secret",
    )
    sub.add_argument(
        "--authenticator",
        metavar="HOST:PORT",
        help="the Authenticator's address, written into the credentials file",
    )
    sub.add_argument(
        "--authenticator-identity",
        metavar="OID",
        help="the Authenticator's own identity, written into the credentials file: the node"
        " then accepts only that identity at the Authenticator's address",
    )


def _add_node(args: argparse.Namespace) -> int:
    domain, identity = _domain(args.domain), _identity(args.identity)
    authenticator = None
    if args.authenticator:
        if not args.credentials_out:
            raise CliError("--authenticator goes into a file: give --credentials-out too")
        try:
            authenticator = parse_address(args.authenticator)
        except ValueError as exc:
            raise CliError(f"--authenticator: {exc}") from None
    authenticator_identity = None
    if args.authenticator_identity:
        if authenticator is None:
            raise CliError("--authenticator-identity needs --authenticator (and --credentials-out)")
        authenticator_identity = _identity(args.authenticator_identity)
    if args.credentials_out and Path(args.credentials_out).exists():
        raise CliError(f"{args.credentials_out} exists; refusing to overwrite credentials")
    with _existing_db(args.db) as store:
        store.add_node(domain, identity, time.time(), args.max_duration)
        credential = store.domain(domain).credential_for(identity)
    print(f"enrolled {identity} in {domain}")
    if args.credentials_out:
        credentials = NodeCredentials(
            domain,
            identity,
            credential.secret,
            authenticator,
            authenticator_identity=authenticator_identity,
        )
        written = write_credentials(args.credentials_out, credentials)
        print(f"credentials written to {written} (mode 0600)")
    else:
        print(f"identity secret: {credential.secret.hex()}")
        print(f"wireshark identsecret: {credential.wireshark_uat()}")
    return 0


def _grant_flags(sub: argparse.ArgumentParser) -> None:
    _node_flags(sub)
    sub.add_argument("--actions", help="binding actions: letters of rwxsp")
    sub.add_argument("--object", help="object OID, '*' (any) or class:N (default '*')")
    sub.add_argument("--interface", help="interface IID, e.g. [1:{01}] (default: any)")
    sub.add_argument("--requestor", action="store_true", help="may act as a requestor")
    sub.add_argument("--provider", action="store_true", help="may act as a provider")
    sub.add_argument("--iam", help="may claim this identity")


def _grant(args: argparse.Namespace) -> int:
    domain, identity = _domain(args.domain), _identity(args.identity)
    with _existing_db(args.db) as store:
        permission = _permission(args)
        store.grant(domain, identity, permission, time.time())
    print(f"granted {identity}: {_describe(permission)}")
    return 0


def _revoke_flags(sub: argparse.ArgumentParser) -> None:
    _node_flags(sub)
    sub.add_argument("--reason", default="revoked by operator")


def _revoke(args: argparse.Namespace) -> int:
    domain, identity = _domain(args.domain), _identity(args.identity)
    with _existing_db(args.db) as store:
        store.revoke(domain, identity, args.reason, time.time())
    print(f"revoked {identity} in {domain}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    domain, identity = _domain(args.domain), _identity(args.identity)
    with _existing_db(args.db) as store:
        generation = store.rotate(domain, identity, time.time())
        credential = store.domain(domain).credential_for(identity, generation)
    print(f"rotated {identity}: generation {generation}")
    print(f"identity secret: {credential.secret.hex()}")
    return 0


def _list_flags(sub: argparse.ArgumentParser) -> None:
    _db_flag(sub)
    sub.add_argument("--domain", help="only this domain")
    add_format_flag(sub, ("text", "table", "json", "csv"), default="text")


_LIST_COLUMNS = ("identity", "domain", "status", "generation", "max_duration", "permissions")


def _list(args: argparse.Namespace) -> int:
    domain_filter = _domain(args.domain) if args.domain else None
    with _existing_db(args.db) as store:
        summaries = store.nodes(domain_filter)
    if args.format != "text":
        records: list[dict[str, Any]] = [
            {
                "identity": str(summary.identity),
                "domain": str(summary.domain),
                "status": "revoked" if summary.revoked else "active",
                "generation": summary.generation,
                "max_duration": summary.max_duration,
                "permissions": [_describe(p) for p in summary.permissions],
            }
            for summary in summaries
        ]
        print_records(records, _LIST_COLUMNS, args.format)
        return 0
    for summary in summaries:
        status = "revoked" if summary.revoked else "active"
        print(
            f"{summary.identity} domain={summary.domain} {status}"
            f" generation={summary.generation} max-duration={summary.max_duration}"
        )
        for permission in summary.permissions:
            print(f"    {_describe(permission)}")
    return 0


_COMMANDS = (
    Command(
        "init-domain",
        "create a domain and its master key",
        "dofpy authenticator init-domain --db /var/lib/dofpy/authenticator.db example.org",
        _init_domain_flags,
        _init_domain,
    ),
    Command(
        "add-node",
        "enrol a device or client, optionally writing its credentials file",
        "dofpy authenticator add-node --db auth.db --domain example.org device@example.org "
        "--credentials-out device.cred --authenticator 10.0.0.1:3567",
        _add_node_flags,
        _add_node,
    ),
    Command(
        "grant",
        "grant a node a permission",
        "dofpy authenticator grant --db auth.db --domain example.org client@example.org "
        "--actions rs --interface '[1:{01}]'",
        _grant_flags,
        _grant,
    ),
    Command(
        "revoke",
        "revoke a node",
        "dofpy authenticator revoke --db auth.db --domain example.org device@example.org "
        "--reason stolen",
        _revoke_flags,
        _revoke,
    ),
    Command(
        "rotate",
        "give a node a new identity secret",
        "dofpy authenticator rotate --db auth.db --domain example.org device@example.org",
        _node_flags,
        _rotate,
    ),
    Command(
        "list",
        "list nodes and their permissions",
        "dofpy authenticator list --db auth.db --domain example.org --format csv",
        _list_flags,
        _list,
    ),
)

AUTHENTICATOR: Service[AuthenticatorConfig] = Service(
    name="authenticator",
    summary="the domain's Authentication Server (TRP)",
    config=AuthenticatorConfig,
    open_store=_open_store,
    commands=_COMMANDS,
    metrics=AuthenticatorMetrics,
    store_statistics=_store_statistics,
    applications=(AppId.TRP,),
    node_config=_node_config,
    attach=_attach_trp,
    store_threads=4,
    check=_check,
    serve_example="dofpy authenticator serve --config /etc/dofpy/authenticator.toml",
)
