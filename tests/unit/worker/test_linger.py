"""Marketing-only claims linger to fill a batch; other mail goes at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from postroom.messages import Priority
from postroom.queue.base import Delivery, OutgoingMessage
from postroom.queue.sql import SqlQueue
from postroom.store.database import open_database
from postroom.store.migrate import upgrade
from postroom.worker.runner import Worker


@pytest.mark.parametrize(
    ("priority", "expected_batches"),
    [(Priority.MARKETING, [5]), (Priority.TRANSACTIONAL, [1, 4])],
)
async def test_only_marketing_waits_to_fill_a_batch(
    tmp_path: Path, priority: Priority, expected_batches: list[int]
) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    upgrade(url)
    db = open_database(url)
    queue = SqlQueue(db)
    batches: list[int] = []

    async def handle(deliveries: list[Delivery]) -> None:
        batches.append(len(deliveries))
        await queue.ack(deliveries)

    worker = Worker(
        queue,
        handle,
        concurrency=64,
        claim_batch=5,
        poll_interval=0.005,
        lease_seconds=30,
        shutdown_grace=1,
        linger=0.5,
    )
    stop = asyncio.Event()
    try:
        await queue.enqueue([OutgoingMessage("m0", priority, b"{}")])
        run = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(0.1)  # well past a poll, well within the linger
        await queue.enqueue([OutgoingMessage(f"m{n}", priority, b"{}") for n in range(1, 5)])
        for _ in range(100):
            if sum(batches) == 5:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await run
    finally:
        await db.dispose()
    assert batches == expected_batches
