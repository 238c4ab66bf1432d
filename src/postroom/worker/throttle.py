"""Send-rate limits: per provider (recipients/s and requests/s) and per recipient domain.

Limits are kept as GCRA reservations ("generic cell rate algorithm", the token bucket as
timestamps): a bucket stores the theoretical arrival time ``tat`` of its next unit, and taking
``n`` units reserves the next ``n`` emission slots and says how long to wait for them. One
atomic read-modify-write per take, no background refill, and a take larger than the burst
still goes through (it waits longer) instead of never fitting, which matters for 1,000-recipient
batch calls.

The reservations live in process for the embedded default, or in Redis
(``POSTROOM_RATE_LIMIT_URL=redis://…``) so that a limit holds across every worker on every
host; Redis's clock stamps them, so hosts need not agree on the time.

Within a process, each bucket serves one waiter at a time, most urgent priority first: a
newsletter waiting for tokens never holds up a sign-in link behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from postroom import metrics
from postroom.messages import Priority, RenderedEmail


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` units on average, up to ``burst`` at once."""

    per_second: float
    burst: float = 1.0

    def __post_init__(self) -> None:
        if self.per_second <= 0:
            raise ValueError("a rate must be positive")


class ReservationStore(Protocol):
    """Where buckets keep their reservations."""

    async def reserve(self, key: str, units: float, rate: Rate) -> float:
        """Reserve ``units`` of ``key``'s bucket; seconds to wait before using them."""
        ...

    async def close(self) -> None: ...


class LocalReservations:
    """Buckets in this process (the embedded default: one process sends)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}

    async def reserve(self, key: str, units: float, rate: Rate) -> float:
        now = self._clock()
        tat = max(self._tat.get(key, now), now) + units / rate.per_second
        self._tat[key] = tat
        return max(0.0, tat - rate.burst / rate.per_second - now)

    async def close(self) -> None:
        """Nothing to release."""


@dataclass(order=True)
class _Waiter:
    rank: int
    seq: int
    ready: asyncio.Future[None] = field(compare=False)


class _Gate:
    """One waiter at a time per bucket, most urgent first, then first come."""

    def __init__(self) -> None:
        self._queue: list[_Waiter] = []
        self._busy = False
        self._seq = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, rank: int) -> AsyncIterator[None]:
        await self._wait(rank)
        try:
            yield
        finally:
            self._pass_on()

    async def _wait(self, rank: int) -> None:
        if not self._busy:
            self._busy = True
            return
        waiter = _Waiter(rank, next(self._seq), asyncio.get_running_loop().create_future())
        heapq.heappush(self._queue, waiter)
        try:
            await waiter.ready
        except asyncio.CancelledError:
            if waiter.ready.done() and not waiter.ready.cancelled():
                self._pass_on()  # the gate was handed over as this waiter was cancelled
            else:
                self._queue.remove(waiter)
                heapq.heapify(self._queue)
            raise

    def _pass_on(self) -> None:
        while self._queue:
            waiter = heapq.heappop(self._queue)
            if not waiter.ready.done():
                waiter.ready.set_result(None)
                return
        self._busy = False


@dataclass(frozen=True, slots=True)
class SendLimits:
    """What to limit: the provider's recipients/s and requests/s, and recipient domains."""

    recipients: Rate | None = None
    requests: Rate | None = None
    domains: Mapping[str, Rate] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return bool(self.recipients or self.requests or self.domains)


class Throttle:
    """Waits until a provider call fits every limit; returns the seconds it waited."""

    def __init__(
        self,
        provider: str,
        limits: SendLimits,
        store: ReservationStore,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.provider = provider
        self.limits = limits
        self.store = store
        self._sleep = sleep
        self._gates: dict[str, _Gate] = {}
        self.waited = 0.0  # total, for metrics

    async def admit(
        self, emails: Sequence[RenderedEmail], priority: Priority, calls: int = 1
    ) -> float:
        """Wait until ``emails``, sent in ``calls`` API calls, fit every limit."""
        if not self.limits.any or not emails:
            return 0.0
        waited = 0.0
        for key, units, rate in self._takes(emails, calls):
            waited += await self._take(key, units, rate, priority)
        self.waited += waited
        return waited

    def _takes(self, emails: Sequence[RenderedEmail], calls: int) -> list[tuple[str, float, Rate]]:
        takes: list[tuple[str, float, Rate]] = []
        if self.limits.requests:
            takes.append((f"{self.provider}:requests", float(calls), self.limits.requests))
        if self.limits.recipients:
            takes.append(
                (f"{self.provider}:recipients", float(len(emails)), self.limits.recipients)
            )
        if self.limits.domains:
            per_domain: dict[str, int] = {}
            for email in emails:
                domain = email.recipient.rpartition("@")[2].lower()
                if domain in self.limits.domains:
                    per_domain[domain] = per_domain.get(domain, 0) + 1
            for domain, count in sorted(per_domain.items()):
                takes.append((f"domain:{domain}", float(count), self.limits.domains[domain]))
        return takes

    async def _take(self, key: str, units: float, rate: Rate, priority: Priority) -> float:
        gate = self._gates.setdefault(key, _Gate())
        async with gate.turn(priority.rank):
            # The head of the line reserves and waits out its reservation before the next
            # reserves, so a more urgent arrival meanwhile goes next.
            wait = await self.store.reserve(key, units, rate)
            if wait > 0:
                metrics.RATE_LIMIT_WAIT.labels(key.removeprefix(f"{self.provider}:")).inc(wait)
                await self._sleep(wait)
        return wait


def parse_rates(spec: Mapping[str, float], burst: float = 1.0) -> dict[str, Rate]:
    """``{"gmail.com": 20}`` → rates with ``burst`` (domains lower-cased)."""
    return {
        domain.lower(): Rate(per_second, max(burst, 1.0)) for domain, per_second in spec.items()
    }
