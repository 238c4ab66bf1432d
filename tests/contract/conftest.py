"""Backends the queue contract suite runs against (one factory each in ``QUEUE_BACKENDS``) and
the fixtures that parametrize the suite over them."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import fresh_postgres_database
from tests.contract.rabbitmq_broker import RABBITMQ_URL, throwaway_prefix
from tests.moto_server import delete_sqs_queues, moto_endpoint

from postroom.queue.base import QueueBackend
from postroom.queue.rabbitmq import RabbitMqQueue
from postroom.queue.sql import SqlQueue
from postroom.queue.sqs import SqsQueue
from postroom.store.database import Database, open_database
from postroom.store.migrate import upgrade


@dataclass(frozen=True)
class QueueHarness:
    """Opens handles on one shared queue (like separate workers) and says how short a lease the
    backend honours: lease tests sleep real time so that they also run against real brokers."""

    open: Callable[..., Awaitable[QueueBackend]]  # keyword options, e.g. max_deliveries
    short_lease: float


def _sql_harness(db: Database) -> QueueHarness:
    async def open_queue(*, max_deliveries: int = 10) -> QueueBackend:
        return SqlQueue(db, max_deliveries=max_deliveries)

    return QueueHarness(open=open_queue, short_lease=0.2)


@asynccontextmanager
async def _sql_sqlite(tmp_path: Path) -> AsyncIterator[QueueHarness]:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    upgrade(url)
    db = open_database(url)
    try:
        yield _sql_harness(db)
    finally:
        await db.dispose()


@asynccontextmanager
async def _sql_postgresql(_tmp_path: Path) -> AsyncIterator[QueueHarness]:
    with fresh_postgres_database() as url:
        upgrade(url)
        db = open_database(url)
        try:
            yield _sql_harness(db)
        finally:
            await db.dispose()


# The wait tiers the RabbitMQ harness declares: the short lease (retries in tests wait that
# long), and a 1 s and a 30 s tier.
RABBITMQ_SHORT_LEASE = 0.25
RABBITMQ_TIERS = (RABBITMQ_SHORT_LEASE, 1.0, 30.0)


@asynccontextmanager
async def _rabbitmq(_tmp_path: Path) -> AsyncIterator[QueueHarness]:
    async with throwaway_prefix(RABBITMQ_TIERS) as prefix:

        async def open_queue(*, max_deliveries: int = 10) -> QueueBackend:
            return RabbitMqQueue(
                RABBITMQ_URL,
                prefix=prefix,
                max_deliveries=max_deliveries,
                wait_tiers=RABBITMQ_TIERS,
            )

        yield QueueHarness(open=open_queue, short_lease=RABBITMQ_SHORT_LEASE)


SQS_SHORT_LEASE = 1.0  # visibility timeouts are whole seconds


@asynccontextmanager
async def _sqs(_tmp_path: Path) -> AsyncIterator[QueueHarness]:
    endpoint = moto_endpoint()
    prefix = f"postroom-test-{secrets.token_hex(4)}"

    async def open_queue(*, max_deliveries: int = 10) -> QueueBackend:
        return SqsQueue(
            region="us-east-1",
            prefix=prefix,
            endpoint_url=endpoint,
            max_deliveries=max_deliveries,
            dlq_wait_seconds=0,  # moto answers every receive from the whole queue
        )

    try:
        yield QueueHarness(open=open_queue, short_lease=SQS_SHORT_LEASE)
    finally:
        await delete_sqs_queues(endpoint, prefix)


# Each factory sets up an empty queue and tears it down when the context exits.
QUEUE_BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[QueueHarness]]] = {
    "sql-sqlite": _sql_sqlite,
    "sql-postgresql": _sql_postgresql,
    "rabbitmq": _rabbitmq,
    "sqs": _sqs,
}


@pytest.fixture(params=list(QUEUE_BACKENDS))
async def queue_harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[QueueHarness]:
    opened: list[QueueBackend] = []
    async with QUEUE_BACKENDS[request.param](tmp_path) as harness:

        async def open_tracked(**options: object) -> QueueBackend:
            queue = await harness.open(**options)
            opened.append(queue)
            return queue

        try:
            yield QueueHarness(open=open_tracked, short_lease=harness.short_lease)
        finally:
            for queue in opened:
                await queue.close()


@pytest.fixture
async def queue_backend(queue_harness: QueueHarness) -> QueueBackend:
    return await queue_harness.open()
