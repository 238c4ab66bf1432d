"""Campaigns end to end on each database: snapshot, chunk jobs, worker, provider, status."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.conftest import RunningWorker
from tests.fakes import FakeProvider
from tests.log_scan import CANARY

from postroom.errors import InvalidMessageError, PermanentProviderError
from postroom.messages import RenderedEmail
from postroom.store.audience import NewSubscriber
from postroom.store.campaign_records import (
    AbTest,
    CampaignState,
    NewCampaign,
    Variant,
)
from postroom.store.campaigns import Campaigns
from postroom.store.consent import Consent, ConsentKind
from postroom.store.suppressions import SuppressionScope
from postroom.webhooks.events import FeedbackType, NormalizedEvent
from postroom.wiring import Postroom

POST = {"creator_name": "Jane Doe", "post_title": "Slow writing", "post_url": "https://p.example/1"}


async def make_audience(postroom: Postroom, list_id: str, count: int) -> list[str]:
    await postroom.subscribers.create_list("Jane's letters", "jane", list_id=list_id)
    consent = Consent(ConsentKind.EXPRESS, "test", datetime.now(UTC))
    emails = [f"reader{i:05d}@example.com" for i in range(count)]
    emails[:1] = [CANARY][:count]  # the suite's canary (tests/log_scan.py), still sorted first
    for start in range(0, count, 1000):
        entries = [
            NewSubscriber(email=e, name=f"Reader {i}", consent=consent)
            for i, e in enumerate(emails[start : start + 1000], start)
        ]
        await postroom.subscribers.subscribe(list_id, entries)
    return emails


async def run_to_the_end(postroom: Postroom, campaigns: Campaigns, campaign_id: str) -> None:
    """Run a worker until the campaign is finished."""
    worker = RunningWorker(postroom)
    try:
        await finished(campaigns, campaign_id, worker)
    finally:
        await worker.shutdown()


def feedback_about(email: RenderedEmail, kind: FeedbackType, **details: Any) -> NormalizedEvent:
    """A webhook event about one delivered copy, as an ESP adapter would normalize it."""
    return NormalizedEvent(
        provider="fake", type=kind, esp_event=kind.value, recipient=email.recipient,
        occurred_at=datetime.now(UTC), postroom_send_id=email.send_id,
        esp_event_id=f"{kind.value}-{email.send_id}", **details,
    )  # fmt: skip


def hold_sends(provider: FakeProvider, when: Callable[[], bool]) -> asyncio.Event:
    """Make the provider's calls wait for the returned event while ``when()`` holds."""
    gate = asyncio.Event()
    original = provider.send

    async def held(batch):  # type: ignore[no-untyped-def]
        if when():
            await gate.wait()
        return await original(batch)

    provider.send = held  # type: ignore[method-assign]
    return gate


async def finished(campaigns: Campaigns, campaign_id: str, worker: RunningWorker) -> None:
    async def done() -> bool:
        status = await campaigns.get(campaign_id)
        return status.status is CampaignState.FINISHED

    try:
        await worker.until(done, timeout=60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {(await campaigns.get(campaign_id)).as_dict()}") from None


@pytest.mark.slow
async def test_campaign_reaches_exactly_the_eligible_subscribers(
    postroom: Postroom, fake_provider: FakeProvider
) -> None:
    fake_provider.max_batch_size = 1000
    emails = await make_audience(postroom, "letters", 10_000)
    unsubscribed = emails[::97]
    suppressed = emails[5::101]
    for email in unsubscribed:
        assert await postroom.subscribers.unsubscribe(email, "letters")
    for email in suppressed:
        await postroom.suppressions.add(email, SuppressionScope.ALL, "hard_bounce")
    campaigns = Campaigns(postroom.db)
    campaign = await campaigns.create(NewCampaign("letters", "new_post_notification", POST))
    assert campaign.status is CampaignState.SCHEDULED

    await run_to_the_end(postroom, campaigns, campaign.id)

    eligible = set(emails) - set(unsubscribed) - set(suppressed)
    copies = Counter(e.recipient for e in fake_provider.delivered)
    assert set(copies) == eligible
    assert max(copies.values()) == 1
    status = await campaigns.get(campaign.id)
    assert status.total == len(emails) - len(unsubscribed)
    assert status.sent == len(eligible)
    assert status.suppressed == len(set(suppressed) - set(unsubscribed))
    assert (status.failed, status.ambiguous, status.pending) == (0, 0, 0)
    assert status.chunks == 10
    # Chunks reach the provider as batch calls of up to its limit, never one per recipient.
    assert len(fake_provider.calls) <= 2 * status.chunks
    sample = fake_provider.delivered[0]
    assert sample.send_id.startswith(f"{campaign.id}.")
    assert "List-Unsubscribe" in sample.headers
    assert sample.subject == "Jane Doe published: Slow writing"


async def test_pause_parks_chunks_and_resume_sends_the_rest(
    postroom: Postroom, fake_provider: FakeProvider
) -> None:
    fake_provider.max_batch_size = 1000
    emails = await make_audience(postroom, "letters", 3_000)
    campaigns = Campaigns(postroom.db)
    campaign = await campaigns.create(NewCampaign("letters", "new_post_notification", POST))
    await campaigns.pause(campaign.id, "operator: checking a typo")
    worker = RunningWorker(postroom)
    try:
        # Scheduled and paused: nothing is snapshotted or sent.
        await asyncio.sleep(1.5)
        status = await campaigns.get(campaign.id)
        assert (status.status, status.total, len(fake_provider.delivered)) == (
            CampaignState.PAUSED,
            0,
            0,
        )
        assert status.status_reason == "operator: checking a typo"
        await campaigns.resume(campaign.id)
        await finished(campaigns, campaign.id, worker)
    finally:
        await worker.shutdown()
    assert sorted(e.recipient for e in fake_provider.delivered) == emails


async def test_pause_during_sending_holds_chunks_until_resumed(
    postroom: Postroom, fake_provider: FakeProvider
) -> None:
    fake_provider.max_batch_size = 1000
    gate, called = asyncio.Event(), asyncio.Event()
    original = fake_provider.send

    async def slow_send(batch):  # type: ignore[no-untyped-def]
        called.set()
        await gate.wait()
        return await original(batch)

    fake_provider.send = slow_send  # type: ignore[method-assign]
    emails = await make_audience(postroom, "letters", 5_000)
    campaigns = Campaigns(postroom.db)
    campaign = await campaigns.create(NewCampaign("letters", "new_post_notification", POST))
    worker = RunningWorker(postroom)
    try:
        await asyncio.wait_for(called.wait(), 10)
        await campaigns.pause(campaign.id, "looks wrong")
        gate.set()  # the chunks already with the provider finish; the rest park

        async def parked() -> bool:
            status = await campaigns.get(campaign.id)
            return status.sent > 0 and status.sent + status.pending == status.total

        await worker.until(parked)
        await asyncio.sleep(1.0)
        paused_sent = (await campaigns.get(campaign.id)).sent
        assert paused_sent < len(emails)
        assert len(fake_provider.delivered) == paused_sent
        await campaigns.resume(campaign.id)
        await finished(campaigns, campaign.id, worker)
    finally:
        await worker.shutdown()
    copies = Counter(e.recipient for e in fake_provider.delivered)
    assert set(copies) == set(emails) and max(copies.values()) == 1


async def test_cancel_stops_a_scheduled_campaign(
    postroom: Postroom, fake_provider: FakeProvider
) -> None:
    await make_audience(postroom, "letters", 10)
    campaigns = Campaigns(postroom.db)
    later = datetime.now(UTC) + timedelta(hours=1)
    campaign = await campaigns.create(
        NewCampaign("letters", "new_post_notification", POST, send_at=later)
    )
    status = await campaigns.cancel(campaign.id, "changed my mind")
    assert status.status is CampaignState.CANCELLED
    with pytest.raises(InvalidMessageError):
        await campaigns.resume(campaign.id)
    assert await campaigns.due() == []


async def test_permanent_failures_and_bad_addresses_are_recorded_per_recipient(
    postroom: Postroom, fake_provider: FakeProvider
) -> None:
    emails = await make_audience(postroom, "letters", 200)
    bad = set(emails[::10])

    def script(email, _seen):  # type: ignore[no-untyped-def]
        if email.recipient in bad:
            return PermanentProviderError("550 5.1.1 no such user", suppress=True)
        return None

    fake_provider.script = script
    campaigns = Campaigns(postroom.db)
    campaign = await campaigns.create(NewCampaign("letters", "new_post_notification", POST))
    await run_to_the_end(postroom, campaigns, campaign.id)
    status = await campaigns.get(campaign.id)
    assert (status.sent, status.failed) == (180, 20)
    assert await postroom.suppressions.blocked(bad, marketing=False) == bad


async def test_ab_variants_are_sent_to_the_test_group_first(
    postroom: Postroom, fake_provider: FakeProvider
) -> None:
    fake_provider.max_batch_size = 1000
    await make_audience(postroom, "letters", 1_000)
    campaigns = Campaigns(postroom.db)
    ab = AbTest(
        variants=(Variant(subject="A: {{ post_title }}"), Variant(subject="B: {{ post_title }}")),
        share=0.2,
        wait_seconds=3600,
    )
    campaign = await campaigns.create(
        NewCampaign("letters", "new_post_notification", POST, ab_test=ab)
    )
    worker = RunningWorker(postroom)
    try:

        async def tested() -> bool:
            return (await campaigns.get(campaign.id)).sent == 200

        await worker.until(tested)
        await asyncio.sleep(1.0)  # the rest waits for the decision
    finally:
        await worker.shutdown()
    subjects = Counter(e.subject for e in fake_provider.delivered)
    assert subjects == {"A: Slow writing": 100, "B: Slow writing": 100}
    status = await campaigns.get(campaign.id)
    assert status.ab_state == "waiting"
    assert [v.sent for v in status.variants] == [100, 100]


async def _ab_campaign_with_opens(
    postroom: Postroom, fake_provider: FakeProvider, opens: tuple[int, int]
) -> tuple[Campaigns, str]:
    """1,000 subscribers, a 20% test of two subjects, then ``opens`` human opens for each
    variant's recipients fed through the feedback store, as webhooks would."""
    from postroom.store.feedback import FeedbackStore

    fake_provider.max_batch_size = 1000
    await make_audience(postroom, "letters", 1_000)
    campaigns = Campaigns(postroom.db)
    ab = AbTest(
        variants=(Variant(subject="A: {{ post_title }}"), Variant(subject="B: {{ post_title }}")),
        share=0.2,
        wait_seconds=0.5,
        default=1,
    )
    campaign = await campaigns.create(
        NewCampaign("letters", "new_post_notification", POST, ab_test=ab)
    )
    # The opens are in before the rest goes out.
    gate = hold_sends(fake_provider, lambda: len(fake_provider.delivered) >= 200)
    feedback = FeedbackStore(postroom.db, postroom.suppressions)
    worker = RunningWorker(postroom)
    try:

        async def tested() -> bool:
            return (await campaigns.get(campaign.id)).sent >= 200

        await worker.until(tested)
        by_subject: dict[str, list[RenderedEmail]] = {"A: Slow writing": [], "B: Slow writing": []}
        for email in fake_provider.delivered:
            by_subject[email.subject].append(email)
        events = [
            feedback_about(email, FeedbackType.OPENED)
            for subject, count in zip(by_subject, opens, strict=True)
            for email in by_subject[subject][:count]
        ]  # fmt: skip
        await feedback.ingest(events)
        gate.set()
        await finished(campaigns, campaign.id, worker)
    finally:
        await worker.shutdown()
    return campaigns, campaign.id


async def test_ab_test_sends_the_variant_the_opens_favour_to_the_rest(
    postroom: Postroom, fake_provider: FakeProvider
) -> None:
    campaigns, campaign_id = await _ab_campaign_with_opens(postroom, fake_provider, (45, 10))
    status = await campaigns.get(campaign_id)
    assert (status.ab_state, status.ab_winner) == ("decided", 0)
    assert [(v.sent, v.opened) for v in status.variants] == [(100, 45), (100, 10)]
    assert "variant 0 won" in (status.status_reason or "")
    subjects = Counter(e.subject for e in fake_provider.delivered)
    assert subjects == {"A: Slow writing": 900, "B: Slow writing": 100}
    # Analytics by campaign: its sends and the human opens bound to its recipients.
    from postroom.store.stats import Stats

    [row] = await Stats(postroom.db).summary(days=1, group_by=["campaign"])
    assert (row.key["campaign"], row.sent, row.count("opened_human")) == (campaign_id, 1000, 55)
    assert row.count("delivered") == 55  # an open proves delivery


async def test_ab_test_without_a_significant_difference_sends_the_default(
    postroom: Postroom, fake_provider: FakeProvider
) -> None:
    campaigns, campaign_id = await _ab_campaign_with_opens(postroom, fake_provider, (22, 20))
    status = await campaigns.get(campaign_id)
    assert (status.ab_state, status.ab_winner) == ("decided", 1)
    assert "no significant difference" in (status.status_reason or "")
    subjects = Counter(e.subject for e in fake_provider.delivered)
    assert subjects == {"A: Slow writing": 100, "B: Slow writing": 900}


async def test_an_erased_subscriber_is_skipped_and_leaves_no_address_in_the_campaign(
    postroom: Postroom, fake_provider: FakeProvider
) -> None:
    from sqlalchemy import select

    from postroom.store.schema import campaign_recipients

    emails = await make_audience(postroom, "letters", 30)
    campaigns = Campaigns(postroom.db)
    campaign = await campaigns.create(NewCampaign("letters", "new_post_notification", POST))
    assert await campaigns.start(campaign.id)  # snapshot taken; nothing sent yet
    held = await postroom.personal_data.export(emails[3])
    assert [row["campaign_id"] for row in held["campaigns"]] == [campaign.id]
    await postroom.personal_data.erase(emails[3])
    await run_to_the_end(postroom, campaigns, campaign.id)
    status = await campaigns.get(campaign.id)
    assert (status.sent, status.suppressed) == (29, 1)
    assert emails[3] not in {e.recipient for e in fake_provider.delivered}
    stored = await postroom.db.read(
        lambda conn: conn.execute(select(campaign_recipients.c.email)).scalars().all()
    )
    assert emails[3] not in stored and None in stored


async def test_a_bounce_storm_pauses_the_campaign_before_its_next_chunk(
    postroom: Postroom, fake_provider: FakeProvider
) -> None:
    from postroom.store.feedback import FeedbackStore

    fake_provider.max_batch_size = 1000
    await make_audience(postroom, "letters", 6_000)
    campaigns = Campaigns(postroom.db)
    campaign = await campaigns.create(NewCampaign("letters", "new_post_notification", POST))
    gate = hold_sends(fake_provider, lambda: bool(fake_provider.delivered))
    worker = RunningWorker(postroom)
    try:

        async def first_chunk_recorded() -> bool:
            return (await campaigns.get(campaign.id)).sent >= 1000

        await worker.until(first_chunk_recorded)
        bounces = [
            feedback_about(email, FeedbackType.BOUNCED_HARD, smtp_code=550, enhanced_status="5.1.1")
            for email in fake_provider.delivered[:150]  # a storm: 15% of the first 1,000
        ]  # fmt: skip
        await FeedbackStore(postroom.db, postroom.suppressions).ingest(bounces)
        gate.set()

        async def paused() -> bool:
            return (await campaigns.get(campaign.id)).status is CampaignState.PAUSED

        try:
            await worker.until(paused)
        except AssertionError:
            raise AssertionError((await campaigns.get(campaign.id)).as_dict()) from None
        await asyncio.sleep(0.5)
        status = await campaigns.get(campaign.id)
        # Chunks already with the provider when the bounces came finish; none starts after.
        assert status.sent <= 1000 * (1 + 2 * 2), status.sent
        assert status.sent < status.total
        assert (status.status_reason or "").startswith("paused itself: hard-bounce rate")
        # An operator who resumes it overrides the guard: it finishes.
        await campaigns.resume(campaign.id)
        await finished(campaigns, campaign.id, worker)
    finally:
        await worker.shutdown()
    assert (await campaigns.get(campaign.id)).sent == 6_000
