"""The preference centre's rules on SQLite and PostgreSQL: what ticking and unticking a list
does, for which subscribers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from postroom.store.audience import SubscriberStatus, SubscriptionStatus
from postroom.store.consent import Consent, ConsentKind
from postroom.store.schema import subscribers
from postroom.store.subscribers import NewSubscriber, SubscriberChoices, Subscribers
from postroom.wiring import Postroom

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
READER = "reader@example.com"


@pytest.fixture
async def repo(postroom: Postroom) -> Subscribers:
    repo = Subscribers(postroom.db, clock=lambda: T0)
    for list_id in ("jane", "bob", "carl"):
        await repo.create_list(f"{list_id} posts", list_id, list_id=list_id)
    entry = NewSubscriber(READER, None, Consent(ConsentKind.EXPRESS, "test", T0, None))
    await repo.subscribe("jane", [entry])
    await repo.subscribe("bob", [entry])
    await repo.subscribe("carl", [entry], pending=True)
    return repo


async def set_status(postroom: Postroom, status: SubscriberStatus) -> None:
    query = update(subscribers).where(subscribers.c.email == READER).values(status=status.value)
    await postroom.db.write(lambda conn: conn.execute(query))


def by_list(choices: SubscriberChoices | None) -> dict[str, SubscriptionStatus]:
    assert choices is not None
    return {c.list_id: c.status for c in choices.lists}


async def test_unticking_leaves_and_ticking_returns(repo: Subscribers) -> None:
    after = await repo.apply_choices(READER.upper(), {"jane"})
    assert by_list(after) == {"bob": "unsubscribed", "carl": "pending", "jane": "active"}
    after = await repo.apply_choices(READER, {"jane", "bob", "carl", "nope"}, ip="192.0.2.1")
    assert by_list(after) == {"bob": "active", "carl": "pending", "jane": "active"}
    assert await repo.apply_choices("nobody@example.com", {"jane"}) is None


async def test_a_pending_subscription_left_is_not_revived(repo: Subscribers) -> None:
    assert await repo.unsubscribe(READER, "carl")  # left before confirming
    after = await repo.apply_choices(READER, {"jane", "bob", "carl"})
    assert by_list(after)["carl"] == "unsubscribed"


async def test_a_sunset_subscriber_who_keeps_a_list_is_active_again(
    repo: Subscribers, postroom: Postroom
) -> None:
    await set_status(postroom, SubscriberStatus.SUNSET)
    after = await repo.apply_choices(READER, {"bob"})
    assert after is not None and after.status is SubscriberStatus.ACTIVE
    assert by_list(after)["jane"] == "unsubscribed"


@pytest.mark.parametrize("status", [SubscriberStatus.COMPLAINED, SubscriberStatus.BOUNCED])
async def test_nothing_is_revived_for_a_complained_or_bounced_subscriber(
    repo: Subscribers, postroom: Postroom, status: SubscriberStatus
) -> None:
    await repo.apply_choices(READER, {"jane"})
    await set_status(postroom, status)
    after = await repo.apply_choices(READER, {"jane", "bob"})
    assert after is not None and after.status is status
    assert by_list(after)["bob"] == "unsubscribed"
