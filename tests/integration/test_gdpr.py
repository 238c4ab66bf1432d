"""GDPR on SQLite and PostgreSQL through the API with a running worker: the export holds
everything about an address, and erasure leaves no trace of it but a suppressed hash, which
the worker's suppression check then honours for the next email."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import create_engine, select
from tests.conftest import wait_for_email_status
from tests.log_scan import CANARY

from postroom.api.app import create_app
from postroom.config import Settings
from postroom.store.database import sync_url
from postroom.store.schema import metadata
from postroom.store.suppressions import address_hash

AUTH = {"Authorization": "Bearer test-key"}
POSTMARK = {  # the fixture credentials of tests/fixtures/esp/postmark
    "Content-Type": "application/json",
    "Authorization": "Basic Zml4dHVyZS11c2VyOmZpeHR1cmUtcGFzcw==",
}
ADDRESS = CANARY


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    configured = settings.model_copy(
        update={
            "postmark_webhook_user": "fixture-user",
            "postmark_webhook_password": SecretStr("fixture-pass"),
        }
    )
    with TestClient(create_app(configured, run_worker=True)) as test_client:
        yield test_client


def welcome(client: TestClient, key: str) -> str:
    document = {
        "email_type": "welcome",
        "recipient_email": "Canary.Reader.X7q@Example.com",
        "recipient_name": "Rea Der",
        "template_data": {"creator_name": "Jane"},
        "idempotency_key": key,
    }
    response = client.post("/v1/emails", json=document, headers=AUTH)
    assert response.status_code == 202, response.text
    send_id: str = response.json()["id"]
    return send_id


def rows_mentioning(settings: Settings, needles: list[str]) -> list[str]:
    """Every table row whose text (blobs decoded) contains one of ``needles``."""
    engine = create_engine(sync_url(settings.resolved_database_url))
    found = []
    try:
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(select(table)):
                    text = " ".join(
                        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                        for v in row
                    ).lower()
                    if any(n in text for n in needles):
                        found.append(f"{table.name}: {text[:200]}")
    finally:
        engine.dispose()
    return found


def test_export_then_erasure_leaves_only_a_hash_that_blocks_the_next_send(
    client: TestClient, settings: Settings
) -> None:
    assert (
        client.post(
            "/v1/lists", json={"id": "jane", "name": "Essays", "creator": "Jane"}, headers=AUTH
        ).status_code
        == 201
    )
    subscribed = client.post(
        "/v1/subscribers",
        json={
            "email": "Canary.Reader.X7q@Example.com",
            "name": "Rea Der",
            "list_ids": ["jane"],
            "consent": {"kind": "implied", "source": "checkout", "ip": "203.0.113.9"},
        },
        headers=AUTH,
    )
    assert subscribed.status_code == 200, subscribed.text
    send_id = welcome(client, "w1")
    wait_for_email_status(client, send_id, "sent")
    delivery: dict[str, Any] = {
        "RecordType": "Delivery",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": ADDRESS,
        "Metadata": {"postroom_send_id": send_id},
        "DeliveredAt": "2026-11-28T10:00:00Z",
    }
    hooked = client.post("/webhooks/postmark", content=orjson.dumps(delivery), headers=POSTMARK)
    assert hooked.status_code == 200, hooked.text
    added = client.post(
        "/v1/suppressions",
        json={"email": ADDRESS, "scope": "marketing", "reason": "asked by email"},
        headers=AUTH,
    )
    assert added.status_code == 201

    held = client.get(f"/v1/subscribers/{ADDRESS}/export", headers=AUTH).json()
    assert held["subscriber"]["email"] == ADDRESS and held["subscriber"]["name"] == "Rea Der"
    assert [(s["list_id"], s["list_name"], s["consent"]) for s in held["subscriptions"]] == [
        ("jane", "Essays", "implied")
    ]
    [consent] = held["consent_records"]
    assert (consent["source"], consent["ip"], consent["kind"]) == (
        "checkout",
        "203.0.113.9",
        "implied",
    )
    [sent] = held["sends"]
    assert sent["id"] == send_id and sent["status"] == "sent"
    assert sent["document"]["template_data"] == {"creator_name": "Jane"}
    assert [a["outcome"] for a in sent["attempts"]] == ["sent"]
    assert [e["event_type"] for e in held["events"]] == ["delivered"]
    assert [(s["scope"], s["reason"]) for s in held["suppressions"]] == [
        ("marketing", "asked by email")
    ]

    erased = client.delete(f"/v1/subscribers/{ADDRESS}", headers=AUTH)
    assert erased.status_code == 200 and erased.json()["removed"]["sends"] == 1
    assert (
        rows_mentioning(
            settings, [CANARY.split("@")[0] + "@", "rea der", "203.0.113.9", send_id.lower()]
        )
        == []
    )
    assert client.get(f"/v1/subscribers/{ADDRESS}", headers=AUTH).status_code == 404
    after = client.get(f"/v1/subscribers/{ADDRESS}/export", headers=AUTH).json()
    assert after["subscriber"] is None and after["sends"] == [] and after["events"] == []
    assert sorted((s["scope"], s["reason"]) for s in after["suppressions"]) == [
        ("all", "erased"),
        ("marketing", "asked by email"),
    ]
    listed = client.get(f"/v1/suppressions?email={ADDRESS}", headers=AUTH).json()
    assert {e["email"] for e in listed["suppressions"]} == {None}
    assert {e["address_hash"] for e in listed["suppressions"]} == {address_hash(ADDRESS)}

    # A producer that still has the address: the worker refuses it (welcome is transactional,
    # so only the erased entry's scope 'all' can stop it).
    again = welcome(client, "w2")
    wait_for_email_status(client, again, "suppressed")
    refused = client.delete(f"/v1/suppressions/{ADDRESS}?reason=typo&scope=all", headers=AUTH)
    assert refused.status_code == 409
    assert (
        client.get(f"/v1/suppressions?email={ADDRESS}&scope=all", headers=AUTH).json()[
            "suppressions"
        ][0]["reason"]
        == "erased"
    )
    assert client.get("/v1/lists/jane", headers=AUTH).json()["counts"]["active"] == 0
