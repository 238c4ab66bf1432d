"""The SQL queue backend: jobs in ``queue_jobs`` on SQLite or PostgreSQL, leased in place.

A leased job keeps its row with ``available_at`` pushed to the end of the lease, so one index,
(queue, available_at), serves claims, lease expiry and delayed retries alike.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    Float,
    Integer,
    Row,
    Select,
    String,
    Table,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.errors import ConfigurationError
from postroom.messages import Priority
from postroom.queue.base import DeadLetter, Delivery, OutgoingMessage
from postroom.store.schema import dead_letters, queue_jobs

_CLASSES = sorted(Priority, key=lambda priority: priority.rank)
# Well under SQLite's bound-parameter limit (32,766) for IN lists.
_CHUNK = 500
_POISON_REASON = "delivery limit reached: handed out {} times without an outcome"
_jobs = queue_jobs.c
_dead = dead_letters.c


@functools.cache
def claim_select(queue: Priority, *, skip_locked: bool = False) -> Select[Any]:
    """Ready jobs of one class, oldest first: the statement :meth:`SqlQueue.receive` runs, with
    parameters ``now`` and ``limit`` (built once: statement construction costs as much as the
    query itself).

    ORDER BY must be exactly the index order (queue, available_at): anything else makes SQLite
    sort the whole backlog on every claim (6 claims/s instead of 5.5k/s on 1M rows).
    """
    statement = (
        select(_jobs.id, _jobs.body, _jobs.attempt, _jobs.deliveries)
        .where(_jobs.queue == queue.value, _jobs.available_at <= bindparam("now", type_=Float))
        .order_by(_jobs.available_at)
        .limit(bindparam("limit", type_=Integer))
    )
    if skip_locked:
        # PostgreSQL: concurrent receivers pass over each other's rows instead of waiting.
        statement = statement.with_for_update(skip_locked=True)
    return statement


_LEASE = (
    update(queue_jobs)
    .where(_jobs.id.in_(bindparam("ids", expanding=True)))
    .values(
        available_at=bindparam("until", type_=Float),
        deliveries=_jobs.deliveries + 1,
        receipt=bindparam("new_receipt", type_=String),
    )
)
_ACK = delete(queue_jobs).where(
    _jobs.receipt == bindparam("held_receipt", type_=String),
    _jobs.id.in_(bindparam("ids", expanding=True)),
)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class SqlQueue:
    """:class:`~postroom.queue.base.QueueBackend` on the store's database (the default queue)."""

    deduplicates_enqueue: ClassVar[bool] = True

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_deliveries: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(f"the SQL queue supports sqlite and postgresql, not {dialect}")
        self._engine = engine
        self._postgres = dialect == "postgresql"
        self._max_deliveries = max_deliveries
        self._clock = clock

    def _insert(self, table: Table) -> sqlite.Insert | postgresql.Insert:
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    async def enqueue(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        now = self._clock()
        rows = [
            {
                "id": m.id,
                "queue": m.priority.value,
                "body": m.body,
                "available_at": now,
                "attempt": 0,
                "deliveries": 0,
                "created_at": now,
            }
            for m in messages
        ]
        statement = self._insert(queue_jobs).on_conflict_do_nothing(index_elements=["id"])
        async with self._engine.begin() as conn:
            await conn.execute(statement, rows)

    async def receive(self, max_messages: int, lease_seconds: float) -> list[Delivery]:
        now = self._clock()
        # One receipt per claim: the whole batch is leased by one UPDATE, and (id, receipt)
        # still tells this lease from any later one.
        receipt = secrets.token_hex(16)
        claimed: list[Delivery] = []
        async with self._engine.begin() as conn:
            for priority in _CLASSES:
                while len(claimed) < max_messages:
                    wanted = max_messages - len(claimed)
                    statement = claim_select(priority, skip_locked=self._postgres)
                    rows = (await conn.execute(statement, {"now": now, "limit": wanted})).all()
                    poison = [row for row in rows if row.deliveries >= self._max_deliveries]
                    ready = [row for row in rows if row.deliveries < self._max_deliveries]
                    await self._lease(conn, ready, now + lease_seconds, receipt)
                    claimed += [_delivery(row, priority, receipt) for row in ready]
                    await self._bury_poison(conn, poison, priority, now)
                    # Buried rows made room: look again, unless the class ran dry.
                    if not poison or len(rows) < wanted:
                        break
        return claimed

    async def _lease(
        self, conn: AsyncConnection, rows: Sequence[Row[Any]], until: float, receipt: str
    ) -> None:
        if not rows:
            return
        ids = [row.id for row in rows]
        await conn.execute(_LEASE, {"ids": ids, "until": until, "new_receipt": receipt})

    async def _bury_poison(
        self, conn: AsyncConnection, rows: Sequence[Row[Any]], priority: Priority, now: float
    ) -> None:
        # A job handed out this often without ack, retry or dead-letter keeps crashing workers.
        if not rows:
            return
        dead_at = datetime.fromtimestamp(now, UTC)
        letters = [
            {
                "id": row.id,
                "queue": priority.value,
                "body": row.body,
                "attempt": row.attempt,
                "reason": _POISON_REASON.format(row.deliveries),
                "dead_at": dead_at,
            }
            for row in rows
        ]
        await conn.execute(self._dead_letter_upsert(), letters)
        await conn.execute(delete(queue_jobs).where(_jobs.id.in_([row.id for row in rows])))

    def _dead_letter_upsert(self) -> Any:
        statement = self._insert(dead_letters)
        replaced = ("queue", "body", "reason", "attempt", "dead_at")
        return statement.on_conflict_do_update(
            index_elements=["id"], set_={name: statement.excluded[name] for name in replaced}
        )

    async def ack(self, deliveries: Sequence[Delivery]) -> int:
        ids_by_receipt: dict[str, list[str]] = defaultdict(list)
        for delivery in deliveries:
            ids_by_receipt[delivery.receipt].append(delivery.id)
        removed = 0
        async with self._engine.begin() as conn:
            for receipt, ids in ids_by_receipt.items():
                for chunk in _chunks(ids):
                    result = await conn.execute(_ACK, {"held_receipt": receipt, "ids": chunk})
                    removed += result.rowcount
        return removed

    async def retry(self, delivery: Delivery, delay_seconds: float, error: str) -> bool:
        return await self._give_back(
            delivery, delay_seconds, attempt=_jobs.attempt + 1, last_error=error
        )

    async def release(self, delivery: Delivery, delay_seconds: float = 0.0) -> bool:
        # Not a failed delivery: undo the hand-out so it does not count towards poison.
        return await self._give_back(delivery, delay_seconds, deliveries=_jobs.deliveries - 1)

    async def _give_back(self, delivery: Delivery, delay_seconds: float, **values: Any) -> bool:
        statement = (
            update(queue_jobs)
            .where(_jobs.id == delivery.id, _jobs.receipt == delivery.receipt)
            .values(available_at=self._clock() + delay_seconds, receipt=None, **values)
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        letter = {
            "id": delivery.id,
            "queue": delivery.priority.value,
            "body": delivery.body,
            "reason": reason,
            "attempt": delivery.attempt,
            "dead_at": datetime.fromtimestamp(self._clock(), UTC),
        }
        async with self._engine.begin() as conn:
            removed = await conn.execute(
                delete(queue_jobs).where(_jobs.id == delivery.id, _jobs.receipt == delivery.receipt)
            )
            if removed.rowcount != 1:
                return False
            await conn.execute(self._dead_letter_upsert(), [letter])
        return True

    async def dlq_list(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        # ORDER BY dead_at alone matches ix_dead_letters_dead_at (ties fall in insertion order).
        statement = select(dead_letters).order_by(_dead.dead_at).limit(limit).offset(offset)
        async with self._engine.begin() as conn:
            return [_dead_letter(row) for row in await conn.execute(statement)]

    async def dlq_get(self, message_id: str) -> DeadLetter | None:
        async with self._engine.begin() as conn:
            row = (await conn.execute(select(dead_letters).where(_dead.id == message_id))).first()
        return None if row is None else _dead_letter(row)

    async def dlq_replay(self, message_ids: Sequence[str] | None = None) -> int:
        now = self._clock()
        # A job with the same id already queued wins (idempotent enqueue); the letter still goes.
        requeue = self._insert(queue_jobs).on_conflict_do_nothing(index_elements=["id"])
        replayed = 0
        async with self._engine.begin() as conn:
            for ids in await self._dead_letter_ids(conn, message_ids):
                query = select(dead_letters).where(_dead.id.in_(ids)).order_by(_dead.dead_at)
                rows = (await conn.execute(query)).all()
                jobs = [
                    {
                        "id": row.id,
                        "queue": row.queue,
                        "body": row.body,
                        "available_at": now,
                        "attempt": 0,
                        "deliveries": 0,
                        "receipt": None,
                        "created_at": now,
                    }
                    for row in rows
                ]
                if jobs:
                    await conn.execute(requeue, jobs)
                    await conn.execute(delete(dead_letters).where(_dead.id.in_(ids)))
                replayed += len(jobs)
        return replayed

    async def dlq_purge(self, message_ids: Sequence[str] | None = None) -> int:
        purged = 0
        async with self._engine.begin() as conn:
            for ids in await self._dead_letter_ids(conn, message_ids):
                purged += (
                    await conn.execute(delete(dead_letters).where(_dead.id.in_(ids)))
                ).rowcount
        return purged

    async def _dead_letter_ids(
        self, conn: AsyncConnection, message_ids: Sequence[str] | None
    ) -> list[Sequence[str]]:
        """The ids to act on, oldest first, in chunks that fit an IN list (None means all)."""
        if message_ids is None:
            found = await conn.execute(select(_dead.id).order_by(_dead.dead_at))
            message_ids = list(found.scalars())
        return list(_chunks(list(dict.fromkeys(message_ids))))

    async def depth(self) -> dict[Priority, int]:
        counts = dict.fromkeys(Priority, 0)
        statement = select(_jobs.queue, func.count()).group_by(_jobs.queue)
        async with self._engine.begin() as conn:
            for queue, count in await conn.execute(statement):
                counts[Priority(queue)] = count
        return counts

    async def close(self) -> None:
        """Nothing to release: the engine belongs to whoever created it (shared with the store)."""


def _delivery(row: Row[Any], priority: Priority, receipt: str) -> Delivery:
    return Delivery(
        id=row.id,
        priority=priority,
        body=row.body,
        attempt=row.attempt,
        deliveries=row.deliveries + 1,
        receipt=receipt,
    )


def _dead_letter(row: Row[Any]) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        priority=Priority(row.queue),
        body=row.body,
        reason=row.reason,
        attempt=row.attempt,
        dead_at=row.dead_at,
    )
