"""Hand a batch to the provider, retrying transient failures a few times in place.

Only the messages that failed transiently go round again; the rest keep their first result.
What is still failing after the immediate retries is returned for a retry through the queue.
Every call, retries included, first waits for the send-rate limits (``worker.throttle``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from postroom import metrics
from postroom.errors import (
    AmbiguousProviderError,
    ProviderUnavailableError,
    TransientProviderError,
)
from postroom.messages import Priority, RenderedEmail
from postroom.providers.base import Provider, SendResult
from postroom.worker.retry import RetryPolicy
from postroom.worker.throttle import Throttle

log = logging.getLogger("postroom.worker")


class HandOver:
    def __init__(
        self,
        provider: Provider,
        policy: RetryPolicy,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        throttle: Throttle | None = None,
    ) -> None:
        self.provider = provider
        self.policy = policy
        self._sleep = sleep
        self.throttle = throttle

    async def send(
        self, emails: Sequence[RenderedEmail], priority: Priority = Priority.TRANSACTIONAL
    ) -> list[SendResult]:
        """One result per email, in order; ``priority`` orders waits for the rate limits."""
        size = max(1, self.provider.max_batch_size)
        chunks = [emails[i : i + size] for i in range(0, len(emails), size)]
        results = await asyncio.gather(*(self._send_chunk(chunk, priority) for chunk in chunks))
        return [result for chunk in results for result in chunk]

    async def _send_chunk(
        self, emails: Sequence[RenderedEmail], priority: Priority
    ) -> list[SendResult]:
        results = await self._call(emails, priority)
        for retry_index in range(self.policy.immediate_retries):
            # An open circuit is not retried in place: the breaker decides when to try again.
            failed = [
                i
                for i, r in enumerate(results)
                if isinstance(r.error, TransientProviderError)
                and not isinstance(r.error, ProviderUnavailableError)
            ]
            if not failed:
                break
            delays = [
                self.policy.immediate_delay_for(retry_index, error)
                for error in (results[i].error for i in failed)
                if error is not None
            ]
            if any(delay is None for delay in delays):
                break  # the provider wants a longer pause than we hold a slot for
            metrics.RETRIES.labels("immediate").inc(len(failed))
            await self._sleep(max(d for d in delays if d is not None))
            again = await self._call([emails[i] for i in failed], priority)
            for i, result in zip(failed, again, strict=True):
                results[i] = result
        return results

    async def _call(self, emails: Sequence[RenderedEmail], priority: Priority) -> list[SendResult]:
        if self.throttle is not None:
            await self.throttle.admit(emails, priority)
        try:
            results = await self.provider.send(emails)
        except Exception as exc:
            # A provider must return errors, not raise them; when one raises anyway we cannot
            # tell whether the request went out, so the batch is ambiguous, never lost.
            log.exception("provider %s raised instead of returning results", self.provider.name)
            error = AmbiguousProviderError(f"provider {self.provider.name} raised {exc!r}")
            return [SendResult(e.send_id, error=error) for e in emails]
        if len(results) != len(emails):
            # A provider bug: which of these went out is unknown, but the other chunks'
            # results stand, so only this chunk is ambiguous.
            log.error(
                "provider %s returned %d results for %d messages",
                self.provider.name,
                len(results),
                len(emails),
            )
            error = AmbiguousProviderError(
                f"provider {self.provider.name} returned {len(results)} results "
                f"for {len(emails)} messages"
            )
            return [SendResult(e.send_id, error=error) for e in emails]
        return results
