"""Migration 0007 on a database holding webhook events stored under 64-character hex keys:
the keys become 16 bytes, and each event is still recognised when its ESP sends it again,
by its content (SendGrid's new-id re-sends) or by its own id; a downgrade writes them back as
hex (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, text
from tests.conftest import fresh_postgres_database

from postroom.store.database import open_database
from postroom.store.feedback import FeedbackStore
from postroom.store.migrate import alembic_config, upgrade
from postroom.store.suppressions import Suppressions
from postroom.webhooks.events import FeedbackType, NormalizedEvent

AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
OPENED = NormalizedEvent(
    "sendgrid", FeedbackType.OPENED, "open", "reader@example.com", AT, esp_event_id="sg-1"
)
CLICKED = NormalizedEvent(
    "mailgun", FeedbackType.CLICKED, "clicked", "reader@example.com", AT, esp_event_id="mg-7"
)


def _old_event_key(event: NormalizedEvent) -> str:
    """What migrations 0002 to 0006 stored as ``event_key``."""
    basis = (event.provider, event.esp_event_id or "", event.recipient or "", event.type.value)
    return hashlib.sha256("\x1f".join(basis).encode()).hexdigest()


def _at_0006_with_two_events(url: str) -> None:
    upgrade(url, "0006")
    engine = create_engine(url)
    with engine.begin() as conn:
        for number, event in enumerate((OPENED, CLICKED)):
            conn.execute(
                text(
                    "INSERT INTO events (id, provider, event_type, recipient, dedupe_key, "
                    "event_key, occurred_at, received_at, payload) VALUES (:id, :provider, "
                    ":type, 'reader@example.com', :dedupe, :key, :at, :at, :payload)"
                ),
                {
                    "id": f"01JX00000000000000000000E{number}",
                    "provider": event.provider,
                    "type": event.type.value,
                    "dedupe": event.content_hash,
                    "key": _old_event_key(event),
                    "at": AT,
                    "payload": event.to_json(),
                },
            )
    engine.dispose()


async def _check(url: str) -> None:
    _at_0006_with_two_events(url)
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        keys = conn.execute(text("SELECT dedupe_key, event_key FROM events ORDER BY id")).all()
    engine.dispose()
    assert [(bytes(d), bytes(k)) for d, k in keys] == [
        (bytes.fromhex(e.content_hash[:32]), bytes.fromhex(_old_event_key(e)[:32]))
        for e in (OPENED, CLICKED)
    ]
    db = open_database(url)
    try:
        store = FeedbackStore(db, Suppressions(db))
        resent_under_a_new_id = NormalizedEvent(
            "sendgrid", FeedbackType.OPENED, "open", "reader@example.com", AT, esp_event_id="sg-2"
        )
        changed_under_its_id = NormalizedEvent(
            "mailgun",
            FeedbackType.CLICKED,
            "clicked",
            "reader@example.com",
            AT,
            esp_event_id="mg-7",
            url="https://platform.example/other",
        )
        fresh = NormalizedEvent(
            "mailgun",
            FeedbackType.DELIVERED,
            "delivered",
            "reader@example.com",
            AT,
            esp_event_id="x",
        )
        result = await store.ingest([resent_under_a_new_id, changed_under_its_id, fresh])
    finally:
        await db.dispose()
    assert (result.stored, result.duplicates) == (1, 2)
    command.downgrade(alembic_config(url), "0006")
    engine = create_engine(url)
    with engine.connect() as conn:
        keys = conn.execute(text("SELECT dedupe_key FROM events ORDER BY id")).scalars().all()
    engine.dispose()
    assert keys[:2] == [e.content_hash[:32] for e in (OPENED, CLICKED)]


async def test_stored_events_are_still_recognised_after_the_upgrade_on_sqlite(
    tmp_path: Path,
) -> None:
    await _check(f"sqlite:///{tmp_path / 'db.sqlite'}")


async def test_stored_events_are_still_recognised_after_the_upgrade_on_postgresql() -> None:
    with fresh_postgres_database() as url:
        await _check(url)
