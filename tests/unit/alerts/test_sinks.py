"""The webhook sink posts Slack-compatible JSON to a real local server; a sink that fails is
logged and never stops the monitor or the other sinks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from postroom.alerts.history import Alert, Changes
from postroom.alerts.monitor import AlertMonitor
from postroom.alerts.rules import HARD_BOUNCE, Rate, Readings, Severity, Thresholds
from postroom.alerts.sinks import LogSink, Notice, NoticeKind, SinkError, WebhookSink

ALERT = Alert(
    "01ALERT",
    HARD_BOUNCE,
    Severity.CRITICAL,
    "all",
    "hard-bounce rate 3% (30 of 1000 sends, latest sends) is over 2%",
    0.03,
    0.02,
    datetime(2026, 11, 28, 12, tzinfo=UTC),
)


class Receiver:
    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.bodies: list[dict[str, Any]] = []
        self.got = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        self.got.set()
        await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text="ok")


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(receiver: Receiver) -> str:
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/hook"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_the_webhook_posts_text_and_the_structured_alert(serve: Any) -> None:
    receiver = Receiver()
    sink = WebhookSink(await serve(receiver))
    try:
        await sink.notify([Notice(NoticeKind.FIRED, ALERT, "Campaign c1 paused.")])
    finally:
        await sink.close()
    [body] = receiver.bodies
    assert body["text"] == (
        "CRITICAL hard_bounce_rate (all): hard-bounce rate 3% (30 of 1000 sends, latest sends) "
        "is over 2%. Campaign c1 paused."
    )
    assert body["alert"]["status"] == "fired"
    assert body["alert"]["rule"] == HARD_BOUNCE
    assert body["alert"]["severity"] == "critical"
    assert body["alert"]["value"] == 0.03 and body["alert"]["threshold"] == 0.02
    assert body["alert"]["fired_at"] == "2026-11-28T12:00:00+00:00"


async def test_a_failing_or_slow_receiver_raises_a_sink_error(serve: Any) -> None:
    refusing = WebhookSink(await serve(Receiver(status=500)))
    slow = WebhookSink(await serve(Receiver(delay=2.0)), timeout=0.2)
    gone = WebhookSink("http://127.0.0.1:9/hook")
    for sink in (refusing, slow, gone):
        try:
            with pytest.raises(SinkError):
                await sink.notify([Notice(NoticeKind.FIRED, ALERT)])
        finally:
            await sink.close()


class StaticReader:
    """Readings that say the bounce rate is 3%, every time."""

    async def read(self) -> Readings:
        return Readings(bounces=Rate(1000, 30))

    async def read_campaigns(self) -> Readings:
        return Readings(campaigns=[])


class MemoryHistory:
    def __init__(self) -> None:
        self.fired = 0
        self.notified: list[str] = []

    async def apply(self, verdict: Any, now: datetime) -> Changes:
        self.fired += 1
        return Changes(fired=[ALERT] if self.fired == 1 else [])

    async def mark_notified(self, ids: list[str], now: datetime) -> None:
        self.notified += ids


async def test_a_broken_sink_is_logged_and_the_next_sink_still_hears(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    history = MemoryHistory()
    monitor = AlertMonitor(
        StaticReader(),  # type: ignore[arg-type]
        history,  # type: ignore[arg-type]
        Thresholds(),
        [WebhookSink(await serve(Receiver(status=503))), LogSink()],
    )
    with caplog.at_level(logging.INFO, logger="postroom.alerts"):
        changes = await monitor.check()
    await monitor.close()
    assert changes.fired == [ALERT]
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.ERROR, "alert sink webhook failed: alert webhook answered HTTP 503") in messages
    assert any(level == logging.CRITICAL and "hard_bounce_rate" in m for level, m in messages)
    assert history.notified == [ALERT.id]  # the log sink took it


async def test_the_loop_survives_failures_and_stops_when_told() -> None:
    class Exploding(StaticReader):
        calls = 0

        async def read(self) -> Readings:
            Exploding.calls += 1
            raise RuntimeError("database gone")

        async def read_campaigns(self) -> Readings:
            return await self.read()

    monitor = AlertMonitor(
        Exploding(),  # type: ignore[arg-type]
        MemoryHistory(),  # type: ignore[arg-type]
        Thresholds(),
        [],
        interval=0.01,
        campaign_interval=0.01,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    await asyncio.sleep(0.7)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert Exploding.calls >= 2


async def test_a_poke_brings_the_next_evaluation_forward() -> None:
    reader = StaticReader()
    seen: list[float] = []

    async def read_campaigns() -> Readings:
        seen.append(asyncio.get_running_loop().time())
        return Readings(campaigns=[])

    reader.read_campaigns = read_campaigns  # type: ignore[method-assign]
    monitor = AlertMonitor(
        reader,  # type: ignore[arg-type]
        MemoryHistory(),  # type: ignore[arg-type]
        Thresholds(),
        [],
        interval=60,
        campaign_interval=60,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    await asyncio.sleep(0.05)
    assert seen == []  # the first pass was the full one
    monitor.poke()
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert len(seen) == 1
