"""The campaign scheduler: a loop in every worker (and ``serve``) process that starts due
campaigns, publishes due chunks, republishes chunks whose job was lost, and decides A/B tests.

Every step is a compare-and-set in the database, so any number of processes can run it:
only one starts a campaign, moves a chunk to ``queued`` or takes an A/B decision. A chunk
published twice is harmless (its recipients' rows decide what is still open).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from postroom.campaigns.ab import Arm, decide
from postroom.campaigns.jobs import chunk_message
from postroom.queue.base import QueueBackend
from postroom.store.campaign_records import AbMetric, ChunkJob
from postroom.store.campaigns import Campaigns

log = logging.getLogger("postroom.campaigns")


class CampaignScheduler:
    def __init__(
        self,
        campaigns: Campaigns,
        queue: QueueBackend,
        *,
        interval: float = 1.0,
        stale_after: float = 900.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.campaigns = campaigns
        self.queue = queue
        self.interval = interval
        self.stale_after = stale_after
        self._now = clock or (lambda: datetime.now(UTC))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("campaign scheduler step failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def tick(self) -> int:
        """One pass; returns how many chunk jobs it published."""
        for campaign_id in await self.campaigns.due():
            if await self.campaigns.start(campaign_id):
                log.info("campaign %s started", campaign_id)
        await self._decide_ab_tests()
        published = 0
        while jobs := await self.campaigns.take_due_chunks():
            await self._publish(jobs)
            published += len(jobs)
        stale = await self.campaigns.stale_chunks(self.stale_after)
        if stale:
            log.warning("republishing %d campaign chunks whose job went missing", len(stale))
            await self._publish(stale)
        return published + len(stale)

    async def _publish(self, jobs: list[ChunkJob]) -> None:
        await self.queue.enqueue([chunk_message(job) for job in jobs])

    async def _decide_ab_tests(self) -> None:
        now = self._now()
        for campaign_id, test_done_at in await self.campaigns.ab_waiting():
            content = await self.campaigns.content(campaign_id)
            ab = content.ab_test
            if ab is None or now < test_done_at + timedelta(seconds=ab.wait_seconds):
                continue
            by_variant = await self.campaigns.variant_counts(campaign_id)
            metric_index = 1 if ab.metric is AbMetric.OPENS else 2
            arms = [
                Arm(i, by_variant.get(i, (0, 0, 0))[0], by_variant.get(i, (0, 0, 0))[metric_index])
                for i in range(len(ab.variants))
            ]
            decision = decide(arms, default=ab.default, alpha=ab.alpha)
            if await self.campaigns.release_rest(campaign_id, decision.winner, decision.reason):
                log.info("campaign %s A/B test: %s", campaign_id, decision.reason)
