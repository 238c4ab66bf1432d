"""Sending one chunk job: prepare (ledger), render, hand over in batch calls, settle, ack.

Every recipient leaves with an outcome or stays open for the chunk's next delivery: sent,
failed (permanent; a bad address is also suppressed), suppressed, ambiguous (the answer was
lost: not resent, per the marketing policy), or pending again after transient failures, in
which case the chunk goes back through the queue with the retry schedule's delay and only its
open recipients are tried. When the schedule is spent the rest are recorded failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator

from postroom import metrics
from postroom.campaigns.jobs import read_chunk_job
from postroom.campaigns.render import ChunkRenderer
from postroom.errors import (
    AmbiguousProviderError,
    PermanentProviderError,
    ProviderUnavailableError,
)
from postroom.messages import Priority
from postroom.providers.base import SendResult
from postroom.queue.base import Delivery, QueueBackend
from postroom.store.campaign_ledger import CampaignLedger, RecipientOutcome
from postroom.store.campaign_records import (
    CampaignContent,
    CampaignState,
    ChunkJob,
    ChunkRecipient,
    RecipientState,
)
from postroom.store.campaigns import Campaigns
from postroom.store.suppressions import Suppressions, SuppressionScope
from postroom.worker.handover import HandOver
from postroom.worker.retry import RetryPolicy

log = logging.getLogger("postroom.campaigns")

_NOT_OFFERED_DELAY = 5.0

__all__ = ["ChunkSender"]


class ChunkSender:
    def __init__(
        self,
        *,
        queue: QueueBackend,
        campaigns: Campaigns,
        ledger: CampaignLedger,
        suppressions: Suppressions,
        renderer: ChunkRenderer,
        handover: HandOver,
        policy: RetryPolicy,
        lease_seconds: float,
    ) -> None:
        self.queue = queue
        self.campaigns = campaigns
        self.ledger = ledger
        self.suppressions = suppressions
        self.renderer = renderer
        self.handover = handover
        self.policy = policy
        self.lease_seconds = lease_seconds
        self._contents: dict[str, CampaignContent] = {}

    async def process(self, delivery: Delivery) -> None:
        job = read_chunk_job(delivery.body)
        if job is None:
            await self.queue.dead_letter(delivery, "malformed campaign chunk job")
            return
        prepared = await self.ledger.prepare(job, self.lease_seconds)
        if prepared.busy:
            # Another worker holds some of these recipients; look again after its lease.
            await self.queue.release(delivery, self.lease_seconds)
            return
        if prepared.state is not CampaignState.SENDING:
            await self.queue.ack([delivery])  # paused (parked), cancelled or finished
            return
        content = await self._content(job.campaign_id)
        outcomes: list[RecipientOutcome] = []
        emails = self.renderer.render(
            content, prepared.to_send, prepared.ab_winner, failed=outcomes
        )
        results: list[SendResult] = []
        if emails:
            async with self._heartbeat(delivery, job, prepared.handover):
                results = await self.handover.send(emails, Priority.MARKETING)
        by_id = {r.send_id(job.campaign_id): r for r in prepared.to_send}
        bad_addresses: list[tuple[str, str]] = []
        for result in results:
            recipient = by_id[result.send_id]
            outcomes.append(self._judge(recipient, result, delivery, bad_addresses))
        for email, reason in bad_addresses:
            await self.suppressions.add(email, SuppressionScope.ALL, "bad_address", reason[:500])
        still_open = await self.ledger.settle(job, prepared.handover, outcomes)
        self._count(outcomes)
        log.info(
            "campaign chunk handed over",
            extra={
                "campaign_id": job.campaign_id,
                "chunk": job.chunk,
                "attempt": delivery.attempt,
                "outcomes": dict(Counter(o.state.value for o in outcomes)),
                "still_open": still_open,
            },
        )
        # Never offered at all (open circuit, a provider pause): no attempt is spent.
        offered = any(not isinstance(r.error, ProviderUnavailableError) for r in results)
        await self._finish(delivery, job, still_open, outcomes, offered=offered or not results)

    def _judge(
        self,
        recipient: ChunkRecipient,
        result: SendResult,
        delivery: Delivery,
        bad_addresses: list[tuple[str, str]],
    ) -> RecipientOutcome:
        error = result.error
        position = recipient.position
        if error is None:
            return RecipientOutcome(position, RecipientState.SENT, result.provider_message_id)
        if isinstance(error, PermanentProviderError):
            if error.suppress:
                bad_addresses.append((recipient.email, str(error)))
            return RecipientOutcome(position, RecipientState.FAILED, error=str(error))
        if isinstance(error, AmbiguousProviderError) and not self.policy.resend_ambiguous(
            marketing=True
        ):
            return RecipientOutcome(position, RecipientState.AMBIGUOUS, error=str(error))
        return RecipientOutcome(position, RecipientState.PENDING, error=str(error))

    async def _finish(
        self,
        delivery: Delivery,
        job: ChunkJob,
        still_open: int,
        outcomes: list[RecipientOutcome],
        *,
        offered: bool,
    ) -> None:
        if still_open == 0:
            await self.queue.ack([delivery])
            return
        errors = [o.error for o in outcomes if o.state is RecipientState.PENDING and o.error]
        reason = errors[0] if errors else "recipients still open"
        if not offered:
            await self.queue.release(delivery, _NOT_OFFERED_DELAY)
            return
        delay = self.policy.queue_delay(delivery.attempt)
        if delay is None:
            await self._fail_open(job, reason)
            await self.queue.ack([delivery])
            return
        await self.queue.retry(delivery, delay, reason[:500])

    async def _fail_open(self, job: ChunkJob, reason: str) -> None:
        """The retry schedule is spent: the chunk's open recipients fail for good."""
        prepared = await self.ledger.prepare(job, 0.0)
        outcomes = [
            RecipientOutcome(r.position, RecipientState.FAILED, error=f"retries spent: {reason}")
            for r in prepared.to_send
        ]
        await self.ledger.settle(job, prepared.handover, outcomes)

    async def _content(self, campaign_id: str) -> CampaignContent:
        content = self._contents.get(campaign_id)
        if content is None:
            if len(self._contents) > 64:
                self._contents.clear()
            content = self._contents[campaign_id] = await self.campaigns.content(campaign_id)
        return content

    @contextlib.asynccontextmanager
    async def _heartbeat(
        self, delivery: Delivery, job: ChunkJob, handover: int | None
    ) -> AsyncIterator[None]:
        async def beat() -> None:
            while True:
                await asyncio.sleep(self.lease_seconds / 3)
                try:
                    await self.queue.extend([delivery], self.lease_seconds)
                    if handover is not None:
                        await self.ledger.heartbeat(job, handover)
                except Exception:
                    log.exception("could not extend the lease of chunk %s", job.job_id)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @staticmethod
    def _count(outcomes: list[RecipientOutcome]) -> None:
        for state, count in Counter(outcome.state.value for outcome in outcomes).items():
            metrics.CAMPAIGN_RECIPIENTS.labels(state).inc(count)
