"""The dashboard in a real browser (headless Chromium through Playwright): log in, see the
overview's charts drawn with data, replay a dead letter with a click until the worker has
delivered it to the outbox, and pause and resume a campaign."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from tests.conftest import make_settings, require_service
from tests.dashboard_data import seed_alerts, seed_ledger
from tests.integration.dashboard_server import CHROMIUM_ARGS, chromium_path, serving

from postroom.api.app import create_app
from postroom.config import Settings
from postroom.messages import parse_event
from postroom.providers.outbox import read_index
from postroom.store.campaign_records import NewCampaign
from postroom.store.campaigns import Campaigns
from postroom.submission import submit
from postroom.wiring import open_postroom, prepare_database

pytestmark = pytest.mark.slow


async def seed(settings: Settings) -> tuple[str, str]:
    """Ledger history for the charts, alerts, a scheduled campaign and one dead letter;
    returns the dead letter's and the campaign's ids."""
    await prepare_database(settings)
    pr = await open_postroom(settings)
    try:
        now = datetime.now(UTC)
        await seed_ledger(pr.db, 3000, now=now, days=1.0, last_hour=400)
        await seed_alerts(pr.db, now)
        await pr.subscribers.create_list("Jane's letters", "jane", list_id="letters")
        campaign = await Campaigns(pr.db).create(
            NewCampaign("letters", "new_post_notification", send_at=now + timedelta(days=1))
        )
        event = parse_event(
            {
                "email_type": "welcome",
                "recipient_email": "stuck@example.com",
                "template_data": {"creator_name": "Jane Doe"},
            },
            max_bytes=100_000,
        )
        [accepted] = await submit(pr, [event])
        [delivery] = await pr.queue.receive(1, lease_seconds=30)
        assert delivery.id == accepted.id
        assert await pr.queue.dead_letter(delivery, "provider unavailable after 5 retries")
        return accepted.id, campaign.id
    finally:
        await pr.close()


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/admin")
    expect(page).to_have_url(f"{base}/admin/login?next=%2Fadmin")
    page.fill("#key", "test-key")
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base}/admin")


def test_dashboard_loads_draws_charts_and_replays_a_dead_letter(tmp_path: Path) -> None:
    executable = chromium_path()
    require_service(executable is not None, "chromium (apt-get install chromium)")
    settings = make_settings(
        tmp_path,
        provider="outbox",
        sender="Platform <news@platform.example>",
        dns_nameserver="127.0.0.1:9",
    )
    dead_id, campaign_id = asyncio.run(seed(settings))
    with (
        serving(create_app(settings, run_worker=True)) as base,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            log_in(page, base)

            assert int(page.text_content("[data-stat=sent_last_hour]") or "0") > 0
            charts = page.locator("svg.chart")
            assert charts.count() == 4
            for index in range(4):
                box = charts.nth(index).bounding_box()
                assert box is not None and box["width"] > 100 and box["height"] > 50
            sent_line = page.locator('polyline[data-series="sent"]').first
            sent_box = sent_line.bounding_box()
            assert sent_box is not None and sent_box["width"] > 100
            assert page.locator("rect.bar").count() == 4  # three classes and the dead letters

            page.click("text=Dead letters")
            row = page.locator(f'tr[data-id="{dead_id}"]')
            expect(row).to_contain_text("stuck@example.com")
            row.locator("button.replay").click()
            expect(page.locator(".notice")).to_have_text("replayed 1 message")
            expect(page.locator("#dlq-empty")).to_be_visible()

            page.click("text=Campaigns")
            campaign = page.locator(f'tr[data-id="{campaign_id}"]')
            campaign.locator("input[name=reason]").fill("checking the list")
            campaign.locator("button.pause").click()
            expect(page.locator(".notice")).to_have_text(f"campaign {campaign_id} is paused")
            expect(campaign).to_contain_text("checking the list")
            campaign.locator("button.resume").click()
            expect(page.locator(".notice")).to_have_text(f"campaign {campaign_id} is scheduled")
        finally:
            browser.close()

        deadline = time.monotonic() + 15
        while not any(e["send_id"] == dead_id for e in read_index(tmp_path / "outbox")):
            assert time.monotonic() < deadline, "the replayed message never reached the outbox"
            time.sleep(0.05)
        request = urllib.request.Request(
            f"{base}/v1/emails/{dead_id}", headers={"Authorization": "Bearer test-key"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["status"] == "sent"
