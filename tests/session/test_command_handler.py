"""``Node.set_command_handler``: one-way commands go straight to the handler
(no event) when it takes them, and to the event queue otherwise."""

from __future__ import annotations

from dofpy._core import Address
from dofpy.session.node import CommandReceived, Node
from dofpy.wire.dpp import AppId
from dofpy.wire.oid import OID
from dofpy.wire.permissions import PermissionSet

A: Address = ("10.0.0.1", 3567)
B: Address = ("10.0.0.2", 3567)


def _deliver(sender: Node, receiver: Node, now: float) -> None:
    for data, _peer in sender.datagrams_to_send(now):
        receiver.receive_datagram(data, A, now)


def test_handler_takes_one_way_commands_and_declines_fall_back_to_events() -> None:
    sender, receiver = Node(), Node()
    seen: list[tuple[object, ...]] = []

    def handler(
        peer: Address,
        op: int | None,
        app_id: int,
        payload: bytes,
        identity: OID | None,
        permissions: PermissionSet | None,
        now: float,
    ) -> bool:
        seen.append((peer, op, app_id, payload, identity, permissions, now))
        return payload == b"take"

    receiver.set_command_handler(handler)
    op = sender.send_command(B, AppId.OAP, b"take", 1.0, expect_response=False)
    _deliver(sender, receiver, 1.0)
    assert seen == [(A, op, AppId.OAP, b"take", None, None, 1.0)]
    assert receiver.next_event() is None

    declined = sender.send_command(B, AppId.OAP, b"leave", 2.0, expect_response=False)
    _deliver(sender, receiver, 2.0)
    event = receiver.next_event()
    assert isinstance(event, CommandReceived)
    assert (event.op_count, event.payload) == (declined, b"leave")

    # A command that may be retried (it carries a retry byte) is remembered
    # for duplicates: always an event, never offered to the handler.
    seen.clear()
    sender.send_command(B, AppId.OAP, b"take", 3.0)
    _deliver(sender, receiver, 3.0)
    assert seen == []
    assert isinstance(receiver.next_event(), CommandReceived)

    receiver.set_command_handler(None)
    sender.send_command(B, AppId.OAP, b"take", 4.0, expect_response=False)
    _deliver(sender, receiver, 4.0)
    assert seen == [] and isinstance(receiver.next_event(), CommandReceived)
