"""Storing webhook events: one row per event, once (see ``feedback.py``).

``events.dedupe_key`` is the content hash and ``events.event_key`` a hash of the ESP's event
id; both are unique and inserts skip conflicts, so the keys that come back name the events
that are new (fresh), the only ones whose rules run.

Both keys are stored as 16 bytes (the first 128 bits of their SHA-256): each is a random
position in a unique index, and on SQLite the 64-character hex form made each insert cost
about 20 µs more (an index three times the size, more pages split and written per commit).
128 bits keep collisions out of reach (~10⁻²¹ for a billion events).
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from postroom.store import feedback_sqlite as sqlite_sql
from postroom.store.feedback_binding import BoundSend
from postroom.store.feedback_campaigns import CAMPAIGN_SEND_ID_KEY
from postroom.store.schema import events
from postroom.store.sqlite_driver import sqlite_connection, stored_time
from postroom.webhooks.events import NormalizedEvent

# Built once per dialect: building costs more than running on SQLite.
_INSERT_EVENTS = {
    name: dialect.insert(events).on_conflict_do_nothing().returning(events.c.dedupe_key)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


def event_ids(count: int) -> list[str]:
    """ULIDs for one request's events: the time in milliseconds, then 80 fresh random bits
    each (python-ulid takes ~3 µs an id, a fifth of storing an event). Base32 turns 5 bytes
    into 8 characters: the time goes in as 10 bytes whose last 50 bits (2 zero bits, then 48)
    are its 10 characters, the randomness as 10 bytes (16 characters) an id."""
    now = (time.time_ns() // 1_000_000).to_bytes(10, "big")
    stamp = base64.b32encode(now).translate(_CROCKFORD).decode()[6:]
    noise = base64.b32encode(os.urandom(10 * count)).translate(_CROCKFORD).decode()
    return [stamp + noise[16 * i : 16 * (i + 1)] for i in range(count)]


_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)
# The events columns in the order of feedback_sqlite.INSERT_EVENT; received_at is the request's.
_EVENT_COLUMNS = (
    "id",
    "provider",
    "event_type",
    "recipient",
    "send_id",
    "provider_message_id",
    "dedupe_key",
    "event_key",
    "occurred_at",
    "payload",
)


_KEY_HEX = 32  # 16 bytes


def stored_key(content_hash: str) -> bytes:
    """The ``dedupe_key`` stored for an event with this content hash (hex SHA-256)."""
    return bytes.fromhex(content_hash[:_KEY_HEX])


def event_row(
    event_id: str,
    event: NormalizedEvent,
    content_hash: str,
    send: BoundSend | None,
    now: datetime,
) -> tuple[Any, ...]:
    """The event's values in ``_EVENT_COLUMNS`` order."""
    if send is not None and send.campaign_id is not None:
        payload = event.to_dict(content_hash)
        payload[CAMPAIGN_SEND_ID_KEY] = send.id
        encoded = orjson.dumps(payload)
    else:
        encoded = event.to_json(content_hash)
    return (
        event_id,
        event.provider,
        event.type.value,
        event.recipient or (send.recipient if send else ""),
        # events.send_id references the ledger: null for campaign recipients
        send.id if send and send.campaign_id is None else None,
        (event.esp_message_id or "")[:255] or None,
        stored_key(content_hash),
        event_key(event),
        event.occurred_at or now,
        encoded,
    )


def event_key(event: NormalizedEvent) -> bytes | None:
    if not event.esp_event_id:
        return None
    basis = "\x1f".join(
        (event.provider, event.esp_event_id, event.recipient or "", event.type.value)
    )
    return hashlib.sha256(basis.encode()).digest()[: _KEY_HEX // 2]


def insert_events(conn: Connection, rows: list[tuple[Any, ...]], now: datetime) -> set[bytes]:
    """Insert ``rows``, skipping any already stored; the dedupe keys of those inserted."""
    if not rows:
        return set()
    driver = sqlite_connection(conn)
    if driver is None:  # one multi-row INSERT … RETURNING, in a fixed lock order
        ordered = sorted(
            (dict(zip(_EVENT_COLUMNS, row, strict=True)) | {"received_at": now} for row in rows),
            key=lambda row: bytes(row["dedupe_key"]),
        )
        return set(conn.execute(_INSERT_EVENTS[conn.dialect.name], ordered).scalars())
    received_at = stored_time(now)
    times: dict[datetime, str] = {}  # a batch's events often share their second
    values = []
    for row in rows:
        *head, occurred_at, payload = row
        if occurred_at not in times:
            times[occurred_at] = stored_time(occurred_at)
        values.append((*head, times[occurred_at], received_at, payload))
    # One executemany (a statement per row cost ~1 µs more); its row count says whether
    # every row went in, as they nearly always do. When some did not, the rows holding this
    # request's fresh ids are the ones inserted.
    cursor = driver.cursor()
    cursor.executemany(sqlite_sql.INSERT_EVENT, values)
    if cursor.rowcount == len(rows):
        return {row[6] for row in rows}  # the dedupe keys
    ids = orjson.dumps([row[0] for row in rows])
    return {key for (key,) in driver.execute(sqlite_sql.DEDUPE_KEYS_OF, (ids,))}
