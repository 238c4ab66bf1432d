"""Routing claimed deliveries: campaign chunk jobs to the chunk sender, the rest (email
events) to the delivery pipeline.

A chunk job weighs as much as ``chunk_weight`` messages in the worker's room, and at most
``max_chunks`` are sent at once per process: a chunk holds up to 1,000 rendered messages in
memory while it is with the provider. A claim that brought more chunk jobs than that (the
first claim of a campaign) hands the extra ones back at once for other workers to take.
"""

from __future__ import annotations

import asyncio
import logging

from postroom.campaigns.jobs import is_chunk_job
from postroom.campaigns.sender import ChunkSender
from postroom.queue.base import Delivery
from postroom.worker.pipeline import DeliveryPipeline

log = logging.getLogger("postroom.campaigns")


class DeliveryDispatcher:
    def __init__(
        self,
        pipeline: DeliveryPipeline,
        chunks: ChunkSender,
        *,
        chunk_weight: int,
        max_chunks: int,
    ) -> None:
        self.pipeline = pipeline
        self.chunks = chunks
        self.chunk_weight = max(1, chunk_weight)
        self.max_chunks = max(1, max_chunks)
        self._active_chunks = 0

    def weigh(self, delivery: Delivery) -> int:
        return self.chunk_weight if is_chunk_job(delivery.body) else 1

    async def process(self, deliveries: list[Delivery]) -> None:
        emails = [d for d in deliveries if not is_chunk_job(d.body)]
        jobs = [d for d in deliveries if is_chunk_job(d.body)]
        work = [self.pipeline.process(emails)] if emails else []
        for job in jobs:
            if self._active_chunks >= self.max_chunks:
                work.append(self._hand_back(job))
            else:
                self._active_chunks += 1
                work.append(self._send_chunk(job))
        results = await asyncio.gather(*work, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                # Leases bring these messages back; the ledgers decide what a redelivery means.
                log.error("a batch failed: %r", result, exc_info=result)

    async def _send_chunk(self, delivery: Delivery) -> None:
        try:
            await self.chunks.process(delivery)
        finally:
            self._active_chunks -= 1

    async def _hand_back(self, delivery: Delivery) -> None:
        await self.chunks.queue.release(delivery)
