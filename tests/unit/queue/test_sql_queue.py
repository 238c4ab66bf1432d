"""SQL-backend behaviour beyond the shared queue contract: release bookkeeping, PostgreSQL SQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.dialects import postgresql

from postroom.messages import Priority
from postroom.queue.base import OutgoingMessage
from postroom.queue.sql import SqlQueue
from postroom.queue.sql_statements import claim_select
from postroom.store.database import open_database
from postroom.store.migrate import upgrade


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def queue(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqlQueue]:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    upgrade(url)
    db = open_database(url)
    try:
        yield SqlQueue(db, max_deliveries=2, clock=clock)
    finally:
        await db.dispose()


async def test_release_undoes_the_hand_out(queue: SqlQueue) -> None:
    await queue.enqueue([OutgoingMessage("m1", Priority.TRANSACTIONAL, b"x")])

    for _ in range(5):  # more releases than max_deliveries: still not poison
        delivery = (await queue.receive(1, 60))[0]
        assert delivery.deliveries == 1
        assert await queue.release(delivery)

    assert await queue.dlq_list() == []


async def test_retry_records_the_error_and_delay(queue: SqlQueue, clock: FakeClock) -> None:
    await queue.enqueue([OutgoingMessage("m1", Priority.TRANSACTIONAL, b"x")])
    delivery = (await queue.receive(1, 60))[0]

    assert await queue.retry(delivery, 300, "421 try later")
    clock.now += 299
    assert await queue.receive(1, 60) == []
    clock.now += 1
    assert [d.attempt for d in await queue.receive(1, 60)] == [1]


async def test_poison_reason_says_how_often(queue: SqlQueue, clock: FakeClock) -> None:
    await queue.enqueue([OutgoingMessage("m1", Priority.CRITICAL, b"x")])
    for _ in range(2):
        await queue.receive(1, 60)
        clock.now += 61

    assert await queue.receive(1, 60) == []
    letter = await queue.dlq_get("m1")
    assert letter is not None
    assert letter.reason == "delivery limit reached: handed out 2 times without an outcome"
    assert letter.priority is Priority.CRITICAL


def test_postgresql_claim_skips_locked_rows() -> None:
    statement = claim_select(Priority.MARKETING, skip_locked=True)

    sql = str(statement.compile(dialect=postgresql.dialect()))

    assert "ORDER BY queue_jobs.available_at" in sql
    assert sql.rstrip().endswith("FOR UPDATE SKIP LOCKED")


async def test_scheduled_retries_do_not_count_towards_the_poison_limit(
    queue: SqlQueue, clock: FakeClock
) -> None:
    # A retry is an outcome; only hand-outs without one (crashes) make a message poison.
    await queue.enqueue([OutgoingMessage("m1", Priority.TRANSACTIONAL, b"x")])
    for attempt in range(5):  # more retries than max_deliveries (2)
        [delivery] = await queue.receive(1, 60)
        assert (delivery.attempt, delivery.deliveries) == (attempt, 1)
        assert await queue.retry(delivery, 1.0, "503")
        clock.now += 2
    assert await queue.dlq_list() == []
    assert len(await queue.receive(1, 60)) == 1
