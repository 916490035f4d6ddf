"""The command table's timeout hooks: a request that ran out of
retransmissions is described (``describe_timeout``, which only describes),
then acted on (``on_timeout``: the node retires a silent secure session
there), then failed with the description, and is out of the table by then."""

from __future__ import annotations

from dofpy.errors import DofError, DofTimeoutError
from dofpy.session._retry import RetryPolicy
from dofpy.session.commands import CommandTable, PendingCommand
from dofpy.wire.dpp import AppId

PEER = ("10.0.0.2", 3567)
RETRY = RetryPolicy(initial_timeout=1.0, max_timeout=1.0, max_attempts=3, total_timeout=10.0)


def test_a_timed_out_request_is_described_then_acted_on_then_failed() -> None:
    calls: list[tuple[str, int, object]] = []
    table: CommandTable

    def describe(pending: PendingCommand, attempts: int, now: float) -> DofError:
        calls.append(("describe", pending.request_id, attempts))
        return DofTimeoutError(f"request {pending.request_id} unanswered")

    def on_timeout(pending: PendingCommand, now: float) -> None:
        calls.append(("on_timeout", pending.request_id, table.get(pending.request_id)))

    def failed(pending: PendingCommand, error: DofError, now: float) -> None:
        calls.append(("failed", pending.request_id, str(error)))

    table = CommandTable(
        limit=4,
        retry=RETRY,
        first_op=1,
        rng=None,
        emit=lambda pending, retry_byte, now: True,
        describe_timeout=describe,
        on_timeout=on_timeout,
    )
    request = table.start(PEER, AppId.OAP, b"", 0.0, on_failure=failed)
    for _ in range(10):
        deadline = table.get_timer()
        if deadline is None:
            break
        table.handle_timer(deadline)
    assert calls == [
        ("describe", request, 3),
        ("on_timeout", request, None),  # already out of the table
        ("failed", request, f"request {request} unanswered"),
    ]
    assert len(table) == 0 and table.counts["requests_timed_out"] == 1
