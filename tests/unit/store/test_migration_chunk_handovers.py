"""Migration 0006 on a database holding a campaign mid-send: recipients a hand-over had
marked ``sending`` go back to ``pending`` with their chunk marked instead, and every chunk's
hand-over count starts past its recipients' attempts (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from tests.conftest import fresh_postgres_database

from postroom.store.migrate import upgrade

CAMPAIGN = "01JX0000000000000000000000"
# Chunk 0 had a hand-over in flight (two recipients ``sending``, one already sent); chunk 1
# was between hand-overs, one recipient left open after two attempts.
RECIPIENTS = [
    (0, "sent", 1, 100.0),
    (1, "sending", 1, 150.0),
    (2, "sending", 1, 160.0),
    (3, "sent", 1, 100.0),
    (4, "pending", 2, 120.0),
]


def _at_0005_with_a_campaign_in_flight(url: str) -> None:
    upgrade(url, "0005")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO lists (id, name, creator, created_at) "
                "VALUES ('letters', 'L', 'c', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO campaigns (id, list_id, email_type, document, status, send_at, "
                "total, chunks, delivered, bounced_hard, bounced_soft, complained, "
                "unsubscribed, created_at, updated_at) VALUES (:id, 'letters', 'x', :doc, "
                "'sending', CURRENT_TIMESTAMP, 5, 2, 0, 0, 0, 0, 0, CURRENT_TIMESTAMP, "
                "CURRENT_TIMESTAMP)"
            ),
            {"id": CAMPAIGN, "doc": b"{}"},
        )
        for chunk, first, size in ((0, 0, 3), (1, 3, 2)):
            conn.execute(
                text(
                    "INSERT INTO campaign_chunks (campaign_id, chunk, first_position, size, "
                    "state, sent, failed, suppressed, ambiguous, updated_at) VALUES "
                    "(:c, :chunk, :first, :size, 'queued', 0, 0, 0, 0, CURRENT_TIMESTAMP)"
                ),
                {"c": CAMPAIGN, "chunk": chunk, "first": first, "size": size},
            )
        for position, status, attempts, updated_at in RECIPIENTS:
            conn.execute(
                text(
                    "INSERT INTO campaign_recipients (campaign_id, position, subscriber_id, "
                    "email, status, attempts, updated_at) VALUES "
                    "(:c, :p, 's', 'a@example.com', :status, :attempts, :at)"
                ),
                {
                    "c": CAMPAIGN,
                    "p": position,
                    "status": status,
                    "attempts": attempts,
                    "at": updated_at,
                },
            )
    engine.dispose()


def _after_upgrade(url: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        chunks = conn.execute(
            text("SELECT chunk, handovers, sending_since FROM campaign_chunks ORDER BY chunk")
        ).all()
        rows = conn.execute(
            text("SELECT position, status, attempts FROM campaign_recipients ORDER BY position")
        ).all()
    engine.dispose()
    return [tuple(c) for c in chunks], [tuple(r) for r in rows]


def _check(url: str) -> None:
    _at_0005_with_a_campaign_in_flight(url)
    chunks, rows = _after_upgrade(url)
    assert chunks == [(0, 1, 160.0), (1, 2, None)]
    assert rows == [
        (0, "sent", 1),
        (1, "pending", 1),
        (2, "pending", 1),
        (3, "sent", 1),
        (4, "pending", 2),
    ]


def test_a_campaign_in_flight_survives_the_upgrade_on_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_a_campaign_in_flight_survives_the_upgrade_on_postgresql() -> None:
    with fresh_postgres_database() as url:
        _check(url)
