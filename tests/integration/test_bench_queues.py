"""``postroom bench queues`` drains its whole backlog with several worker processes."""

from __future__ import annotations

from postroom.bench.queues import run_queues


def test_every_message_is_claimed_and_acked_by_the_worker_processes() -> None:
    # run_queues raises unless the worker processes acked every message.
    runs = run_queues("sql://", None, [1, 2], messages=600, batch=50)
    assert [run.workers for run in runs] == [1, 2]
    assert all(run.claim_ack_per_s > 0 for run in runs)
