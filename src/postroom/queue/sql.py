"""The SQL queue backend: jobs in ``queue_jobs`` on SQLite or PostgreSQL, leased in place.

A leased job keeps its row with ``available_at`` pushed to the end of the lease, so one index,
(queue, available_at), serves claims, lease expiry and delayed retries alike.

Every public method is one transaction: one ``Database.write`` or ``Database.read`` call whose
synchronous function runs all of its statements (see ``postroom.store.database`` for why a
hop per transaction, not per statement).
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    Connection,
    Row,
    Update,
)

from postroom.errors import ConfigurationError
from postroom.messages import Priority
from postroom.queue import sql_statements as q
from postroom.queue.base import Backlog, DeadLetter, Delivery, OutgoingMessage
from postroom.store.database import Database
from postroom.store.sqlite_driver import sqlite_connection


class SqlQueue:
    """:class:`~postroom.queue.base.QueueBackend` on the store's database (the default queue)."""

    deduplicates_enqueue: ClassVar[bool] = True

    def __init__(
        self,
        db: Database,
        *,
        max_deliveries: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if db.dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"the SQL queue supports sqlite and postgresql, not {db.dialect}"
            )
        self._db = db
        self._sql = q.DialectStatements(db.dialect == "postgresql")
        self._max_deliveries = max_deliveries
        self._clock = clock

    async def enqueue(self, messages: Sequence[OutgoingMessage]) -> None:
        if messages:
            await self._db.write(lambda conn: self.enqueue_within(conn, messages))

    def enqueue_within(self, conn: Connection, messages: Sequence[OutgoingMessage]) -> None:
        """Enqueue inside a transaction the caller runs on the same database, so that the
        caller's rows (the ledger's) and the jobs commit or roll back together."""
        if messages:
            now = self._clock()
            rows = [_job(m.id, m.priority.value, m.body, now) for m in messages]
            driver = sqlite_connection(conn)
            if driver is None:
                conn.execute(self._sql.enqueue, rows)
            else:
                driver.executemany(q.SQLITE_ENQUEUE, rows)

    def shares(self, db: object) -> bool:
        """Whether this queue lives in ``db``, so :meth:`enqueue_within` can join its
        transactions."""
        return db is self._db

    async def receive(self, max_messages: int, lease_seconds: float) -> list[Delivery]:
        now = self._clock()
        return await self._db.write(
            lambda conn: self._claim(conn, max_messages, now, now + lease_seconds)
        )

    def _claim(
        self, conn: Connection, max_messages: int, now: float, until: float
    ) -> list[Delivery]:
        # One receipt per claim: the whole batch is leased by one UPDATE, and (id, receipt)
        # still tells this lease from any later one.
        receipt = secrets.token_hex(16)
        claimed: list[Delivery] = []
        driver = sqlite_connection(conn)
        for priority, statement in self._sql.claims:
            while len(claimed) < max_messages:
                wanted = max_messages - len(claimed)
                rows: Sequence[Row[Any] | q.JobRow]
                if driver is None:
                    rows = conn.execute(statement, {"now": now, "limit": wanted}).all()
                else:
                    found = driver.execute(q.SQLITE_CLAIM, (priority.value, now, wanted))
                    rows = [q.JobRow._make(values) for values in found]
                poison = [row for row in rows if row.deliveries >= self._max_deliveries]
                ready = [row for row in rows if row.deliveries < self._max_deliveries]
                if ready and driver is None:
                    ids = [row.id for row in ready]
                    conn.execute(q.LEASE, {"ids": ids, "until": until, "new_receipt": receipt})
                elif ready and driver is not None:
                    driver.executemany(q.SQLITE_LEASE, [(until, receipt, r.id) for r in ready])
                claimed += [_delivery(row, priority, receipt) for row in ready]
                self._bury_poison(conn, poison, priority, now)
                # Buried rows made room: look again, unless the class ran dry.
                if not poison or len(rows) < wanted:
                    break
        return claimed

    def _bury_poison(
        self,
        conn: Connection,
        rows: Sequence[Row[Any] | q.JobRow],
        priority: Priority,
        now: float,
    ) -> None:
        # A job handed out this often without ack, retry or dead-letter keeps crashing workers.
        if not rows:
            return
        dead_at = datetime.fromtimestamp(now, UTC)
        letters = [
            _letter(row.id, priority.value, row.body, row.attempt, dead_at)
            | {"reason": q.POISON_REASON.format(row.deliveries)}
            for row in rows
        ]
        conn.execute(self._sql.dead_letter, letters)
        conn.execute(q.DELETE_JOBS, {"ids": [row.id for row in rows]})

    async def ack(self, deliveries: Sequence[Delivery]) -> int:
        if not deliveries:
            return 0
        return await self._db.write(lambda conn: self.ack_within(conn, deliveries))

    async def extend(self, deliveries: Sequence[Delivery], lease_seconds: float) -> int:
        if not deliveries:
            return 0
        until = self._clock() + lease_seconds
        params = [_held(d) | {"until": until} for d in deliveries]

        def work(conn: Connection) -> int:
            # One statement per row: executemany's rowcount is not reliable on every driver.
            return sum(conn.execute(q.EXTEND, p).rowcount for p in params)

        return await self._db.write(work)

    async def retry(self, delivery: Delivery, delay_seconds: float, error: str) -> bool:
        return await self._db.write(
            lambda conn: self.retry_within(conn, delivery, delay_seconds, error)
        )

    async def release(self, delivery: Delivery, delay_seconds: float = 0.0) -> bool:
        return await self._db.write(lambda conn: self.release_within(conn, delivery, delay_seconds))

    async def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        return await self._db.write(lambda conn: self.dead_letter_within(conn, delivery, reason))

    # The ``*_within`` forms run inside a transaction the caller holds on the same database
    # (see :meth:`shares`), so that the ledger's outcome and the queue's settlement commit
    # together: no window in which a sent message is still leased, or the reverse.

    def ack_within(self, conn: Connection, deliveries: Sequence[Delivery]) -> int:
        driver = sqlite_connection(conn)
        if driver is not None:
            return sum(driver.execute(q.SQLITE_ACK, (d.id, d.receipt)).rowcount for d in deliveries)
        ids_by_receipt: dict[str, list[str]] = defaultdict(list)
        for delivery in deliveries:
            ids_by_receipt[delivery.receipt].append(delivery.id)
        return sum(
            conn.execute(q.ACK, {"held_receipt": receipt, "ids": chunk}).rowcount
            for receipt, ids in ids_by_receipt.items()
            for chunk in q.chunks(ids)
        )

    def retry_within(
        self, conn: Connection, delivery: Delivery, delay_seconds: float, error: str
    ) -> bool:
        return self._give_back(conn, q.RETRY, delivery, delay_seconds, error=error)

    def release_within(
        self, conn: Connection, delivery: Delivery, delay_seconds: float = 0.0
    ) -> bool:
        return self._give_back(conn, q.RELEASE, delivery, delay_seconds)

    def _give_back(
        self,
        conn: Connection,
        statement: Update,
        delivery: Delivery,
        delay_seconds: float,
        **params: Any,
    ) -> bool:
        params |= _held(delivery) | {"until": self._clock() + delay_seconds}
        return bool(conn.execute(statement, params).rowcount == 1)

    def dead_letter_within(self, conn: Connection, delivery: Delivery, reason: str) -> bool:
        dead_at = datetime.fromtimestamp(self._clock(), UTC)
        letter = _letter(
            delivery.id, delivery.priority.value, delivery.body, delivery.attempt, dead_at
        ) | {"reason": reason}
        if conn.execute(q.DELETE_HELD, _held(delivery)).rowcount != 1:
            return False
        conn.execute(self._sql.dead_letter, [letter])
        return True

    async def dlq_list(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        params = {"limit": limit, "offset": offset}
        rows = await self._db.read(lambda conn: conn.execute(q.LETTER_PAGE, params).all())
        return [_dead_letter(row) for row in rows]

    async def dlq_get(self, message_id: str) -> DeadLetter | None:
        params = {"letter_id": message_id}
        row = await self._db.read(lambda conn: conn.execute(q.LETTER, params).first())
        return None if row is None else _dead_letter(row)

    async def dlq_replay(self, message_ids: Sequence[str] | None = None) -> int:
        now = self._clock()
        return await self._db.write(lambda conn: self._replay(conn, message_ids, now))

    def _replay(self, conn: Connection, message_ids: Sequence[str] | None, now: float) -> int:
        # A job with the same id already queued wins (idempotent enqueue); the letter still goes.
        replayed = 0
        for ids in _dead_letter_ids(conn, message_ids):
            rows = conn.execute(q.LETTERS, {"ids": ids}).all()
            if rows:
                jobs = [_job(row.id, row.queue, row.body, now) for row in rows]
                conn.execute(self._sql.enqueue, jobs)
                conn.execute(q.DELETE_LETTERS, {"ids": ids})
            replayed += len(rows)
        return replayed

    async def dlq_purge(self, message_ids: Sequence[str] | None = None) -> int:
        def purge(conn: Connection) -> int:
            return sum(
                conn.execute(q.DELETE_LETTERS, {"ids": ids}).rowcount
                for ids in _dead_letter_ids(conn, message_ids)
            )

        return await self._db.write(purge)

    async def depth(self) -> dict[Priority, int]:
        rows = await self._db.read(lambda conn: conn.execute(q.DEPTH).all())
        counts = dict.fromkeys(Priority, 0)
        counts.update((Priority(queue), count) for queue, count in rows)
        return counts

    async def backlog(self) -> Backlog:
        now = self._clock()

        def work(conn: Connection) -> Backlog:
            ages = {}
            for priority in Priority:
                earliest = conn.execute(q.EARLIEST, {"class_name": priority.value}).scalar()
                ages[priority] = max(0.0, now - earliest) if earliest is not None else 0.0
            dead = int(conn.execute(q.DEAD_COUNT).scalar_one())
            return Backlog(oldest_age=ages, dead_letters=dead)

        return await self._db.read(work)

    async def close(self) -> None:
        """Nothing to release: the database belongs to whoever opened it (shared with the store)."""


def _dead_letter_ids(conn: Connection, message_ids: Sequence[str] | None) -> list[Sequence[str]]:
    """The ids to act on, oldest first, in chunks that fit an IN list (None means all)."""
    if message_ids is None:
        message_ids = list(conn.execute(q.LETTER_IDS).scalars())
    return list(q.chunks(list(dict.fromkeys(message_ids))))


def _held(delivery: Delivery) -> dict[str, Any]:
    return {"job_id": delivery.id, "held_receipt": delivery.receipt}


def _job(job_id: str, queue: str, body: bytes, now: float) -> dict[str, Any]:
    # Every key on every row, so that one executemany serves enqueue and replay alike.
    return {
        "id": job_id,
        "queue": queue,
        "body": body,
        "available_at": now,
        "attempt": 0,
        "deliveries": 0,
        "receipt": None,
        "created_at": now,
    }


def _letter(
    letter_id: str, queue: str, body: bytes, attempt: int, dead_at: datetime
) -> dict[str, Any]:
    return {"id": letter_id, "queue": queue, "body": body, "attempt": attempt, "dead_at": dead_at}


def _delivery(row: Row[Any] | q.JobRow, priority: Priority, receipt: str) -> Delivery:
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
