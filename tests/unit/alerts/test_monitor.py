"""The monitor end to end on synthetic data and a fake clock: every rule fires once and
resolves when its condition clears; a campaign past a critical line is paused; sinks hear."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import RunningWorker, make_settings
from tests.fakes import FakeProvider
from tests.unit.alerts.synthetic import add_attempt, add_campaign, add_chunk, add_sends

from postroom import metrics
from postroom.alerts.history import AlertHistory
from postroom.alerts.monitor import AlertMonitor, build_monitor
from postroom.alerts.readings import Reader
from postroom.alerts.rules import (
    CAMPAIGN_BOUNCE,
    CIRCUIT_OPEN,
    COMPLAINT,
    DLQ_GROWING,
    HARD_BOUNCE,
    PROVIDER_AUTH,
    QUEUE_LAG,
    Severity,
    Thresholds,
)
from postroom.alerts.sinks import LogSink, Notice, NoticeKind
from postroom.messages import Priority
from postroom.queue.base import Backlog, DeadLetter
from postroom.store.schema import campaigns
from postroom.wiring import Postroom, open_postroom, prepare_database

T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class StubQueue:
    """A queue that reports whatever backlog the test sets."""

    dead: int = 0
    ages: dict[Priority, float] = field(default_factory=lambda: dict.fromkeys(Priority, 0.0))

    async def backlog(self) -> Backlog:
        return Backlog(oldest_age=dict(self.ages), dead_letters=self.dead)


@dataclass
class BrokerStub:
    """A broker queue without a cheap backlog: dead letters are counted by listing."""

    dead: int = 0

    async def dlq_list(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        letter = DeadLetter("m", Priority.MARKETING, b"{}", "gave up", 5, T0)
        return [letter] * min(limit, self.dead)


@dataclass
class RecordingSink:
    name: str = "recording"
    notices: list[Notice] = field(default_factory=list)

    async def notify(self, notices: Sequence[Notice]) -> None:
        self.notices += notices

    async def close(self) -> None:
        return None

    def fired(self) -> list[tuple[str, str, Severity]]:
        return [
            (n.alert.rule, n.alert.subject, n.alert.severity)
            for n in self.notices
            if n.kind is NoticeKind.FIRED
        ]

    def resolved(self) -> list[tuple[str, str]]:
        return [
            (n.alert.rule, n.alert.subject) for n in self.notices if n.kind is NoticeKind.RESOLVED
        ]


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
async def pr(tmp_path: Path, provider: FakeProvider) -> AsyncIterator[Postroom]:
    settings = make_settings(tmp_path, alert_email_to=["ops@example.com"])
    await prepare_database(settings)
    postroom = await open_postroom(settings, provider=provider)
    try:
        yield postroom
    finally:
        await postroom.close()


class Harness:
    def __init__(self, pr: Postroom, queue: Any = None) -> None:
        self.clock = Clock()
        self.queue = queue if queue is not None else StubQueue()
        self.sink = RecordingSink()
        self.paused: list[tuple[str, str]] = []
        self.reader = Reader(
            pr.db,
            self.queue,
            bounce_window=1000,
            auth_window=900,
            dlq_window=900,
            clock=lambda: self.clock.now.timestamp(),
        )

        async def pause(campaign: str, reason: str) -> None:
            self.paused.append((campaign, reason))

        self.monitor = AlertMonitor(
            self.reader,
            AlertHistory(pr.db),
            Thresholds(),
            [self.sink],
            pause=pause,
            clock=lambda: self.clock.now,
        )

    async def check(self, seconds: float = 5.0, **kwargs: Any) -> None:
        await self.monitor.check(**kwargs)
        self.clock.advance(seconds)


async def test_hard_bounces_fire_once_and_resolve_when_the_window_is_clean(pr: Postroom) -> None:
    h = Harness(pr)
    await add_sends(pr.db, 200, T0 - timedelta(hours=2), feedback={"bounced_hard": 5})
    await h.check()
    await h.check()
    assert h.sink.fired() == [(HARD_BOUNCE, "all", Severity.CRITICAL)]
    [alert] = await AlertHistory(pr.db).list()
    assert alert.value == 0.025 and alert.notified_at is not None
    # 800 clean sends later, the latest 1,000 hold 5 bounces: 0.5%.
    await add_sends(pr.db, 800, T0 - timedelta(hours=1))
    await h.check()
    assert h.sink.resolved() == [(HARD_BOUNCE, "all")]


async def test_campaign_sends_count_in_the_latest_window(pr: Postroom) -> None:
    h = Harness(pr)
    await add_sends(pr.db, 500, T0 - timedelta(hours=2))
    await add_campaign(pr.db, "camp1", status="finished", at=T0 - timedelta(hours=1))
    await add_chunk(pr.db, "camp1", 0, sent=500, bounced=30, at=T0 - timedelta(minutes=30))
    await h.check()
    # 30 of the pooled 1,000 (3%) although the ledger alone is clean.
    assert (HARD_BOUNCE, "all", Severity.CRITICAL) in h.sink.fired()


async def test_complaints_warn_then_escalate_then_resolve_after_a_day(pr: Postroom) -> None:
    h = Harness(pr)
    await add_sends(pr.db, 1000, T0 - timedelta(hours=1), feedback={"complained": 2})
    await h.check()
    assert h.sink.fired() == [(COMPLAINT, "all", Severity.WARNING)]
    await add_sends(pr.db, 1000, T0 - timedelta(minutes=30), feedback={"complained": 7})
    await h.check(seconds=61)  # the day's counts are reused for a minute
    await h.check()
    assert h.sink.fired()[1:] == [(COMPLAINT, "all", Severity.CRITICAL)]
    assert h.sink.resolved() == [(COMPLAINT, "all")]  # the warning, replaced
    h.clock.advance(86_400)
    await h.check()
    assert h.sink.resolved() == [(COMPLAINT, "all"), (COMPLAINT, "all")]
    assert await AlertHistory(pr.db).list() == []


async def test_a_campaign_past_the_critical_line_is_paused_once_with_the_reason(
    pr: Postroom,
) -> None:
    h = Harness(pr)
    await add_campaign(pr.db, "camp1", at=T0)
    await add_chunk(pr.db, "camp1", 0, sent=1000, bounced=15, with_recipients=False)
    await h.check(campaigns_only=True)
    assert h.paused == []
    await add_chunk(pr.db, "camp1", 1, sent=1000, bounced=30, with_recipients=False)
    await h.check(campaigns_only=True)
    await h.check(campaigns_only=True)
    assert h.sink.fired() == [(CAMPAIGN_BOUNCE, "campaign:camp1", Severity.CRITICAL)]
    [(campaign, reason)] = h.paused
    assert campaign == "camp1" and "hard-bounce rate 2.25%" in reason
    assert h.sink.notices[0].action == "Campaign camp1 paused."
    # Paused, its alert stays open; once the campaign is over, it resolves.
    await h.check(campaigns_only=True)
    assert h.sink.resolved() == []
    await pr.db.write(
        lambda conn: conn.execute(
            campaigns.update().where(campaigns.c.id == "camp1").values(status="cancelled")
        )
    )
    await h.check(campaigns_only=True)
    assert h.sink.resolved() == [(CAMPAIGN_BOUNCE, "campaign:camp1")]
    assert len(h.paused) == 1


async def test_refused_credentials_fire_and_resolve_after_the_window(pr: Postroom) -> None:
    h = Harness(pr)
    await add_attempt(pr.db, "fake", "SMTP 535 5.7.8 Authentication failed", T0)
    await add_attempt(pr.db, "other", "SMTP 550 5.1.1 No such user", T0)
    await h.check()
    assert h.sink.fired() == [(PROVIDER_AUTH, "fake", Severity.CRITICAL)]
    h.clock.advance(900)
    await h.check()
    assert h.sink.resolved() == [(PROVIDER_AUTH, "fake")]


async def test_a_growing_dlq_fires_and_resolves_once_it_stops_growing(pr: Postroom) -> None:
    queue = StubQueue(dead=20)
    h = Harness(pr, queue)
    await h.check()
    assert h.sink.notices == []  # one sample says nothing about growth
    queue.dead = 25
    await h.check()
    await h.check()
    assert h.sink.fired() == [(DLQ_GROWING, "dlq", Severity.WARNING)]
    h.clock.advance(900)
    await h.check()
    assert h.sink.resolved() == [(DLQ_GROWING, "dlq")]


async def test_a_broker_without_a_backlog_has_its_dead_letters_counted(pr: Postroom) -> None:
    queue = BrokerStub(dead=12)
    h = Harness(pr, queue)
    await h.check()
    queue.dead = 15
    await h.check()
    assert h.sink.fired() == [(DLQ_GROWING, "dlq", Severity.WARNING)]


async def test_queue_lag_fires_per_class_and_resolves(pr: Postroom) -> None:
    queue = StubQueue()
    h = Harness(pr, queue)
    queue.ages[Priority.TRANSACTIONAL] = 301.0
    await h.check()
    await h.check()
    assert h.sink.fired() == [(QUEUE_LAG, "transactional", Severity.WARNING)]
    queue.ages[Priority.TRANSACTIONAL] = 0.5
    await h.check()
    assert h.sink.resolved() == [(QUEUE_LAG, "transactional")]


async def test_an_open_breaker_fires_and_resolves_when_it_closes(pr: Postroom) -> None:
    h = Harness(pr)
    gauge = metrics.CIRCUIT_OPEN.labels("alert-test-provider")
    gauge.set(1)
    try:
        await h.check()
        assert h.sink.fired() == [(CIRCUIT_OPEN, "alert-test-provider", Severity.WARNING)]
    finally:
        gauge.set(0)
    await h.check()
    assert h.sink.resolved() == [(CIRCUIT_OPEN, "alert-test-provider")]


async def test_the_campaign_fast_path_leaves_other_alerts_alone(pr: Postroom) -> None:
    queue = StubQueue()
    h = Harness(pr, queue)
    queue.ages[Priority.MARKETING] = 5000.0
    await h.check()
    queue.ages[Priority.MARKETING] = 0.0
    await h.check(campaigns_only=True)
    assert h.sink.resolved() == []
    await h.check()
    assert h.sink.resolved() == [(QUEUE_LAG, "marketing")]


async def test_the_log_sink_logs_at_the_alerts_severity(
    pr: Postroom, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(pr)
    h.monitor.sinks = [LogSink()]
    await add_sends(pr.db, 1000, T0 - timedelta(hours=1), feedback={"bounced_hard": 30})
    with caplog.at_level(logging.INFO, logger="postroom.alerts"):
        await h.check()
    [record] = [r for r in caplog.records if r.name == "postroom.alerts"]
    assert record.levelno == logging.CRITICAL
    assert "CRITICAL hard_bounce_rate (all): hard-bounce rate 3%" in record.getMessage()
    assert record.__dict__["alert_rule"] == HARD_BOUNCE


async def test_alert_email_goes_to_the_operators_through_submission(
    pr: Postroom, provider: FakeProvider
) -> None:
    monitor = build_monitor(pr, pause=_no_pause)
    await add_sends(pr.db, 1000, datetime.now(UTC) - timedelta(hours=1), feedback={"complained": 5})
    try:
        await monitor.check()
    finally:
        await monitor.close()
    assert (await pr.queue.depth())[Priority.CRITICAL] == 1
    worker = RunningWorker(pr)
    try:
        await worker.until(lambda: _delivered(provider))
    finally:
        await worker.shutdown()
    [email] = provider.delivered
    assert email.recipient == "ops@example.com"
    assert email.subject == "[CRITICAL] Postroom alert: complaint_rate (all)"
    assert "complaint rate 0.5% (5 of 1000 sends, 24 h) is over 0.3%" in email.text


async def _delivered(provider: FakeProvider) -> bool:
    return bool(provider.delivered)


async def _no_pause(campaign: str, reason: str) -> None:
    raise AssertionError("no campaign here")
