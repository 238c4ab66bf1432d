"""One-click unsubscribe (RFC 8058) end to end on the embedded default: the link in a sent
newsletter unsubscribes on POST, never on GET, and the next newsletter is suppressed."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select
from tests.conftest import make_settings, wait_for_email_status

from postroom.api.app import create_app
from postroom.config import Settings
from postroom.providers.outbox import read_index
from postroom.rendering.unsubscribe import make_token
from postroom.store.database import sync_url
from postroom.store.schema import subscribers, subscriptions, suppressions

AUTH = {"Authorization": "Bearer test-key"}
NEWSLETTER: dict[str, Any] = {
    "email_type": "new_post_notification",
    "recipient_email": "Reader@Example.com",
    "template_data": {
        "creator_name": "Jane",
        "post_title": "Slow",
        "post_url": "https://p.example/1",
    },
}
ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}


OLD_KEY = "the-key-before-the-rotation-0123"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, provider="outbox", previous_secret_keys=[OLD_KEY])


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_worker=True)) as test_client:
        yield test_client


def suppressed_count(settings: Settings) -> int:
    engine = create_engine(sync_url(settings.resolved_database_url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(suppressions)).scalar_one())
    finally:
        engine.dispose()


def send_newsletter(client: TestClient, key: str) -> str:
    response = client.post("/v1/emails", json={**NEWSLETTER, "idempotency_key": key}, headers=AUTH)
    assert response.status_code == 202, response.text
    send_id: str = response.json()["id"]
    return send_id


def unsubscribe_path(outbox: Path, send_id: str) -> str:
    entry = next(e for e in read_index(outbox) if e["send_id"] == send_id)
    message = email.message_from_bytes(
        (outbox / entry["file"]).read_bytes(), policy=email.policy.default
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.search(r"<https?://[^/>]+(/unsubscribe/[^>]+)>", str(message["List-Unsubscribe"]))
    assert match, message["List-Unsubscribe"]
    return match.group(1)


def test_one_click_post_unsubscribes_before_the_next_newsletter(
    client: TestClient, settings: Settings
) -> None:
    first = send_newsletter(client, "n1")
    wait_for_email_status(client, first, "sent")
    path = unsubscribe_path(settings.data_dir / "outbox", first)

    # Link scanners fetch every link: a GET shows the page and changes nothing.
    for _ in range(3):
        page = client.get(path)
        assert page.status_code == 200 and '<form method="post">' in page.text
        assert "reader@" not in page.text.lower() and "r***@example.com" in page.text.lower()
    assert suppressed_count(settings) == 0

    answer = client.post(path, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert answer.status_code == 200 and answer.content == b""
    again = client.post(path, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert again.status_code == 200  # idempotent
    assert suppressed_count(settings) == 1

    second = send_newsletter(client, "n2")
    wait_for_email_status(client, second, "suppressed")


def test_tampered_and_foreign_tokens_are_refused(client: TestClient, settings: Settings) -> None:
    first = send_newsletter(client, "n1")
    wait_for_email_status(client, first, "sent")
    path = unsubscribe_path(settings.data_dir / "outbox", first)
    token = path.rsplit("/", 1)[1]
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    foreign = make_token(
        "reader@example.com",
        "new_post_notification",
        first,
        secret_key="another-key-another-key-another!",
    )
    for bad in (flipped, foreign, "not-a-token"):
        assert (
            client.post(
                f"/unsubscribe/{bad}", content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
            ).status_code
            == 400
        )
        assert client.get(f"/unsubscribe/{bad}").status_code == 400
    assert suppressed_count(settings) == 0


def test_the_page_button_unsubscribes_with_a_confirmation(
    client: TestClient, settings: Settings
) -> None:
    first = send_newsletter(client, "n1")
    wait_for_email_status(client, first, "sent")
    path = unsubscribe_path(settings.data_dir / "outbox", first)
    answer = client.post(
        path, data={"List-Unsubscribe": "One-Click"}, headers={"Accept": "text/html"}
    )
    assert answer.status_code == 200 and "Unsubscribed" in answer.text
    assert suppressed_count(settings) == 1


# --- per-list unsubscribe (campaign mail names its list) and key rotation ---------------------


def database_state(settings: Settings) -> list[list[tuple[Any, ...]]]:
    """Every row that an unsubscribe could touch, to prove a request changed nothing."""
    engine = create_engine(sync_url(settings.resolved_database_url))
    try:
        with engine.connect() as conn:
            return [
                sorted(tuple(row) for row in conn.execute(select(table)))
                for table in (subscribers, subscriptions, suppressions)
            ]
    finally:
        engine.dispose()


def subscribe_to_two_lists(client: TestClient) -> None:
    for list_id in ("jane", "bob"):
        made = client.post(
            "/v1/lists",
            json={"id": list_id, "name": f"{list_id} posts", "creator": list_id},
            headers=AUTH,
        )
        assert made.status_code == 201, made.text
    body = {"email": "reader@example.com", "list_ids": ["jane", "bob"], "double_opt_in": False}
    assert client.post("/v1/subscribers", json=body, headers=AUTH).status_code == 200


def statuses(client: TestClient) -> dict[str, str]:
    found = client.get("/v1/subscribers/reader@example.com", headers=AUTH).json()
    return {s["list_id"]: s["status"] for s in found["subscriptions"]}


def send_campaign_mail(client: TestClient, key: str, list_id: str) -> str:
    metadata = {"campaign_id": "c1", "list_id": list_id, "subscriber_id": "s1"}
    document = {**NEWSLETTER, "idempotency_key": key, "metadata": metadata}
    response = client.post("/v1/emails", json=document, headers=AUTH)
    assert response.status_code == 202, response.text
    send_id: str = response.json()["id"]
    wait_for_email_status(client, send_id, "sent")
    return send_id


def test_a_list_token_unsubscribes_that_list_only(client: TestClient, settings: Settings) -> None:
    subscribe_to_two_lists(client)
    send_id = send_campaign_mail(client, "c1-jane", "jane")
    path = unsubscribe_path(settings.data_dir / "outbox", send_id)
    before = database_state(settings)
    for _ in range(3):  # scanners: nothing changes, and the page links the preference centre
        page = client.get(path)
        assert page.status_code == 200 and "“jane posts”" in page.text
        assert "/preferences/" + path.rsplit("/", 1)[1] in page.text
    assert database_state(settings) == before

    answer = client.post(path, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert answer.status_code == 200 and answer.content == b""
    assert client.post(path, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK).is_success
    assert statuses(client) == {"bob": "active", "jane": "unsubscribed"}
    assert suppressed_count(settings) == 0  # not suppressed for all marketing
    listed = client.get("/v1/lists/bob", headers=AUTH).json()
    assert listed["counts"]["active"] == 1
    # Marketing mail outside the list still reaches the address.
    wait_for_email_status(client, send_newsletter(client, "n-after"), "sent")


def test_a_token_signed_with_a_previous_key_still_works(
    client: TestClient, settings: Settings
) -> None:
    subscribe_to_two_lists(client)
    old = make_token(
        "reader@example.com", "new_post_notification", "c0.1", secret_key=OLD_KEY, list_id="bob"
    )
    assert client.get(f"/unsubscribe/{old}").status_code == 200
    answer = client.post(f"/unsubscribe/{old}", data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert statuses(client) == {"bob": "unsubscribed", "jane": "active"}


def test_a_token_signed_with_an_unknown_key_changes_nothing(
    client: TestClient, settings: Settings
) -> None:
    subscribe_to_two_lists(client)
    before = database_state(settings)
    for list_id in ("jane", None):
        forged = make_token(
            "reader@example.com",
            "new_post_notification",
            "c0.1",
            secret_key="an-unknown-key-an-unknown-key!!",
            list_id=list_id,
        )
        posted = client.post(
            f"/unsubscribe/{forged}", content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
        )
        assert posted.status_code == 400
        assert client.get(f"/unsubscribe/{forged}").status_code == 400
    assert database_state(settings) == before
