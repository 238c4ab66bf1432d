"""The alert monitor: read, judge, record, act (pause campaigns), tell.

Every rule is evaluated every ``alert_interval`` seconds (5); the running campaigns alone, one
cheap query over their counter rows, every ``alert_campaign_interval`` (1) and whenever
:meth:`AlertMonitor.poke` is called (the feedback path may poke it after recording bounces;
pokes closer together than ``MIN_GAP`` coalesce), so a campaign is paused within a second or
so of crossing a critical line.

One process should evaluate: ``postroom serve`` and ``postroom worker`` run the monitor
unless ``POSTROOM_ALERT_MONITOR=false``; with several workers, leave it on in one. Two
evaluators do no harm beyond duplicate notices in a race: firing is one transaction that
first reads the open alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from postroom.alerts.history import AlertHistory, Changes
from postroom.alerts.readings import Reader
from postroom.alerts.rules import CAMPAIGN_RULES, Severity, Thresholds, campaign_id, evaluate
from postroom.alerts.sinks import AlertSink, EmailSink, LogSink, Notice, NoticeKind, WebhookSink
from postroom.messages import EmailEvent

if TYPE_CHECKING:
    from postroom.alerts.history import Alert
    from postroom.wiring import Postroom

log = logging.getLogger("postroom.alerts")

MIN_GAP = 0.25
"""Seconds between evaluations however often the monitor is poked."""

Pause = Callable[[str, str], Awaitable[object]]


class AlertMonitor:
    def __init__(
        self,
        reader: Reader,
        history: AlertHistory,
        limits: Thresholds,
        sinks: Sequence[AlertSink],
        *,
        pause: Pause | None = None,
        interval: float = 5.0,
        campaign_interval: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.reader = reader
        self.history = history
        self.limits = limits
        self.sinks = list(sinks)
        self._pause = pause
        self.interval = interval
        self.campaign_interval = campaign_interval
        self._clock = clock
        self._poked = asyncio.Event()

    def poke(self) -> None:
        """Evaluate soon (cheap; safe to call on every feedback batch)."""
        self._poked.set()

    async def check(self, *, campaigns_only: bool = False) -> Changes:
        """One evaluation: fire and resolve, pause campaigns past a critical line, notify.
        ``campaigns_only`` judges the running campaigns alone (one cheap query)."""
        if campaigns_only:
            readings = await self.reader.read_campaigns()
        else:
            readings = await self.reader.read()
        now = self._clock()
        changes = await self.history.apply(evaluate(readings, self.limits), now)
        actions = {a.id: await self._act(a) for a in changes.fired}
        notices = [Notice(NoticeKind.FIRED, a, actions[a.id]) for a in changes.fired]
        notices += [Notice(NoticeKind.RESOLVED, a) for a in changes.resolved]
        if notices and await self._notify(notices):
            await self.history.mark_notified([a.id for a in changes.fired], now)
        return changes

    async def run(self, stop: asyncio.Event) -> None:
        """Evaluate until ``stop`` is set; an evaluation that fails is logged and retried at
        the next interval."""
        loop = asyncio.get_running_loop()
        last_full = -math.inf
        while not stop.is_set():
            self._poked.clear()
            full = loop.time() - last_full >= self.interval
            try:
                await self.check(campaigns_only=not full)
            except Exception:
                log.exception("alert evaluation failed")
            if full:
                last_full = loop.time()
            await _first_of(stop, self._poked, min(self.interval, self.campaign_interval))
            if not stop.is_set():
                await asyncio.sleep(MIN_GAP)

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()

    async def _act(self, alert: Alert) -> str | None:
        target = campaign_id(alert.subject)
        critical = alert.severity is Severity.CRITICAL
        if target is None or alert.rule not in CAMPAIGN_RULES or not critical or not self._pause:
            return None
        reason = f"paused by alert {alert.rule}: {alert.message}"
        try:
            await self._pause(target, reason)
        except Exception as exc:
            log.error("could not pause campaign %s: %s", target, exc)
            return f"Campaign {target} could not be paused: {exc}"
        log.warning("campaign %s paused: %s", target, reason)
        return f"Campaign {target} paused."

    async def _notify(self, notices: list[Notice]) -> bool:
        """Tell every sink; True when at least one took the notices."""
        told = False
        for sink in self.sinks:
            try:
                await sink.notify(notices)
                told = True
            except Exception as exc:
                log.error("alert sink %s failed: %s", sink.name, exc)
        return told


async def _first_of(stop: asyncio.Event, poked: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(poked.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter


def build_monitor(postroom: Postroom, *, pause: Pause | None = None) -> AlertMonitor:
    """The monitor from settings: log sink always, webhook and email when configured, and
    campaign pauses through the campaign repository unless ``pause`` is given."""
    from postroom.store.campaigns import Campaigns
    from postroom.submission import submit

    settings = postroom.settings
    sinks: list[AlertSink] = [LogSink()]
    if settings.alert_webhook_url:
        sinks.append(
            WebhookSink(settings.alert_webhook_url, timeout=settings.alert_webhook_timeout)
        )
    if settings.alert_email_to:

        async def send(events: Sequence[EmailEvent]) -> object:
            return await submit(postroom, events)

        sinks.append(EmailSink(send, settings.alert_email_to))
    reader = Reader(
        postroom.db,
        postroom.queue,
        bounce_window=settings.alert_bounce_window,
        auth_window=settings.alert_auth_window,
        dlq_window=settings.alert_dlq_window,
    )
    return AlertMonitor(
        reader,
        AlertHistory(postroom.db),
        Thresholds.from_settings(settings),
        sinks,
        pause=pause or Campaigns(postroom.db).pause,
        interval=settings.alert_interval,
        campaign_interval=settings.alert_campaign_interval,
    )


async def run_alerts(postroom: Postroom, stop: asyncio.Event) -> None:
    """The monitor as a background task of ``serve`` and ``worker``, until ``stop``; nothing
    when ``POSTROOM_ALERT_MONITOR`` is false."""
    if not postroom.settings.alert_monitor:
        return
    try:
        monitor = build_monitor(postroom)
    except Exception:
        # The worker or API beside it must not go down with the monitor: say so, loudly.
        log.exception("alert monitor could not start; no alerts will be evaluated")
        return
    try:
        await monitor.run(stop)
    finally:
        await monitor.close()
