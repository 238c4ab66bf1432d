"""The campaign repository on both databases: the snapshot, chunking, spreading, the
scheduler's compare-and-sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postroom.store.audience import NewSubscriber
from postroom.store.campaign_records import CampaignState, NewCampaign
from postroom.store.campaigns import Campaigns
from postroom.store.consent import Consent, ConsentKind
from postroom.wiring import Postroom

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
POST = {"creator_name": "J", "post_title": "T", "post_url": "https://p.example/1"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def audience(postroom: Postroom, count: int, implied: int = 0) -> None:
    await postroom.subscribers.create_list("Essays", "jane", list_id="letters")
    express = Consent(ConsentKind.EXPRESS, "test", T0 - timedelta(days=1))
    # Implied consent given three years ago has expired (CASL: two years).
    stale = Consent(ConsentKind.IMPLIED, "test", T0 - timedelta(days=3 * 365))
    entries = [NewSubscriber(f"r{i:05d}@example.com", None, express) for i in range(count)]
    entries += [NewSubscriber(f"old{i}@example.com", None, stale) for i in range(implied)]
    await postroom.subscribers.subscribe("letters", entries)


async def test_snapshot_takes_active_consented_subscribers_in_chunks(postroom: Postroom) -> None:
    await audience(postroom, 2_500, implied=3)
    await postroom.subscribers.unsubscribe("r00007@example.com", "letters")
    clock = Clock()
    campaigns = Campaigns(postroom.db, clock=clock)
    campaign = await campaigns.create(NewCampaign("letters", "new_post_notification", POST))
    assert await campaigns.due() == [campaign.id]
    assert await campaigns.start(campaign.id)
    assert not await campaigns.start(campaign.id)  # a second scheduler loses the race
    status = await campaigns.get(campaign.id)
    assert (status.status, status.total, status.chunks, status.pending) == (
        CampaignState.SENDING,
        2_499,
        3,
        2_499,
    )
    jobs = await campaigns.take_due_chunks()
    assert [job.chunk for job in jobs] == [0, 1, 2]
    assert await campaigns.take_due_chunks() == []  # moved to queued exactly once


async def test_a_spread_campaign_releases_its_chunks_over_the_window(postroom: Postroom) -> None:
    await audience(postroom, 4_000)
    clock = Clock()
    campaigns = Campaigns(postroom.db, clock=clock)
    new = NewCampaign("letters", "new_post_notification", POST, spread_seconds=3600)
    campaign = await campaigns.create(new)
    await campaigns.start(campaign.id)
    assert [j.chunk for j in await campaigns.take_due_chunks()] == [0]
    clock.now = T0 + timedelta(minutes=15)
    assert [j.chunk for j in await campaigns.take_due_chunks()] == [1]
    clock.now = T0 + timedelta(minutes=44)
    assert [j.chunk for j in await campaigns.take_due_chunks()] == [2]
    clock.now = T0 + timedelta(minutes=46)
    assert [j.chunk for j in await campaigns.take_due_chunks()] == [3]


async def test_a_scheduled_campaign_waits_for_its_time(postroom: Postroom) -> None:
    await audience(postroom, 10)
    clock = Clock()
    campaigns = Campaigns(postroom.db, clock=clock)
    later = NewCampaign("letters", "new_post_notification", POST, send_at=T0 + timedelta(hours=2))
    campaign = await campaigns.create(later)
    assert await campaigns.due() == []
    clock.now = T0 + timedelta(hours=2)
    assert await campaigns.due() == [campaign.id]


async def test_a_queued_chunk_whose_job_went_missing_is_published_again(
    postroom: Postroom,
) -> None:
    await audience(postroom, 1_500)
    clock = Clock()
    campaigns = Campaigns(postroom.db, clock=clock)
    campaign = await campaigns.create(NewCampaign("letters", "new_post_notification", POST))
    await campaigns.start(campaign.id)
    assert len(await campaigns.take_due_chunks()) == 2
    assert await campaigns.stale_chunks(older_than=600) == []
    clock.now = T0 + timedelta(minutes=11)
    assert [j.chunk for j in await campaigns.stale_chunks(older_than=600)] == [0, 1]
    assert await campaigns.stale_chunks(older_than=600) == []  # touched: not again at once
    await campaigns.pause(campaign.id, "x")
    clock.now = T0 + timedelta(minutes=30)
    assert await campaigns.stale_chunks(older_than=600) == []  # only sending campaigns
