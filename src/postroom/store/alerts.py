"""The alert history (table ``alerts``): one row per firing, open while ``resolved_at`` is null.

What fires and what resolves is decided by ``postroom.alerts`` (the rules); this module runs
that decision inside the transaction that read the open alerts, so a second evaluator at the
same moment sees the first one's rows (on SQLite the write lock serializes them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update
from ulid import ULID

from postroom.store.database import Database
from postroom.store.schema import alerts


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: str
    rule: str
    severity: str  # warning | critical
    subject: str
    message: str
    value: float | None
    threshold: float | None
    fired_at: datetime
    resolved_at: datetime | None = None
    notified_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewAlert:
    rule: str
    severity: str
    subject: str
    message: str
    value: float | None = None
    threshold: float | None = None


@dataclass
class Decision:
    fire: Sequence[NewAlert] = ()
    resolve: Sequence[str] = ()  # ids of open alerts


@dataclass
class Applied:
    fired: list[AlertRecord] = field(default_factory=list)
    resolved: list[AlertRecord] = field(default_factory=list)


Decide = Callable[[list[AlertRecord]], Decision]
"""Given the open alerts, what to fire and what to resolve (pure; runs in the transaction)."""


class AlertStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def apply(self, decide: Decide, now: datetime) -> Applied:
        return await self._db.write(lambda conn: _apply(conn, decide, now))

    async def list(self, *, include_resolved: bool = False, limit: int = 100) -> list[AlertRecord]:
        """Alerts newest first: the open ones, or all."""
        query = select(alerts).order_by(alerts.c.fired_at.desc(), alerts.c.id.desc()).limit(limit)
        if not include_resolved:
            query = query.where(alerts.c.resolved_at.is_(None))
        return await self._db.read(lambda conn: [_record(row) for row in conn.execute(query)])

    async def mark_notified(self, ids: Sequence[str], now: datetime) -> None:
        if not ids:
            return
        statement = update(alerts).where(alerts.c.id.in_(list(ids))).values(notified_at=now)
        await self._db.write(lambda conn: conn.execute(statement))


def _apply(conn: Connection, decide: Decide, now: datetime) -> Applied:
    open_alerts = [
        _record(row) for row in conn.execute(select(alerts).where(alerts.c.resolved_at.is_(None)))
    ]
    decision = decide(open_alerts)
    applied = Applied()
    closing = set(decision.resolve)
    if closing:
        conn.execute(update(alerts).where(alerts.c.id.in_(sorted(closing))).values(resolved_at=now))
        applied.resolved = [replace(a, resolved_at=now) for a in open_alerts if a.id in closing]
    for new in decision.fire:
        record = AlertRecord(
            id=str(ULID()),
            rule=new.rule,
            severity=new.severity,
            subject=new.subject[:200],
            message=new.message,
            value=new.value,
            threshold=new.threshold,
            fired_at=now,
        )
        conn.execute(
            insert(alerts).values(
                id=record.id,
                rule=record.rule,
                severity=record.severity,
                subject=record.subject,
                message=record.message,
                value=record.value,
                threshold=record.threshold,
                fired_at=now,
            )
        )
        applied.fired.append(record)
    return applied


def _record(row: Row[Any]) -> AlertRecord:
    m = row._mapping
    return AlertRecord(
        id=m["id"],
        rule=m["rule"],
        severity=m["severity"],
        subject=m["subject"],
        message=m["message"],
        value=m["value"],
        threshold=m["threshold"],
        fired_at=m["fired_at"],
        resolved_at=m["resolved_at"],
        notified_at=m["notified_at"],
    )
