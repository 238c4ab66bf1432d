"""The SQL queue's claim query must walk ix_queue_jobs_queue_available_at in order (design §8)."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection
from sqlalchemy.dialects import sqlite

from postroom.messages import Priority
from postroom.queue.sql import SqlQueue
from postroom.queue.sql_statements import claim_select
from postroom.store.database import Database, open_database
from postroom.store.migrate import upgrade

INDEX = "ix_queue_jobs_queue_available_at"
INSERT_JOB = (
    "INSERT INTO queue_jobs (id, queue, body, available_at, attempt, deliveries, created_at)"
    " VALUES (?, ?, ?, ?, 0, 0, ?)"
)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    upgrade(url)
    db = open_database(url)
    try:
        yield db
    finally:
        await db.dispose()


async def claim_plan(db: Database, priority: Priority) -> str:
    """EXPLAIN QUERY PLAN of exactly the statement the backend runs, with its parameters."""
    compiled = claim_select(priority).compile(dialect=sqlite.dialect())
    assert compiled.positiontup is not None
    values = compiled.construct_params({"now": time.time(), "limit": 100})
    params = tuple(values[name] for name in compiled.positiontup)

    def explain(conn: Connection) -> str:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)
        return "\n".join(str(row[-1]) for row in rows)

    return await db.read(explain)


async def fill(db: Database, rows: list[tuple[str, str, bytes, float, float]]) -> None:
    await db.write(lambda conn: conn.exec_driver_sql(INSERT_JOB, rows))


@pytest.mark.parametrize("priority", list(Priority))
async def test_claim_uses_index_without_sorting(db: Database, priority: Priority) -> None:
    plan = await claim_plan(db, priority)

    assert f"USING INDEX {INDEX}" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


async def test_claim_plan_holds_on_a_filled_table(db: Database) -> None:
    now = time.time()
    await fill(db, [(f"j{i}", "marketing", b"x", now - i, now) for i in range(2_000)])

    plan = await claim_plan(db, Priority.MARKETING)

    assert f"USING INDEX {INDEX}" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


async def test_claims_in_order_from_a_large_backlog(db: Database) -> None:
    now = time.time()
    backlog = 100_000
    # Inserted in shuffled order, so rowid order differs from availability order.
    marketing = [
        (f"m{i:06}", "marketing", b"m", now - 1_000 + i * 0.001, now) for i in range(backlog)
    ]
    random.Random(7).shuffle(marketing)
    urgent = [
        ("t1", "transactional", b"t", now - 5, now),
        ("c2", "critical", b"c", now - 1, now),
        ("c1", "critical", b"c", now - 2, now),
        ("c-later", "critical", b"c", now + 3_600, now),  # a retry waiting for its delay
        ("t0", "transactional", b"t", now - 10, now),
    ]
    await fill(db, marketing + urgent)
    queue = SqlQueue(db)

    first = await queue.receive(6, lease_seconds=60)
    assert [d.id for d in first] == ["c1", "c2", "t0", "t1", "m000000", "m000001"]
    second = await queue.receive(1_000, lease_seconds=60)
    assert [d.id for d in second] == [f"m{i:06}" for i in range(2, 1_002)]
    assert await queue.ack(first + second) == 1_006
    assert await queue.depth() == {
        Priority.CRITICAL: 1,
        Priority.TRANSACTIONAL: 0,
        Priority.MARKETING: backlog - 1_002,
    }
