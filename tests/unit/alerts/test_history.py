"""The alert history: one row per firing, no storms, escalation fires anew, clearing resolves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.conftest import make_settings

from postroom.alerts.history import Alert, AlertHistory, plan
from postroom.alerts.rules import COMPLAINT, HARD_BOUNCE, QUEUE_LAG, Finding, Severity, Verdict
from postroom.store.database import Database, open_database
from postroom.wiring import prepare_database

T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    settings = make_settings(tmp_path)
    await prepare_database(settings)
    database = open_database(settings.resolved_database_url)
    try:
        yield database
    finally:
        await database.dispose()


def finding(rule: str, severity: Severity = Severity.WARNING, subject: str = "all") -> Finding:
    return Finding(rule, severity, subject, f"{rule} is bad", 1.0, 0.5)


def verdict(*findings: Finding, evaluated: set[str] | None = None) -> Verdict:
    rules = {f.rule for f in findings} if evaluated is None else evaluated
    return Verdict(list(findings), rules)


def open_alert(rule: str, severity: Severity, subject: str = "all") -> Alert:
    return Alert("a1", rule, severity, subject, "old", None, None, T0)


def test_a_new_finding_fires_and_an_open_one_does_not_fire_again() -> None:
    assert plan([], verdict(finding(COMPLAINT))).fire == [finding(COMPLAINT)]
    again = plan([open_alert(COMPLAINT, Severity.WARNING)], verdict(finding(COMPLAINT)))
    assert again.fire == [] and again.resolve == []


def test_the_same_rule_for_another_subject_is_another_alert() -> None:
    decided = plan(
        [open_alert(QUEUE_LAG, Severity.WARNING, "marketing")],
        verdict(finding(QUEUE_LAG, subject="marketing"), finding(QUEUE_LAG, subject="critical")),
    )
    assert [f.subject for f in decided.fire] == ["critical"]


def test_escalation_resolves_the_warning_and_fires_the_critical() -> None:
    warning = open_alert(COMPLAINT, Severity.WARNING)
    decided = plan([warning], verdict(finding(COMPLAINT, Severity.CRITICAL)))
    assert decided.resolve == [warning]
    assert [f.severity for f in decided.fire] == [Severity.CRITICAL]


def test_a_critical_alert_stays_open_while_only_the_warning_holds() -> None:
    critical = open_alert(COMPLAINT, Severity.CRITICAL)
    decided = plan([critical], verdict(finding(COMPLAINT, Severity.WARNING)))
    assert decided.fire == [] and decided.resolve == []


def test_only_rules_that_were_evaluated_resolve() -> None:
    lag = open_alert(QUEUE_LAG, Severity.WARNING, "marketing")
    assert plan([lag], verdict(evaluated={HARD_BOUNCE})).resolve == []
    assert plan([lag], verdict(evaluated={QUEUE_LAG})).resolve == [lag]


async def test_rows_fire_once_escalate_and_resolve(db: Database) -> None:
    history = AlertHistory(db)
    first = await history.apply(verdict(finding(COMPLAINT)), T0)
    assert [a.severity for a in first.fired] == [Severity.WARNING]
    quiet = await history.apply(verdict(finding(COMPLAINT)), T0 + timedelta(seconds=5))
    assert quiet.fired == [] and quiet.resolved == []

    worse = await history.apply(
        verdict(finding(COMPLAINT, Severity.CRITICAL)), T0 + timedelta(seconds=10)
    )
    assert [a.id for a in worse.resolved] == [first.fired[0].id]
    assert [a.severity for a in worse.fired] == [Severity.CRITICAL]
    [still_open] = await history.list()
    assert still_open.severity is Severity.CRITICAL and still_open.resolved_at is None

    cleared = await history.apply(verdict(evaluated={COMPLAINT}), T0 + timedelta(seconds=15))
    assert [a.id for a in cleared.resolved] == [still_open.id]
    assert cleared.resolved[0].resolved_at == T0 + timedelta(seconds=15)
    assert await history.list() == []
    everything = await history.list(include_resolved=True)
    assert [a.severity for a in everything] == [Severity.CRITICAL, Severity.WARNING]
    assert all(a.resolved_at is not None for a in everything)

    await history.mark_notified([still_open.id], T0)
    newest = (await history.list(include_resolved=True))[0]
    assert newest.notified_at == T0
