"""Which findings fire and which alerts resolve: the rules that keep alerts quiet.

An alert is open while ``resolved_at`` is null. A finding whose (rule, subject) already has an
open alert fires nothing (no storms); a finding of a higher severity than the open alert
resolves it and fires anew (escalation); a lower one leaves the open alert as it is, so an
alert stays at its worst until its condition clears. An open alert of a rule that was
evaluated and found nothing is resolved. :func:`plan` is that decision, pure;
:class:`AlertHistory` has the store carry it out in one transaction (``store/alerts.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from postroom.alerts.rules import Finding, Severity, Verdict
from postroom.store.alerts import AlertRecord, AlertStore, Decision, NewAlert
from postroom.store.database import Database


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    rule: str
    severity: Severity
    subject: str
    message: str
    value: float | None
    threshold: float | None
    fired_at: datetime
    resolved_at: datetime | None = None
    notified_at: datetime | None = None

    @classmethod
    def of(cls, record: AlertRecord) -> Alert:
        return cls(
            record.id,
            record.rule,
            Severity(record.severity),
            record.subject,
            record.message,
            record.value,
            record.threshold,
            record.fired_at,
            record.resolved_at,
            record.notified_at,
        )


@dataclass
class Plan:
    fire: list[Finding] = field(default_factory=list)
    resolve: list[Alert] = field(default_factory=list)


@dataclass
class Changes:
    fired: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)


def plan(open_alerts: Iterable[Alert], verdict: Verdict) -> Plan:
    """What to fire and what to resolve, given the open alerts and what holds now."""
    current = {(a.rule, a.subject): a for a in open_alerts}
    found = {(f.rule, f.subject): f for f in verdict.findings}
    result = Plan()
    for key, finding in found.items():
        existing = current.get(key)
        if existing is None:
            result.fire.append(finding)
        elif finding.severity.rank > existing.severity.rank:
            result.resolve.append(existing)
            result.fire.append(finding)
    for key, existing in current.items():
        if key not in found and existing.rule in verdict.evaluated:
            result.resolve.append(existing)
    return result


class AlertHistory:
    def __init__(self, db: Database) -> None:
        self._store = AlertStore(db)

    async def apply(self, verdict: Verdict, now: datetime) -> Changes:
        """Fire and resolve as :func:`plan` says, in one transaction."""

        def decide(records: list[AlertRecord]) -> Decision:
            decided = plan([Alert.of(r) for r in records], verdict)
            return Decision(
                fire=[
                    NewAlert(f.rule, f.severity.value, f.subject, f.message, f.value, f.threshold)
                    for f in decided.fire
                ],
                resolve=[a.id for a in decided.resolve],
            )

        applied = await self._store.apply(decide, now)
        return Changes(
            fired=[Alert.of(r) for r in applied.fired],
            resolved=[Alert.of(r) for r in applied.resolved],
        )

    async def list(self, *, include_resolved: bool = False, limit: int = 100) -> list[Alert]:
        """Alerts newest first: the open ones, or all."""
        records = await self._store.list(include_resolved=include_resolved, limit=limit)
        return [Alert.of(r) for r in records]

    async def mark_notified(self, ids: Sequence[str], now: datetime) -> None:
        await self._store.mark_notified(ids, now)
