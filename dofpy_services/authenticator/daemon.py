"""The Authenticator daemon: a DPS node that answers TRP commands.

:class:`AuthenticatorCore` is a :class:`dofpy.DatagramCore` (sans-IO): it wraps
a :class:`dofpy.session.node.Node` serving DSP, TRP and the common operations,
decodes every TRP command the node hands up, asks the
:class:`~dofpy.security.authority.TrpAuthority` and sends its answer with
``send_response``. Every decision goes to ``on_decision`` (the daemon writes
the audit log and the key log there). :func:`serve` runs it on UDP with trio.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import trio

from dofpy._core import Address
from dofpy.errors import BadPacket
from dofpy.security.authority import Decision, TrpAuthority
from dofpy.security.keylog import format_keylog_line as format_session_key_line
from dofpy.session.node import CommandReceived, Node, NodeConfig
from dofpy.session.security import SecurityConfig
from dofpy.trio import open_udp_endpoint
from dofpy.wire.dpp import AppId
from dofpy.wire.oid import OID
from dofpy.wire.trp import (
    RequestSessionCommand,
    TrpError,
    TrpPdu,
    TrpReject,
    decode_trp_untrusted,
    encode_trp,
)
from dofpy_services.authenticator.store import AuthenticatorStore, StoreError, open_store

__all__ = ["AUTHENTICATOR_NODE", "AuthenticatorCore", "format_keylog_line", "serve"]

AUTHENTICATOR_NODE = OID(3, b"authenticator")


class AuthenticatorCore:
    """A DatagramCore answering TRP commands with ``authority``.

    With ``security`` (the Authenticator's own identity in the domain, keyed by
    ``authority`` itself as its ``local_authority``) responders may talk TRP to
    it inside a secure session; a sealed Request Session is then granted only
    to the responder the session authenticated. With ``sealed_only`` TRP in the
    clear is refused (Access Denied).
    """

    def __init__(
        self,
        authority: TrpAuthority,
        on_decision: Callable[[Decision, Address, float], None] | None = None,
        node_id: OID = AUTHENTICATOR_NODE,
        *,
        security: SecurityConfig | None = None,
        sealed_only: bool = False,
    ) -> None:
        if sealed_only and security is None:
            raise ValueError("sealed_only needs a security configuration")
        self._authority = authority
        self._on_decision = on_decision
        self._sealed_only = sealed_only
        self._node = Node(
            NodeConfig(
                node_id=node_id if security is None else security.identity,
                applications=(AppId.DSP, AppId.TRP, AppId.COMMON),
                security=security,
            )
        )
        self.decisions = 0

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._node.receive_datagram(data, addr, now)
        self._drain(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self._node.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self._node.get_timer()

    def handle_timer(self, now: float) -> None:
        self._node.handle_timer(now)
        self._drain(now)

    def _drain(self, now: float) -> None:
        while (event := self._node.next_event()) is not None:
            if isinstance(event, CommandReceived) and event.app_id == AppId.TRP:
                self._answer(event, now)

    def _answer(self, event: CommandReceived, now: float) -> None:
        try:
            pdu = decode_trp_untrusted(event.payload, is_response=False)
        except BadPacket as exc:
            decision = self._authority.decide_bad_payload(exc)
        else:
            refusal = self._refusal(pdu, event.identity)
            decision = (
                self._authority.decide(pdu)
                if refusal is None
                else Decision(TrpReject(TrpError.ACCESS_DENIED), False, refusal)
            )
        self.decisions += 1
        if event.op_count is not None:
            self._node.send_response(
                event.peer, event.op_count, AppId.TRP, encode_trp(decision.response), now
            )
        if self._on_decision is not None:
            self._on_decision(decision, event.peer, now)

    def _refusal(self, pdu: TrpPdu, identity: OID | None) -> str | None:
        """Why a TRP command is refused before the authority decides, if it is."""
        if identity is None:
            return "TRP in the clear is refused here" if self._sealed_only else None
        if isinstance(pdu, RequestSessionCommand) and pdu.responder.identity.node != identity:
            return f"{identity} asked for a session as {pdu.responder.identity.node}"
        return None


def format_keylog_line(decision: Decision) -> str:
    """One key-log line for a granted session (the format of
    :mod:`dofpy.security.keylog`, shared with every node's key log)."""
    if decision.session_key is None:
        raise ValueError("only a granted decision has a session key")
    return format_session_key_line(decision.session_key, decision.initiator, decision.responder)


def _audit_writer(
    store: AuthenticatorStore, keylog: TextIO | None
) -> Callable[[Decision, Address, float], None]:
    def record(decision: Decision, peer: Address, now: float) -> None:
        # The audit log keeps wall-clock time; ``now`` is the endpoint's clock.
        outcome = "granted" if decision.granted else "refused"
        store.audit(
            time.time(),
            f"trp-{outcome}",
            f"peer={peer[0]}:{peer[1]} initiator={decision.initiator}"
            f" responder={decision.responder} reason={decision.reason}",
        )
        if keylog is not None and decision.session_key is not None:
            keylog.write(format_keylog_line(decision))
            keylog.flush()

    return record


async def serve(
    listen: Address,
    db_path: str | os.PathLike[str],
    keylog_path: str | os.PathLike[str] | None = None,
    *,
    identity: tuple[OID, OID] | None = None,
    sealed_only: bool = False,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the Authenticator on UDP ``listen`` until cancelled, on the store at
    ``db_path`` (a SQLite file or a ``postgresql://`` URL, see
    :func:`~dofpy_services.authenticator.store.open_store`); reports the bound
    address through ``task_status`` (for ``nursery.start``).

    ``identity`` = (domain, node): the Authenticator's own identity, enrolled in
    that domain; with it, responders may talk TRP inside a secure session, and
    ``sealed_only`` refuses TRP in the clear."""
    with open_store(db_path) as store:
        keylog = None
        if keylog_path is not None:
            # The key log holds session keys: create it private, append only.
            fd = os.open(Path(keylog_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            keylog = os.fdopen(fd, "a", encoding="ascii")
        try:
            authority = TrpAuthority(store, secrets.token_bytes)
            security = None
            if identity is not None:
                domain, node = identity
                record = store.lookup(domain, node)
                if record is None or record.revoked:
                    raise StoreError(f"{node} is not an active node of {domain}")
                security = SecurityConfig(
                    domain=domain,
                    identity=node,
                    secret=record.credential.secret,
                    rng=secrets.token_bytes,
                    cookie_key=secrets.token_bytes(32),
                    permissions=record.permissions,
                    local_authority=authority,
                )
            core = AuthenticatorCore(
                authority,
                _audit_writer(store, keylog),
                security=security,
                sealed_only=sealed_only,
            )
            async with open_udp_endpoint(core, listen) as endpoint:
                store.audit(time.time(), "serve", f"listen={endpoint.local_address}")
                task_status.started(endpoint.local_address)
                await trio.sleep_forever()
        finally:
            if keylog is not None:
                keylog.close()
