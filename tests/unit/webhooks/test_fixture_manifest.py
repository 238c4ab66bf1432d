"""Every fixture in ``tests/fixtures/esp`` gives the outcome its manifest states.

Verified fixtures must produce exactly the listed events (type, recipient, ids, SMTP details,
URL ...); negatives must be refused by verification. The manifest states only "invalid" for a
negative; every negative in it is a forged or tampered signature, so the reason class is
``signature``.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from tests.unit.webhooks.esp_fixtures import ESP_DIR, MAILGUN_KEY, manifest, receiver_for, request

from postroom.errors import WebhookPayloadError, WebhookVerificationError
from postroom.webhooks.base import verify_and_parse
from postroom.webhooks.events import NormalizedEvent
from postroom.webhooks.mailgun import signature_for

REQUESTS = [e for e in manifest() if "headers_file" in e]

# manifest field → NormalizedEvent attribute, for the fields the normalized vocabulary carries.
_FIELDS = {
    "recipient": "recipient",
    "esp_message_id": "esp_message_id",
    "esp_event_id": "esp_event_id",
    "diagnostic": "diagnostic",
    "smtp_response": "diagnostic",
    "smtp_code": "smtp_code",
    "smtp_status": "enhanced_status",
    "enhanced_code": "enhanced_status",
    "url": "url",
    "reason": "reason",
    "scope": "scope",
    "contact_list": "scope",
    "sns_message_id": "transport_id",
    "bounce_classification": "reason",
    "feedback_type": "reason",
    "suppression_reason": "reason",
    "delay_type": "reason",
    "source": "reason",
}


def _label(event: NormalizedEvent) -> str:
    if event.type == "ignored":
        return f"ignored:{event.ignored_kind}"
    return "dropped/rejected" if event.type == "dropped" else event.type.value


def _expected_value(key: str, value: Any) -> Any:
    if key == "esp_event_id":
        return str(value)  # Postmark's ids are numbers, some beyond 2**53: kept exact as text
    if key == "recipient":
        return value.lower()
    return value


def _valid(entry: dict[str, Any]) -> bool:
    return entry["signature"]["valid"] is not False


@pytest.mark.parametrize("entry", REQUESTS, ids=[e["file"] for e in REQUESTS])
def test_fixture_gives_the_manifest_outcome(entry: dict[str, Any]) -> None:
    req = request(entry)
    receiver = receiver_for(entry)
    if not _valid(entry):
        with pytest.raises(WebhookVerificationError) as refused:
            receiver.verify(req.headers, req.body, now=0)
        assert refused.value.reason == "signature"
        return

    receiver.verify(req.headers, req.body, now=0)
    expected = entry["expected_events"]
    try:
        events = receiver.parse(req.body)
    except WebhookPayloadError:
        # Only a validly signed body that is no event batch at all (SendGrid's synthetic
        # signature vector) may be refused after verification.
        assert expected == []
        return
    assert [_label(e) for e in events] == [x["type"] for x in expected]
    for event, wanted in zip(events, expected, strict=True):
        for key, attribute in _FIELDS.items():
            if key in wanted:
                got = getattr(event, attribute)
                assert got == _expected_value(key, wanted[key]), (key, got, wanted[key])
        assert event.provider == entry["esp"]
        if "esp_event" in wanted:
            assert event.esp_event == wanted["esp_event"]


def test_mailgun_signature_vectors() -> None:
    vectors = orjson.loads((ESP_DIR / "mailgun/signature-vectors.json").read_bytes())
    assert vectors["key"] == MAILGUN_KEY
    for vector in vectors["vectors"]:
        computed = signature_for(vectors["key"], str(vector["timestamp"]), vector["token"])
        assert (computed == vector["signature"]) is vector["valid"]


def test_every_fixture_is_covered_by_the_manifest() -> None:
    listed = {e["file"] for e in manifest()} | {e["headers_file"] for e in REQUESTS}
    listed |= {e["inner_message_file"] for e in manifest() if "inner_message_file" in e}
    bodies = {str(p.relative_to(ESP_DIR)) for p in ESP_DIR.glob("*/**/*.json")}
    assert bodies <= listed


def test_one_postmark_event_through_the_whole_seam() -> None:
    entry = next(e for e in REQUESTS if e["file"] == "postmark/anymail-bounce_hard_5_1_1.json")
    req = request(entry)
    [event] = verify_and_parse(receiver_for(entry), req.headers, req.body, now=0)
    assert (event.type, event.smtp_code, event.enhanced_status) == ("bounced_hard", 550, "5.1.1")
