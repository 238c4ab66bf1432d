"""Group commits on SQLite: concurrent requests share one transaction, each answered after
its COMMIT; a failing request rolls back alone; a cancelled group cancels its callers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from postroom.store.database import Database, SqliteDatabase
from postroom.store.feedback_group import GroupCommit


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(f"sqlite:///{tmp_path / 'group.db'}")
    await database.write(lambda conn: conn.execute(text("CREATE TABLE seen (n INTEGER)")))
    try:
        yield database
    finally:
        await database.dispose()


def insert(conn: Connection, n: int) -> int:
    conn.execute(text("INSERT INTO seen (n) VALUES (:n)"), {"n": n})
    if n < 0:
        raise ValueError(n)
    return n * 10


async def test_concurrent_requests_share_a_commit_and_fail_alone(db: SqliteDatabase) -> None:
    writes = 0
    write = db.write

    async def counted(work: Any) -> Any:
        nonlocal writes
        writes += 1
        return await write(work)

    db.write = counted  # type: ignore[method-assign]
    group: GroupCommit[int, int] = GroupCommit(db, insert, size=lambda n: 1)
    outcomes = await asyncio.gather(*(group.run(n) for n in (1, 2, -3, 4)), return_exceptions=True)
    assert outcomes[:2] == [10, 20] and outcomes[3] == 40
    assert isinstance(outcomes[2], ValueError)
    assert writes == 1
    rows = await db.read(lambda conn: conn.execute(text("SELECT n FROM seen ORDER BY n")).all())
    assert [r.n for r in rows] == [1, 2, 4]


async def test_groups_stop_at_their_size(db: SqliteDatabase) -> None:
    group: GroupCommit[int, int] = GroupCommit(db, insert, size=lambda n: 1, max_size=2)
    writes = 0
    write = db.write

    async def counted(work: Any) -> Any:
        nonlocal writes
        writes += 1
        return await write(work)

    db.write = counted  # type: ignore[method-assign]
    assert await asyncio.gather(*(group.run(n) for n in range(5))) == [0, 10, 20, 30, 40]
    assert writes == 3


class _Stuck(Database):
    """A database whose transactions never end."""

    dialect = "sqlite"

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def write(self, work: Any) -> Any:
        self.entered.set()
        await asyncio.Event().wait()


async def test_callers_of_a_cancelled_group_are_cancelled_not_left_waiting() -> None:
    db = _Stuck()
    group: GroupCommit[int, int] = GroupCommit(db, insert, size=lambda n: 1, max_size=2)
    callers = [asyncio.create_task(group.run(n)) for n in range(3)]  # a group of 2, 1 pending
    await db.entered.wait()
    flusher = group._flusher
    assert flusher is not None
    flusher.cancel()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
