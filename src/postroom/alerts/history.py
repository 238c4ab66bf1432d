"""The alert history (table ``alerts``): one row per firing, and the rules that keep it quiet.

An alert is open while ``resolved_at`` is null. A finding whose (rule, subject) already has an
open alert fires nothing (no storms); a finding of a higher severity than the open alert
resolves it and fires anew (escalation); a lower one leaves the open alert as it is, so an
alert stays at its worst until its condition clears. An open alert of a rule that was
evaluated and found nothing is resolved. :func:`plan` is that decision, pure;
:meth:`AlertHistory.apply` carries it out in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update
from ulid import ULID

from postroom.alerts.rules import Finding, Severity, Verdict
from postroom.store.database import Database
from postroom.store.schema import alerts


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

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


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
        self._db = db

    async def apply(self, verdict: Verdict, now: datetime) -> Changes:
        """Fire and resolve as :func:`plan` says, in one transaction (a second monitor that
        evaluates at the same moment then sees this one's rows)."""
        return await self._db.write(lambda conn: _apply(conn, verdict, now))

    async def list(self, *, include_resolved: bool = False, limit: int = 100) -> list[Alert]:
        """Alerts newest first: the open ones, or all."""
        query = select(alerts).order_by(alerts.c.fired_at.desc(), alerts.c.id.desc()).limit(limit)
        if not include_resolved:
            query = query.where(alerts.c.resolved_at.is_(None))
        return await self._db.read(lambda conn: [_alert(row) for row in conn.execute(query)])

    async def mark_notified(self, ids: Sequence[str], now: datetime) -> None:
        if not ids:
            return
        statement = update(alerts).where(alerts.c.id.in_(list(ids))).values(notified_at=now)
        await self._db.write(lambda conn: conn.execute(statement))


def _apply(conn: Connection, verdict: Verdict, now: datetime) -> Changes:
    open_rows = [
        _alert(r) for r in conn.execute(select(alerts).where(alerts.c.resolved_at.is_(None)))
    ]
    decided = plan(open_rows, verdict)
    changes = Changes()
    if decided.resolve:
        ids = [a.id for a in decided.resolve]
        conn.execute(update(alerts).where(alerts.c.id.in_(ids)).values(resolved_at=now))
        changes.resolved = [replace(a, resolved_at=now) for a in decided.resolve]
    for finding in decided.fire:
        alert = Alert(
            id=str(ULID()),
            rule=finding.rule,
            severity=finding.severity,
            subject=finding.subject[:200],
            message=finding.message,
            value=finding.value,
            threshold=finding.threshold,
            fired_at=now,
        )
        conn.execute(
            insert(alerts).values(
                id=alert.id,
                rule=alert.rule,
                severity=alert.severity.value,
                subject=alert.subject,
                message=alert.message,
                value=alert.value,
                threshold=alert.threshold,
                fired_at=now,
            )
        )
        changes.fired.append(alert)
    return changes


def _alert(row: Row[Any]) -> Alert:
    mapping = row._mapping
    return Alert(
        id=mapping["id"],
        rule=mapping["rule"],
        severity=Severity(mapping["severity"]),
        subject=mapping["subject"],
        message=mapping["message"],
        value=mapping["value"],
        threshold=mapping["threshold"],
        fired_at=mapping["fired_at"],
        resolved_at=mapping["resolved_at"],
        notified_at=mapping["notified_at"],
    )
