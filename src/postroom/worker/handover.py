"""Hand a batch to the provider, retrying transient failures a few times in place.

Only the messages that failed transiently go round again; the rest keep their first result.
What is still failing after the immediate retries is returned for a retry through the queue.
Every call, retries included, first waits for the send-rate limits (``worker.throttle``).

A ``Retry-After`` is the provider's word for the whole account, not for one call: after a
rate-limited answer every call of this worker waits until it has passed (up to
``MAX_IMMEDIATE_WAIT``; a longer pause hands the messages back unoffered, spending no
attempt).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from postroom import metrics
from postroom.errors import (
    AmbiguousProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    TransientProviderError,
)
from postroom.messages import Priority, RenderedEmail
from postroom.providers.base import CallsPerMessage, Provider, SendResult
from postroom.worker.retry import MAX_IMMEDIATE_WAIT, RetryPolicy
from postroom.worker.throttle import Throttle

log = logging.getLogger("postroom.worker")


class HandOver:
    def __init__(
        self,
        provider: Provider,
        policy: RetryPolicy,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        throttle: Throttle | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.policy = policy
        self._sleep = sleep
        self.throttle = throttle
        self._clock = clock
        self._paused_until = 0.0
        self._per_message = isinstance(provider, CallsPerMessage) and provider.calls_per_message

    async def send(
        self, emails: Sequence[RenderedEmail], priority: Priority = Priority.TRANSACTIONAL
    ) -> list[SendResult]:
        """One result per email, in order; ``priority`` orders waits for the rate limits."""
        size = max(1, self.provider.max_batch_size)
        requests = self.throttle.limits.requests if self.throttle else None
        if self._per_message and requests is not None:
            # One call per message: a chunk no larger than the request burst, so the calls
            # a chunk makes at once never exceed the request rate.
            size = min(size, max(1, int(requests.burst)))
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
        while True:
            if self.throttle is not None:
                calls = len(emails) if self._per_message else 1
                await self.throttle.admit(emails, priority, calls)
            # Checked last thing before the call: a 429 may have come in while we waited.
            paused = self._paused_until - self._clock()
            if paused <= 0:
                break
            if paused > MAX_IMMEDIATE_WAIT:
                error = ProviderUnavailableError(
                    f"provider {self.provider.name} asked to wait {paused:.0f}s",
                    retry_after=paused,
                )
                return [SendResult(e.send_id, error=error) for e in emails]
            # The slot taken before the pause has passed unused: wait, then take a new one,
            # so the calls held back do not all go at once when the pause ends.
            await self._sleep(paused)
        results = await self._offer(emails)
        for result in results:
            if isinstance(result.error, RateLimitedError):
                until = self._clock() + result.error.retry_after
                self._paused_until = max(self._paused_until, until)
        return results

    async def _offer(self, emails: Sequence[RenderedEmail]) -> list[SendResult]:
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
