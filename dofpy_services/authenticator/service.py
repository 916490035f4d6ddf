"""The Authenticator on the daemon framework: its settings, its store, its
TRP serving and its ``dofpy authenticator ...`` commands, declared once as
:data:`AUTHENTICATOR`.

``dofpy authenticator init-domain | add-node | grant | ungrant | revoke |
reinstate | re-enrol | rotate | list | audit | serve`` administers and runs the
domain's Authenticator. A domain or identity is given in OID text form
(``[6:example.org]``, ``[{03}:dev@example.org]``) or as a bare name: a bare
domain name is class 6, a bare identity class 3 (see
:mod:`~dofpy_services.authenticator.grants`, which also reads and writes the
text form of a grant). Exit status: 0 done, 1 refused or failed, 2 a usage
error.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram

from dofpy._core import Address
from dofpy.credentials import NodeCredentials, parse_address, write_credentials
from dofpy.security.authenticator import Decision, TrpAuthenticator
from dofpy.security.identity import MASTER_KEY_SIZE, KeyCredential
from dofpy.session.node import NodeConfig
from dofpy.trio import DofNode
from dofpy.wire.dpp import AppId
from dofpy.wire.oid import OID
from dofpy.wire.permissions import BindingPermission
from dofpy_services.authenticator.daemon import (
    AUTHENTICATOR_APPLICATIONS,
    AUTHENTICATOR_NODE,
    TrpCommand,
    TrpResponder,
    TrpShell,
    open_keylog,
    own_security,
)
from dofpy_services.authenticator.grants import (
    describe_permission,
    parse_binding,
    parse_domain,
    parse_identity,
    parse_permission,
)
from dofpy_services.authenticator.limits import (
    DEFAULT_RATE_LIMIT,
    DEFAULT_SEALED_RATE_LIMIT,
    RateLimit,
)
from dofpy_services.authenticator.store import (
    AsyncAuthenticatorStore,
    AuthenticatorStore,
    StoreError,
    is_postgres_url,
    open_async_store,
    open_store,
)
from dofpy_services.daemon.cli import CliError, UsageError, add_format_flag, print_records
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

__all__ = [
    "AUDIT_KEYS",
    "AUTHENTICATOR",
    "LIST_KEYS",
    "AuthenticatorConfig",
    "AuthenticatorMetrics",
    "serve",
]

T = TypeVar("T")

_domain = parse_domain
_identity = parse_identity


def _config_oid(key: str, text: str, parse: Callable[[str], OID]) -> OID:
    try:
        return parse(text)
    except ValueError as exc:
        raise ConfigError(f"key {key!r}: {text!r}: {exc}") from None


def _argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` as an argparse ``type``: its ``ValueError`` becomes a usage
    error naming the argument and the value."""

    def converted(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    converted.__name__ = parse.__name__.strip("_")
    return converted


def _max_duration(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("not a whole number of minutes") from None
    if not 0 <= value <= 0xFF:
        raise ValueError("outside 0..255")
    return value


def _since(text: str) -> float:
    """A point in time: Unix seconds, or ISO 8601 (UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            "expected an ISO 8601 time (2026-12-02, 2026-12-02T17:00Z) or Unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _existing_db(location: str) -> AuthenticatorStore:
    # A PostgreSQL database is the operator's to create; its tables are made on
    # first use. A missing file is a typo more often than a wish for a new one.
    if not is_postgres_url(location) and not Path(location).exists():
        raise CliError(f"--db {location}: no database there (create it with init-domain)")
    return open_store(location)


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
    sealed_rate_limit: int = option(
        INT,
        "TRP commands per second served inside the secure session of one authenticated "
        "node, whatever its host (0: no limit); a service asks once per session it accepts",
        default=int(DEFAULT_SEALED_RATE_LIMIT.rate),
    )
    sealed_rate_burst: int = option(
        INT,
        "TRP commands one authenticated node may send at once",
        default=DEFAULT_SEALED_RATE_LIMIT.burst,
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
        _config_oid("identity", config.identity, _identity)
        _config_oid("domain", config.domain or "", _domain)
    if config.max_pending < 1:
        raise ConfigError("key 'max_pending': expected an integer >= 1")
    if config.store_pool < 1:
        raise ConfigError("key 'store_pool': expected an integer >= 1")
    if config.rate_limit < 0:
        raise ConfigError("key 'rate_limit': expected an integer >= 0")
    if config.rate_burst < 1 or config.rate_hosts < 1:
        raise ConfigError("keys 'rate_burst' and 'rate_hosts': expected integers >= 1")
    if config.sealed_rate_limit < 0:
        raise ConfigError("key 'sealed_rate_limit': expected an integer >= 0")
    if config.sealed_rate_burst < 1:
        raise ConfigError("key 'sealed_rate_burst': expected an integer >= 1")


_WORKERS_PER_THREAD = 16


def _rate_limit(config: AuthenticatorConfig) -> RateLimit | None:
    if config.rate_limit == 0:
        return None
    return RateLimit(config.rate_limit, config.rate_burst, config.rate_hosts)


def _sealed_rate_limit(config: AuthenticatorConfig) -> RateLimit | None:
    if config.sealed_rate_limit == 0:
        return None
    return RateLimit(config.sealed_rate_limit, config.sealed_rate_burst, config.rate_hosts)


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
        own = (
            _config_oid("domain", config.domain or "", _domain),
            _config_oid("identity", config.identity, _identity),
            None,
        )
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
        sealed_rate_limit=_sealed_rate_limit(config),
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
            # A worker spends most of its time waiting for its audit line's
            # batch to commit, not in a thread: with only as many workers as
            # threads, each batch held a handful of lines and a fleet's
            # handshakes queued behind it (about 100 decisions a second).
            # The store threads still bound the lookups done at once.
            workers = min(config.max_pending, _WORKERS_PER_THREAD * context.service.store_threads)
            await shell.run(responder, node.wakeup, workers)
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
    sub.add_argument("--domain", required=True, type=_argument(_domain), help="domain OID or name")
    sub.add_argument("identity", type=_argument(_identity), help="node identity OID or name")


def _init_domain_flags(sub: argparse.ArgumentParser) -> None:
    _db_flag(sub)
    sub.add_argument("domain", type=_argument(_domain), help="domain OID or name, e.g. example.org")
    sub.add_argument(
        "--master-key-file",
        metavar="FILE",
        help="a file holding the master key in hex (default: a fresh random one)",
    )


def _read_master_key(path: str) -> bytes:
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except UnicodeDecodeError:
        raise CliError(f"--master-key-file {path}: not hexadecimal text") from None
    except OSError as exc:
        raise CliError(f"--master-key-file {path}: {exc.strerror}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise CliError(f"--master-key-file {path}: not hexadecimal") from None
    if len(key) != MASTER_KEY_SIZE:
        raise CliError(
            f"--master-key-file {path}: {len(key)} bytes; a master key is {MASTER_KEY_SIZE}"
        )
    return key


def _sqlite_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _init_domain(args: argparse.Namespace) -> int:
    domain: OID = args.domain
    if args.master_key_file:
        master_key = _read_master_key(args.master_key_file)
    else:
        master_key = secrets.token_bytes(MASTER_KEY_SIZE)
    # A database this command creates is removed again if the domain cannot be
    # made in it: an empty database left behind would look like a domain's.
    created = None
    if not is_postgres_url(args.db) and not Path(args.db).exists():
        created = Path(args.db)
    try:
        with open_store(args.db) as store:
            store.init_domain(domain, master_key, time.time())
    except BaseException:
        if created is not None:
            for path in _sqlite_files(created):
                path.unlink(missing_ok=True)
        raise
    print(f"domain {domain} created in {mask_url_password(args.db)}")
    return 0


def _secret_flags(sub: argparse.ArgumentParser, what: str) -> None:
    """Where a command that issues an identity secret puts it (default: stdout)."""
    out = sub.add_mutually_exclusive_group()
    out.add_argument(
        "--credentials-out",
        metavar="FILE",
        help=f"write the node's credentials file here (mode 0600) instead of printing {what}",
    )
    out.add_argument(
        "--secret-file",
        metavar="FILE",
        help=f"write {what} here, in hex (a new file, mode 0600), instead of printing it",
    )
    sub.add_argument(
        "--authenticator",
        metavar="HOST:PORT",
        help="the Authenticator's address, written into the credentials file",
    )
    sub.add_argument(
        "--authenticator-identity",
        metavar="OID",
        type=_argument(_identity),
        help="the Authenticator's own identity, written into the credentials file: the node"
        " then accepts only that identity at the Authenticator's address",
    )


@dataclass(frozen=True, slots=True)
class _SecretOut:
    """Where an issued identity secret goes. The file it goes to is created
    (empty, 0600) before the store is changed: a path that cannot be written
    is refused while refusing still costs nothing, rather than after the node
    got a secret nobody can read."""

    credentials_out: Path | None = None
    secret_file: int | None = None  # an open descriptor of the new file
    secret_path: Path | None = None
    authenticator: Address | None = None
    authenticator_identity: OID | None = None

    def discard(self) -> None:
        """The store refused: remove the file made for nothing."""
        if self.secret_file is not None:
            os.close(self.secret_file)
        for path in (self.secret_path, self.credentials_out):
            if path is not None:
                path.unlink(missing_ok=True)


def _reserve(flag: str, path: Path) -> int:
    """Create ``path``, empty and 0600; an open descriptor of it."""
    try:
        # O_EXCL: never overwrite, nor follow a link someone left there.
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"{flag} {path}: exists; refusing to overwrite it") from None
    except OSError as exc:
        raise CliError(f"{flag} {path}: {exc.strerror}") from None


def _secret_out(args: argparse.Namespace) -> _SecretOut:
    authenticator = None
    if args.authenticator:
        if not args.credentials_out:
            raise UsageError("--authenticator goes into a credentials file: give --credentials-out")
        try:
            authenticator = parse_address(args.authenticator)
        except ValueError as exc:
            raise UsageError(f"argument --authenticator: {args.authenticator!r}: {exc}") from None
    if args.authenticator_identity is not None and authenticator is None:
        raise UsageError("--authenticator-identity needs --authenticator (and --credentials-out)")
    if args.credentials_out:
        target = Path(args.credentials_out)
        os.close(_reserve("--credentials-out", target))  # replaced atomically once written
        return _SecretOut(
            credentials_out=target,
            authenticator=authenticator,
            authenticator_identity=args.authenticator_identity,
        )
    if args.secret_file:
        path = Path(args.secret_file)
        return _SecretOut(secret_file=_reserve("--secret-file", path), secret_path=path)
    return _SecretOut()


def _issue_secret(
    args: argparse.Namespace,
    store: AuthenticatorStore,
    change: Callable[[AuthenticatorStore], int],
) -> tuple[int, KeyCredential, _SecretOut]:
    """Check where the secret goes, then ``change`` the store (returning the
    node's new generation); its credential."""
    out = _secret_out(args)
    try:
        generation = change(store)
        credential = store.domain(args.domain).credential_for(args.identity, generation)
    except BaseException:
        out.discard()
        raise
    return generation, credential, out


def _deliver_secret(credential: KeyCredential, out: _SecretOut) -> None:
    if out.credentials_out is not None:
        credentials = NodeCredentials(
            credential.node.domain,
            credential.node.identity,
            credential.secret,
            out.authenticator,
            authenticator_identity=out.authenticator_identity,
        )
        written = write_credentials(out.credentials_out, credentials, overwrite=True)
        print(f"credentials written to {written} (mode 0600)")
    elif out.secret_file is not None:
        with os.fdopen(out.secret_file, "w", encoding="ascii") as file:
            file.write(credential.secret.hex() + "\n")
            file.flush()
            os.fsync(file.fileno())
        print(f"identity secret written to {out.secret_path} (mode 0600)")
    else:
        print(f"identity secret: {credential.secret.hex()}")
        print(f"wireshark identsecret: {credential.wireshark_uat()}")


def _add_node_flags(sub: argparse.ArgumentParser) -> None:
    _node_flags(sub)
    sub.add_argument(
        "--max-duration",
        type=_argument(_max_duration),
        default=255,
        help="longest session granted, in minutes (0-255, default 255)",
    )
    _secret_flags(sub, "its identity secret")


def _add_node(args: argparse.Namespace) -> int:
    def enrol(store: AuthenticatorStore) -> int:
        store.add_node(args.domain, args.identity, time.time(), args.max_duration)
        return 0

    with _existing_db(args.db) as store:
        _, credential, out = _issue_secret(args, store, enrol)
    print(f"enrolled {args.identity} in {args.domain}")
    _deliver_secret(credential, out)
    return 0


_UNENFORCED = {
    "requestor": "a requestor needs the actions it uses (r, w, x, s) on what it uses",
    "provider": "a provider needs 'p' on what it provides (--actions p --object OID)",
    "iam": "an identity is proven by its own secret: there is no other to claim",
}


def _binding_flags(sub: argparse.ArgumentParser, *, required: bool) -> None:
    sub.add_argument(
        "--actions", required=required, help="binding actions: letters of rwxsp, e.g. rs"
    )
    sub.add_argument("--object", help="object OID or name, '*' (any) or class:N (default '*')")
    sub.add_argument("--interface", help="interface IID, e.g. [1:{01}], or '*' (default: any)")
    # Grants of earlier versions that nothing ever enforced (docs/security.md,
    # "Permissions"): refused with the reason, not with "unrecognized arguments".
    for name in ("requestor", "provider"):
        sub.add_argument(f"--{name}", action="store_true", help=argparse.SUPPRESS)
    sub.add_argument("--iam", help=argparse.SUPPRESS)


def _refuse_unenforced(args: argparse.Namespace) -> None:
    for name, instead in _UNENFORCED.items():
        if getattr(args, name) not in (None, False):
            raise UsageError(
                f"--{name}: dofpy enforces no {name} grant and no longer grants one; {instead}"
                " (see docs/security.md, 'Permissions')"
            )


def _binding(args: argparse.Namespace) -> BindingPermission:
    try:
        return parse_binding(args.actions, args.object, args.interface)
    except ValueError as exc:
        raise UsageError(f"--{exc}") from None


def _grant_flags(sub: argparse.ArgumentParser) -> None:
    _node_flags(sub)
    _binding_flags(sub, required=False)


def _grant(args: argparse.Namespace) -> int:
    _refuse_unenforced(args)
    if args.actions is None:
        raise UsageError("grant needs --actions (letters of rwxsp)")
    permission = _binding(args)
    with _existing_db(args.db) as store:
        store.grant(args.domain, args.identity, permission, time.time())
    print(f"granted {args.identity}: {describe_permission(permission)}")
    return 0


def _ungrant_flags(sub: argparse.ArgumentParser) -> None:
    _node_flags(sub)
    _binding_flags(sub, required=False)
    sub.add_argument(
        "--permission",
        metavar="TEXT",
        help="the grant as 'list' prints it, e.g. 'rs * [1:{01}]' or 'requestor'"
        " (instead of --actions, --object, --interface)",
    )


def _ungrant(args: argparse.Namespace) -> int:
    binding_flags = [
        f"--{name}" for name in ("actions", "object", "interface") if getattr(args, name)
    ]
    if args.permission is not None:
        if binding_flags or args.requestor or args.provider or args.iam is not None:
            given = binding_flags or ["--requestor/--provider/--iam"]
            raise UsageError(f"--permission names the whole grant: drop {', '.join(given)}")
        try:
            permission = parse_permission(args.permission)
        except ValueError as exc:
            raise UsageError(f"argument --permission: {args.permission!r}: {exc}") from None
    else:
        _refuse_unenforced(args)
        if args.actions is None:
            raise UsageError("ungrant needs --actions (with --object, --interface) or --permission")
        permission = _binding(args)
    with _existing_db(args.db) as store:
        store.ungrant(args.domain, args.identity, permission, time.time())
    print(f"removed from {args.identity}: {describe_permission(permission)}")
    return 0


def _revoke_flags(sub: argparse.ArgumentParser) -> None:
    _node_flags(sub)
    sub.add_argument("--reason", default="revoked by operator", help="recorded in the audit log")


def _revoke(args: argparse.Namespace) -> int:
    with _existing_db(args.db) as store:
        store.revoke(args.domain, args.identity, args.reason, time.time())
    print(f"revoked {args.identity} in {args.domain}")
    return 0


def _reinstate(args: argparse.Namespace) -> int:
    with _existing_db(args.db) as store:
        store.reinstate(args.domain, args.identity, time.time())
    print(f"reinstated {args.identity} in {args.domain}: its identity secret works again")
    return 0


def _secret_command_flags(sub: argparse.ArgumentParser) -> None:
    _node_flags(sub)
    _secret_flags(sub, "the new identity secret")


def _re_enrol(args: argparse.Namespace) -> int:
    with _existing_db(args.db) as store:
        generation, credential, out = _issue_secret(
            args, store, lambda s: s.re_enrol(args.domain, args.identity, time.time())
        )
    print(f"re-enrolled {args.identity} in {args.domain}: generation {generation}")
    _deliver_secret(credential, out)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    with _existing_db(args.db) as store:
        generation, credential, out = _issue_secret(
            args, store, lambda s: s.rotate(args.domain, args.identity, time.time())
        )
    print(f"rotated {args.identity}: generation {generation}")
    _deliver_secret(credential, out)
    return 0


def _list_flags(sub: argparse.ArgumentParser) -> None:
    _db_flag(sub)
    sub.add_argument("--domain", type=_argument(_domain), help="only this domain")
    add_format_flag(sub, ("text", "table", "json", "csv"), default="text")


LIST_KEYS = ("identity", "domain", "status", "generation", "max_duration", "permissions")
"""The keys of each object ``list --json`` prints (docs/operations.md)."""


def _list(args: argparse.Namespace) -> int:
    with _existing_db(args.db) as store:
        summaries = store.nodes(args.domain)
    if args.format != "text":
        records: list[dict[str, Any]] = [
            {
                "identity": str(summary.identity),
                "domain": str(summary.domain),
                "status": "revoked" if summary.revoked else "active",
                "generation": summary.generation,
                "max_duration": summary.max_duration,
                "permissions": [describe_permission(p) for p in summary.permissions],
            }
            for summary in summaries
        ]
        print_records(records, LIST_KEYS, args.format)
        return 0
    for summary in summaries:
        status = "revoked" if summary.revoked else "active"
        print(
            f"{summary.identity} domain={summary.domain} {status}"
            f" generation={summary.generation} max-duration={summary.max_duration}"
        )
        for permission in summary.permissions:
            print(f"    {describe_permission(permission)}")
    return 0


def _audit_flags(sub: argparse.ArgumentParser) -> None:
    _db_flag(sub)
    sub.add_argument(
        "--since",
        metavar="TIME",
        type=_argument(_since),
        help="only entries at or after TIME: ISO 8601 (UTC unless it says), or Unix seconds",
    )
    sub.add_argument(
        "--node",
        metavar="ID",
        type=_argument(_identity),
        help="only entries concerning this node (its commands, TRP decisions on either side)",
    )
    add_format_flag(sub, ("table", "json", "csv"), default="table")


AUDIT_KEYS = ("id", "time", "at", "event", "domain", "node", "permission", "detail")
"""The keys of each object ``audit --json`` prints (docs/operations.md)."""

_AUDIT_COLUMNS = ("time", "event", "domain", "node", "permission", "detail")


def _time_text(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _audit(args: argparse.Namespace) -> int:
    with _existing_db(args.db) as store:
        entries = store.audit_log(since=args.since, node=args.node)
    records = [
        {
            "id": entry.id,
            "time": _time_text(entry.at),
            "at": entry.at,
            "event": entry.event,
            "domain": entry.domain,
            "node": entry.node,
            "permission": entry.permission,
            "detail": entry.detail,
        }
        for entry in entries
    ]
    print_records(records, AUDIT_KEYS if args.format == "json" else _AUDIT_COLUMNS, args.format)
    return 0


_NODE_EXAMPLE = "--db auth.db --domain example.org device@example.org"

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
        "grant a node a binding permission",
        "dofpy authenticator grant --db auth.db --domain example.org client@example.org "
        "--actions rs --interface '[1:{01}]'",
        _grant_flags,
        _grant,
    ),
    Command(
        "ungrant",
        "remove a grant from a node",
        "dofpy authenticator ungrant --db auth.db --domain example.org client@example.org "
        "--actions rs --interface '[1:{01}]'\n"
        "dofpy authenticator ungrant --db auth.db --domain example.org client@example.org "
        "--permission 'rs * [1:{01}]'",
        _ungrant_flags,
        _ungrant,
    ),
    Command(
        "revoke",
        "revoke a node",
        f"dofpy authenticator revoke {_NODE_EXAMPLE} --reason stolen",
        _revoke_flags,
        _revoke,
    ),
    Command(
        "reinstate",
        "lift a node's revocation (its identity secret works again)",
        f"dofpy authenticator reinstate {_NODE_EXAMPLE}",
        _node_flags,
        _reinstate,
    ),
    Command(
        "re-enrol",
        "lift a node's revocation and give it a new identity secret (a device back from repair)",
        f"dofpy authenticator re-enrol {_NODE_EXAMPLE} --secret-file device.secret",
        _secret_command_flags,
        _re_enrol,
    ),
    Command(
        "rotate",
        "give an active node a new identity secret",
        f"dofpy authenticator rotate {_NODE_EXAMPLE}",
        _secret_command_flags,
        _rotate,
    ),
    Command(
        "list",
        "list nodes and their permissions",
        "dofpy authenticator list --db auth.db --domain example.org --json",
        _list_flags,
        _list,
    ),
    Command(
        "audit",
        "show the audit log",
        "dofpy authenticator audit --db auth.db --since 2026-12-01 --node device@example.org",
        _audit_flags,
        _audit,
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
