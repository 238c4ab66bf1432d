"""``/v1/subscribers``, ``/v1/lists`` and ``/confirm`` on SQLite and PostgreSQL with a running
worker: validation naming the field, list counts, and double opt-in through the email."""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.conftest import wait_for_email_status

from postroom.api.app import create_app
from postroom.api.confirm import make_confirm_token
from postroom.config import Settings
from postroom.providers.outbox import read_index

AUTH = {"Authorization": "Bearer test-key"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_worker=True)) as test_client:
        yield test_client


def confirm_path(settings: Settings, send_id: str) -> str:
    outbox = settings.data_dir / "outbox"
    entry = next(e for e in read_index(outbox) if e["send_id"] == send_id)
    message = email.message_from_bytes(
        (outbox / entry["file"]).read_bytes(), policy=email.policy.default
    )
    html = message.get_body(("html",))
    assert html is not None
    match = re.search(r'href="https?://[^/"]+(/confirm/[^"]+)"', html.get_content())
    assert match, "no confirm link in the email"
    return match.group(1)


def test_double_opt_in_waits_for_the_confirm_click(client: TestClient, settings: Settings) -> None:
    client.post("/v1/lists", json={"id": "jane", "name": "Essays", "creator": "Jane"}, headers=AUTH)
    body = {"email": "new@example.com", "list_ids": ["jane"], "double_opt_in": True}
    first = client.post("/v1/subscribers", json=body, headers=AUTH)
    assert first.status_code == 200, first.text
    assert first.json()["subscriptions"][0]["status"] == "pending"
    [send_id] = first.json()["confirmation_emails"]
    time.sleep(1.05)  # the next link is signed in another second: another document
    again = client.post("/v1/subscribers", json=body, headers=AUTH).json()
    assert again["confirmation_emails"] == [send_id]  # one email however often it is posted
    wait_for_email_status(client, send_id, "sent")
    path = confirm_path(settings, send_id)

    for _ in range(2):  # link scanners: a GET changes nothing
        page = client.get(path)
        assert page.status_code == 200 and '<form method="post">' in page.text
    assert client.get("/v1/lists/jane", headers=AUTH).json()["counts"]["pending"] == 1

    assert client.post(path).status_code == 200
    assert client.post(path).status_code == 200  # idempotent
    found = client.get("/v1/subscribers/NEW@example.com", headers=AUTH).json()
    assert found["subscriptions"][0]["status"] == "active"
    assert found["subscriptions"][0]["consent"] == "express"
    assert client.get("/v1/lists/jane", headers=AUTH).json()["counts"] == {
        "active": 1,
        "pending": 0,
        "unsubscribed": 0,
    }
    # Unsubscribed, then asking again: pending again, with a new confirmation email.
    postroom = client.app.state.postroom  # type: ignore[attr-defined]
    assert client.portal is not None
    assert client.portal.call(postroom.subscribers.unsubscribe, "new@example.com", "jane")
    revived = client.post("/v1/subscribers", json=body, headers=AUTH).json()
    assert revived["subscriptions"][0]["status"] == "pending"
    assert len(revived["confirmation_emails"]) == 1
    assert revived["confirmation_emails"] != [send_id]

    token = path.rsplit("/", 1)[1]
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    foreign = make_confirm_token("another-secret-another-secret!!", "x", "jane")
    for bad in (tampered, foreign):
        assert client.post(f"/confirm/{bad}").status_code == 400
        assert client.get(f"/confirm/{bad}").status_code == 400


def test_bad_input_names_the_field(client: TestClient) -> None:
    client.post("/v1/lists", json={"id": "jane", "name": "Essays", "creator": "Jane"}, headers=AUTH)
    cases = [
        ({"email": "not an address"}, "email"),
        ({"email": "a@example.com", "list_ids": ["nope"]}, "list_ids"),
        ({"email": "a@example.com", "consent": {"kind": "maybe"}}, "consent.kind"),
    ]
    for body, field in cases:
        response = client.post("/v1/subscribers", json=body, headers=AUTH)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["field"] == field
    assert (
        client.post(
            "/v1/lists", json={"id": "jane", "name": "x", "creator": "y"}, headers=AUTH
        ).status_code
        == 409
    )
    assert (
        client.post("/v1/lists", json={"name": "x"}, headers=AUTH).json()["detail"][0]["field"]
        == "creator"
    )
    assert client.get("/v1/lists/nope", headers=AUTH).status_code == 404
    assert client.get("/v1/subscribers/a@example.com", headers=AUTH).status_code == 404
    assert client.get("/v1/lists/jane").status_code == 401
    made = client.post(
        "/v1/subscribers",
        json={"email": "A@Example.com", "name": "A", "list_ids": ["jane"]},
        headers=AUTH,
    ).json()
    assert made["email"] == "a@example.com" and made["results"][0]["outcome"] == "created"
    assert made["subscriptions"][0]["consent_expires_at"] is None
