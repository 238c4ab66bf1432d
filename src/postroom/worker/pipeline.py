"""One claimed batch's way through the worker: parse, bind to the ledger, check suppression,
render, mark ``sending``, hand over, record, and only then settle with the queue (the last two in
``worker/settling.py``).

Every stage works on the whole batch so that a batch costs a handful of transactions, not a
handful per message. Each message leaves the pipeline in exactly one way: acked, retried,
released or dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from postroom import metrics
from postroom.errors import (
    AmbiguousProviderError,
    InvalidMessageError,
    PermanentProviderError,
    ProviderError,
    ProviderUnavailableError,
    TemplateError,
)
from postroom.messages import RenderedEmail, parse_event
from postroom.providers.base import Provider, SendResult
from postroom.queue.base import Delivery, QueueBackend
from postroom.rendering.registry import TemplateRegistry
from postroom.rendering.renderer import Renderer
from postroom.store.database import Transaction
from postroom.store.ledger import FINAL, Ledger, NewSend, Outcome, SendRecord, SendStatus
from postroom.store.suppressions import Suppressions
from postroom.worker.batch import Item, PipelineStats, Settlement
from postroom.worker.handover import HandOver
from postroom.worker.retry import RetryPolicy
from postroom.worker.settling import Settler
from postroom.worker.throttle import Throttle

log = logging.getLogger("postroom.worker")


class DeliveryPipeline:
    def __init__(
        self,
        *,
        queue: QueueBackend,
        ledger: Ledger,
        suppressions: Suppressions,
        registry: TemplateRegistry,
        renderer: Renderer,
        provider: Provider,
        policy: RetryPolicy,
        lease_seconds: float,
        max_document_bytes: int,
        content_gate: Callable[[RenderedEmail], str | None] | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.queue = queue
        self.ledger = ledger
        self.suppressions = suppressions
        self.registry = registry
        self.renderer = renderer
        self.provider = provider
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.max_document_bytes = max_document_bytes
        # Returns why a rendered message must not go out (opt-in content check), or None.
        self.content_gate = content_gate
        self.handover = HandOver(provider, policy, throttle=throttle)
        self.stats = PipelineStats()
        self.settler = Settler(
            queue=queue,
            ledger=ledger,
            suppressions=suppressions,
            provider=provider,
            stats=self.stats,
        )

    async def process(self, deliveries: list[Delivery]) -> None:
        s = Settlement()
        items = self._parse(deliveries, s)
        items = await self._prepare(items, s)
        items = await self._render(items, s)
        if items:
            most_urgent = min((i.priority for i in items), key=lambda p: p.rank)
            async with self._heartbeat(items):
                results = await self.handover.send(
                    [i.rendered for i in items if i.rendered], most_urgent
                )
            self._judge(items, results, s)
        await self.settler.settle(s)

    def _parse(self, deliveries: list[Delivery], s: Settlement) -> list[Item]:
        items = []
        for d in deliveries:
            try:
                event = parse_event(d.body, max_bytes=self.max_document_bytes)
                email_type = self.registry.get(event.email_type)
                email_type.check_data(event.template_data)
            except InvalidMessageError as exc:
                s.dead.append((d, f"invalid document: {exc}"))
                continue
            priority = event.priority or email_type.priority
            items.append(Item(d, event, email_type, priority=priority))
        return items

    async def _prepare(self, items: list[Item], s: Settlement) -> list[Item]:
        """Bind each message to its ledger row, drop what must not go out, and mark the rest
        ``sending`` (design §4: before the provider call), all in one transaction: on the
        embedded database every transaction is a turn at the one write lock that the API
        and every worker share.

        The stages note what they decide in a settlement of their own, merged only after the
        commit: the database may run ``work`` again when its lock is busy.
        """
        if not items:
            return []
        new = [NewSend.for_event(i.event, i.priority.value) for i in items]

        def work(conn: Transaction) -> tuple[list[Item], Settlement, PipelineStats]:
            decided, counts = Settlement(), PipelineStats()
            rows = self.ledger.find_or_create_within(conn, new)
            keep = self._bind(items, new, rows, decided, counts)
            keep = self._note_abandoned(conn, keep, decided)
            keep = self._drop_suppressed(conn, keep, decided, counts)
            return self._mark_sending(conn, keep, decided), decided, counts

        keep, decided, counts = await self.ledger.db.write(work)
        s.absorb(decided)
        self.stats.absorb(counts)
        return keep

    def _bind(
        self,
        items: list[Item],
        new: list[NewSend],
        rows: list[tuple[SendRecord, bool]],
        s: Settlement,
        counts: PipelineStats,
    ) -> list[Item]:
        """Keep the messages whose ledger row still needs sending."""
        keep: list[Item] = []
        seen: set[str] = set()
        for item, send, (record, _created) in zip(items, new, rows, strict=True):
            item.record = record
            s.email_types[record.id] = item.email_type.name
            if record.content_hash != send.content_hash:
                s.dead.append(
                    (
                        item.delivery,
                        f"idempotency key reused with a different document (send {record.id})",
                    )
                )
            elif record.status in FINAL:
                counts.duplicates += 1
                s.ack.append(item.delivery)
            elif record.id in seen or (
                record.status is SendStatus.SENDING
                and not self.ledger.is_stale(record, self.lease_seconds)
            ):
                # Another copy is being handled right now; look again when its lease is over.
                s.release.append((item.delivery, self.lease_seconds))
            elif self._ambiguous_and_kept(item, record, s, counts):
                continue
            else:
                seen.add(record.id)
                keep.append(item)
        return keep

    def _note_abandoned(self, conn: Transaction, items: list[Item], s: Settlement) -> list[Item]:
        """Mark abandoned rows ambiguous before resending them. One that left ``sending`` in
        the meantime was not abandoned after all: look at it again later."""
        if not s.noted:
            return items
        noted = {i.send_id for i in s.noted}
        marked = self.ledger.note_ambiguous_within(
            conn, sorted(noted), "outcome unknown; resent by policy"
        )
        keep = []
        for item in items:
            if item.send_id in noted and item.send_id not in marked:
                s.release.append((item.delivery, self.lease_seconds))
            else:
                keep.append(item)
        return keep

    @contextlib.asynccontextmanager
    async def _heartbeat(self, items: list[Item]) -> AsyncIterator[None]:
        """While the provider call runs, keep the leases and the ``sending`` rows fresh, so a
        slow hand-over is never taken for a dead worker and sent a second time."""

        async def beat() -> None:
            deliveries = [i.delivery for i in items]
            ids = [i.send_id for i in items]
            while True:
                await asyncio.sleep(self.lease_seconds / 3)
                try:
                    await self.queue.extend(deliveries, self.lease_seconds)
                    await self.ledger.touch_sending(ids)
                except Exception:
                    log.exception("could not extend the leases of %d messages", len(items))

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _ambiguous_and_kept(
        self, item: Item, record: SendRecord, s: Settlement, counts: PipelineStats
    ) -> bool:
        """A stale ``sending`` row means a worker died between the provider call and the
        ledger write: the mail may be out. Count it, and resend only if policy says so."""
        resend = self.policy.resend_ambiguous(marketing=item.email_type.marketing)
        if record.status is SendStatus.AMBIGUOUS:
            # Noted and counted already (a worker died after noting it, or the policy kept it
            # back): the policy's answer stands. Noting it again would find no `sending` row
            # and release the message for ever.
            if not resend:
                s.ack.append(item.delivery)
            return not resend
        if record.status is not SendStatus.SENDING:
            return False
        counts.ambiguous += 1
        if resend:
            counts.ambiguous_resent += 1
            log.warning("send %s outcome unknown after a worker crash; resending", record.id)
            s.noted.append(item)
            return False
        log.warning("send %s outcome unknown after a worker crash; not resent", record.id)
        s.outcomes.append(
            Outcome(record.id, SendStatus.AMBIGUOUS, error="outcome unknown; not resent by policy")
        )
        s.ack.append(item.delivery)
        return True

    def _drop_suppressed(
        self, conn: Transaction, items: list[Item], s: Settlement, counts: PipelineStats
    ) -> list[Item]:
        """Checked at send time: a suppression added after enqueue still stops the mail."""
        blocked: dict[bool, set[str]] = {}
        for marketing in (True, False):
            group = [i.event.recipient_key for i in items if i.email_type.marketing is marketing]
            blocked[marketing] = self.suppressions.blocked_within(conn, group, marketing=marketing)
        keep = []
        for item in items:
            if item.event.recipient_key in blocked[item.email_type.marketing]:
                counts.suppressed += 1
                s.outcomes.append(Outcome(item.send_id, SendStatus.SUPPRESSED, error="suppressed"))
                s.ack.append(item.delivery)
            else:
                keep.append(item)
        return keep

    def _mark_sending(self, conn: Transaction, items: list[Item], s: Settlement) -> list[Item]:
        """Write ``sending`` before the provider call (design §4); a row another worker moved
        first is left to it."""
        claims = [(i.send_id, self.renderer.message_id(i.send_id)) for i in items]
        moved = self.ledger.begin_sending_within(conn, claims, self.provider.name)
        keep = []
        for item in items:
            if item.send_id in moved:
                keep.append(item)
            else:
                s.release.append((item.delivery, self.lease_seconds))
        return keep

    async def _render(self, items: list[Item], s: Settlement) -> list[Item]:
        """Render after ``sending`` is written: a message that cannot render is recorded
        ``failed`` and dead-lettered, like any permanent failure."""
        keep = []
        for n, item in enumerate(items):
            if n % 16 == 15:
                await asyncio.sleep(0)  # let the loop read answers (a 429) between renders
            try:
                item.rendered = self.renderer.render(item.event, send_id=item.send_id)
            except (TemplateError, InvalidMessageError) as exc:
                s.outcomes.append(Outcome(item.send_id, SendStatus.FAILED, error=str(exc)))
                s.dead.append((item.delivery, f"cannot render: {exc}"))
                continue
            refusal = self.content_gate(item.rendered) if self.content_gate else None
            if refusal is not None:
                s.outcomes.append(Outcome(item.send_id, SendStatus.FAILED, error=refusal))
                s.dead.append((item.delivery, refusal))
                continue
            keep.append(item)
        return keep

    def _judge(self, items: list[Item], results: list[SendResult], s: Settlement) -> None:
        for item, result in zip(items, results, strict=True):
            self._judge_one(item, result, s)

    def _judge_one(self, item: Item, result: SendResult, s: Settlement) -> None:
        provider = result.provider or self.provider.name
        error = result.error
        if error is None:
            self.stats.sent += 1
            if item.record is not None:
                waited = datetime.now(UTC) - item.record.created_at
                metrics.ENQUEUE_TO_ACCEPTED.observe(waited.total_seconds())
            s.outcomes.append(
                Outcome(item.send_id, SendStatus.SENT, provider, result.provider_message_id)
            )
            s.ack.append(item.delivery)
            return
        if isinstance(error, PermanentProviderError):
            s.outcomes.append(Outcome(item.send_id, SendStatus.FAILED, provider, error=str(error)))
            if error.suppress:
                # The address itself is bad: suppressing it is the whole remedy, and a DLQ
                # entry would only invite a replay that bounces again.
                self.stats.suppressed += 1
                s.suppress.append((item.event.recipient_key, str(error)))
                s.ack.append(item.delivery)
            else:
                s.dead.append((item.delivery, f"permanent failure: {error}"))
            return
        if isinstance(error, ProviderUnavailableError):
            # Never offered (circuit open): back later, without spending an attempt.
            s.outcomes.append(
                Outcome(item.send_id, SendStatus.RETRY_SCHEDULED, provider, error=str(error))
            )
            s.release.append((item.delivery, error.retry_after))
            return
        if isinstance(error, AmbiguousProviderError):
            self.stats.ambiguous += 1
            if not self.policy.resend_ambiguous(marketing=item.email_type.marketing):
                s.outcomes.append(
                    Outcome(item.send_id, SendStatus.AMBIGUOUS, provider, error=str(error))
                )
                s.ack.append(item.delivery)
                return
            self.stats.ambiguous_resent += 1
            # The resend is scheduled below; this row keeps the ambiguity on record (§4).
            s.outcomes.append(
                Outcome(item.send_id, SendStatus.AMBIGUOUS, provider, error=str(error))
            )
        self._schedule_retry(item, error, provider, s)

    def _schedule_retry(
        self, item: Item, error: ProviderError, provider: str, s: Settlement
    ) -> None:
        delay = self.policy.queue_delay(item.delivery.attempt, error)
        if delay is None:
            attempts = item.delivery.attempt + 1
            reason = f"gave up after {attempts} attempts: {error}"
            s.outcomes.append(Outcome(item.send_id, SendStatus.DEAD, provider, error=reason))
            s.dead.append((item.delivery, reason))
            return
        self.stats.retried += 1
        metrics.RETRIES.labels(str(item.delivery.attempt + 1)).inc()
        s.outcomes.append(
            Outcome(item.send_id, SendStatus.RETRY_SCHEDULED, provider, error=str(error))
        )
        s.retry.append((item.delivery, delay, str(error)))
