"""Synthetic rows for alert tests: sends with feedback, attempts, campaigns with counters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select
from ulid import ULID

from postroom.store.database import Database
from postroom.store.schema import (
    campaign_chunks,
    campaign_recipients,
    campaigns,
    lists,
    send_attempts,
    send_feedback,
    sends,
)


def _send_row(send_id: str, n: int, at: datetime, status: str) -> dict[str, Any]:
    return {
        "id": send_id,
        "idempotency_key": f"key-{send_id}",
        "recipient": f"reader{n}@example.com",
        "email_type": "welcome",
        "priority": "transactional",
        "status": status,
        "attempts": 1,
        "document": b"{}",
        "content_hash": "0" * 64,
        "provider": "fake",
        "created_at": at,
        "updated_at": at,
        "sent_at": at if status == "sent" else None,
    }


async def add_sends(
    db: Database, count: int, at: datetime, *, feedback: dict[str, int] | None = None
) -> list[str]:
    """``count`` sent ledger rows at ``at``; the first of them get ``feedback`` states
    (e.g. ``{"bounced_hard": 3}``), the rest none."""
    ids = [str(ULID()) for _ in range(count)]
    states = [state for state, n in (feedback or {}).items() for _ in range(n)]

    def work(conn: Connection) -> None:
        conn.execute(insert(sends), [_send_row(i, n, at, "sent") for n, i in enumerate(ids)])
        rows = [
            {
                "send_id": send_id,
                "recipient": f"reader{n}@example.com",
                "send_created_at": at,
                "state": state,
                "updated_at": at,
            }
            for n, (send_id, state) in enumerate(zip(ids, states, strict=False))
        ]
        if rows:
            conn.execute(insert(send_feedback), rows)

    await db.write(work)
    return ids


async def add_attempt(db: Database, provider: str, error: str, at: datetime) -> None:
    """A failed hand-over attempt (with its send) as the pipeline records one."""
    send_id = str(ULID())

    def work(conn: Connection) -> None:
        conn.execute(insert(sends), [_send_row(send_id, 0, at, "failed")])
        conn.execute(
            insert(send_attempts),
            [
                {
                    "send_id": send_id,
                    "attempt": 1,
                    "outcome": "failed",
                    "provider": provider,
                    "error": error,
                    "at": at,
                }
            ],
        )

    await db.write(work)


async def add_campaign(
    db: Database,
    campaign_id: str,
    *,
    status: str = "sending",
    at: datetime | None = None,
    list_id: str = "list-1",
) -> None:
    now = at or datetime.now(UTC)

    def work(conn: Connection) -> None:
        if conn.execute(select(lists.c.id).where(lists.c.id == list_id)).first() is None:
            conn.execute(
                insert(lists),
                [{"id": list_id, "name": "List", "creator": "Jane", "created_at": now}],
            )
        conn.execute(
            insert(campaigns),
            [
                {
                    "id": campaign_id,
                    "list_id": list_id,
                    "email_type": "new_post_notification",
                    "document": b"{}",
                    "status": status,
                    "send_at": now,
                    "total": 0,
                    "chunks": 0,
                    "delivered": 0,
                    "bounced_hard": 0,
                    "bounced_soft": 0,
                    "complained": 0,
                    "unsubscribed": 0,
                    "created_at": now,
                    "updated_at": now,
                    "started_at": now,
                    "finished_at": now if status == "finished" else None,
                }
            ],
        )

    await db.write(work)


async def add_chunk(
    db: Database,
    campaign_id: str,
    chunk: int,
    *,
    sent: int,
    bounced: int = 0,
    complained: int = 0,
    at: datetime | None = None,
    with_recipients: bool = True,
) -> None:
    """A chunk of ``sent`` recipients, all sent, of which ``bounced`` hard-bounced and
    ``complained`` complained, with the campaign's counters moved as the feedback path does."""
    now = at or datetime.now(UTC)
    first = chunk * 1000

    def work(conn: Connection) -> None:
        conn.execute(
            insert(campaign_chunks),
            [
                {
                    "campaign_id": campaign_id,
                    "chunk": chunk,
                    "first_position": first,
                    "size": sent,
                    "state": "done",
                    "sent": sent,
                    "failed": 0,
                    "suppressed": 0,
                    "ambiguous": 0,
                    "updated_at": now,
                }
            ],
        )
        if with_recipients:
            conn.execute(
                insert(campaign_recipients),
                [
                    {
                        "campaign_id": campaign_id,
                        "position": first + n,
                        "subscriber_id": f"sub{first + n}",
                        "email": f"fan{first + n}@example.com",
                        "status": "sent",
                        "attempts": 1,
                        "updated_at": now.timestamp(),
                        "feedback": "bounced_hard"
                        if n < bounced
                        else ("complained" if n < bounced + complained else None),
                    }
                    for n in range(sent)
                ],
            )
        row = conn.execute(
            select(campaigns.c.bounced_hard, campaigns.c.complained).where(
                campaigns.c.id == campaign_id
            )
        ).one()
        conn.execute(
            campaigns.update()
            .where(campaigns.c.id == campaign_id)
            .values(bounced_hard=row[0] + bounced, complained=row[1] + complained)
        )

    await db.write(work)


async def campaign_status(db: Database, campaign_id: str) -> tuple[str, str | None]:
    query = select(campaigns.c.status, campaigns.c.status_reason).where(
        campaigns.c.id == campaign_id
    )
    row = await db.read(lambda conn: conn.execute(query).one())
    return str(row[0]), row[1]
