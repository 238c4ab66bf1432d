"""The inactive-subscriber sunset on SQLite and PostgreSQL: who is quiet, one re-engagement
email however often it runs, sunset after the grace period, and the engaged left alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select
from tests.conftest import RunningWorker
from tests.fakes import FakeProvider
from ulid import ULID

from postroom.cli.sunset import describe, run_sunset
from postroom.store.consent import Consent, ConsentKind
from postroom.store.feedback_events import stored_key
from postroom.store.schema import events, sends, subscribers
from postroom.store.subscribers import NewSubscriber, Subscribers
from postroom.store.sunset import Reengagement, SunsetAction, decide
from postroom.webhooks.events import FeedbackType, NormalizedEvent
from postroom.wiring import Postroom

NOW = datetime.now(UTC)  # the ledger stamps sends with the real clock: the plan runs beside it
DAY = timedelta(days=1)
QUIET = ["quiet@example.com", "machine@example.com", "later@example.com"]


async def subscribe(postroom: Postroom, email: str, at: datetime, *, pending: bool = False) -> None:
    repo = Subscribers(postroom.db, clock=lambda: at)
    if await repo.get_list("jane") is None:
        await repo.create_list("Jane's posts", "jane", list_id="jane")
    consent = Consent(ConsentKind.EXPRESS, "test", at, None)
    await repo.subscribe("jane", [NewSubscriber(email, None, consent)], pending=pending)


async def record(
    postroom: Postroom, email: str, kind: FeedbackType, at: datetime, *, machine: bool = False
) -> None:
    event = NormalizedEvent("sendgrid", kind, kind.value, email, at, machine_open=machine)
    row = {
        "id": str(ULID()),
        "provider": "sendgrid",
        "event_type": kind.value,
        "recipient": email,
        "dedupe_key": stored_key(event.content_hash),
        "occurred_at": at,
        "received_at": at,
        "payload": event.to_json(),
    }
    await postroom.db.write(lambda conn: conn.execute(insert(events), row))


async def statuses(postroom: Postroom) -> dict[str, str]:
    query = select(subscribers.c.email, subscribers.c.status)
    return await postroom.db.read(lambda conn: {r.email: r.status for r in conn.execute(query)})


async def reengagement_rows(postroom: Postroom) -> int:
    query = select(func.count()).where(sends.c.email_type == "reengagement")
    return int(await postroom.db.read(lambda conn: conn.execute(query).scalar_one()))


@pytest.fixture
async def audience(postroom: Postroom) -> Postroom:
    """Three quiet subscribers (one with only machine opens), one engaged, one too new, one
    only pending."""
    old = NOW - 200 * DAY
    for email in [*QUIET, "engaged@example.com"]:
        await subscribe(postroom, email, old)
    await subscribe(postroom, "new@example.com", NOW - 20 * DAY)
    await subscribe(postroom, "pending@example.com", old, pending=True)
    await record(postroom, "machine@example.com", FeedbackType.OPENED, NOW - 3 * DAY, machine=True)
    await record(postroom, "engaged@example.com", FeedbackType.OPENED, NOW - 10 * DAY)
    await record(postroom, "quiet@example.com", FeedbackType.CLICKED, NOW - 181 * DAY)  # too old
    return postroom


async def test_a_dry_run_reports_and_changes_nothing(audience: Postroom) -> None:
    before = await statuses(audience)
    report = await run_sunset(audience, apply=False, now=NOW)
    assert sorted(q.email for q in report.reengage) == sorted(QUIET)
    assert report.sunset == [] and report.waiting == 0
    assert await statuses(audience) == before
    assert await reengagement_rows(audience) == 0
    lines = describe(report)
    assert lines[0] == "3 would get the re-engagement email" and "dry run" in lines[-1]


async def test_one_email_then_sunset_after_the_grace_unless_they_engage(
    audience: Postroom, running_worker: RunningWorker, fake_provider: FakeProvider
) -> None:
    first = await run_sunset(audience, apply=True, now=NOW)
    assert first.emails_queued == 3
    await running_worker.until(lambda: _all_sent(audience))
    for later in (NOW, NOW + DAY, NOW + 10 * DAY):  # again the same day, and on later days
        again = await run_sunset(audience, apply=True, now=later)
        assert (again.reengage, again.emails_queued, again.waiting) == ([], 0, 3)
    assert await reengagement_rows(audience) == 3
    assert sorted(e.recipient for e in fake_provider.delivered) == sorted(QUIET)
    email = fake_provider.delivered_to("quiet@example.com")[0]
    assert "/preferences/" in email.html and "List-Unsubscribe" in email.headers

    # One of them opens the email (a human open), days after it went.
    await record(audience, "later@example.com", FeedbackType.OPENED, NOW + 5 * DAY)
    early = await run_sunset(audience, apply=True, now=NOW + 29 * DAY)
    assert early.sunset == [] and early.waiting == 2
    done = await run_sunset(audience, apply=True, now=NOW + 31 * DAY)
    assert sorted(q.email for q in done.sunset) == ["machine@example.com", "quiet@example.com"]
    assert done.sunset_done == 2
    assert await statuses(audience) == {
        "quiet@example.com": "sunset",
        "machine@example.com": "sunset",
        "later@example.com": "active",
        "engaged@example.com": "active",
        "new@example.com": "active",
        "pending@example.com": "active",
    }
    # Campaigns page through active subscribers only: the sunset are left out.
    page = await Subscribers(audience.db).active_page("jane")
    assert {s.email for s in page} == {
        "later@example.com",
        "engaged@example.com",
        "new@example.com",
    }
    assert len(fake_provider.delivered) == 3


async def test_an_open_after_the_plan_keeps_the_subscriber(audience: Postroom) -> None:
    from postroom.store.sunset import Quiet, SunsetStore

    store = SunsetStore(audience.db)
    people = await statuses(audience)
    assert people["quiet@example.com"] == "active"
    query = select(subscribers.c.id).where(subscribers.c.email == "quiet@example.com")
    subscriber_id = await audience.db.read(lambda conn: conn.execute(query).scalar_one())
    await record(audience, "quiet@example.com", FeedbackType.CLICKED, NOW)
    quiet = Quiet(subscriber_id, "quiet@example.com", None, None)
    assert await store.mark_sunset([quiet], NOW) == 0
    assert (await statuses(audience))["quiet@example.com"] == "active"


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        (None, SunsetAction.REENGAGE),
        (Reengagement(NOW - 200 * DAY, NOW - 200 * DAY), SunsetAction.REENGAGE),  # old cycle
        (Reengagement(NOW - 2 * DAY, None), SunsetAction.WAIT),  # still on its way
        (Reengagement(NOW - 40 * DAY, NOW - 29 * DAY), SunsetAction.WAIT),  # grace running
        (Reengagement(NOW - 40 * DAY, NOW - 30 * DAY), SunsetAction.SUNSET),
    ],
)
def test_decide(last: Reengagement | None, expected: SunsetAction) -> None:
    assert decide(last, NOW, inactive_days=180, grace_days=30) is expected


async def _all_sent(postroom: Postroom) -> bool:
    query = select(sends.c.status).where(sends.c.email_type == "reengagement")
    found = await postroom.db.read(lambda conn: list(conn.execute(query).scalars()))
    return found == ["sent"] * 3
