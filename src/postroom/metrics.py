"""Prometheus metrics: what the worker, the throttle, the breaker and the webhooks count.

Counters and histograms live in each process. With several processes on one host (``postroom
api`` plus N ``postroom worker`` processes) set ``PROMETHEUS_MULTIPROC_DIR`` to a shared, empty
folder before they start: each process then writes its values there and ``/metrics`` on the
API adds them up (prometheus-client's multiprocess mode). A worker on a host without an API
serves its own with ``postroom worker --metrics-port``.

Queue depth, the oldest message's age and the dead-letter count are not counted here but read
from the queue when ``/metrics`` is scraped (:func:`queue_families`), so they are right
whichever process moved the messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector

SENDS = Counter(
    "postroom_sends",
    "Messages by outcome of their hand-over: sent, failed, retry, dead, ambiguous, "
    "suppressed, held (not offered: circuit open or warm-up cap).",
    ["provider", "email_type", "outcome"],
)
RETRIES = Counter(
    "postroom_retries",
    "Retries: 'immediate' in the worker, or the queue tier (1 = first delay of the schedule).",
    ["tier"],
)
ENQUEUE_TO_ACCEPTED = Histogram(
    "postroom_enqueue_to_accepted_seconds",
    "From the API accepting an email to the provider accepting it.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
WEBHOOK_EVENTS = Counter(
    "postroom_webhook_events",
    "Normalized webhook events received, by provider and kind.",
    ["provider", "event"],
)
RATE_LIMIT_WAIT = Counter(
    "postroom_rate_limit_wait_seconds",
    "Seconds provider calls waited for a send-rate limit, by bucket kind.",
    ["bucket"],
)
CAMPAIGN_RECIPIENTS = Counter(
    "postroom_campaign_recipients",
    "Campaign recipients by outcome: sent, failed, suppressed, ambiguous, pending (to retry).",
    ["outcome"],
)
CIRCUIT_OPEN = Gauge(
    "postroom_circuit_open",
    "1 while the provider's circuit breaker is open (or half-open), else 0.",
    ["provider"],
    multiprocess_mode="max",
)


def exposition(extra: Iterable[Metric] = ()) -> bytes:
    """The text exposition of every metric: all processes' when multiprocess mode is on."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(_Fixed(list(extra)))
    return generate_latest(registry)


def queue_families(
    depth: Mapping[str, int], oldest_age: Mapping[str, float] | None, dead_letters: int | None
) -> list[Metric]:
    """Gauges read from the queue at scrape time."""
    families: list[Metric] = []
    waiting = GaugeMetricFamily(
        "postroom_queue_depth", "Messages waiting or leased, per priority class.", labels=["queue"]
    )
    for name, count in sorted(depth.items()):
        waiting.add_metric([name], count)
    families.append(waiting)
    if oldest_age is not None:
        age = GaugeMetricFamily(
            "postroom_queue_oldest_age_seconds",
            "Age of the oldest message waiting, per priority class (0 when none).",
            labels=["queue"],
        )
        for name, seconds in sorted(oldest_age.items()):
            age.add_metric([name], seconds)
        families.append(age)
    if dead_letters is not None:
        families.append(
            GaugeMetricFamily(
                "postroom_dead_letters", "Messages in the dead-letter queue.", value=dead_letters
            )
        )
    return families


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
