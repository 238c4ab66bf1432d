"""Warm-up: daily caps that grow from a small start to the target volume of a new sending
domain or dedicated IP, so mailbox providers see reputation build instead of a sudden flood.

The cap grows geometrically: ``initial`` on day 0, ``target`` on day ``days - 1`` (200 to
100,000 over 10 days is roughly doubling each day); from then on there is no cap. Days are
UTC. The count is kept in the database (``send_counts``) and taken in one transaction per
batch, so it holds across every worker. Mail over the day's cap goes through the fallback
provider when one is configured; otherwise it waits for the next day without spending a
retry attempt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from postroom.errors import ProviderUnavailableError
from postroom.messages import RenderedEmail
from postroom.providers.base import Provider, SendResult
from postroom.worker.failover import send_through


@dataclass(frozen=True, slots=True)
class WarmupSchedule:
    start: date
    target: int
    initial: int = 200
    days: int = 30

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.target:
            raise ValueError("the initial daily volume must be positive and at most the target")
        if self.days < 2:
            raise ValueError("a warm-up takes at least 2 days")

    def cap(self, day: date) -> int | None:
        """The most mail that may go out on ``day``; None once the warm-up is over."""
        n = max(0, (day - self.start).days)
        if n >= self.days - 1:
            return None
        growth: float = (self.target / self.initial) ** (n / (self.days - 1))
        return round(self.initial * growth)


TakeFromCap = Callable[[str, date, int, int], Awaitable[int]]
"""(counter, day, wanted, cap) → how many were granted, atomically across workers."""


class WarmupProvider:
    """Sends through ``primary`` within the day's cap; the rest through ``fallback`` or later."""

    def __init__(
        self,
        primary: Provider,
        schedule: WarmupSchedule,
        take: TakeFromCap,
        fallback: Provider | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.primary = primary
        self.schedule = schedule
        self.fallback = fallback
        self._take = take
        self._clock = clock
        self.name = primary.name
        self.max_batch_size = primary.max_batch_size
        # The hand-over counts request-rate tokens by how the primary calls (SES: per message).
        self.calls_per_message = getattr(primary, "calls_per_message", False)

    async def send(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        now = self._clock()
        cap = self.schedule.cap(now.date())
        if cap is None or not batch:
            return await self.primary.send(batch)
        granted = await self._take(f"warmup:{self.primary.name}", now.date(), len(batch), cap)
        results = await self.primary.send(batch[:granted]) if granted else []
        rest = batch[granted:]
        if rest and self.fallback is not None:
            results += await send_through(self.fallback, rest)
        elif rest:
            wait = datetime.combine(now.date() + timedelta(days=1), time(), UTC) - now
            error = ProviderUnavailableError(
                f"warm-up: today's cap of {cap} for {self.primary.name} is spent",
                retry_after=wait.total_seconds(),
            )
            results += [SendResult(e.send_id, error=error) for e in rest]
        return results

    async def close(self) -> None:
        await self.primary.close()
        if self.fallback is not None:
            await self.fallback.close()
