"""The preference centre (``/preferences/{token}``) on the embedded default: the address's lists
with their status, per-list choices, re-subscribing only what the subscriber left themself,
and "unsubscribe from everything"."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from tests.conftest import make_settings

from postroom.api.app import create_app
from postroom.config import Settings
from postroom.rendering.unsubscribe import make_token
from postroom.store.database import sync_url
from postroom.store.schema import consent_records, subscribers, subscriptions, suppressions
from postroom.store.suppressions import SuppressionScope

AUTH = {"Authorization": "Bearer test-key"}
READER = "reader@example.com"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, provider="outbox")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def path(client: TestClient, settings: Settings) -> str:
    """A reader on jane and bob (active) and carl (pending double opt-in); lists dave, too."""
    for list_id in ("jane", "bob", "carl", "dave"):
        body = {"id": list_id, "name": f"{list_id.title()}'s posts", "creator": list_id}
        assert client.post("/v1/lists", json=body, headers=AUTH).status_code == 201
    for list_ids, pending in ((["jane", "bob"], False), (["carl"], True)):
        person: dict[str, Any] = {"email": READER, "list_ids": list_ids, "double_opt_in": pending}
        assert client.post("/v1/subscribers", json=person, headers=AUTH).status_code == 200
    assert settings.secret_key
    token = make_token(READER, "new_post_notification", "c1.1", secret_key=settings.secret_key)
    return f"/preferences/{token}"


def statuses(client: TestClient) -> dict[str, str]:
    found = client.get(f"/v1/subscribers/{READER}", headers=AUTH).json()
    return {s["list_id"]: s["status"] for s in found["subscriptions"]}


def suppressed(client: TestClient, email: str) -> list[tuple[str, str]]:
    answer = client.get("/v1/suppressions", params={"email": email}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    return [(e["scope"], e["reason"]) for e in answer.json()["suppressions"]]


def database_state(settings: Settings) -> list[list[tuple[Any, ...]]]:
    engine = create_engine(sync_url(settings.resolved_database_url))
    try:
        with engine.connect() as conn:
            return [
                sorted(tuple(row) for row in conn.execute(select(table)))
                for table in (subscribers, subscriptions, suppressions, consent_records)
            ]
    finally:
        engine.dispose()


def boxes(page: str) -> dict[str, str]:
    """List name → 'checked', 'unchecked' or 'disabled', as the page shows it."""
    found = {}
    for attributes, name in re.findall(r'<input type="checkbox"([^>]*)> ([^<]+)</label>', page):
        state = "disabled" if "disabled" in attributes else "unchecked"
        found[name.replace("&#x27;", "'")] = "checked" if "checked" in attributes else state
    return found


def save(client: TestClient, path: str, *lists: str, action: str = "save") -> str:
    body = "&".join([f"list={x}" for x in lists] + [f"action={action}"])
    answer = client.post(path, content=body.encode(), headers=FORM)
    assert answer.status_code == 200, answer.text
    return answer.text


def test_the_page_shows_the_lists_and_changes_nothing(
    client: TestClient, settings: Settings, path: str
) -> None:
    before = database_state(settings)
    for _ in range(3):
        page = client.get(path)
        assert page.status_code == 200
        assert "r***@example.com" in page.text and READER not in page.text
        assert boxes(page.text) == {
            "Bob's posts": "checked",
            "Carl's posts": "disabled",  # pending: only the confirmation link activates it
            "Jane's posts": "checked",
        }
    assert database_state(settings) == before


def test_unticked_lists_are_left_and_can_be_taken_up_again(
    client: TestClient, settings: Settings, path: str
) -> None:
    page = save(client, path, "jane")
    assert "Your choices are saved" in page
    assert statuses(client) == {"bob": "unsubscribed", "carl": "pending", "jane": "active"}
    assert boxes(page)["Bob's posts"] == "unchecked"

    # Ticking bob again re-subscribes it; carl (pending) and dave (never held) stay as they are.
    page = save(client, path, "jane", "bob", "carl", "dave")
    assert statuses(client) == {"bob": "active", "carl": "pending", "jane": "active"}
    assert boxes(page)["Bob's posts"] == "checked"
    engine = create_engine(sync_url(settings.resolved_database_url))
    with engine.connect() as conn:
        sources = [r.source for r in conn.execute(select(consent_records))]
    engine.dispose()
    assert sources.count("preference centre") == 1  # bob's renewed, express consent


def test_unsubscribe_from_everything_and_back(
    client: TestClient, settings: Settings, path: str
) -> None:
    page = save(client, path, "jane", "bob", action="everything")
    assert "You will not receive marketing email from us again" in page
    assert statuses(client) == {"bob": "unsubscribed", "carl": "pending", "jane": "unsubscribed"}
    assert suppressed(client, READER) == [("marketing", "unsubscribe")]

    # Changing their mind lifts their own suppression: ticking a list is asking again.
    save(client, path, "jane")
    assert statuses(client)["jane"] == "active"
    assert suppressed(client, READER) == []


def test_a_complaint_is_never_lifted_by_the_preference_centre(
    client: TestClient, settings: Settings, path: str
) -> None:
    postroom = client.app.state.postroom  # type: ignore[attr-defined]
    assert client.portal is not None
    client.portal.call(postroom.suppressions.add, READER, SuppressionScope.MARKETING, "complaint")
    page = client.get(path).text
    assert "This address receives no marketing email" in page
    save(client, path, "jane")
    assert suppressed(client, READER) == [("marketing", "complaint")]


def test_forged_tokens_are_refused_without_a_change(
    client: TestClient, settings: Settings, path: str
) -> None:
    before = database_state(settings)
    token = path.rsplit("/", 1)[1]
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    foreign = make_token(READER, "w", "s", secret_key="an-unknown-key-an-unknown-key!!")
    for bad in (flipped, foreign, "not-a-token"):
        assert client.get(f"/preferences/{bad}").status_code == 400
        answer = client.post(f"/preferences/{bad}", content=b"action=everything", headers=FORM)
        assert answer.status_code == 400
    assert database_state(settings) == before


def test_an_address_without_subscriptions_can_still_opt_out(
    client: TestClient, settings: Settings
) -> None:
    assert settings.secret_key
    token = make_token("nobody@example.com", "w", "s", secret_key=settings.secret_key)
    page = client.get(f"/preferences/{token}").text
    assert "not subscribed to any newsletter" in page
    save(client, f"/preferences/{token}", action="everything")
    assert suppressed(client, "nobody@example.com") == [("marketing", "unsubscribe")]
