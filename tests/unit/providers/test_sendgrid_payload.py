"""The Mail Send body SendGridProvider builds (pure: no network)."""

from __future__ import annotations

import dataclasses

from tests.esp_fakes.messages import newsletter, sign_in

from postroom.errors import PermanentProviderError
from postroom.providers.sendgrid import SendGridProvider, build_payload


def _items(provider: SendGridProvider, emails: list) -> list:  # type: ignore[type-arg]
    return [provider.prepare(e) for e in emails]


def test_a_single_message_is_sent_literally() -> None:
    provider = SendGridProvider("SG.k")
    email = sign_in()
    payload = build_payload(_items(provider, [email]))
    [entry] = payload["personalizations"]
    assert "substitutions" not in entry
    assert payload["content"] == [
        {"type": "text/plain", "value": email.text},
        {"type": "text/html", "value": email.html},
    ]
    assert payload["from"] == {"email": "jane@news.example", "name": "Jane Doe"}
    assert payload["reply_to"] == {"email": "reply@news.example", "name": "Jane replies"}
    assert "Reply-To" not in entry["headers"]  # reserved by SendGrid; sent as reply_to
    assert entry["to"] == [{"email": "ada@example.com", "name": "Ada Reader"}]


def test_a_shared_call_carries_placeholders_and_each_recipients_values() -> None:
    provider = SendGridProvider("SG.k")
    emails = newsletter(2)
    payload = build_payload(_items(provider, emails))
    assert "[[postroom:unsubscribe_0]]" in payload["content"][1]["value"]
    for email, entry in zip(emails, payload["personalizations"], strict=True):
        url = email.headers["List-Unsubscribe"].split(">")[0][1:]
        assert entry["substitutions"]["[[postroom:unsubscribe_0]]"] == url
        assert entry["headers"]["List-Unsubscribe"] == email.headers["List-Unsubscribe"]
        assert entry["subject"] == email.subject


async def test_a_message_without_any_part_is_refused_before_any_request() -> None:
    provider = SendGridProvider("SG.k", base_url="http://127.0.0.1:9")  # nothing listens
    empty = dataclasses.replace(sign_in(), html="", text="")
    [result] = await provider.send([empty])
    await provider.close()
    assert isinstance(result.error, PermanentProviderError)
    assert "neither a text nor an HTML part" in str(result.error)
