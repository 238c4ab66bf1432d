"""The send ledger's row work shared by its methods: new rows inserted unless their
(idempotency key, recipient) exists, rows read back by that key, outcome parameters, and the
numbered audit row of each outcome.

Each goes through the stdlib SQLite driver when the connection has one (its SQL is in
``store.ledger_sqlite``) and through Core statements otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from postroom.store import ledger_sqlite as sqlite_sql
from postroom.store.ledger_records import NewSend, Outcome, SendRecord, SendStatus
from postroom.store.ledger_sqlite import RECORD_COLUMNS
from postroom.store.schema import send_attempts, sends
from postroom.store.sqlite_driver import sqlite_connection, stored_time

CHUNK = 400  # rows per IN list: well under SQLite's bound-parameter limit

# Statements are built once: building one costs more than running it on SQLite.
_BY_KEYS = select(*RECORD_COLUMNS).where(
    tuple_(sends.c.idempotency_key, sends.c.recipient).in_(bindparam("keys", expanding=True))
)
_ATTEMPT_NUMBERS = select(sends.c.id, sends.c.attempts).where(
    sends.c.id.in_(bindparam("ids", expanding=True))
)
_INSERT_ATTEMPTS = insert(send_attempts)
_INSERT_IGNORING_CONFLICTS = {
    "postgresql": postgresql.insert(sends).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(sends).on_conflict_do_nothing(),
}


def record_from_row(row: Row[Any]) -> SendRecord:
    m = row._mapping
    return SendRecord(
        **{c.name: m[c.name] for c in RECORD_COLUMNS if c.name != "status"},
        status=SendStatus(m["status"]),
    )


def by_keys(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], SendRecord]:
    found: dict[tuple[str, str], SendRecord] = {}
    driver = sqlite_connection(conn)
    if driver is not None:
        for key in dict.fromkeys(keys):
            values = driver.execute(sqlite_sql.BY_KEY, key).fetchone()
            if values is not None:
                found[key] = sqlite_sql.record_from_driver(values)
        return found
    for start in range(0, len(keys), CHUNK):
        for row in conn.execute(_BY_KEYS, {"keys": list(keys[start : start + CHUNK])}):
            record = record_from_row(row)
            found[(record.idempotency_key, record.recipient)] = record
    return found


def insert_attempts(conn: Connection, outcomes: Sequence[Outcome], now: datetime) -> None:
    """An audit row per outcome, numbered by the send's attempt counter."""
    driver = sqlite_connection(conn)
    if driver is not None:
        when = stored_time(now)
        rows = []
        for o in outcomes:
            number = driver.execute(sqlite_sql.ATTEMPT_NUMBER, (o.send_id,)).fetchone()
            rows.append(_attempt_row(o, number[0] if number else 0, when))
        driver.executemany(sqlite_sql.INSERT_ATTEMPT, rows)
        return
    ids = [o.send_id for o in outcomes]
    attempts = {row.id: row.attempts for row in conn.execute(_ATTEMPT_NUMBERS, {"ids": ids})}
    conn.execute(
        _INSERT_ATTEMPTS, [_attempt_row(o, attempts.get(o.send_id, 0), now) for o in outcomes]
    )


def _attempt_row(outcome: Outcome, attempt: int, at: datetime | str) -> dict[str, Any]:
    return {
        "send_id": outcome.send_id,
        "attempt": attempt,
        "outcome": outcome.status.value,
        "provider": outcome.provider,
        "provider_message_id": outcome.provider_message_id,
        "error": outcome.error,
        "at": at,
    }


def new_row(new: NewSend, now: datetime) -> dict[str, Any]:
    return {
        "id": new.id,
        "idempotency_key": new.idempotency_key,
        "recipient": new.recipient,
        "email_type": new.email_type,
        "priority": new.priority,
        "status": SendStatus.QUEUED.value,
        "attempts": 0,
        "document": new.document,
        "content_hash": new.content_hash,
        "created_at": now,
        "updated_at": now,
    }


def key_of(new: NewSend) -> tuple[str, str]:
    return (new.idempotency_key, new.recipient)


def keys_of(new: Sequence[NewSend]) -> list[tuple[str, str]]:
    return [key_of(n) for n in new]


def outcome_params(outcome: Outcome, now: datetime | str) -> dict[str, Any]:
    return {
        "b_id": outcome.send_id,
        "b_status": outcome.status.value,
        "b_now": now,
        "b_error": outcome.error,
        "b_provider": outcome.provider,
        "b_provider_message_id": outcome.provider_message_id,
    }


def insert_ignoring_conflicts(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    driver = sqlite_connection(conn)
    if driver is None:
        conn.execute(_INSERT_IGNORING_CONFLICTS[conn.dialect.name], rows)
        return
    driver.executemany(
        sqlite_sql.INSERT,
        [r | {key: stored_time(r[key]) for key in ("created_at", "updated_at")} for r in rows],
    )
