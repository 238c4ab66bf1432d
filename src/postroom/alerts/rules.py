"""The alert rules as pure functions: readings and thresholds in, findings out.

A finding is a rule that holds now for one subject (a provider, a campaign, a queue class, or
``all``). Whether it is new, already open or an escalation is for ``history`` to decide; what
the readings are is for ``readings``. A rule whose reading is missing (a broker that cannot
say its lag) is left out of ``Verdict.evaluated``, so its open alerts are neither confirmed
nor resolved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from postroom.config import Settings

# Re-exported: the readings the rules judge are the store's records.
from postroom.store.alert_readings import CampaignReading as CampaignReading
from postroom.store.alert_readings import Rate as Rate

HARD_BOUNCE = "hard_bounce_rate"
COMPLAINT = "complaint_rate"
CAMPAIGN_BOUNCE = "campaign_hard_bounce_rate"
CAMPAIGN_COMPLAINT = "campaign_complaint_rate"
DLQ_GROWING = "dlq_growing"
QUEUE_LAG = "queue_lag"
PROVIDER_AUTH = "provider_auth"
CIRCUIT_OPEN = "circuit_open"
CAMPAIGN_RULES = frozenset({CAMPAIGN_BOUNCE, CAMPAIGN_COMPLAINT})


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return 2 if self is Severity.CRITICAL else 1


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: Severity
    subject: str
    message: str
    value: float | None = None
    threshold: float | None = None


@dataclass
class Readings:
    """What the monitor measured; ``None`` means the source cannot tell."""

    bounces: Rate | None = None
    complaints: Rate | None = None
    campaigns: Sequence[CampaignReading] | None = None
    dead_letters: int | None = None
    dlq_growth: int | None = None  # dead letters added over the DLQ window; None: no history
    oldest_age: Mapping[str, float] | None = None
    auth_failures: Mapping[str, int] | None = None
    open_breakers: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class Thresholds:
    min_sends: int = 100
    bounce_window: int = 1000
    bounce_rate: float = 0.02
    complaint_warning: float = 0.001
    complaint_critical: float = 0.003
    dlq_floor: int = 10
    queue_lag: Mapping[str, float] = field(
        default_factory=lambda: {"critical": 60.0, "transactional": 300.0, "marketing": 3600.0}
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            min_sends=settings.alert_min_sends,
            bounce_window=settings.alert_bounce_window,
            bounce_rate=settings.alert_bounce_rate,
            complaint_warning=settings.alert_complaint_warning,
            complaint_critical=settings.alert_complaint_critical,
            dlq_floor=settings.alert_dlq_floor,
            queue_lag={
                "critical": settings.alert_queue_lag_critical,
                "transactional": settings.alert_queue_lag_transactional,
                "marketing": settings.alert_queue_lag_marketing,
            },
        )


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    evaluated: set[str] = field(default_factory=set)


def evaluate(readings: Readings, limits: Thresholds) -> Verdict:
    """Every rule whose reading is present, judged."""
    verdict = Verdict()
    if readings.bounces is not None:
        verdict.evaluated.add(HARD_BOUNCE)
        verdict.findings += _bounce(HARD_BOUNCE, "all", readings.bounces, limits, "latest sends")
    if readings.complaints is not None:
        verdict.evaluated.add(COMPLAINT)
        verdict.findings += _complaints(COMPLAINT, "all", readings.complaints, limits, "24 h")
    if readings.campaigns is not None:
        verdict.evaluated |= CAMPAIGN_RULES
        for campaign in readings.campaigns:
            verdict.findings += campaign_findings(campaign, limits)
    if readings.dead_letters is not None and readings.dlq_growth is not None:
        verdict.evaluated.add(DLQ_GROWING)
        verdict.findings += _dlq(readings.dead_letters, readings.dlq_growth, limits)
    if readings.oldest_age is not None:
        verdict.evaluated.add(QUEUE_LAG)
        verdict.findings += _lag(readings.oldest_age, limits)
    if readings.auth_failures is not None:
        verdict.evaluated.add(PROVIDER_AUTH)
        verdict.findings += [
            Finding(
                PROVIDER_AUTH,
                Severity.CRITICAL,
                provider,
                f"provider {provider} refused our credentials ({count} failed sends): "
                "every message to it fails until an operator fixes the key",
                value=count,
                threshold=1,
            )
            for provider, count in sorted(readings.auth_failures.items())
            if count > 0
        ]
    if readings.open_breakers is not None:
        verdict.evaluated.add(CIRCUIT_OPEN)
        verdict.findings += [
            Finding(
                CIRCUIT_OPEN,
                Severity.WARNING,
                provider,
                f"provider {provider}: circuit breaker open (the provider fails every call)",
            )
            for provider in sorted(set(readings.open_breakers))
        ]
    return verdict


def campaign_findings(campaign: CampaignReading, limits: Thresholds) -> list[Finding]:
    """A campaign's own bounce and complaint rates over everything it has sent so far."""
    subject = f"campaign:{campaign.id}"
    bounces = Rate(campaign.sent, campaign.bounced_hard)
    complaints = Rate(campaign.sent, campaign.complained)
    where = f"campaign {campaign.id}"
    return [
        *_bounce(CAMPAIGN_BOUNCE, subject, bounces, limits, where),
        *_complaints(CAMPAIGN_COMPLAINT, subject, complaints, limits, where),
    ]


def campaign_id(subject: str) -> str | None:
    prefix, _, rest = subject.partition(":")
    return rest if prefix == "campaign" and rest else None


def _bounce(rule: str, subject: str, rate: Rate, limits: Thresholds, over: str) -> list[Finding]:
    if rate.sent < limits.min_sends or rate.value <= limits.bounce_rate:
        return []
    message = (
        f"hard-bounce rate {_percent(rate.value)} ({rate.hits} of {rate.sent} sends, {over}) "
        f"is over {_percent(limits.bounce_rate)}"
    )
    return [Finding(rule, Severity.CRITICAL, subject, message, rate.value, limits.bounce_rate)]


def _complaints(
    rule: str, subject: str, rate: Rate, limits: Thresholds, over: str
) -> list[Finding]:
    if rate.sent < limits.min_sends or rate.value <= limits.complaint_warning:
        return []
    critical = rate.value > limits.complaint_critical
    line = limits.complaint_critical if critical else limits.complaint_warning
    message = (
        f"complaint rate {_percent(rate.value)} ({rate.hits} of {rate.sent} sends, {over}) "
        f"is over {_percent(line)}"
    )
    severity = Severity.CRITICAL if critical else Severity.WARNING
    return [Finding(rule, severity, subject, message, rate.value, line)]


def _dlq(size: int, growth: int, limits: Thresholds) -> list[Finding]:
    if growth <= 0 or size < limits.dlq_floor:
        return []
    message = f"dead-letter queue grew by {growth} to {size} messages"
    return [Finding(DLQ_GROWING, Severity.WARNING, "dlq", message, size, limits.dlq_floor)]


def _lag(oldest_age: Mapping[str, float], limits: Thresholds) -> list[Finding]:
    found = []
    for queue, age in sorted(oldest_age.items()):
        line = limits.queue_lag.get(queue)
        if line is None or age <= line:
            continue
        message = f"queue {queue}: oldest message waited {age:.0f}s (over {line:.0f}s)"
        found.append(Finding(QUEUE_LAG, Severity.WARNING, queue, message, age, line))
    return found


def dlq_growth(samples: Sequence[tuple[float, int]], now: float, window: float) -> int | None:
    """Dead letters added over the last ``window`` seconds: the newest size against the
    smallest since the baseline (the newest sample at least ``window`` old, else the oldest).
    None until there are two samples."""
    if len(samples) < 2:
        return None
    return samples[-1][1] - min(
        size for _, size in samples[dlq_baseline(samples, now, window) : -1]
    )


def dlq_baseline(samples: Sequence[tuple[float, int]], now: float, window: float) -> int:
    """Index of the baseline sample; the monitor drops the samples before it."""
    older = [i for i, (at, _) in enumerate(samples) if now - at >= window]
    return older[-1] if older else 0


# How each provider words a refused credential (see providers/http.py ``auth_failure``,
# providers/ses.py ``_AUTH_CODES``, providers/smtp.py ``_AUTH_CODES``): the error text is what
# the ledger keeps of a failed attempt, so it is what a monitor in another process can read.
_AUTH_TEXT = re.compile(
    r"\(credentials\)"
    r"|^ses (AccessDenied|UnrecognizedClient|InvalidClientTokenId|InvalidSignature"
    r"|SignatureDoesNotMatch|ExpiredToken|MissingAuthenticationToken)\w*:"
    r"|^ses 403:"
    r"|^SMTP 53[0458]\b"
    r"|^SMTP 5\d\d 5\.7\.(8|9|11)\b"
)


def is_auth_failure(error: str | None) -> bool:
    """Whether a failed attempt's error says the provider refused our credentials."""
    return bool(error) and _AUTH_TEXT.search(error or "") is not None


def _percent(value: float) -> str:
    return f"{value * 100:.2f}".rstrip("0").rstrip(".") + "%"
