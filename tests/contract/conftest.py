"""Backends the queue contract suite runs against (one factory each in ``QUEUE_BACKENDS``) and
the fixtures that parametrize the suite over them."""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from tests.conftest import require_service

from postroom.queue.base import QueueBackend
from postroom.queue.sql import SqlQueue
from postroom.store.database import Database, open_database
from postroom.store.migrate import upgrade

# Server-level connection (no database): each test creates and drops its own database on it.
POSTGRES_SERVER = os.environ.get("POSTROOM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


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


@functools.cache
def _postgres_reachable() -> bool:
    try:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _postgres_admin(statement: sql.Composed) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(statement)


@asynccontextmanager
async def _sql_postgresql(_tmp_path: Path) -> AsyncIterator[QueueHarness]:
    require_service(_postgres_reachable(), f"PostgreSQL at {POSTGRES_SERVER}")
    name = f"postroom_test_{secrets.token_hex(6)}"
    _postgres_admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = f"{POSTGRES_SERVER.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
        upgrade(url)
        db = open_database(url)
        try:
            yield _sql_harness(db)
        finally:
            await db.dispose()
    finally:
        _postgres_admin(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


# Add "rabbitmq", "sqs" here: each factory sets up an empty queue and tears it
# down when the context exits.
QUEUE_BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[QueueHarness]]] = {
    "sql-sqlite": _sql_sqlite,
    "sql-postgresql": _sql_postgresql,
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
