"""Building the campaign parts of a worker from a process's shared parts."""

from __future__ import annotations

from postroom.campaigns.dispatch import DeliveryDispatcher
from postroom.campaigns.render import ChunkRenderer
from postroom.campaigns.scheduler import CampaignScheduler
from postroom.campaigns.sender import ChunkSender
from postroom.config import Settings
from postroom.queue.base import QueueBackend
from postroom.rendering.renderer import Renderer
from postroom.store.campaign_ledger import CampaignLedger, ReputationGuard
from postroom.store.campaigns import Campaigns
from postroom.store.database import Database
from postroom.store.suppressions import Suppressions
from postroom.worker.pipeline import DeliveryPipeline


def build_dispatcher(
    settings: Settings,
    db: Database,
    suppressions: Suppressions,
    renderer: Renderer,
    pipeline: DeliveryPipeline,
) -> DeliveryDispatcher:
    """Chunk jobs share the pipeline's hand-over, so rate limits, provider pauses and the
    breaker see campaign and single mail together."""
    policy = pipeline.policy
    sender = ChunkSender(
        queue=pipeline.queue,
        campaigns=Campaigns(db),
        ledger=CampaignLedger(
            db,
            suppressions,
            resend_ambiguous=policy.resend_ambiguous(marketing=True),
            guard=ReputationGuard(
                bounce_rate=settings.alert_bounce_rate,
                complaint_rate=settings.alert_complaint_critical,
                min_sends=settings.alert_min_sends,
            ),
        ),
        suppressions=suppressions,
        renderer=ChunkRenderer(renderer),
        handover=pipeline.handover,
        policy=policy,
        lease_seconds=settings.lease_seconds,
    )
    slots = settings.campaign_chunk_concurrency
    return DeliveryDispatcher(
        pipeline,
        sender,
        chunk_weight=max(1, settings.worker_concurrency // slots),
        max_chunks=slots,
    )


def build_scheduler(settings: Settings, db: Database, queue: QueueBackend) -> CampaignScheduler:
    return CampaignScheduler(
        Campaigns(db),
        queue,
        interval=settings.campaign_scheduler_interval,
        stale_after=settings.campaign_stale_chunk_seconds,
    )
