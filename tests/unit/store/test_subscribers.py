"""Subscribers, lists and subscriptions on SQLite and PostgreSQL: idempotent subscribing,
consent (strength, CASL expiry), double opt-in, and keyset pages for campaigns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from postroom.errors import InvalidMessageError
from postroom.store.consent import Consent, ConsentKind
from postroom.store.schema import consent_records
from postroom.store.subscribers import NewSubscriber, Subscribers, SubscriptionStatus
from postroom.wiring import Postroom

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def entry(email: str, kind: ConsentKind = ConsentKind.EXPRESS, at: datetime = T0) -> NewSubscriber:
    return NewSubscriber(email=email, name=None, consent=Consent(kind, "test", at, "192.0.2.7"))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def repo(postroom: Postroom, clock: Clock) -> Subscribers:
    return Subscribers(postroom.db, implied_consent_days=730, clock=clock)


async def consent_rows(postroom: Postroom) -> list[tuple[str, str]]:
    query = select(consent_records.c.kind, consent_records.c.source).order_by(consent_records.c.id)
    return await postroom.db.read(lambda conn: [tuple(r) for r in conn.execute(query)])


async def test_subscribing_again_changes_nothing(repo: Subscribers, postroom: Postroom) -> None:
    await repo.create_list("Jane's posts", "jane", list_id="jane")
    batch = [entry("a@example.com"), entry("b@example.com"), entry("a@example.com")]
    first = await repo.subscribe("jane", batch)
    assert [r.outcome for r in first] == ["created", "created", "unchanged"]
    again = await repo.subscribe("jane", batch)
    assert [r.outcome for r in again] == ["unchanged"] * 3
    listed = await repo.get_list("jane")
    assert listed is not None and listed.counts == {"active": 2, "pending": 0, "unsubscribed": 0}
    assert len(await consent_rows(postroom)) == 2


async def test_unknown_list_names_the_field(repo: Subscribers) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        await repo.subscribe("nope", [entry("a@example.com")])
    assert caught.value.field == "list_ids"


async def test_an_import_never_revives_an_unsubscribe_but_the_subscriber_may(
    repo: Subscribers,
) -> None:
    await repo.create_list("L", "jane", list_id="l")
    await repo.subscribe("l", [entry("a@example.com")])
    assert await repo.unsubscribe("A@Example.com", "l")
    skipped = (await repo.subscribe("l", [entry("a@example.com")]))[0]
    assert skipped.outcome == "skipped" and skipped.reason == "unsubscribed from this list"
    revived = await repo.upsert(
        "a@example.com", None, ["l"], entry("x@x.example").consent, pending=False
    )
    assert revived[0].outcome == "updated" and revived[0].status is SubscriptionStatus.ACTIVE


async def test_express_consent_replaces_implied_and_is_recorded(
    repo: Subscribers, postroom: Postroom
) -> None:
    await repo.create_list("L", "jane", list_id="l")
    await repo.subscribe("l", [entry("a@example.com", ConsentKind.IMPLIED)])
    found = await repo.get("a@example.com")
    assert found is not None
    assert found[1][0].consent_expires_at == T0 + timedelta(days=730)
    upgraded = await repo.subscribe("l", [entry("a@example.com", ConsentKind.EXPRESS)])
    assert upgraded[0].outcome == "updated"
    found = await repo.get("a@example.com")
    assert found is not None and found[1][0].consent is ConsentKind.EXPRESS
    assert found[1][0].consent_expires_at is None
    # Weaker consent afterwards does not downgrade it.
    later = T0 + timedelta(days=1)
    assert (await repo.subscribe("l", [entry("a@example.com", ConsentKind.IMPLIED, later)]))[
        0
    ].outcome == "unchanged"
    assert [k for k, _ in await consent_rows(postroom)] == ["implied", "express"]


async def test_implied_consent_expires_after_the_configured_days(
    repo: Subscribers, clock: Clock
) -> None:
    await repo.create_list("L", "jane", list_id="l")
    await repo.subscribe(
        "l", [entry("implied@example.com", ConsentKind.IMPLIED), entry("express@example.com")]
    )
    page = await repo.active_page("l")
    assert {s.email for s in page} == {"implied@example.com", "express@example.com"}
    clock.now = T0 + timedelta(days=731)
    assert [s.email for s in await repo.active_page("l")] == ["express@example.com"]
    # Implied consent that had already run out when imported subscribes nobody.
    stale = await repo.subscribe("l", [entry("old@example.com", ConsentKind.IMPLIED, T0)])
    assert stale[0].outcome == "skipped" and "expired" in (stale[0].reason or "")


async def test_double_opt_in_is_pending_until_confirmed(
    repo: Subscribers, postroom: Postroom
) -> None:
    await repo.create_list("L", "jane", list_id="l")
    done = await repo.subscribe("l", [entry("a@example.com", ConsentKind.IMPLIED)], pending=True)
    assert done[0].status is SubscriptionStatus.PENDING
    assert await repo.active_page("l") == []
    assert await repo.confirm(done[0].subscriber_id, "l", "198.51.100.1") == "active"
    assert await repo.confirm(done[0].subscriber_id, "l", "198.51.100.1") == "active"
    assert [s.email for s in await repo.active_page("l")] == ["a@example.com"]
    assert await consent_rows(postroom) == [("implied", "test"), ("express", "double opt-in")]


async def test_active_subscribers_come_in_keyset_pages(repo: Subscribers) -> None:
    await repo.create_list("L", "jane", list_id="l")
    await repo.subscribe("l", [entry(f"r{i}@example.com") for i in range(25)])
    await repo.unsubscribe("r3@example.com", "l")
    seen: list[str] = []
    after = None
    while page := await repo.active_page("l", after=after, limit=10):
        seen += [s.id for s in page]
        after = page[-1].id
    assert len(seen) == 24 and seen == sorted(seen)


async def test_sqlite_pages_through_a_list_on_its_index(
    repo: Subscribers, postroom: Postroom
) -> None:
    if postroom.db.dialect != "sqlite":
        pytest.skip("SQLite's query plan")
    plan = await postroom.db.read(
        lambda conn: " ".join(
            str(r[-1])
            for r in conn.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT subscriber_id FROM subscriptions WHERE "
                    "list_id = 'l' AND status = 'active' AND subscriber_id > 'x' "
                    "ORDER BY subscriber_id LIMIT 1000"
                )
            )
        )
    )
    assert "ix_subscriptions_list_id_status_subscriber_id" in plan and "TEMP B-TREE" not in plan
