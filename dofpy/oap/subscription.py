"""The requestor's side of one OAP subscription, as a ``(state, input) -> state`` table.

A subscription (a Subscribe to an observable property, or a Register for an
event) is a lease the requestor keeps alive by re-sending its command (see
docs/protocol.md). Two things about it change over its life: whether the
provider has confirmed it (the first answer), and whether the 16-bit sequence
of its notifications is known (so that a gap counts missed notifications and
an old copy is dropped). A Register answer carries the provider's current
sequence; a Subscribe answer does not, and the first Change sets it.

======================  =========================  ======================  ===========
state                   input                      next state              outcome
======================  =========================  ======================  ===========
REQUESTED               ANSWERED                   ACTIVE                  CONFIRM
REQUESTED               ANSWERED_WITH_SEQUENCE     ACTIVE_SYNCED           CONFIRM
REQUESTED               NOTIFIED                   REQUESTED_SYNCED        NOTHING
REQUESTED_SYNCED        ANSWERED                   ACTIVE_SYNCED           CONFIRM
REQUESTED_SYNCED        ANSWERED_WITH_SEQUENCE     ACTIVE_SYNCED           CONFIRM
REQUESTED_SYNCED        NOTIFIED                   REQUESTED_SYNCED        NOTHING
ACTIVE                  ANSWERED                   ACTIVE                  NOTHING
ACTIVE                  ANSWERED_WITH_SEQUENCE     ACTIVE_SYNCED           NOTHING
ACTIVE                  NOTIFIED                   ACTIVE_SYNCED           NOTHING
ACTIVE_SYNCED           ANSWERED                   ACTIVE_SYNCED           NOTHING
ACTIVE_SYNCED           ANSWERED_WITH_SEQUENCE     ACTIVE_SYNCED           NOTHING
ACTIVE_SYNCED           NOTIFIED                   ACTIVE_SYNCED           NOTHING
any but ENDED           REFRESH_DUE                the same                RESEND
REQUESTED(_SYNCED)      FAILED                     ENDED                   REFUSE
ACTIVE(_SYNCED)         FAILED                     ENDED                   END
any but ENDED           CANCELLED                  ENDED                   END
ENDED                   any                        (none: IllegalTransition)
======================  =========================  ======================  ===========

Outcomes: CONFIRM is :class:`~dofpy.oap.events.RequestCompleted` for the
subscription id; REFUSE is :class:`~dofpy.oap.events.RequestFailed` (the
provider never accepted it); END is
:class:`~dofpy.oap.events.SubscriptionEnded`; RESEND sends the command again.
Where the sequence becomes known (an unsynced state to a synced one), the
requestor adopts the sequence the input carried; a NOTIFIED in a synced state
counts the gap from the last sequence. Every pair not in the table raises
:class:`~dofpy.errors.IllegalTransition` (the one error of every state table
in dofpy): a subscription that has ended takes no input.
"""

from __future__ import annotations

import enum

from dofpy.errors import IllegalTransition

__all__ = [
    "SUBSCRIPTION_TRANSITIONS",
    "SubscriptionInput",
    "SubscriptionOutcome",
    "SubscriptionState",
    "subscription_step",
]


class SubscriptionState(enum.Enum):
    REQUESTED = "requested"  # sent, not yet answered, sequence unknown
    REQUESTED_SYNCED = "requested-synced"  # not yet answered, a notification came first
    ACTIVE = "active"  # confirmed by the provider, sequence unknown
    ACTIVE_SYNCED = "active-synced"  # confirmed, sequence known
    ENDED = "ended"  # cancelled, refused or lost: forgotten

    @property
    def confirmed(self) -> bool:
        """Whether the provider has answered the subscription (once is enough)."""
        return self in (SubscriptionState.ACTIVE, SubscriptionState.ACTIVE_SYNCED)

    @property
    def synced(self) -> bool:
        """Whether the sequence of the notifications is known."""
        return self in (SubscriptionState.REQUESTED_SYNCED, SubscriptionState.ACTIVE_SYNCED)


class SubscriptionInput(enum.Enum):
    ANSWERED = "answered"  # a Subscribe response (no sequence)
    ANSWERED_WITH_SEQUENCE = "answered-with-sequence"  # a Register response
    NOTIFIED = "notified"  # a Change or Signal taken for this subscription
    REFRESH_DUE = "refresh-due"  # the refresh deadline passed
    FAILED = "failed"  # the (re)subscribe failed: refused, timed out, garbled
    CANCELLED = "cancelled"  # the application unsubscribed


class SubscriptionOutcome(enum.Enum):
    NOTHING = "nothing"
    CONFIRM = "confirm"  # RequestCompleted(subscription id, ())
    RESEND = "resend"  # send the Subscribe or Register again
    REFUSE = "refuse"  # RequestFailed(subscription id, error)
    END = "end"  # SubscriptionEnded(subscription id, error or None)


_S = SubscriptionState
_I = SubscriptionInput
_O = SubscriptionOutcome

SUBSCRIPTION_TRANSITIONS: dict[
    tuple[SubscriptionState, SubscriptionInput], tuple[SubscriptionState, SubscriptionOutcome]
] = {
    (_S.REQUESTED, _I.ANSWERED): (_S.ACTIVE, _O.CONFIRM),
    (_S.REQUESTED, _I.ANSWERED_WITH_SEQUENCE): (_S.ACTIVE_SYNCED, _O.CONFIRM),
    (_S.REQUESTED, _I.NOTIFIED): (_S.REQUESTED_SYNCED, _O.NOTHING),
    (_S.REQUESTED, _I.REFRESH_DUE): (_S.REQUESTED, _O.RESEND),
    (_S.REQUESTED, _I.FAILED): (_S.ENDED, _O.REFUSE),
    (_S.REQUESTED, _I.CANCELLED): (_S.ENDED, _O.END),
    (_S.REQUESTED_SYNCED, _I.ANSWERED): (_S.ACTIVE_SYNCED, _O.CONFIRM),
    (_S.REQUESTED_SYNCED, _I.ANSWERED_WITH_SEQUENCE): (_S.ACTIVE_SYNCED, _O.CONFIRM),
    (_S.REQUESTED_SYNCED, _I.NOTIFIED): (_S.REQUESTED_SYNCED, _O.NOTHING),
    (_S.REQUESTED_SYNCED, _I.REFRESH_DUE): (_S.REQUESTED_SYNCED, _O.RESEND),
    (_S.REQUESTED_SYNCED, _I.FAILED): (_S.ENDED, _O.REFUSE),
    (_S.REQUESTED_SYNCED, _I.CANCELLED): (_S.ENDED, _O.END),
    (_S.ACTIVE, _I.ANSWERED): (_S.ACTIVE, _O.NOTHING),
    (_S.ACTIVE, _I.ANSWERED_WITH_SEQUENCE): (_S.ACTIVE_SYNCED, _O.NOTHING),
    (_S.ACTIVE, _I.NOTIFIED): (_S.ACTIVE_SYNCED, _O.NOTHING),
    (_S.ACTIVE, _I.REFRESH_DUE): (_S.ACTIVE, _O.RESEND),
    (_S.ACTIVE, _I.FAILED): (_S.ENDED, _O.END),
    (_S.ACTIVE, _I.CANCELLED): (_S.ENDED, _O.END),
    (_S.ACTIVE_SYNCED, _I.ANSWERED): (_S.ACTIVE_SYNCED, _O.NOTHING),
    (_S.ACTIVE_SYNCED, _I.ANSWERED_WITH_SEQUENCE): (_S.ACTIVE_SYNCED, _O.NOTHING),
    (_S.ACTIVE_SYNCED, _I.NOTIFIED): (_S.ACTIVE_SYNCED, _O.NOTHING),
    (_S.ACTIVE_SYNCED, _I.REFRESH_DUE): (_S.ACTIVE_SYNCED, _O.RESEND),
    (_S.ACTIVE_SYNCED, _I.FAILED): (_S.ENDED, _O.END),
    (_S.ACTIVE_SYNCED, _I.CANCELLED): (_S.ENDED, _O.END),
}


def subscription_step(
    state: SubscriptionState, event: SubscriptionInput
) -> tuple[SubscriptionState, SubscriptionOutcome]:
    """The next state of a subscription in ``state`` on ``event``, and what to do.

    Raises :class:`~dofpy.errors.IllegalTransition` for a pair the table does not hold.
    """
    step = SUBSCRIPTION_TRANSITIONS.get((state, event))
    if step is None:
        raise IllegalTransition(f"subscription: {event.value} in state {state.value}")
    return step
