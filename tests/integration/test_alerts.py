"""A bounce storm during a campaign fires the alert to a local webhook receiver and pauses the
campaign within 1,000 sends of crossing the line (issue 8).

The campaign's sending is simulated at the database: 100 recipients at a time are recorded
``sent`` in their chunk as the chunk sender records outcomes, and the sender stops as soon as
the campaign is no longer ``sending``, as the real one parks a paused campaign's chunks. The
bounces travel the real feedback path: ESP events bound to ``<campaign>.<position>`` and
ingested by ``FeedbackStore``, which moves the campaign's ``bounced_hard`` counter. The
monitor is the real one (``build_monitor``: campaign repository pause, webhook sink), running
as the background loop ``serve`` and ``worker`` run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fastapi.testclient import TestClient
from sqlalchemy import Connection, insert, update
from tests.conftest import make_settings
from tests.fakes import FakeProvider
from tests.unit.alerts.synthetic import add_campaign, add_sends, campaign_status
from ulid import ULID

from postroom.alerts.history import AlertHistory
from postroom.alerts.monitor import AlertMonitor, build_monitor
from postroom.alerts.rules import CAMPAIGN_BOUNCE
from postroom.api.app import create_app
from postroom.config import Settings
from postroom.store.database import open_database
from postroom.store.feedback import FeedbackStore
from postroom.store.schema import campaign_chunks, campaign_recipients
from postroom.webhooks.events import FeedbackType, NormalizedEvent
from postroom.wiring import Postroom, open_postroom, prepare_database

STEP = 100  # recipients recorded per hand-over, as one ESP batch call's outcomes
STORM_FROM = 5000  # from this position on, every tenth recipient hard-bounces
LINE = 0.02


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response(text="ok")


@pytest.fixture
async def receiver_url() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/slack", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield receiver, f"http://127.0.0.1:{runner.addresses[0][1]}/slack"
    finally:
        await runner.cleanup()


class SimulatedCampaign:
    def __init__(self, pr: Postroom, campaign_id: str) -> None:
        self.pr = pr
        self.id = campaign_id
        self.feedback = FeedbackStore(pr.db, pr.suppressions)
        self.sent = 0
        self.bounced = 0
        self.crossed_at: int | None = None  # sends when the rate first crossed the line

    async def send_step(self) -> None:
        first = self.sent
        chunk, offset = divmod(first, 1000)
        now = datetime.now(UTC)

        def record(conn: Connection) -> None:
            if offset == 0:
                conn.execute(
                    insert(campaign_chunks),
                    [
                        {
                            "campaign_id": self.id,
                            "chunk": chunk,
                            "first_position": first,
                            "size": 1000,
                            "state": "queued",
                            "sent": 0,
                            "failed": 0,
                            "suppressed": 0,
                            "ambiguous": 0,
                            "updated_at": now,
                        }
                    ],
                )
            conn.execute(
                insert(campaign_recipients),
                [
                    {
                        "campaign_id": self.id,
                        "position": p,
                        "subscriber_id": f"sub{p}",
                        "email": f"fan{p}@example.com",
                        "status": "sent",
                        "attempts": 1,
                        "updated_at": now.timestamp(),
                    }
                    for p in range(first, first + STEP)
                ],
            )
            conn.execute(
                update(campaign_chunks)
                .where(campaign_chunks.c.campaign_id == self.id, campaign_chunks.c.chunk == chunk)
                .values(sent=campaign_chunks.c.sent + STEP, updated_at=now)
            )

        await self.pr.db.write(record)
        self.sent += STEP
        await self._bounces(range(first, first + STEP), now)
        if self.crossed_at is None and self.bounced / self.sent > LINE:
            self.crossed_at = self.sent

    async def _bounces(self, positions: range, now: datetime) -> None:
        events = [
            NormalizedEvent(
                provider="sendgrid",
                type=FeedbackType.BOUNCED_HARD,
                esp_event="bounce",
                recipient=f"fan{p}@example.com",
                occurred_at=now,
                esp_event_id=f"bounce-{p}",
                postroom_send_id=f"{self.id}.{p}",
                enhanced_status="5.1.1",
            )
            for p in positions
            if p >= STORM_FROM and p % 10 == 0
        ]
        if events:
            await self.feedback.ingest(events)
            self.bounced += len(events)


async def storm(
    settings: Settings,
    receiver: Receiver,
    url: str,
    *,
    pace: float,
    poke: bool,
    **alert_settings: Any,
) -> None:
    settings = settings.model_copy(update={"alert_webhook_url": url, **alert_settings})
    await prepare_database(settings)
    pr = await open_postroom(settings, provider=FakeProvider())
    monitor: AlertMonitor = build_monitor(pr)
    stop = asyncio.Event()
    running = asyncio.create_task(monitor.run(stop))
    try:
        campaign_id = str(ULID())
        await add_campaign(pr.db, campaign_id)
        campaign = SimulatedCampaign(pr, campaign_id)
        while (await campaign_status(pr.db, campaign_id))[0] == "sending":
            assert campaign.sent < 50_000, "the campaign was never paused"
            await campaign.send_step()
            if poke:
                monitor.poke()
            await asyncio.sleep(pace)
        status, reason = await campaign_status(pr.db, campaign_id)
    finally:
        stop.set()
        await running
        await monitor.close()
        await pr.close()

    assert campaign.crossed_at is not None
    assert campaign.sent - campaign.crossed_at <= 1000, (campaign.crossed_at, campaign.sent)
    assert status == "paused"
    assert reason is not None and reason.startswith(f"paused by alert {CAMPAIGN_BOUNCE}:")
    [fired] = [
        b
        for b in receiver.bodies
        if b["alert"]["rule"] == CAMPAIGN_BOUNCE and b["alert"]["status"] == "fired"
    ]
    assert fired["alert"]["subject"] == f"campaign:{campaign_id}"
    assert fired["alert"]["severity"] == "critical"
    assert fired["text"].endswith(f"Campaign {campaign_id} paused.")


async def test_a_bounce_storm_pauses_the_campaign_at_the_monitors_own_pace(
    settings: Settings, receiver_url: tuple[Receiver, str]
) -> None:
    """1,000 sends a second, the campaign checked every half second and nobody poking."""
    receiver, url = receiver_url
    await storm(
        settings,
        receiver,
        url,
        pace=STEP / 1000,
        poke=False,
        alert_interval=60.0,
        alert_campaign_interval=0.5,
    )


async def test_a_poke_from_the_feedback_path_pauses_a_faster_campaign(
    settings: Settings, receiver_url: tuple[Receiver, str]
) -> None:
    """2,000 sends a second, the monitor's own timers a minute away: the pokes do it."""
    receiver, url = receiver_url
    await storm(
        settings,
        receiver,
        url,
        pace=STEP / 2000,
        poke=True,
        alert_interval=60.0,
        alert_campaign_interval=60.0,
    )


def test_the_cli_checks_once_and_lists(tmp_path: Path) -> None:
    async def bouncy_history() -> None:
        settings = make_settings(tmp_path)
        await prepare_database(settings)
        db = open_database(settings.resolved_database_url)
        try:
            await add_sends(db, 1000, datetime.now(UTC), feedback={"bounced_hard": 30})
        finally:
            await db.dispose()

    asyncio.run(bouncy_history())
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(POSTROOM_DATA_DIR=str(tmp_path), POSTROOM_LOG_LEVEL="ERROR", COLUMNS="200")

    def postroom(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "postroom", "alerts", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    checked = postroom("check")
    assert checked.returncode == 1, checked.stderr
    assert "fired 1, resolved 0" in checked.stdout
    assert "hard_bounce_rate" in checked.stdout and "critical" in checked.stdout
    again = postroom("check")
    assert "fired 0, resolved 0" in again.stdout and again.returncode == 1
    listed = postroom("list", "--all")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("hard_bounce_rate") == 1


@pytest.mark.parametrize("monitor_on", [True, False])
def test_serve_runs_the_monitor_unless_told_not_to(tmp_path: Path, monitor_on: bool) -> None:
    settings = make_settings(tmp_path, alert_monitor=monitor_on, alert_interval=0.1)

    async def bouncy_history() -> None:
        await prepare_database(settings)
        db = open_database(settings.resolved_database_url)
        try:
            await add_sends(db, 1000, datetime.now(UTC), feedback={"bounced_hard": 30})
        finally:
            await db.dispose()

    async def open_alerts() -> list[str]:
        db = open_database(settings.resolved_database_url)
        try:
            return [a.rule for a in await AlertHistory(db).list()]
        finally:
            await db.dispose()

    asyncio.run(bouncy_history())
    with TestClient(create_app(settings, run_worker=True)):
        deadline = time.monotonic() + 3
        while not asyncio.run(open_alerts()) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert asyncio.run(open_alerts()) == (["hard_bounce_rate"] if monitor_on else [])
