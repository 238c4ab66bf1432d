"""The send ledger (design §4): the record that turns at-least-once delivery into one send.

Transitions are compare-and-set updates, so two workers holding copies of the same message
cannot both move a row to ``sending``. Each method is one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, String, bindparam, func, select, update

from postroom.errors import IdempotencyConflictError
from postroom.store import ledger_sqlite as sqlite_sql
from postroom.store.database import Database
from postroom.store.ledger_records import (
    FINAL,
    SENDABLE,
    AttemptRecord,
    NewSend,
    Outcome,
    SendRecord,
    SendStatus,
)
from postroom.store.ledger_rows import (
    CHUNK,
    by_keys,
    insert_attempts,
    insert_ignoring_conflicts,
    key_of,
    keys_of,
    new_row,
    outcome_params,
    record_from_row,
)
from postroom.store.ledger_sqlite import RECORD_COLUMNS
from postroom.store.schema import send_attempts, sends
from postroom.store.sqlite_driver import sqlite_connection, stored_time

__all__ = [
    "FINAL",
    "SENDABLE",
    "AttemptRecord",
    "Ledger",
    "NewSend",
    "Outcome",
    "SendRecord",
    "SendStatus",
]

# One statement moves the whole batch; RETURNING says which rows it won.
_BEGIN_SENDING = (
    update(sends)
    .where(
        sends.c.id.in_(bindparam("b_ids", expanding=True)),
        sends.c.status.in_([s.value for s in SENDABLE]),
    )
    .values(
        status=SendStatus.SENDING.value,
        attempts=sends.c.attempts + 1,
        provider=bindparam("b_provider"),
        updated_at=bindparam("b_now"),
    )
    .returning(sends.c.id)
)
_SET_MESSAGE_ID = (
    update(sends)
    .where(sends.c.id == bindparam("b_id"))
    .values(message_id=bindparam("b_message_id"))
)


# Statements are built once: building one costs more than running it on SQLite.
_BY_ID = select(*RECORD_COLUMNS).where(sends.c.id == bindparam("id"))
_OUTCOME = (
    update(sends)
    .where(sends.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        updated_at=bindparam("b_now"),
        last_error=bindparam("b_error"),
        provider=func.coalesce(bindparam("b_provider", type_=String), sends.c.provider),
    )
)
# Any outcome but ``sent`` leaves a final row alone: a worker that outlived its lease must not
# turn a send another worker completed into ``failed`` or ``retry_scheduled``.
# (One comparison per state, not NOT IN: executemany cannot take an expanding list.)
_SET_OUTCOME = _OUTCOME.where(*(sends.c.status != s.value for s in FINAL))
_MARK_AMBIGUOUS = (
    update(sends)
    .where(
        sends.c.id.in_(bindparam("ids", expanding=True)),
        sends.c.status == SendStatus.SENDING.value,
    )
    .values(
        status=SendStatus.AMBIGUOUS.value,
        updated_at=bindparam("b_now"),
        last_error=bindparam("b_error"),
    )
    .returning(sends.c.id)
)
_TOUCH_SENDING = (
    update(sends)
    .where(
        sends.c.id.in_(bindparam("ids", expanding=True)),
        sends.c.status == SendStatus.SENDING.value,
    )
    .values(updated_at=bindparam("b_now"))
)
_SET_SENT = _OUTCOME.values(
    sent_at=bindparam("b_now"), provider_message_id=bindparam("b_provider_message_id")
)


class Ledger:
    """Repository of sends and their attempts."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None):
        self._db = db
        self._now = clock or (lambda: datetime.now(UTC))

    async def create_many(
        self,
        new: Sequence[NewSend],
        *,
        refuse_conflicts: bool = False,
        then: Callable[[Connection, list[tuple[SendRecord, bool]]], None] | None = None,
    ) -> list[tuple[SendRecord, bool]]:
        """Insert rows that do not exist yet; return each row with whether it was created.

        The result follows the order of ``new``; an existing row for the same
        (idempotency key, recipient) is returned as it is. With ``refuse_conflicts``, an
        existing row with different content raises :class:`IdempotencyConflictError` and
        nothing of the batch is written. ``then`` runs in the same transaction with the
        result (the submission service enqueues there when the queue shares the database).
        """
        if not new:
            return []
        now = self._now()
        values = [new_row(n, now) for n in new]

        def work(conn: Connection) -> list[tuple[SendRecord, bool]]:
            insert_ignoring_conflicts(conn, values)
            found = by_keys(conn, keys_of(new))
            result = [(found[(n.idempotency_key, n.recipient)], n) for n in new]
            if refuse_conflicts:
                for record, n in result:
                    if record.content_hash != n.content_hash:
                        # Raising inside the transaction rolls back this batch's inserts.
                        raise IdempotencyConflictError(n.idempotency_key, record.id)
            rows = [(record, record.id == n.id) for record, n in result]
            if then is not None:
                then(conn, rows)
            return rows

        return await self._db.write(work)

    def find_or_create_within(
        self, conn: Connection, new: Sequence[NewSend]
    ) -> list[tuple[SendRecord, bool]]:
        """Each message's row, created when missing (a document published straight onto the
        queue has none yet), with whether it was created; in the caller's transaction."""
        keys = keys_of(new)
        found = by_keys(conn, keys)
        if len(found) < len(set(keys)):
            now = self._now()
            insert_ignoring_conflicts(
                conn, [new_row(n, now) for n in new if key_of(n) not in found]
            )
            found = by_keys(conn, keys)
        return [(found[key_of(n)], found[key_of(n)].id == n.id) for n in new]

    async def get(self, send_id: str) -> SendRecord | None:
        def work(conn: Connection) -> SendRecord | None:
            row = conn.execute(_BY_ID, {"id": send_id}).first()
            return record_from_row(row) if row else None

        return await self._db.read(work)

    async def attempts(self, send_id: str) -> list[AttemptRecord]:
        query = (
            select(send_attempts)
            .where(send_attempts.c.send_id == send_id)
            .order_by(send_attempts.c.id)
        )

        def work(conn: Connection) -> list[AttemptRecord]:
            return [
                AttemptRecord(
                    attempt=r.attempt,
                    outcome=r.outcome,
                    provider=r.provider,
                    provider_message_id=r.provider_message_id,
                    error=r.error,
                    at=r.at,
                )
                for r in conn.execute(query)
            ]

        return await self._db.read(work)

    async def begin_sending(self, claims: Sequence[tuple[str, str]], provider: str) -> set[str]:
        """:meth:`begin_sending_within` in a transaction of its own."""
        return await self._db.write(lambda conn: self.begin_sending_within(conn, claims, provider))

    def begin_sending_within(
        self, conn: Connection, claims: Sequence[tuple[str, str]], provider: str
    ) -> set[str]:
        """Move rows to ``sending`` (written before the provider call); returns the ids moved.

        ``claims`` pairs each send id with the Message-ID it will carry. A row already in
        ``sending`` or in a final state is left alone: someone else holds it or it is done.
        """
        now = self._now()
        message_ids = dict(claims)
        driver = sqlite_connection(conn)
        if driver is not None:
            when = stored_time(now)
            return {
                send_id
                for send_id, message_id in message_ids.items()
                if driver.execute(
                    sqlite_sql.BEGIN_SENDING, (provider, when, message_id, send_id)
                ).fetchall()
            }
        moved: set[str] = set()
        ids = list(message_ids)
        for start in range(0, len(ids), CHUNK):
            params = {"b_ids": ids[start : start + CHUNK], "b_provider": provider, "b_now": now}
            moved.update(conn.execute(_BEGIN_SENDING, params).scalars())
        if moved:
            conn.execute(
                _SET_MESSAGE_ID, [{"b_id": i, "b_message_id": message_ids[i]} for i in moved]
            )
        return moved

    async def note_ambiguous(self, send_ids: Sequence[str], error: str) -> set[str]:
        """:meth:`note_ambiguous_within` in a transaction of its own."""
        return await self._db.write(lambda conn: self.note_ambiguous_within(conn, send_ids, error))

    def note_ambiguous_within(
        self, conn: Connection, send_ids: Sequence[str], error: str
    ) -> set[str]:
        """Mark abandoned ``sending`` rows ambiguous, with an attempt row each; returns the ids
        marked. A row that left ``sending`` meanwhile (its worker was alive and finished) is
        left alone, so a late note can never overwrite ``sent``."""
        if not send_ids:
            return set()
        now = self._now()
        params = {"ids": list(send_ids), "b_now": now, "b_error": error}
        marked = set(conn.execute(_MARK_AMBIGUOUS, params).scalars())
        if marked:
            insert_attempts(
                conn, [Outcome(i, SendStatus.AMBIGUOUS, error=error) for i in marked], now
            )
        return marked

    async def touch_sending(self, send_ids: Sequence[str]) -> None:
        """Refresh ``updated_at`` of rows this worker is still sending, so that they do not
        look abandoned (stale) to another worker while a slow hand-over goes on."""
        if not send_ids:
            return
        params = {"ids": list(send_ids), "b_now": self._now()}
        await self._db.write(lambda conn: conn.execute(_TOUCH_SENDING, params))

    @property
    def db(self) -> Database:
        return self._db

    async def record(
        self, outcomes: Iterable[Outcome], *, then: Callable[[Connection], None] | None = None
    ) -> None:
        """Write the outcome of each attempt and its audit row, in one transaction; ``then``
        runs in the same transaction (the worker settles its queue messages there when the
        queue shares the database)."""
        outcomes = list(outcomes)
        if not outcomes and then is None:
            return
        now = self._now()

        def work(conn: Connection) -> None:
            if then is not None:
                then(conn)
            if not outcomes:
                return
            driver = sqlite_connection(conn)
            for (statement, sql), group in (
                (
                    (_SET_SENT, sqlite_sql.SENT),
                    [o for o in outcomes if o.status is SendStatus.SENT],
                ),
                (
                    (_SET_OUTCOME, sqlite_sql.OUTCOME),
                    [o for o in outcomes if o.status is not SendStatus.SENT],
                ),
            ):
                if not group:
                    continue
                if driver is None:
                    conn.execute(statement, [outcome_params(o, now) for o in group])
                else:
                    when = stored_time(now)
                    driver.executemany(sql, [outcome_params(o, when) for o in group])
            insert_attempts(conn, outcomes, now)

        await self._db.write(work)

    async def count_by_status(self) -> dict[SendStatus, int]:
        query = select(sends.c.status, func.count()).group_by(sends.c.status)

        def work(conn: Connection) -> dict[SendStatus, int]:
            return {SendStatus(status): count for status, count in conn.execute(query)}

        return await self._db.read(work)

    async def count_attempts(self, outcome: SendStatus) -> int:
        """How many attempts ended in ``outcome`` (e.g. how many sends were ambiguous)."""
        query = select(func.count()).where(send_attempts.c.outcome == outcome.value)

        def work(conn: Connection) -> int:
            return int(conn.execute(query).scalar_one())

        return await self._db.read(work)

    def is_stale(self, record: SendRecord, lease_seconds: float) -> bool:
        """A ``sending`` row older than a lease belongs to a worker that is gone."""
        return self._now() - record.updated_at > timedelta(seconds=lease_seconds)
