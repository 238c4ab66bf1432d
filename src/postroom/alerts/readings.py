"""What the alert rules judge: counts from the database (``store/alert_readings.py``), the
queue's backlog and dead letters, and the circuit breakers.

Everything but the breakers is read from the database or the queue, never from a worker's
memory, so the monitor may run in any process (see :func:`open_breakers` for the exception).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.metrics_core import Metric

from postroom import metrics
from postroom.alerts.rules import Rate, Readings, dlq_baseline, dlq_growth, is_auth_failure
from postroom.queue.base import QueueBackend, ReportsBacklog
from postroom.store.alert_readings import AlertReadings
from postroom.store.database import Database

DLQ_COUNT_CAP = 10_000
"""A broker without a cheap dead-letter count is counted by listing, up to this many."""
SLOW_EVERY = 60.0
"""Seconds the 24 h complaint counts are reused for."""


class Reader:
    """Takes :class:`Readings`; keeps the DLQ samples that make "growing" a comparison."""

    def __init__(
        self,
        db: Database,
        queue: QueueBackend,
        *,
        bounce_window: int,
        auth_window: float,
        dlq_window: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = AlertReadings(db)
        self._queue = queue
        self._bounce_window = bounce_window
        self._auth_window = auth_window
        self._dlq_window = dlq_window
        self._clock = clock
        self.dlq_samples: list[tuple[float, int]] = []
        self._complaints: tuple[float, Rate] | None = None

    async def read(self) -> Readings:
        now = self._clock()
        at = datetime.fromtimestamp(now, UTC)
        stale = self._complaints is None or now - self._complaints[0] >= SLOW_EVERY
        measured = await self._store.measure(
            at,
            bounce_window=self._bounce_window,
            attempts_since=at - timedelta(seconds=self._auth_window),
            complaints=stale,
        )
        if measured.complaints is not None:
            self._complaints = (now, measured.complaints)
        assert self._complaints is not None
        readings = Readings(
            bounces=measured.bounces,
            complaints=self._complaints[1],
            campaigns=measured.campaigns,
            auth_failures=auth_failures(measured.failed_attempts),
        )
        await self._read_queue(readings, now)
        readings.open_breakers = open_breakers()
        return readings

    async def read_campaigns(self) -> Readings:
        """The running campaigns alone (the monitor's fast path)."""
        return Readings(campaigns=await self._store.campaigns())

    async def _read_queue(self, readings: Readings, now: float) -> None:
        if isinstance(self._queue, ReportsBacklog):
            backlog = await self._queue.backlog()
            readings.oldest_age = {p.value: age for p, age in backlog.oldest_age.items()}
            dead = backlog.dead_letters
        else:
            dead = len(await self._queue.dlq_list(limit=DLQ_COUNT_CAP))
        self.dlq_samples.append((now, dead))
        del self.dlq_samples[: dlq_baseline(self.dlq_samples, now, self._dlq_window)]
        readings.dead_letters = dead
        readings.dlq_growth = dlq_growth(self.dlq_samples, now, self._dlq_window)


def auth_failures(attempts: Iterable[tuple[str | None, str | None]]) -> dict[str, int]:
    """Failed attempts whose error says the provider refused our credentials, per provider."""
    counts: dict[str, int] = {}
    for provider, error in attempts:
        if is_auth_failure(error):
            name = provider or "unknown"
            counts[name] = counts.get(name, 0) + 1
    return counts


def open_breakers() -> list[str]:
    """Providers whose circuit breaker is open, from the ``postroom_circuit_open`` gauge.

    The breaker lives in each worker process. Without ``PROMETHEUS_MULTIPROC_DIR`` this sees
    only this process's breakers (``postroom serve``, or a monitor inside a worker); with it,
    every process on this host (the gauge keeps its maximum, so a worker that died with its
    breaker open reports it until the folder is cleared at the next start). Workers on other
    hosts are not seen: alert on the metric in Prometheus there.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        families: Iterable[Metric] = registry.collect()
    else:
        families = metrics.CIRCUIT_OPEN.collect()
    return sorted(
        {
            sample.labels["provider"]
            for family in families
            if family.name == "postroom_circuit_open"
            for sample in family.samples
            if sample.value >= 1
        }
    )
