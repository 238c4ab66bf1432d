"""``/v1/suppressions`` on SQLite and PostgreSQL: add, read, page, lift with a recorded
reason; and the worker skips what the API suppressed."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.conftest import wait_for_email_status

from postroom.api.app import create_app
from postroom.config import Settings

AUTH = {"Authorization": "Bearer test-key"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_worker=True)) as test_client:
        yield test_client


def test_suppression_round_trip(client: TestClient) -> None:
    for i in range(5):
        added = client.post(
            "/v1/suppressions",
            json={"email": f"R{i}@Example.com", "reason": "manual", "detail": "support ticket"},
            headers=AUTH,
        )
        assert added.status_code == 201, added.text
        assert added.json()["email"] == f"r{i}@example.com" and added.json()["scope"] == "all"
    client.post(
        "/v1/suppressions",
        json={"email": "r0@example.com", "scope": "marketing", "reason": "complaint"},
        headers=AUTH,
    )
    bad = client.post("/v1/suppressions", json={"email": "nope", "reason": "x"}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "email"

    seen, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/v1/suppressions{query}", headers=AUTH).json()
        seen += [(e["email"], e["scope"]) for e in page["suppressions"]]
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == 6 and len(set(seen)) == 6
    marketing = client.get("/v1/suppressions?scope=marketing", headers=AUTH).json()
    assert [e["email"] for e in marketing["suppressions"]] == ["r0@example.com"]
    assert client.get("/v1/suppressions?cursor=zzz", headers=AUTH).status_code == 422
    exported = client.get("/v1/suppressions/export", headers=AUTH)
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted((r["email"], r["scope"]) for r in rows) == sorted(seen)
    assert {r["detail"] for r in rows if r["scope"] == "all"} == {"support ticket"}

    sent = client.post(
        "/v1/emails",
        json={
            "email_type": "welcome",
            "recipient_email": "r1@example.com",
            "template_data": {"creator_name": "Jane"},
            "idempotency_key": "a",
        },
        headers=AUTH,
    ).json()["id"]
    wait_for_email_status(client, sent, "suppressed")

    assert client.delete("/v1/suppressions/r1@example.com", headers=AUTH).status_code == 422
    lifted = client.delete(
        "/v1/suppressions/R1@example.com?reason=bounced+by+mistake", headers=AUTH
    )
    assert lifted.status_code == 200 and lifted.json()["removed"] == 1
    assert client.get("/v1/suppressions?email=r1@example.com", headers=AUTH).json() == {
        "suppressions": []
    }
    assert (
        client.delete("/v1/suppressions/r1@example.com?reason=x", headers=AUTH).status_code == 404
    )
    removals = client.get("/v1/subscribers/r1@example.com/export", headers=AUTH).json()[
        "suppression_removals"
    ]
    assert [(r["suppressed_reason"], r["reason"]) for r in removals] == [
        ("manual", "bounced by mistake")
    ]
    resent = client.post(
        "/v1/emails",
        json={
            "email_type": "welcome",
            "recipient_email": "r1@example.com",
            "template_data": {"creator_name": "Jane"},
            "idempotency_key": "b",
        },
        headers=AUTH,
    ).json()["id"]
    wait_for_email_status(client, resent, "sent")
