"""``GET /v1/stats`` and ``postroom stats`` over mail sent through the embedded default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from tests.conftest import make_settings, wait_for_email_status

from postroom.api.app import create_app

AUTH = {"Authorization": "Bearer test-key"}


def test_stats_count_what_was_sent_and_refuse_unknown_groupings(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    documents = [
        {
            "email_type": "welcome",
            "recipient_email": f"r{n}@example.org",
            "template_data": {"creator_name": "Jane"},
        }
        for n in range(3)
    ]
    with TestClient(create_app(settings, run_worker=True)) as client:
        accepted = client.post("/v1/emails", json=documents, headers=AUTH).json()
        for item in accepted["emails"]:
            wait_for_email_status(client, item["id"], "sent")
        body = client.get("/v1/stats?group_by=email_type,domain&days=7", headers=AUTH).json()
        refused = client.get("/v1/stats?group_by=planet", headers=AUTH)
        unauthenticated = client.get("/v1/stats")
    assert body["group_by"] == ["email_type", "domain"]
    [row] = body["rows"]
    assert (row["email_type"], row["domain"], row["sent"]) == ("welcome", "example.org", 3)
    assert row["delivered"] == 0 and row["delivery_rate"] == 0.0  # no webhooks yet
    assert row["open_rate"] is None  # nothing delivered to open
    assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "group_by"
    assert unauthenticated.status_code == 401

    env = {**os.environ, "POSTROOM_DATA_DIR": str(tmp_path), "POSTROOM_SECRET_KEY": "x" * 32}
    table = subprocess.run(
        [sys.executable, "-m", "postroom", "stats", "--by", "domain"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "example.org" in table and "Sends of the last 30 days" in table
    wrong = subprocess.run(
        [sys.executable, "-m", "postroom", "stats", "--by", "planet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == (
        "postroom: error: --by: unknown dimension planet; use email_type, domain, day, campaign"
    )
