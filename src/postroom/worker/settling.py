"""The last stage of a batch (``worker/pipeline.py``): commit what the stages decided.

The ledger commits first, with the suppressions the outcomes call for, and only then is the
queue told; when the queue lives in the ledger's database, both commit in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from postroom import metrics
from postroom.providers.base import Provider
from postroom.queue.base import QueueBackend, joining
from postroom.store.database import Transaction
from postroom.store.ledger import Ledger
from postroom.store.suppressions import Suppressions, SuppressionScope
from postroom.worker.batch import PipelineStats, Settlement

log = logging.getLogger("postroom.worker")

# Outcomes are retried over about 6 s (0.2, 0.4 … 3.2), well inside a lease.
_RECORD_ATTEMPTS = 6
_RECORD_BACKOFF = 0.2


class Settler:
    def __init__(
        self,
        *,
        queue: QueueBackend,
        ledger: Ledger,
        suppressions: Suppressions,
        provider: Provider,
        stats: PipelineStats,
    ) -> None:
        self.queue = queue
        self.ledger = ledger
        self.suppressions = suppressions
        self.provider = provider
        self.stats = stats  # the pipeline's counters, shared

    async def settle(self, s: Settlement) -> None:
        """Commit the ledger first; a crash after it only causes a redelivery we ack. When
        the queue lives in the same database, both commit in one transaction."""
        for delivery, reason in s.dead:
            self.stats.dead_lettered += 1
            log.warning("dead-lettered message %s: %s", delivery.id, reason)

        def suppress(conn: Transaction) -> None:
            # With the outcome, not after it: a crash in between would leave a bad address
            # recorded as failed but never suppressed. Suppressions live beside the ledger.
            for email, detail in s.suppress:
                self.suppressions.add_within(
                    conn, email, SuppressionScope.ALL, "invalid_address", detail
                )

        queue = joining(self.queue, self.ledger.db)
        if queue is not None:

            def settle(conn: Transaction) -> None:
                suppress(conn)
                queue.ack_within(conn, s.ack)
                for delivery, delay, error in s.retry:
                    queue.retry_within(conn, delivery, delay, error)
                for delivery, delay in s.release:
                    queue.release_within(conn, delivery, delay)
                for delivery, reason in s.dead:
                    queue.dead_letter_within(conn, delivery, reason)

            await self._record(s, settle)
        else:
            await self._record(s, suppress if s.suppress else None)
            await self._settle_with_queue(s)
        self._count(s)

    def _count(self, s: Settlement) -> None:
        """Outcomes by provider and email type, once they are committed."""
        if not s.outcomes:
            return
        for outcome in s.outcomes:
            metrics.SENDS.labels(
                outcome.provider or self.provider.name,
                s.email_types.get(outcome.send_id, "unknown"),
                outcome.status.value,
            ).inc()

    async def _record(self, s: Settlement, then: Callable[[Transaction], None] | None) -> None:
        """Record the outcomes, trying again through a short database outage: once mail has
        gone out, giving up here would leave its rows ``sending``, and after a lease they
        would count as ambiguous and (by policy) be sent twice."""
        for attempt in range(_RECORD_ATTEMPTS):
            try:
                await self.ledger.record(s.outcomes, then=then)
                return
            except Exception:
                if attempt == _RECORD_ATTEMPTS - 1:
                    raise
                log.warning(
                    "recording %d outcomes failed; trying again", len(s.outcomes), exc_info=True
                )
                await asyncio.sleep(_RECORD_BACKOFF * 2**attempt)

    async def _settle_with_queue(self, s: Settlement) -> None:
        if s.ack:
            await self.queue.ack(s.ack)
        for delivery, delay, error in s.retry:
            await self.queue.retry(delivery, delay, error)
        for delivery, delay in s.release:
            await self.queue.release(delivery, delay)
        for delivery, reason in s.dead:
            await self.queue.dead_letter(delivery, reason)
