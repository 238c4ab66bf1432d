"""A circuit breaker per provider, and failover to a secondary provider while it is open.

After ``threshold`` consecutive provider calls that failed transiently as a whole (5xx,
connection refused: the provider is down, not one message bad), the breaker opens. While it
is open, mail goes to the secondary provider when one is configured; without one, messages
are not offered at all and come back as :class:`ProviderUnavailableError`, which the worker
answers by releasing them for later without spending a retry attempt. After ``open_seconds``
one call is let through as a probe; its success closes the breaker, its failure opens it again.

Rate limiting (HTTP 429) is the provider working as designed and never counts as a failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from enum import StrEnum

from postroom import metrics
from postroom.errors import ProviderUnavailableError, RateLimitedError, TransientProviderError
from postroom.messages import RenderedEmail
from postroom.providers.base import Provider, SendResult

log = logging.getLogger("postroom.worker")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # one probe call is under way


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        threshold: int = 5,
        open_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.name = name
        self.threshold = threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self.opened_count = 0  # how often it opened (metrics, tests)

    def allow(self) -> bool:
        """Whether a call may go to the provider now (a probe, when half-open)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and self.retry_after() <= 0:
            self.state = BreakerState.HALF_OPEN
            log.info("provider %s: circuit half-open, sending a probe", self.name)
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next probe may go (0 when closed)."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        return max(0.0, self._opened_at + self.open_seconds - self._clock())

    def succeeded(self) -> None:
        if self.state is not BreakerState.CLOSED:
            log.warning("provider %s: circuit closed again", self.name)
            metrics.CIRCUIT_OPEN.labels(self.name).set(0)
        self.state = BreakerState.CLOSED
        self._failures = 0

    def failed(self) -> None:
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN or self._failures >= self.threshold:
            if self.state is not BreakerState.OPEN:
                self.opened_count += 1
                log.error(
                    "provider %s: circuit open after %d failed calls; next probe in %.0fs",
                    self.name,
                    self._failures,
                    self.open_seconds,
                )
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()
            metrics.CIRCUIT_OPEN.labels(self.name).set(1)


class FailoverProvider:
    """The primary provider behind a breaker, with an optional secondary while it is open."""

    def __init__(
        self, primary: Provider, breaker: CircuitBreaker, secondary: Provider | None = None
    ) -> None:
        self.primary = primary
        self.secondary = secondary
        self.breaker = breaker
        self.name = primary.name
        self.max_batch_size = primary.max_batch_size
        # The hand-over counts request-rate tokens by how the primary calls (SES: per message).
        self.calls_per_message = getattr(primary, "calls_per_message", False)

    async def send(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        if not self.breaker.allow():
            return await self._while_open(batch)
        results = await self.primary.send(batch)
        if _provider_down(results):
            self.breaker.failed()
            if self.breaker.state is BreakerState.OPEN and self.secondary is not None:
                # Nothing of these was accepted: the secondary may take them at once.
                return await self._reroute(batch, results)
        elif any(r.ok for r in results):
            self.breaker.succeeded()
        return results

    async def _while_open(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        if self.secondary is None:
            error = ProviderUnavailableError(
                f"provider {self.primary.name} is unavailable (circuit open)",
                retry_after=max(self.breaker.retry_after(), 1.0),
            )
            return [SendResult(e.send_id, error=error) for e in batch]
        return await self._via_secondary(batch)

    async def _reroute(
        self, batch: Sequence[RenderedEmail], results: list[SendResult]
    ) -> list[SendResult]:
        failed = [i for i, r in enumerate(results) if isinstance(r.error, TransientProviderError)]
        again = await self._via_secondary([batch[i] for i in failed])
        merged = list(results)
        for i, result in zip(failed, again, strict=True):
            merged[i] = result
        return merged

    async def _via_secondary(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        assert self.secondary is not None
        return await send_through(self.secondary, batch)

    async def close(self) -> None:
        await self.primary.close()
        if self.secondary is not None:
            await self.secondary.close()


async def send_through(provider: Provider, batch: Sequence[RenderedEmail]) -> list[SendResult]:
    """``batch`` through a provider other than the one the worker called: in its own batch
    size, each result naming it."""
    size = max(1, provider.max_batch_size)
    results: list[SendResult] = []
    for start in range(0, len(batch), size):
        chunk = await provider.send(batch[start : start + size])
        results += [
            SendResult(r.send_id, r.provider_message_id, r.error, r.provider or provider.name)
            for r in chunk
        ]
    return results


def _provider_down(results: Sequence[SendResult]) -> bool:
    """Every message failed transiently, and not because we were told to slow down or held
    back on our side (a spent warm-up cap)."""
    return bool(results) and all(
        isinstance(r.error, TransientProviderError)
        and not isinstance(r.error, RateLimitedError | ProviderUnavailableError)
        for r in results
    )
