"""What the parts of an OAP core share: the node, the configuration, the
event queue and the counters (one object, so that each part is handed the
same four things and no part reaches into another)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from dofpy._core import Address
from dofpy.oap.config import OapConfig
from dofpy.oap.errors import OapErrorCode
from dofpy.oap.events import OapEvent
from dofpy.session.node import Node
from dofpy.wire.dpp import AppId
from dofpy.wire.oap import ExceptionResponse, encode_oap
from dofpy.wire.oid import OID

__all__ = ["NO_SUCH_OBJECT", "OapContext", "OapCounters"]

NO_SUCH_OBJECT = "no such object or interface"
"""The message of a ``NOT_FOUND`` refusal, one text wherever it is given: a
Subscribe refused for its identity reads as one to an object not provided."""


@dataclass(slots=True)
class OapCounters:
    """The counted outcomes reported in :class:`~dofpy.oap.events.OapStatistics`."""

    bad_oap_payloads: int = 0
    requests_refused: int = 0
    requests_busy: int = 0
    """Of those, refused BUSY: beyond max_incoming, max_incoming_per_peer or
    max_incoming_bytes (each also counted in requests_refused)."""
    notifications_sent: int = 0
    notifications_received: int = 0
    notifications_unmatched: int = 0
    notifications_missed: int = 0
    permission_denied: int = 0
    answers_not_permitted: int = 0
    subscribers_refused: int = 0
    """Subscribes and Registers refused because the object's provider admits
    only other identities as subscribers (``provide(..., subscribers=)``)."""


@dataclass(slots=True)
class OapContext:
    node: Node
    config: OapConfig
    events: deque[OapEvent]
    counters: OapCounters

    def refuse(
        self,
        peer: Address,
        op: int | None,
        code: OapErrorCode,
        message: str,
        now: float,
        identity: OID | None,
    ) -> None:
        """Refuse a command with an internal OAP Exception (none when it has no
        operation id: nobody waits for the answer) and count it."""
        self.counters.requests_refused += 1
        if op is None:
            return
        pdu = ExceptionResponse(int(code), (message,), internal=True, final=True)
        self.node.send_response(peer, op, AppId.OAP, encode_oap(pdu), now, identity=identity)
