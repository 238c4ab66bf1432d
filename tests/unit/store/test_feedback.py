"""Ingestion of verified webhook events on SQLite and PostgreSQL: stored once, bound to our
sends before they suppress anyone, order-independent."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from tests.unit.webhooks.esp_fixtures import by_file, receiver_for, request
from ulid import ULID

from postroom.config import Settings
from postroom.errors import WebhookVerificationError
from postroom.store.database import Database, open_database
from postroom.store.feedback import FeedbackStore, IngestResult
from postroom.store.schema import events, send_feedback, sends, suppressions, webhook_tokens
from postroom.store.suppressions import Suppressions, SuppressionScope
from postroom.webhooks.events import FeedbackType, NormalizedEvent
from postroom.wiring import prepare_database

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    await prepare_database(settings)
    database = open_database(settings.resolved_database_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def store(db: Database) -> FeedbackStore:
    return FeedbackStore(db, Suppressions(db))


async def add_send(
    db: Database,
    recipient: str,
    *,
    provider_message_id: str | None = None,
    created_at: datetime = T0,
) -> str:
    send_id = str(ULID())
    row: dict[str, Any] = {
        "id": send_id,
        "idempotency_key": f"key-{send_id}",
        "recipient": recipient,
        "email_type": "welcome",
        "priority": "transactional",
        "status": "sent",
        "attempts": 1,
        "document": b"{}",
        "content_hash": "0" * 64,
        "message_id": f"<{send_id}@postroom.localhost>",
        "provider": "sendgrid",
        "provider_message_id": provider_message_id,
        "created_at": created_at,
        "updated_at": created_at,
    }
    await db.write(lambda conn: conn.execute(insert(sends), row))
    return send_id


def fixture_event(file: str, **changes: Any) -> NormalizedEvent:
    entry = by_file(file)
    [event] = receiver_for(entry).parse(request(entry).body)
    return dataclasses.replace(event, **changes)


def bounce(recipient: str, send_id: str | None, **changes: Any) -> NormalizedEvent:
    return fixture_event(
        "sendgrid/anymail-bounce_hard_5_1_1.json",
        recipient=recipient,
        postroom_send_id=send_id,
        **changes,
    )


def delivered(recipient: str, send_id: str | None, **changes: Any) -> NormalizedEvent:
    return fixture_event(
        "sendgrid/anymail-delivered.json", recipient=recipient, postroom_send_id=send_id, **changes
    )


async def count(db: Database, table: Any) -> int:
    return int(
        await db.read(
            lambda conn: conn.execute(select(func.count()).select_from(table)).scalar_one()
        )
    )


async def blocked(db: Database, email: str, *, marketing: bool) -> bool:
    return email in await Suppressions(db).blocked([email], marketing=marketing)


async def test_hard_bounce_suppresses_the_address(db: Database, store: FeedbackStore) -> None:
    send_id = await add_send(db, "gone@example.com")
    result = await store.ingest([bounce("gone@example.com", send_id)])
    assert (result.stored, result.bound) == (1, 1)
    assert await blocked(db, "gone@example.com", marketing=False)
    assert await store.state(send_id) == "bounced_hard"


async def test_unbound_events_are_stored_and_suppress_nobody(
    db: Database, store: FeedbackStore
) -> None:
    send_id = await add_send(db, "reader@example.com")
    forged_like = [
        bounce("stranger@example.com", None),  # a message we never sent
        bounce("victim@example.com", send_id),  # our send, but not to this address
        bounce("reader@example.com", str(ULID())),  # an id that is not in the ledger
    ]
    result = await store.ingest(forged_like)
    assert (result.stored, result.bound, result.suppressed) == (3, 0, [])
    assert await count(db, suppressions) == 0
    assert await count(db, send_feedback) == 0


async def test_duplicates_and_resends_under_new_ids_are_ingested_once(
    db: Database, store: FeedbackStore
) -> None:
    send_id = await add_send(db, "reader@example.com")
    event = delivered("reader@example.com", send_id)
    first = await store.ingest([event, event])
    again = await store.ingest([event])
    # SendGrid re-sends an event under a new sg_event_id: same content, stored once.
    resent = await store.ingest([dataclasses.replace(event, esp_event_id="a-new-id")])
    assert (first.stored, first.duplicates) == (1, 1)
    assert (again.stored, again.duplicates) == (0, 1)
    assert (resent.stored, resent.duplicates) == (0, 1)
    assert await count(db, events) == 1


async def test_an_event_id_seen_before_is_not_stored_again(
    db: Database, store: FeedbackStore
) -> None:
    event = delivered("reader@example.com", None)
    await store.ingest([event])
    changed = dataclasses.replace(event, diagnostic="250 OK (re-worded on a retry)")
    assert (await store.ingest([changed])).stored == 0


async def test_a_request_mixing_stored_and_new_events_acts_on_the_new_ones_only(
    db: Database, store: FeedbackStore
) -> None:
    kept, gone = await add_send(db, "kept@example.com"), await add_send(db, "gone@example.com")
    seen = delivered("kept@example.com", kept)
    await store.ingest([seen])
    reworded = bounce("gone@example.com", gone)
    result = await store.ingest(
        [
            dataclasses.replace(seen, esp_event_id="a-new-id"),  # stored: same content
            bounce("gone@example.com", gone),
            # The same ESP event id as the bounce, re-worded: the first of the two is kept.
            dataclasses.replace(reworded, diagnostic="550 5.1.1 re-worded", reason=None),
        ]
    )
    assert (result.stored, result.duplicates, result.bound) == (1, 2, 1)
    assert result.suppressed == [("gone@example.com", SuppressionScope.ALL, "hard_bounce")]
    assert await count(db, events) == 2
    assert (await store.state(kept), await store.state(gone)) == ("delivered", "bounced_hard")


async def test_a_late_delivered_does_not_undo_a_hard_bounce(
    db: Database, store: FeedbackStore
) -> None:
    send_id = await add_send(db, "gone@example.com")
    await store.ingest([bounce("gone@example.com", send_id)])
    await store.ingest([delivered("gone@example.com", send_id)])
    assert await store.state(send_id) == "bounced_hard"
    assert await blocked(db, "gone@example.com", marketing=False)


async def test_a_bounce_after_delivered_raises_the_state(
    db: Database, store: FeedbackStore
) -> None:
    send_id = await add_send(db, "gone@example.com")
    await store.ingest([delivered("gone@example.com", send_id)])
    await store.ingest([bounce("gone@example.com", send_id)])
    assert await store.state(send_id) == "bounced_hard"


async def test_replayed_token_is_refused_and_writes_nothing(
    db: Database, store: FeedbackStore
) -> None:
    send_id = await add_send(db, "gone@example.com")
    await store.ingest(
        [delivered("gone@example.com", send_id)], replay_token="mailgun:t1", replay_ttl=60
    )
    with pytest.raises(WebhookVerificationError) as refused:
        await store.ingest(
            [bounce("gone@example.com", send_id)], replay_token="mailgun:t1", replay_ttl=60
        )
    assert refused.value.reason == "replay"
    assert await count(db, events) == 1
    assert not await blocked(db, "gone@example.com", marketing=False)


async def test_an_expired_token_may_be_used_again(db: Database) -> None:
    now = [T0]
    store = FeedbackStore(db, Suppressions(db), clock=lambda: now[0])
    await store.ingest([], replay_token="mailgun:t2", replay_ttl=60)
    now[0] = T0 + timedelta(seconds=61)
    await store.ingest([], replay_token="mailgun:t2", replay_ttl=60)


async def test_complaint_and_unsubscribe_suppress_marketing_only(
    db: Database, store: FeedbackStore
) -> None:
    complainer = await add_send(db, "angry@example.com")
    leaver = await add_send(db, "leaving@example.com")
    await store.ingest(
        [
            fixture_event(
                "sendgrid/docs-spamreport.json",
                recipient="angry@example.com",
                postroom_send_id=complainer,
            ),
            fixture_event(
                "sendgrid/docs-unsubscribe.json",
                recipient="leaving@example.com",
                postroom_send_id=leaver,
            ),
        ]
    )
    for email in ("angry@example.com", "leaving@example.com"):
        assert await blocked(db, email, marketing=True)
        assert not await blocked(db, email, marketing=False)


async def test_policy_blocks_alert_and_never_suppress(db: Database, store: FeedbackStore) -> None:
    send_id = await add_send(db, "fine@example.com")
    result = await store.ingest(
        [
            bounce(
                "fine@example.com",
                send_id,
                enhanced_status="5.7.1",
                diagnostic="550 5.7.1 blocked by policy",
            )
        ]
    )
    assert result.suppressed == [] and len(result.alerts) == 1
    assert not await blocked(db, "fine@example.com", marketing=False)


async def soft_bounce(db: Database, store: FeedbackStore, email: str, day: int) -> None:
    send_id = await add_send(db, email, created_at=T0 + timedelta(days=day))
    event = fixture_event(
        "sendgrid/docs-bounce_blocked.json", recipient=email, postroom_send_id=send_id
    )
    await store.ingest(
        [
            dataclasses.replace(
                event,
                esp_event_id=None,
                enhanced_status="4.2.2",
                occurred_at=T0 + timedelta(days=day),
            )
        ]
    )


async def test_three_soft_bounces_suppress(db: Database, store: FeedbackStore) -> None:
    for day in range(2):
        await soft_bounce(db, store, "full@example.com", day)
    assert not await blocked(db, "full@example.com", marketing=False)
    await soft_bounce(db, store, "full@example.com", 2)
    assert await blocked(db, "full@example.com", marketing=False)


async def test_a_delivery_resets_the_soft_bounce_count(db: Database, store: FeedbackStore) -> None:
    await soft_bounce(db, store, "flaky@example.com", 0)
    await soft_bounce(db, store, "flaky@example.com", 1)
    good = await add_send(db, "flaky@example.com", created_at=T0 + timedelta(days=2))
    await store.ingest([delivered("flaky@example.com", good)])
    await soft_bounce(db, store, "flaky@example.com", 3)
    await soft_bounce(db, store, "flaky@example.com", 4)
    assert not await blocked(db, "flaky@example.com", marketing=False)


async def test_binds_by_the_esp_message_id_and_recipient(
    db: Database, store: FeedbackStore
) -> None:
    # SendGrid's API returned the X-Message-Id, the prefix of the webhook's sg_message_id.
    send_id = await add_send(
        db, "noreply@example.com", provider_message_id="Lli-03HcQ5-JLybO9fXsJg"
    )
    await add_send(db, "other@example.com", provider_message_id="Lli-03HcQ5-JLybO9fXsJg")
    result = await store.ingest([fixture_event("sendgrid/anymail-bounce_hard_5_1_1.json")])
    assert result.bound == 1
    assert await store.state(send_id) == "bounced_hard"
    assert await blocked(db, "noreply@example.com", marketing=False)
    assert not await blocked(db, "other@example.com", marketing=False)


async def test_an_event_without_recipient_binds_through_a_unique_message_id(
    db: Database, store: FeedbackStore
) -> None:
    await add_send(db, "someone@example.com", provider_message_id="5555555-5555555-5555-5555555")
    event = fixture_event("postmark/anymail-REAL-bounce_type_unsubscribe_no_recipient.json")
    assert event.recipient is None and event.type is FeedbackType.UNSUBSCRIBED
    result = await store.ingest([event])
    assert result.suppressed and result.suppressed[0][0] == "someone@example.com"
    stored = await db.read(lambda conn: conn.execute(select(events.c.recipient)).scalar_one())
    assert stored == "someone@example.com"


async def test_concurrent_requests_about_one_send_end_at_the_strongest_state(
    db: Database, store: FeedbackStore
) -> None:
    send_id = await add_send(db, "gone@example.com")
    events_in_flight = [
        delivered("gone@example.com", send_id),
        bounce("gone@example.com", send_id),
        fixture_event(
            "sendgrid/docs-open.json", recipient="gone@example.com", postroom_send_id=send_id
        ),
        delivered("gone@example.com", send_id, diagnostic="250 again", esp_event_id="e2"),
    ]
    await asyncio.gather(*(store.ingest([e]) for e in events_in_flight))
    assert await store.state(send_id) == "bounced_hard"
    assert await count(db, events) == 4


async def test_a_refused_request_among_concurrent_ones_leaves_theirs_in_place(
    db: Database, store: FeedbackStore
) -> None:
    # On SQLite these share one transaction (a group commit); each request has its savepoint.
    await store.ingest([], replay_token="mailgun:used", replay_ttl=60)
    sends = {email: await add_send(db, email) for email in ("a@example.com", "b@example.com")}
    outcomes = await asyncio.gather(
        store.ingest([bounce("a@example.com", sends["a@example.com"])], replay_token="mailgun:1"),
        store.ingest(
            [bounce("b@example.com", sends["b@example.com"])], replay_token="mailgun:used"
        ),
        store.ingest([delivered("c@example.com", None)], replay_token="mailgun:2"),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], WebhookVerificationError)
    assert [o.stored for o in outcomes if isinstance(o, IngestResult)] == [1, 1]
    assert await blocked(db, "a@example.com", marketing=False)
    assert not await blocked(db, "b@example.com", marketing=False)
    assert await count(db, events) == 2
    assert await count(db, webhook_tokens) == 3
