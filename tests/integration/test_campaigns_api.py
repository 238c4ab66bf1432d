"""``/v1/campaigns`` and ``postroom campaign``: requests checked with the field at fault,
a campaign sent end to end through the API's own worker to the outbox, state changes
refused with 409 where the campaign's state does not allow them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient
from tests.integration.test_subscribers_cli import env, invoke, make_list  # noqa: F401

from postroom.api.app import create_app
from postroom.config import Settings
from postroom.providers.outbox import read_index

AUTH = {"Authorization": "Bearer test-key"}
POST = {"creator_name": "Jane Doe", "post_title": "Slow writing", "post_url": "https://p.example/1"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_worker=True)) as test_client:
        yield test_client


def subscribe(client: TestClient, count: int) -> None:
    client.post("/v1/lists", json={"id": "jane", "name": "Essays", "creator": "Jane"}, headers=AUTH)
    for i in range(count):
        body = {"email": f"reader{i}@example.com", "name": f"Reader {i}", "list_ids": ["jane"]}
        assert client.post("/v1/subscribers", json=body, headers=AUTH).status_code == 200


def test_a_campaign_posted_to_the_api_reaches_the_list(
    client: TestClient, settings: Settings
) -> None:
    subscribe(client, 25)
    body = {"list_id": "jane", "email_type": "new_post_notification", "template_data": POST}
    created = client.post("/v1/campaigns", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    deadline = time.monotonic() + 20
    while (status := client.get(f"/v1/campaigns/{campaign_id}", headers=AUTH).json())[
        "status"
    ] != "finished":
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert (status["total"], status["sent"], status["pending"]) == (25, 25, 0)
    sent = [
        e for e in read_index(settings.data_dir / "outbox") if e["send_id"].startswith(campaign_id)
    ]
    assert sorted(e["to"] for e in sent) == sorted(f"reader{i}@example.com" for i in range(25))
    listed = client.get("/v1/campaigns", headers=AUTH).json()["campaigns"]
    assert [c["id"] for c in listed] == [campaign_id]
    # Finished: nothing left to pause or cancel.
    refused = client.post(f"/v1/campaigns/{campaign_id}/pause", json={}, headers=AUTH)
    assert refused.status_code == 409
    assert refused.json()["detail"][0]["field"] == "status"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email_type": "welcome"}, "email_type"),  # transactional, not marketing
        ({"email_type": "no_such_type"}, "email_type"),
        ({"template_data": {"creator_name": "J"}}, "template_data.post_title"),
        ({"list_id": "nope"}, "list_id"),
        ({"send_at": "2026-12-01T09:00:00"}, "send_at"),
        ({"ab_test": {"variants": [{"subject": "A"}]}}, "ab_test.variants"),
        ({"ab_test": {"variants": [{"subject": "A"}, {}]}}, "ab_test.variants.1"),
        (
            {"ab_test": {"variants": [{"subject": "A"}, {"subject": "B\r\nBcc: x@y"}]}},
            "ab_test.variants.1",
        ),
    ],
)
def test_bad_requests_name_the_field(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    subscribe(client, 0)
    request = {"list_id": "jane", "email_type": "new_post_notification", "template_data": POST}
    response = client.post("/v1/campaigns", json={**request, **body}, headers=AUTH)
    assert response.status_code == 422, response.text
    fields = [
        str(d.get("field") or ".".join(map(str, d.get("loc", []))))
        for d in response.json()["detail"]
    ]
    assert any(f.endswith(field) for f in fields), fields
    assert client.get("/v1/campaigns", headers=AUTH).json()["campaigns"] == []


def test_pause_resume_cancel_and_missing_campaigns(client: TestClient) -> None:
    subscribe(client, 1)
    body = {
        "list_id": "jane",
        "email_type": "new_post_notification",
        "template_data": POST,
        "send_at": "2099-01-01T00:00:00Z",
    }
    campaign_id = client.post("/v1/campaigns", json=body, headers=AUTH).json()["id"]
    paused = client.post(
        f"/v1/campaigns/{campaign_id}/pause", json={"reason": "typo"}, headers=AUTH
    )
    assert (paused.json()["status"], paused.json()["status_reason"]) == ("paused", "typo")
    resumed = client.post(f"/v1/campaigns/{campaign_id}/resume", headers=AUTH)
    assert resumed.json()["status"] == "scheduled"
    assert client.post(f"/v1/campaigns/{campaign_id}/cancel", headers=AUTH).json()["status"] == (
        "cancelled"
    )
    assert client.post(f"/v1/campaigns/{campaign_id}/resume", headers=AUTH).status_code == 409
    assert client.get("/v1/campaigns/01KBXQ7Z2N5J8V3W4Y6T9R0P1M", headers=AUTH).status_code == 404
    assert client.get("/v1/campaigns", headers={}).status_code == 401


def test_cli_sends_and_reports(settings: Settings, env: dict[str, str]) -> None:  # noqa: F811
    make_list(settings, "essays")
    code, out, err = invoke(
        env, "campaign", "send", "--list", "essays", "--type", "new_post_notification",
        "--data", orjson.dumps(POST).decode(),
    )  # fmt: skip
    assert code == 0, err
    created = orjson.loads(out)
    # An empty list: snapshotted at once, nothing to send, finished.
    assert (created["status"], created["total"]) == ("finished", 0)
    code, out, err = invoke(
        env, "campaign", "send", "--list", "essays", "--type", "new_post_notification",
        "--data", orjson.dumps(POST).decode(), "--wait",
    )  # fmt: skip
    # --wait follows the campaign to its end: empty, so at once, with the bar on stderr.
    assert code == 0 and orjson.loads(out)["status"] == "finished", err
    assert "campaign" in err and "finished" in err
    code, out, _ = invoke(env, "campaign", "status", created["id"])
    assert code == 0 and orjson.loads(out)["id"] == created["id"]
    code, _, err = invoke(
        env, "campaign", "send", "--list", "essays", "--type", "welcome", "--data", "{}"
    )
    assert code == 1 and "email_type" in err and len(err.strip().splitlines()) == 1
    code, _, err = invoke(env, "campaign", "pause", created["id"])
    assert code == 1 and "finished" in err
    code, _, err = invoke(env, "campaign", "status", "01KBXQ7Z2N5J8V3W4Y6T9R0P1M")
    assert code == 1 and "no campaign" in err
