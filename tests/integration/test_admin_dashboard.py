"""The dashboard through HTTP: login and its cookie, CSRF and origin checks on every form,
and each page's actions (DLQ replay and purge, suppressions, alerts, domain checks)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.conftest import make_settings
from tests.dashboard_data import seed_alerts

from postroom.api.admin import domains
from postroom.api.app import create_app
from postroom.messages import Priority
from postroom.queue.base import OutgoingMessage
from postroom.store.campaign_records import NewCampaign
from postroom.store.campaigns import Campaigns
from postroom.wiring import Postroom


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    # Port 9 (discard) answers no DNS query: the domain check must report, not hang or crash.
    settings = make_settings(
        tmp_path, sender="Platform <news@platform.example>", dns_nameserver="127.0.0.1:9"
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def log_in(client: TestClient) -> str:
    """Log in with the test key; returns the CSRF token the pages' forms carry."""
    response = client.post("/admin/login", data={"key": "test-key", "next": "/admin/dlq"})
    assert response.status_code == 200 and str(response.url).endswith("/admin/dlq")
    token = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert token is not None
    return token.group(1)


def run(client: TestClient, work: Any) -> Any:
    postroom: Postroom = client.app.state.postroom  # type: ignore[attr-defined]
    return client.portal.call(work, postroom)  # type: ignore[union-attr]


def test_pages_need_a_login_and_a_wrong_key_gets_none(client: TestClient) -> None:
    for path in ("/admin", "/admin/dlq", "/admin/suppressions", "/admin/alerts"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/admin/login?next=")
    assert client.post("/admin/dlq/purge", data={"all": "1"}).status_code == 403
    wrong = client.post("/admin/login", data={"key": "nope"})
    assert wrong.status_code == 401 and "postroom_admin" not in wrong.cookies


def test_login_sets_a_signed_httponly_samesite_strict_cookie(client: TestClient) -> None:
    response = client.post("/admin/login", data={"key": "test-key"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/admin"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
    assert "test-key" not in cookie
    page = client.get("/admin")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.text.count("<svg") == 4
    client.cookies.set("postroom_admin", cookie.split(";")[0].split("=", 1)[1] + "x")
    assert client.get("/admin", follow_redirects=False).status_code == 303  # tampered


def test_login_redirects_only_inside_the_dashboard(client: TestClient) -> None:
    response = client.post(
        "/admin/login",
        data={"key": "test-key", "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/admin"


def test_forms_without_the_token_or_from_another_site_are_refused(client: TestClient) -> None:
    token = log_in(client)
    assert client.post("/admin/dlq/purge", data={"all": "1", "confirm": "purge"}).status_code == 403
    foreign = client.post(
        "/admin/dlq/purge",
        data={"all": "1", "confirm": "purge", "csrf": token},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    cross = client.post(
        "/admin/dlq/purge",
        data={"all": "1", "confirm": "purge", "csrf": token},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    ok = client.post("/admin/dlq/purge", data={"all": "1", "confirm": "purge", "csrf": token})
    assert ok.status_code == 200 and "purged 0 messages" in ok.text


async def _dead_letters(postroom: Postroom) -> None:
    messages = [
        OutgoingMessage(id=f"m{i}", priority=Priority.TRANSACTIONAL, body=b'{"email_type":"x"}')
        for i in range(3)
    ]
    await postroom.queue.enqueue(messages)
    for delivery in await postroom.queue.receive(3, lease_seconds=30):
        await postroom.queue.dead_letter(delivery, f"reason of {delivery.id}")


def test_dlq_show_replay_and_purge(client: TestClient) -> None:
    run(client, _dead_letters)
    token = log_in(client)
    listing = client.get("/admin/dlq")
    assert all(f'data-id="m{i}"' in listing.text for i in range(3))
    shown = client.get("/admin/dlq/m1")
    assert "reason of m1" in shown.text and "&#34;email_type&#34;" in shown.text
    assert client.get("/admin/dlq/nope").status_code == 404

    replayed = client.post("/admin/dlq/replay", data={"id": "m0", "csrf": token})
    assert "replayed 1 message" in replayed.text and 'data-id="m0"' not in replayed.text
    depth = run(client, lambda pr: pr.queue.depth())
    assert depth[Priority.TRANSACTIONAL] == 1  # back on its queue

    purged = client.post("/admin/dlq/purge", data={"id": "m1", "csrf": token})
    assert "purged 1 message" in purged.text and 'data-id="m1"' not in purged.text
    again = client.post("/admin/dlq/purge", data={"id": "m1", "csrf": token})
    assert "no longer in the dead-letter queue" in again.text
    refused = client.post("/admin/dlq/purge", data={"all": "1", "csrf": token})
    assert "type purge" in refused.text and 'data-id="m2"' in refused.text


def test_suppressions_search_add_and_lift_with_a_reason(client: TestClient) -> None:
    token = log_in(client)
    added = client.post(
        "/admin/suppressions/add",
        data={
            "email": "Someone@Example.com",
            "scope": "marketing",
            "reason": "asked",
            "csrf": token,
        },
    )
    assert "someone@example.com is suppressed for marketing mail" in added.text
    invalid = client.post(
        "/admin/suppressions/add", data={"email": "not an address", "csrf": token}
    )
    assert "not added" in invalid.text
    found = client.get("/admin/suppressions", params={"email": "someone@example.com"})
    assert "asked" in found.text and "marketing" in found.text
    no_reason = client.post(
        "/admin/suppressions/remove", data={"email": "someone@example.com", "csrf": token}
    )
    assert "needs the address and why" in no_reason.text
    lifted = client.post(
        "/admin/suppressions/remove",
        data={"email": "someone@example.com", "reason": "wrong person", "csrf": token},
    )
    assert "lifted 1 entry" in lifted.text and "wrong person" in lifted.text  # history shown
    entries = run(client, lambda pr: pr.suppressions.get("someone@example.com"))
    assert entries == []
    missing = client.post(
        "/admin/suppressions/remove",
        data={"email": "someone@example.com", "reason": "again", "csrf": token},
    )
    assert "is not suppressed" in missing.text


def test_alerts_page_lists_open_then_resolved(client: TestClient) -> None:
    run(client, lambda pr: seed_alerts(pr.db, datetime.now(UTC)))
    log_in(client)
    page = client.get("/admin/alerts").text
    open_part, resolved_part = page.split('id="resolved-alerts"')
    assert "complaint rate 0.42%" in open_part and "hard-bounce rate" not in open_part
    assert "hard-bounce rate 5.1%" in resolved_part and "queue_lag" in resolved_part


def test_domains_page_shows_a_dns_failure_instead_of_crashing(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(domains, "LOOKUP_TIMEOUT", 0.3)
    log_in(client)
    page = client.get("/admin/domains")
    assert page.status_code == 200
    assert 'data-domain="platform.example"' in page.text
    assert "could not look up" in page.text or "could not run" in page.text
    other = client.get("/admin/domains", params={"domain": "bad..name", "refresh": "1"})
    assert other.status_code == 200 and 'data-domain="bad..name"' in other.text


def test_logout_ends_the_session(client: TestClient) -> None:
    token = log_in(client)
    client.post("/admin/logout", data={"csrf": token})
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_static_files_only_from_the_static_folder(client: TestClient) -> None:
    assert client.get("/admin/static/admin.css").status_code == 200
    assert client.get("/admin/static/..%2F__init__.py").status_code == 404


async def _scheduled_campaign(postroom: Postroom) -> str:
    await postroom.subscribers.create_list("Jane's letters", "jane", list_id="letters")
    later = datetime.now(UTC) + timedelta(days=1)
    campaign = await Campaigns(postroom.db).create(
        NewCampaign("letters", "new_post_notification", {"post_title": "Hi"}, send_at=later)
    )
    return campaign.id


def test_campaigns_pause_resume_and_cancel_with_reasons(client: TestClient) -> None:
    campaign_id = run(client, _scheduled_campaign)
    token = log_in(client)
    page = client.get("/admin/campaigns").text
    assert f'data-id="{campaign_id}"' in page and "scheduled" in page

    paused = client.post(
        f"/admin/campaigns/{campaign_id}/pause", data={"reason": "list check", "csrf": token}
    )
    assert f"campaign {campaign_id} is paused" in paused.text and "list check" in paused.text
    assert 'class="resume"' in paused.text  # a paused campaign offers resume
    resumed = client.post(f"/admin/campaigns/{campaign_id}/resume", data={"csrf": token})
    assert f"campaign {campaign_id} is scheduled" in resumed.text
    cancelled = client.post(
        f"/admin/campaigns/{campaign_id}/cancel", data={"reason": "wrong post", "csrf": token}
    )
    assert f"campaign {campaign_id} is cancelled" in cancelled.text
    status = run(client, lambda pr: Campaigns(pr.db).get(campaign_id))
    assert status.status.value == "cancelled" and status.status_reason == "wrong post"

    refused = client.post(f"/admin/campaigns/{campaign_id}/pause", data={"csrf": token})
    assert "cannot make it paused" in refused.text
    missing = client.post("/admin/campaigns/nope/cancel", data={"csrf": token})
    assert "no campaign with id" in missing.text
    assert client.post(f"/admin/campaigns/{campaign_id}/resume", data={}).status_code == 403


def test_a_queue_that_does_not_answer_is_reported_on_the_page(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*args: object, **kwargs: object) -> object:
        raise ConnectionError("broker unreachable")

    queue = client.app.state.postroom.queue  # type: ignore[attr-defined]
    monkeypatch.setattr(queue, "dlq_list", refuse)
    monkeypatch.setattr(queue, "depth", refuse)
    log_in(client)
    dead = client.get("/admin/dlq")
    assert dead.status_code == 200 and "broker unreachable" in dead.text
    assert 'id="dlq-empty"' not in dead.text
    overview = client.get("/admin")
    assert overview.status_code == 200 and "broker unreachable" in overview.text
    assert overview.text.count("<svg") == 3  # the ledger's charts still draw
