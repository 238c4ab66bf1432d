"""End to end through the real edges: HTTP API → SQL queue → worker → outbox files."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.conftest import make_settings, wait_for_email_status
from tests.log_scan import CANARY

from postroom.api.app import create_app
from postroom.providers.outbox import read_index

AUTH = {"Authorization": "Bearer test-key"}

NEW_POST: dict[str, Any] = {
    "email_type": "new_post_notification",
    "recipient_email": CANARY,
    "recipient_name": "Zoë Reader",
    "template_data": {
        "creator_name": "Jane Doe",
        "post_title": "My Latest Article",
        "post_url": "https://platform.example/post/123",
    },
    "metadata": {"user_id": "uuid-123", "post_id": "uuid-456"},
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, provider="outbox", sender="Platform <news@platform.example>")
    with TestClient(create_app(settings, run_worker=True)) as test_client:
        yield test_client


def test_posted_email_lands_in_outbox_with_headers_and_both_parts(
    client: TestClient, tmp_path: Path
) -> None:
    response = client.post("/v1/emails", json=NEW_POST, headers=AUTH)
    assert response.status_code == 202, response.text
    send_id = response.json()["id"]
    status = wait_for_email_status(client, send_id, "sent")
    assert status["provider"] == "outbox"
    assert [a["outcome"] for a in status["attempts"]] == ["sent"]

    [entry] = read_index(tmp_path / "outbox")
    assert entry["send_id"] == send_id
    raw = (tmp_path / "outbox" / entry["file"]).read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["From"] == "Platform <news@platform.example>"
    assert message["To"] == f"Zoë Reader <{CANARY}>"
    assert message["Subject"] == "Jane Doe published: My Latest Article"
    assert message["Message-ID"] == f"<{send_id}@platform.example>"
    assert message["Date"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith("<http://127.0.0.1:8025/unsubscribe/")
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert "https://platform.example/post/123" in text.get_content()
    assert "My Latest Article" in html.get_content()
    assert 'style="' in html.get_content()  # CSS was inlined


def test_same_idempotency_key_returns_same_id_and_different_body_conflicts(
    client: TestClient,
) -> None:
    headers = {**AUTH, "Idempotency-Key": "post-123-reader"}
    first = client.post("/v1/emails", json=NEW_POST, headers=headers)
    again = client.post("/v1/emails", json=NEW_POST, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.json()["duplicate"] is True
    changed = {**NEW_POST, "template_data": {**NEW_POST["template_data"], "post_title": "Other"}}
    conflict = client.post("/v1/emails", json=changed, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["detail"]["existing_id"] == first.json()["id"]


def test_unknown_fields_are_kept_even_when_null(client: TestClient, tmp_path: Path) -> None:
    document = {**NEW_POST, "campaign": None, "source": {"app": "ios", "build": None}}
    response = client.post("/v1/emails", json=document, headers=AUTH)
    assert response.status_code == 202, response.text
    wait_for_email_status(client, response.json()["id"], "sent")


def test_size_is_measured_with_the_pinned_idempotency_key(client: TestClient) -> None:
    # Just under the limit as sent, over it once the derived key is pinned into the document.
    bare = {**NEW_POST, "template_data": {**NEW_POST["template_data"], "pad": ""}}
    room = 262_144 - len(json.dumps(bare, separators=(",", ":"), ensure_ascii=False)) - 20
    padded = {**bare, "template_data": {**bare["template_data"], "pad": "x" * room}}
    response = client.post("/v1/emails", json=padded, headers=AUTH)
    assert response.status_code == 422, response.text
    assert "idempotency key" in response.json()["detail"][0]["reason"]
    assert sum(client.get("/readyz").json()["queue_depth"].values()) == 0


def test_a_long_key_header_on_a_list_is_refused_not_truncated(client: TestClient) -> None:
    documents = [NEW_POST, {**NEW_POST, "recipient_email": "other@example.com"}]
    headers = {**AUTH, "Idempotency-Key": "k" * 254}
    response = client.post("/v1/emails", json=documents, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == "idempotency_key"


def test_conflicting_documents_in_one_request_are_a_422(client: TestClient) -> None:
    other = {**NEW_POST, "template_data": {**NEW_POST["template_data"], "post_title": "Other"}}
    documents = [{**NEW_POST, "idempotency_key": "k1"}, {**other, "idempotency_key": "k1"}]
    response = client.post("/v1/emails", json=documents, headers=AUTH)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["field"] == "idempotency_key" and "documents 0 and 1" in problem["reason"]
    assert sum(client.get("/readyz").json()["queue_depth"].values()) == 0
    same = [{**NEW_POST, "idempotency_key": "k2"}, {**NEW_POST, "idempotency_key": "k2"}]
    accepted = client.post("/v1/emails", json=same, headers=AUTH).json()["emails"]
    assert accepted[0]["id"] == accepted[1]["id"]


def test_a_list_is_accepted_whole(client: TestClient) -> None:
    documents = [{**NEW_POST, "recipient_email": f"reader{i}@example.com"} for i in range(3)]
    response = client.post("/v1/emails", json=documents, headers=AUTH)
    assert response.status_code == 202
    ids = [e["id"] for e in response.json()["emails"]]
    assert len(set(ids)) == 3
    for send_id in ids:
        wait_for_email_status(client, send_id, "sent")


@pytest.mark.parametrize(
    ("document", "field", "reason"),
    [
        ({**NEW_POST, "recipient_email": "not an address"}, "recipient_email", "email address"),
        ({**NEW_POST, "email_type": "no_such_type"}, "email_type", "unknown email_type"),
        (
            {**NEW_POST, "recipient_name": "Eve\r\nBcc: x@evil.example"},
            "recipient_name",
            "line break",
        ),
        (
            {**NEW_POST, "template_data": {**NEW_POST["template_data"], "post_title": "a\nBcc: x"}},
            "subject",
            "line break",
        ),
        (
            {**NEW_POST, "template_data": {"creator_name": "J"}},
            "template_data.post_title",
            "required",
        ),
        (
            {**NEW_POST, "template_data": {"creator_name": "J", "post_title": "T"}},
            "template_data.post_url",  # used only in the body
            "required by email type 'new_post_notification'",
        ),
        ({**NEW_POST, "template_data": {"blob": "x" * 300_000}}, None, "limit"),
        ({"recipient_email": "a@example.com"}, "email_type", "required"),
    ],
)
def test_bad_documents_get_422_with_field_and_reason_and_write_nothing(
    client: TestClient, document: dict[str, Any], field: str | None, reason: str
) -> None:
    response = client.post("/v1/emails", json=document, headers=AUTH)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["field"] == field
    assert reason in problem["reason"].lower()
    ready = client.get("/readyz").json()
    assert sum(ready["queue_depth"].values()) == 0


def test_one_bad_document_in_a_list_rejects_the_list(client: TestClient) -> None:
    documents = [NEW_POST, {**NEW_POST, "recipient_email": "bad"}]
    response = client.post("/v1/emails", json=documents, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"][0]["index"] == 1
    assert sum(client.get("/readyz").json()["queue_depth"].values()) == 0


def test_api_key_is_required(client: TestClient) -> None:
    assert client.post("/v1/emails", json=NEW_POST).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post("/v1/emails", json=NEW_POST, headers=wrong).status_code == 401
    assert (
        client.post("/v1/emails", json=NEW_POST, headers={"X-API-Key": "test-key"}).status_code
        == 202
    )
    assert client.get("/v1/emails/x").status_code == 401


def test_unknown_id_is_404_and_health_endpoints_answer(client: TestClient) -> None:
    assert client.get("/v1/emails/01NOPE", headers=AUTH).status_code == 404
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    assert "/v1/emails" in client.get("/openapi.json").json()["paths"]


def test_invalid_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/emails", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["detail"][0]["reason"]


@pytest.mark.parametrize("key", ["k%0d%0aBcc: x", "=?utf-8?q?k=0D=0ABcc:_x?=", "k\x85Bcc: x"])
def test_encoded_line_breaks_in_the_idempotency_key_header_are_refused(
    client: TestClient, key: str
) -> None:
    response = client.post(
        "/v1/emails", json=NEW_POST, headers={**AUTH, "Idempotency-Key": key.encode("latin-1")}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == "Idempotency-Key"
