"""Bound feedback moves subscribers: a hard bounce → ``bounced``; a complaint → ``complained``
and unsubscribed from every list; erased subscribers are never touched."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from tests.unit.store.test_feedback import T0, add_send, bounce, db, fixture_event, store
from tests.unit.store.test_feedback_campaigns import about, add_campaign
from ulid import ULID

from postroom.store.database import Database
from postroom.store.feedback import FeedbackStore
from postroom.store.schema import lists, subscribers, subscriptions

__all__ = ["db", "store"]  # fixtures shared with test_feedback

LISTS = ("news", "digest")


async def add_subscriber(db: Database, email: str | None, status: str = "active") -> str:
    """A subscriber on both ``LISTS`` (created on first use), subscriptions active."""
    subscriber_id = str(ULID())

    def work(conn: Any) -> None:
        for list_id in LISTS:
            if conn.execute(select(lists.c.id).where(lists.c.id == list_id)).first() is None:
                row = {"id": list_id, "name": list_id, "creator": "Jane", "created_at": T0}
                conn.execute(insert(lists), row)
        conn.execute(
            insert(subscribers),
            {
                "id": subscriber_id,
                "email": email,
                "status": status,
                "created_at": T0,
                "updated_at": T0,
            },
        )
        conn.execute(
            insert(subscriptions),
            [
                {
                    "list_id": list_id,
                    "subscriber_id": subscriber_id,
                    "status": "active",
                    "consent": "express",
                    "created_at": T0,
                    "updated_at": T0,
                }
                for list_id in LISTS
            ],
        )

    await db.write(work)
    return subscriber_id


async def status(db: Database, subscriber_id: str) -> tuple[str, list[tuple[str, bool]]]:
    """The subscriber's status, and each subscription's status with whether
    ``unsubscribed_at`` is set."""

    def work(conn: Any) -> tuple[str, list[tuple[str, bool]]]:
        own = conn.execute(
            select(subscribers.c.status).where(subscribers.c.id == subscriber_id)
        ).scalar_one()
        subs = conn.execute(
            select(subscriptions.c.status, subscriptions.c.unsubscribed_at)
            .where(subscriptions.c.subscriber_id == subscriber_id)
            .order_by(subscriptions.c.list_id)
        ).all()
        return own, [(s.status, s.unsubscribed_at is not None) for s in subs]

    return await db.read(work)


ACTIVE = [("active", False), ("active", False)]
UNSUBSCRIBED = [("unsubscribed", True), ("unsubscribed", True)]


def complaint(email: str, send_id: str) -> Any:
    return fixture_event("sendgrid/docs-spamreport.json", recipient=email, postroom_send_id=send_id)


async def test_a_hard_bounce_marks_the_subscriber_bounced(
    db: Database, store: FeedbackStore
) -> None:
    subscriber = await add_subscriber(db, "gone@example.com")
    send_id = await add_send(db, "gone@example.com")
    await store.ingest([bounce("gone@example.com", send_id)])
    assert await status(db, subscriber) == ("bounced", ACTIVE)


async def test_a_complaint_marks_complained_and_unsubscribes_everywhere(
    db: Database, store: FeedbackStore
) -> None:
    subscriber = await add_subscriber(db, "angry@example.com")
    campaign_id = await add_campaign(db, "angry@example.com")
    await store.ingest([complaint("angry@example.com", f"{campaign_id}.0")])
    assert await status(db, subscriber) == ("complained", UNSUBSCRIBED)


async def test_bounced_outranks_complained_in_either_order(
    db: Database, store: FeedbackStore
) -> None:
    first = await add_subscriber(db, "first@example.com")
    second = await add_subscriber(db, "second@example.com")
    sends = {
        email: await add_send(db, email) for email in ("first@example.com", "second@example.com")
    }
    await store.ingest([complaint("first@example.com", sends["first@example.com"])])
    await store.ingest([bounce("first@example.com", sends["first@example.com"])])
    await store.ingest([bounce("second@example.com", sends["second@example.com"])])
    await store.ingest([complaint("second@example.com", sends["second@example.com"])])
    assert await status(db, first) == ("bounced", UNSUBSCRIBED)
    assert await status(db, second) == ("bounced", UNSUBSCRIBED)


async def test_erased_subscribers_are_never_touched(db: Database, store: FeedbackStore) -> None:
    # Erasure clears the address too; an erased row that still had it must stay as it is.
    erased = await add_subscriber(db, "erased@example.com", status="erased")
    send_id = await add_send(db, "erased@example.com")
    await store.ingest([complaint("erased@example.com", send_id)])
    await store.ingest([bounce("erased@example.com", send_id)])
    assert await status(db, erased) == ("erased", ACTIVE)


async def test_unbound_events_and_policy_blocks_change_no_subscriber(
    db: Database, store: FeedbackStore
) -> None:
    reader = await add_subscriber(db, "reader@example.com")
    send_id = await add_send(db, "reader@example.com")
    other_send = await add_send(db, "someone@example.com")
    await store.ingest(
        [
            bounce("reader@example.com", other_send, esp_event_id="1"),  # not sent to them
            complaint("reader@example.com", str(ULID())),  # not ours
            bounce("reader@example.com", send_id, enhanced_status="5.7.1", esp_event_id="3"),
        ]
    )
    assert await status(db, reader) == ("active", ACTIVE)


async def test_an_esp_unsubscribe_only_suppresses_marketing(
    db: Database, store: FeedbackStore
) -> None:
    reader = await add_subscriber(db, "leaving@example.com")
    campaign_id = await add_campaign(db, "leaving@example.com")
    leave = fixture_event("sendgrid/docs-unsubscribe.json")
    result = await store.ingest([about(leave, "leaving@example.com", f"{campaign_id}.0")])
    assert [(email, reason) for email, _scope, reason in result.suppressed] == [
        ("leaving@example.com", "unsubscribe")
    ]
    assert await status(db, reader) == ("active", ACTIVE)
