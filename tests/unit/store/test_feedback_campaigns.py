"""Webhook events about campaign recipients (send id ``<campaign id>.<position>``): bound to
the campaign ledger's row, applied like ledger sends, counted once per recipient per kind."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import Row, insert, select
from tests.unit.store.test_feedback import (
    T0,
    add_send,
    blocked,
    bounce,
    db,
    delivered,
    fixture_event,
    store,
)
from ulid import ULID

from postroom.store.database import Database
from postroom.store.feedback import FeedbackStore
from postroom.store.schema import campaign_recipients, campaigns, events, lists
from postroom.webhooks.events import NormalizedEvent

__all__ = ["db", "store"]  # fixtures shared with test_feedback

DOMAIN = "news.example.com"


async def add_campaign(db: Database, *recipients: str) -> str:
    """A campaign whose recipient at position i is ``recipients[i]``, all sent."""
    campaign_id = str(ULID())
    list_id = f"list-{campaign_id}"
    rows = [
        {
            "campaign_id": campaign_id,
            "position": position,
            "subscriber_id": str(ULID()),
            "email": email,
            "status": "sent",
            "attempts": 1,
        }
        for position, email in enumerate(recipients)
    ]

    def work(conn: Any) -> None:
        conn.execute(
            insert(lists), {"id": list_id, "name": "News", "creator": "Jane", "created_at": T0}
        )
        conn.execute(
            insert(campaigns),
            {
                "id": campaign_id,
                "list_id": list_id,
                "email_type": "new_post_notification",
                "document": b"{}",
                "status": "sending",
                "send_at": T0,
                "total": len(rows),
                "created_at": T0,
                "updated_at": T0,
            },
        )
        conn.execute(insert(campaign_recipients), rows)

    await db.write(work)
    return campaign_id


async def counters(db: Database, campaign_id: str) -> dict[str, int]:
    row = await db.read(
        lambda conn: conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).one()
    )
    names = ("delivered", "bounced_hard", "bounced_soft", "complained", "unsubscribed")
    return {name: getattr(row, name) for name in names if getattr(row, name)}


async def recipient(db: Database, campaign_id: str, position: int) -> Row[Any]:
    return await db.read(
        lambda conn: conn.execute(
            select(campaign_recipients).where(
                campaign_recipients.c.campaign_id == campaign_id,
                campaign_recipients.c.position == position,
            )
        ).one()
    )


def about(event: NormalizedEvent, email: str, send_id: str, **changes: Any) -> NormalizedEvent:
    """A fixture's event about ``send_id``; without the fixture's event id unless given (two
    events with one id and recipient are one event)."""
    changes.setdefault("esp_event_id", None)
    return dataclasses.replace(
        event, recipient=email, postroom_send_id=send_id, lookup_ids=(), **changes
    )


async def test_a_bounce_suppresses_and_counts_once(db: Database, store: FeedbackStore) -> None:
    campaign_id = await add_campaign(db, "reader@example.com", "Gone@Example.com")
    event = bounce("gone@example.com", f"{campaign_id}.1")
    first = await store.ingest([event])
    await store.ingest([event])  # replayed
    await store.ingest([event])
    # Re-sent under a new event id and reworded: a new event, but the same outcome.
    await store.ingest([dataclasses.replace(event, esp_event_id="again", diagnostic="550 gone")])
    assert first.bound == 1
    assert await blocked(db, "gone@example.com", marketing=False)
    assert await counters(db, campaign_id) == {"bounced_hard": 1}
    row = await recipient(db, campaign_id, 1)
    assert row.feedback == "bounced_hard"
    stored = await db.read(lambda conn: conn.execute(select(events)).all())
    assert [e.send_id for e in stored] == [None, None]  # events.send_id references the ledger
    assert {orjson.loads(e.payload)["campaign_send_id"] for e in stored} == {f"{campaign_id}.1"}


async def test_binds_through_our_message_id(db: Database, store: FeedbackStore) -> None:
    campaign_id = await add_campaign(db, "a@example.com", "b@example.com", "c@example.com")
    event = bounce("c@example.com", None, postroom_message_id=f"<{campaign_id}.2@{DOMAIN}>")
    assert (await store.ingest([event])).bound == 1
    assert (await recipient(db, campaign_id, 2)).feedback == "bounced_hard"


async def test_wrong_recipient_is_unbound_and_changes_nothing(
    db: Database, store: FeedbackStore
) -> None:
    campaign_id = await add_campaign(db, "reader@example.com")
    result = await store.ingest(
        [
            bounce(
                "victim@example.com", f"{campaign_id}.0", esp_event_id="1"
            ),  # not the row's address
            bounce("reader@example.com", f"{campaign_id}.7", esp_event_id="2"),  # no such position
            bounce("reader@example.com", f"{ULID()}.0", esp_event_id="3"),  # no such campaign
        ]
    )
    assert (result.stored, result.bound, result.suppressed) == (3, 0, [])
    assert await counters(db, campaign_id) == {}
    assert (await recipient(db, campaign_id, 0)).feedback is None
    assert not await blocked(db, "victim@example.com", marketing=False)
    assert not await blocked(db, "reader@example.com", marketing=False)


async def test_opens_clicks_and_delivered(db: Database, store: FeedbackStore) -> None:
    campaign_id = await add_campaign(db, "reader@example.com")
    send_id = f"{campaign_id}.0"
    opened = fixture_event("sendgrid/docs-open.json")
    clicked = fixture_event("sendgrid/docs-click.json")
    machine = about(opened, "reader@example.com", send_id, machine_open=True, occurred_at=T0)
    await store.ingest([machine])
    row = await recipient(db, campaign_id, 0)
    assert row.opened_at is None  # Apple's proxy opened it, not the reader
    assert row.feedback == "delivered"  # though it proves delivery
    later, earlier = T0 + timedelta(hours=2), T0 + timedelta(hours=1)
    human = about(opened, "reader@example.com", send_id, machine_open=False)
    await store.ingest([dataclasses.replace(human, occurred_at=later)])
    await store.ingest([dataclasses.replace(human, occurred_at=earlier, esp_event_id="e2")])
    await store.ingest([about(clicked, "reader@example.com", send_id, occurred_at=later)])
    # The delivery report arrives after the open: the recipient is counted once.
    await store.ingest([delivered("reader@example.com", send_id)])
    row = await recipient(db, campaign_id, 0)
    assert (row.opened_at, row.clicked_at) == (earlier, later)
    assert await counters(db, campaign_id) == {"delivered": 1}


async def test_complaints_and_unsubscribes_count_once_per_recipient(
    db: Database, store: FeedbackStore
) -> None:
    campaign_id = await add_campaign(db, "angry@example.com", "leaving@example.com")
    complaint = fixture_event("sendgrid/docs-spamreport.json")
    leave = fixture_event("sendgrid/docs-unsubscribe.json")
    group_leave = fixture_event("sendgrid/docs-group_unsubscribe.json")
    leaving = [
        about(leave, "leaving@example.com", f"{campaign_id}.1"),
        about(group_leave, "leaving@example.com", f"{campaign_id}.1"),
    ]
    await store.ingest([about(complaint, "angry@example.com", f"{campaign_id}.0")])
    await store.ingest(leaving)  # two different unsubscribe events in one request
    await store.ingest([dataclasses.replace(leaving[0], esp_event_id="x", occurred_at=T0)])
    assert await counters(db, campaign_id) == {"complained": 1, "unsubscribed": 1}
    for email in ("angry@example.com", "leaving@example.com"):
        assert await blocked(db, email, marketing=True)
        assert not await blocked(db, email, marketing=False)


async def test_a_campaign_soft_bounce_counts_towards_the_streak(
    db: Database, store: FeedbackStore
) -> None:
    soft = fixture_event("sendgrid/docs-bounce_blocked.json", enhanced_status="4.2.2")
    email = "full@example.com"
    for day in range(2):
        send_id = await add_send(db, email, created_at=T0 + timedelta(days=day))
        await store.ingest([about(soft, email, send_id, occurred_at=T0 + timedelta(days=day))])
    assert not await blocked(db, email, marketing=False)
    campaign_id = await add_campaign(db, email)
    await store.ingest([about(soft, email, f"{campaign_id}.0", occurred_at=T0 + timedelta(days=3))])
    assert await counters(db, campaign_id) == {"bounced_soft": 1}
    assert await blocked(db, email, marketing=False)
