"""Claim + ack throughput of the SQL queue behind a large backlog (``postroom bench queue``)."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import delete

from postroom.messages import Priority
from postroom.queue.base import OutgoingMessage
from postroom.queue.sql import SqlQueue
from postroom.store.database import open_database
from postroom.store.migrate import upgrade
from postroom.store.schema import queue_jobs

_ID_PREFIX = "bench-"
_BODY = b'{"email_type":"new_post_notification","recipient_email":"user@example.com"' + b" " * 326
_FILL_CHUNK = 10_000


async def bench_claims(
    url: str, backlog: int, batch: int, *, seconds: float = 5.0
) -> dict[str, float | int]:
    """Fill ``url`` (a fresh database) with ``backlog`` marketing jobs, then claim and ack them
    one at a time and ``batch`` at a time for up to ``seconds`` each; rates are messages/s."""
    await asyncio.to_thread(upgrade, url)
    db = open_database(url)
    try:
        queue = SqlQueue(db)
        if any((await queue.depth()).values()):
            raise ValueError("bench_claims needs an empty queue: give it a fresh database")
        enqueue_rate = await _fill(queue, backlog)
        single_count, single_rate = await _drain(queue, 1, seconds)
        batched_count, batched_rate = await _drain(queue, batch, seconds)
        leftovers = delete(queue_jobs).where(queue_jobs.c.id.startswith(_ID_PREFIX))
        await db.write(lambda conn: conn.execute(leftovers))
    finally:
        await db.dispose()
    return {
        "backlog": backlog,
        "batch": batch,
        "enqueue_per_s": round(enqueue_rate),
        "single_messages": single_count,
        "single_claim_ack_per_s": round(single_rate),
        "batched_messages": batched_count,
        "batched_claim_ack_per_s": round(batched_rate),
    }


async def _fill(queue: SqlQueue, backlog: int) -> float:
    # Marketing is the last class a claim reaches, so every claim also probes the two empty ones.
    started = time.perf_counter()
    for start in range(0, backlog, _FILL_CHUNK):
        stop = min(start + _FILL_CHUNK, backlog)
        await queue.enqueue(
            [
                OutgoingMessage(f"{_ID_PREFIX}{i:09}", Priority.MARKETING, _BODY)
                for i in range(start, stop)
            ]
        )
    return backlog / max(time.perf_counter() - started, 1e-9)


async def _drain(queue: SqlQueue, batch: int, seconds: float) -> tuple[int, float]:
    """Claim + ack ``batch`` at a time (two transactions per round, as a worker does)."""
    claimed = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        deliveries = await queue.receive(batch, lease_seconds=60)
        if not deliveries:
            break
        claimed += await queue.ack(deliveries)
    return claimed, claimed / max(time.perf_counter() - started, 1e-9)
