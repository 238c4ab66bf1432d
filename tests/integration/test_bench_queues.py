"""``postroom bench queues`` drains its whole backlog with several worker processes."""

from __future__ import annotations

from postroom.bench.queues import run_queues


def test_every_message_is_claimed_and_acked_by_the_worker_processes() -> None:
    runs = run_queues("sql://", None, [1, 2], messages=600, batch=50)
    assert [run.workers for run in runs] == [1, 2]
    for run in runs:
        assert run.messages == 600  # run_queues raises when fewer were acked
        assert run.claim_ack_per_s > 0 and run.enqueue_per_s > 0
