"""Messages/s through a queue backend with 1, 2, 4 … worker processes (``postroom bench
queues``): each process claims a batch, acks it, and claims again, as a worker does without
the sending; the figure is the whole backlog over the wall time from the start signal to the
last ack.

Every run gets a fresh queue: a new SQLite file, the given PostgreSQL database's queue table
emptied, or a RabbitMQ topology under a throw-away prefix that is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from urllib.parse import urlsplit

from postroom.config import Settings
from postroom.messages import Priority
from postroom.queue.base import OutgoingMessage
from postroom.store.database import open_database
from postroom.store.migrate import upgrade
from postroom.wiring import build_queue

_BODY = b'{"email_type":"new_post_notification","recipient_email":"user@example.com"' + b" " * 326


@dataclass(frozen=True)
class QueueRun:
    workers: int
    messages: int
    enqueue_per_s: float
    claim_ack_per_s: float

    def line(self) -> str:
        return (
            f"{self.workers} worker process(es): {self.claim_ack_per_s:,.0f} messages/s "
            f"claimed and acked ({self.messages:,} messages; enqueue {self.enqueue_per_s:,.0f}/s)"
        )


def run_queues(
    queue_url: str, database_url: str | None, workers: Sequence[int], messages: int, batch: int
) -> list[QueueRun]:
    return [_one_run(queue_url, database_url, w, messages, batch) for w in workers]


def _one_run(
    queue_url: str, database_url: str | None, workers: int, messages: int, batch: int
) -> QueueRun:
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as scratch:
        url = fresh_queue_url(queue_url)
        settings = Settings(
            data_dir=Path(scratch),
            database_url=database_url or f"sqlite:///{scratch}/bench.db",
            queue_url=url,
            secret_key="bench-" * 6,
            api_keys=["bench"],
        )
        upgrade(settings.resolved_database_url)
        enqueue_rate = asyncio.run(_fill(settings, messages))
        context = multiprocessing.get_context("spawn")
        go, ready, done = context.Event(), context.Value("i", 0), context.Value("i", 0)
        processes = [
            context.Process(target=_drain, args=(settings, batch, messages, go, ready, done))
            for _ in range(workers)
        ]
        for process in processes:
            process.start()
        while ready.value < workers:  # every process imported and connected: start the clock
            if not any(p.is_alive() for p in processes):
                raise RuntimeError("the benchmark's worker processes exited before starting")
            time.sleep(0.01)
        started = time.perf_counter()
        go.set()
        for process in processes:
            process.join()
        elapsed = time.perf_counter() - started
        asyncio.run(clean_queue(settings))
    if done.value < messages:
        raise RuntimeError(f"only {done.value} of {messages} messages were acked")
    return QueueRun(workers, messages, enqueue_rate, messages / elapsed)


def fresh_queue_url(queue_url: str) -> str:
    scheme = urlsplit(queue_url).scheme
    if scheme in ("amqp", "amqps", "sqs"):
        joiner = "&" if "?" in queue_url else "?"
        return f"{queue_url}{joiner}prefix=postroom-bench-{secrets.token_hex(4)}"
    return queue_url


async def _fill(settings: Settings, messages: int) -> float:
    db = open_database(settings.resolved_database_url)
    queue = build_queue(settings, db)
    try:
        if any((await queue.depth()).values()):
            raise ValueError("the benchmark needs an empty queue: give it a fresh database")
        started = time.perf_counter()
        for start in range(0, messages, 1000):
            await queue.enqueue(
                [
                    OutgoingMessage(f"bench-{i:09}", Priority.MARKETING, _BODY)
                    for i in range(start, min(start + 1000, messages))
                ]
            )
        return messages / max(time.perf_counter() - started, 1e-9)
    finally:
        await queue.close()
        await db.dispose()


def _drain(
    settings: Settings,
    batch: int,
    messages: int,
    go: ProcessEvent,
    ready: Synchronized[int],
    done: Synchronized[int],
) -> None:
    async def main() -> None:
        db = open_database(settings.resolved_database_url)
        queue = build_queue(settings, db)
        try:
            await queue.depth()  # connect (and, on a broker, declare) before the start
            with ready.get_lock():
                ready.value += 1
            await asyncio.to_thread(go.wait)
            while done.value < messages:
                deliveries = await queue.receive(batch, lease_seconds=60)
                if deliveries:
                    acked = await queue.ack(deliveries)
                    with done.get_lock():
                        done.value += acked
        finally:
            await queue.close()
            await db.dispose()

    asyncio.run(main())


async def clean_queue(settings: Settings) -> None:
    """Empty the SQL queue table, or delete the broker topology the run declared."""
    scheme = urlsplit(settings.queue_url).scheme
    if scheme in ("amqp", "amqps"):
        import aio_pika

        from postroom.queue import rabbitmq_topology as topology
        from postroom.queue.rabbitmq import split_url

        broker, options = split_url(settings.queue_url)
        tiers = [*topology.DEFAULT_WAIT_TIERS, *settings.retry_schedule, settings.lease_seconds]
        built = topology.Topology.build(options["prefix"], tiers, settings.max_deliveries)
        connection = await aio_pika.connect(broker)
        async with connection:
            await topology.delete(await connection.channel(), built)
        return
    if scheme == "sql":
        from sqlalchemy import delete

        from postroom.store.schema import queue_jobs

        db = open_database(settings.resolved_database_url)
        try:
            await db.write(lambda conn: conn.execute(delete(queue_jobs)))
        finally:
            await db.dispose()
