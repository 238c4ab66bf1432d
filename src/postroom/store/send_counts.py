"""Per-day counters against daily caps (the warm-up schedule's), shared by every worker."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from postroom.store.database import Database
from postroom.store.schema import send_counts

_c = send_counts.c
_KEY = (_c.day == bindparam("b_day")) & (_c.counter == bindparam("b_counter"))
# FOR UPDATE holds the row on PostgreSQL until the transaction ends, so two workers taking
# from one cap at once are serialized (SQLite's write lock already does that).
_CURRENT = select(_c.count).where(_KEY).with_for_update()
_ADD = update(send_counts).where(_KEY).values(count=_c.count + bindparam("b_taken"))
_CREATE = {
    "postgresql": postgresql.insert(send_counts).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(send_counts).on_conflict_do_nothing(),
}


class SendCounts:
    def __init__(self, db: Database) -> None:
        self._db = db

    def take_within(self, conn: Connection, counter: str, day: date, wanted: int, cap: int) -> int:
        """Take up to ``wanted`` from today's ``cap``; returns how many were granted."""
        if wanted <= 0:
            return 0
        key = {"b_day": day.isoformat(), "b_counter": counter}
        conn.execute(
            _CREATE[conn.dialect.name], {"day": key["b_day"], "counter": counter, "count": 0}
        )
        used = int(conn.execute(_CURRENT, key).scalar_one())
        granted = max(0, min(wanted, cap - used))
        if granted:
            conn.execute(_ADD, key | {"b_taken": granted})
        return granted

    async def used(self, counter: str, day: date) -> int:
        query = select(_c.count).where(_c.day == day.isoformat(), _c.counter == counter)

        def work(conn: Connection) -> int:
            return int(conn.execute(query).scalar() or 0)

        return await self._db.read(work)
