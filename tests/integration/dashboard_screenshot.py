"""Take docs/dashboard.png: the overview over a month of synthetic but realistic traffic.

    .venv/bin/python -m tests.integration.dashboard_screenshot docs/dashboard.png

Seeds a fresh SQLite data dir (200,000 sends over 30 days, a busy last hour, a bounce storm
six hours ago, alerts, a marketing backlog and a few dead letters), serves the app without a
worker (so the backlog stays put) and photographs the overview in headless Chromium.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from playwright.sync_api import sync_playwright
from tests.conftest import make_settings
from tests.dashboard_data import seed_alerts, seed_ledger
from tests.integration.dashboard_server import CHROMIUM_ARGS, chromium_path, serving

from postroom.api.app import create_app
from postroom.config import Settings
from postroom.messages import Priority
from postroom.queue.base import OutgoingMessage
from postroom.wiring import open_postroom, prepare_database


async def seed(settings: Settings) -> None:
    await prepare_database(settings)
    pr = await open_postroom(settings)
    try:
        now = datetime.now(UTC)
        await seed_ledger(
            pr.db, 200_000, now=now, days=30, last_hour=1500, storm_hours_ago=(5.0, 7.0)
        )
        await seed_alerts(pr.db, now)
        doomed = [
            OutgoingMessage(id=f"dead-{i}", priority=Priority.TRANSACTIONAL, body=b"{}")
            for i in range(4)
        ]
        await pr.queue.enqueue(doomed)
        for delivery in await pr.queue.receive(4, lease_seconds=30):
            await pr.queue.dead_letter(delivery, "retries spent")
        backlog = {Priority.CRITICAL: 2, Priority.TRANSACTIONAL: 37, Priority.MARKETING: 1840}
        await pr.queue.enqueue(
            [
                OutgoingMessage(id=f"q-{p.value}-{i}", priority=p, body=b"{}")
                for p, n in backlog.items()
                for i in range(n)
            ]
        )
    finally:
        await pr.close()


def main(target: Path) -> None:
    executable = chromium_path()
    if executable is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    data_dir = Path(tempfile.mkdtemp(prefix="postroom-screenshot-"))
    settings = make_settings(data_dir, sender="Platform <news@platform.example>")
    asyncio.run(seed(settings))
    with serving(create_app(settings)) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(f"{base}/admin/login")
        page.fill("#key", "test-key")
        page.click("button[type=submit]")
        page.wait_for_selector("svg.chart")
        page.screenshot(path=str(target), full_page=True)
        browser.close()
    print(f"wrote {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png"))
