"""The secure-session tables of a node with a :class:`SecurityConfig`: the
channel table, the initiator and the responder, built over one command table
and one set of security counters, with their timers and statistics."""

from __future__ import annotations

from collections.abc import Callable

from dofpy._core import Address
from dofpy.session.channels import ChannelTable
from dofpy.session.commands import CommandTable
from dofpy.session.config import SecurityConfig
from dofpy.session.events import Report, SecurityStatistics
from dofpy.session.initiator import Initiator
from dofpy.session.responder import Responder, SendResponse
from dofpy.wire.oid import OID

__all__ = ["SecureTables"]

_SECURITY_COUNTS = tuple(
    name
    for name in SecurityStatistics.__dataclass_fields__
    if name not in ("sessions", "half_open", "authenticator_pending", "keys")
)


class SecureTables:
    """The secure-session tables of a node with a :class:`SecurityConfig`."""

    def __init__(
        self,
        config: SecurityConfig,
        commands: CommandTable,
        *,
        send: Callable[[bytes, Address], None],
        send_plain_response: SendResponse,
        report: Report,
        expected_identities: Callable[[Address], set[OID]],
    ) -> None:
        self.config = config
        self.counts = dict.fromkeys(_SECURITY_COUNTS, 0)
        self.channels = ChannelTable(
            config,
            self.counts,
            commands,
            send=send,
            report=report,
            # Late-bound: the initiator is built next, over this table.
            start_handshake=lambda peer, now: self.initiator.ensure_session(peer, now),  # noqa: PLW0108
            handshaking=lambda peer: self.initiator.handshaking(peer),  # noqa: PLW0108
        )
        self.initiator = Initiator(
            config,
            self.counts,
            commands,
            self.channels,
            report=report,
            expected_identities=expected_identities,
        )
        self.responder = Responder(
            config,
            self.counts,
            commands,
            self.channels,
            self.initiator,
            send=send_plain_response,
            report=report,
        )

    def count(self, name: str) -> None:
        self.counts[name] += 1

    def statistics(self) -> SecurityStatistics:
        return SecurityStatistics(
            **self.counts,
            sessions=len(self.channels),
            half_open=self.responder.half_open,
            authenticator_pending=self.responder.authenticator_pending,
            keys=self.channels.keys,
        )

    def get_timer(self) -> float | None:
        # Called after every datagram: no lists, one comparison per table.
        deadline = self.initiator.get_timer()
        responder = self.responder.get_timer()
        if responder is not None and (deadline is None or responder < deadline):
            deadline = responder
        channels = self.channels.get_timer()
        if channels is not None and (deadline is None or channels < deadline):
            deadline = channels
        return deadline

    def handle_timer(self, now: float) -> None:
        # Each table acts only on what is due by its own timer, so one with
        # nothing due is skipped (a paced block transfer wakes its node for
        # every block; none of these has anything due then). Each is asked
        # just before its turn: an earlier table's work may make it due.
        if (due := self.initiator.get_timer()) is not None and due <= now:
            self.initiator.handle_timer(now)
        if (due := self.responder.get_timer()) is not None and due <= now:
            self.responder.handle_timer(now)
        if (due := self.channels.get_timer()) is not None and due <= now:
            self.channels.handle_timer(now)
