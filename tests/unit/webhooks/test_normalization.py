"""Normalization beyond the fixtures: the mapping tables' corners, our ids coming back from
each ESP, machine-made opens, SMTP details and the dedupe hash."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import orjson
import pytest
from tests.unit.webhooks.esp_fixtures import by_file, receiver_for, request

from postroom.errors import WebhookPayloadError
from postroom.webhooks import mailgun, postmark, sendgrid, ses
from postroom.webhooks.base import looks_machine_made, smtp_details
from postroom.webhooks.events import FeedbackType, NormalizedEvent

SEND_ID = "01JDZ3K6Q8X2M4N5P7R9S1T3V5"


@pytest.mark.parametrize(
    ("sg_message_id", "api_id"),
    [
        (
            "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
            "LRzXl_NHStOGhQ4kofSm_A",
        ),
        ("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", "14c5d75ce93.dfd.64b469"),
        ("euo2iKxdSayPF4YE4--I7A.recvd-5f54b5d587-pczjm-1-67BADEEA-6.0", "euo2iKxdSayPF4YE4--I7A"),
        ("filter0093p1las1.9128.5717FB8127.0", None),
        (None, None),
    ],
)
def test_sendgrid_api_message_id_is_the_prefix(
    sg_message_id: str | None, api_id: str | None
) -> None:
    assert sendgrid.api_message_id(sg_message_id) == api_id


@pytest.mark.parametrize(
    ("text", "details"),
    [
        (
            "smtp; 550-5.1.1 The email account that you tried to reach does not exist.",
            (550, "5.1.1"),
        ),
        ("smtp;550 5.1.1 The email account", (550, "5.1.1")),
        ("552 5.2.2 <jane@example.com>... Mailbox full", (552, "5.2.2")),
        (
            "4.7.652 The mail server has exceeded the maximum number of connections.",
            (None, "4.7.652"),
        ),
        ("Test bounce details", (None, None)),
        ("250 2.0.0 OK 1461095248 m143si2210036ioe.159 - gsmtp", (250, "2.0.0")),
        ("version 10.4.1 of the client", (None, None)),
        (None, (None, None)),
    ],
)
def test_smtp_details(text: str | None, details: tuple[int | None, str | None]) -> None:
    assert smtp_details(text) == details


def test_our_ids_come_back_from_every_esp() -> None:
    sg = sendgrid.normalize(
        {
            "event": "delivered",
            "email": "A@Example.com",
            "postroom_send_id": SEND_ID,
            "postroom_message_id": f"<{SEND_ID}@x>",
        }
    )
    assert (sg.recipient, sg.postroom_send_id, sg.postroom_message_id) == (
        "a@example.com",
        SEND_ID,
        f"<{SEND_ID}@x>",
    )
    mg = mailgun.normalize(
        {
            "event": "delivered",
            "recipient": "a@example.com",
            "user-variables": {"postroom_send_id": SEND_ID},
        }
    )
    assert mg.postroom_send_id == SEND_ID
    pm = postmark.normalize(
        {
            "recordtype": "Delivery",
            "recipient": "a@example.com",
            "metadata": {"postroom_send_id": SEND_ID},
        }
    )
    assert pm.postroom_send_id == SEND_ID
    record: dict[str, Any] = {
        "eventType": "Delivery",
        "mail": {"messageId": "m", "tags": {"postroom_send_id": [SEND_ID]}},
        "delivery": {"recipients": ["a@example.com"]},
    }
    assert ses.map_record(record)[0]["postroom_send_id"] == SEND_ID
    encoded = base64.b32encode(b"id with spaces").decode().rstrip("=")
    record["mail"]["tags"] = {"postroom_send_id_b32": [encoded]}
    assert ses.map_record(record)[0]["postroom_send_id"] == "id with spaces"


def test_lookup_ids_cover_how_our_ledger_records_each_esp() -> None:
    [sg] = receiver_for(by_file("sendgrid/anymail-delivered.json")).parse(
        request("sendgrid/anymail-delivered.json").body
    )
    assert sg.lookup_ids == (
        "wrfRRvF7Q0GgwUo2CvDmEA.filter0425p1mdw1.13037.57168B4A1D.0",
        "wrfRRvF7Q0GgwUo2CvDmEA",
    )
    mg = mailgun.normalize({"event": "delivered", "message": {"headers": {"message-id": "a@b"}}})
    assert mg.lookup_ids == ("a@b", "<a@b>")


def test_machine_opens() -> None:
    assert sendgrid.normalize(
        {"event": "open", "sg_machine_open": True, "useragent": "Mozilla/5.0 (Windows NT 10.0)"}
    ).machine_open
    assert sendgrid.normalize(
        {"event": "open", "useragent": "Mozilla/5.0"}
    ).machine_open  # Apple MPP
    assert not sendgrid.normalize(
        {"event": "open", "useragent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)"}
    ).machine_open
    assert not sendgrid.normalize({"event": "click", "sg_machine_open": True}).machine_open
    assert mailgun.normalize(
        {"event": "opened", "client-info": {"bot": "gmail", "user-agent": "Mozilla/5.0 (X11)"}}
    ).machine_open
    assert not mailgun.normalize(
        {"event": "opened", "client-info": {"bot": "", "user-agent": "Mozilla/5.0 (X11)"}}
    ).machine_open
    assert postmark.normalize({"recordtype": "Open", "useragent": "Mozilla/5.0"}).machine_open
    assert not looks_machine_made(None)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"event": "failed", "severity": "temporary", "reason": "generic"}, FeedbackType.DEFERRED),
        ({"event": "failed", "severity": "permanent", "reason": "old"}, FeedbackType.BOUNCED_SOFT),
        (
            {"event": "failed", "severity": "permanent", "reason": "suppress-complaint"},
            FeedbackType.DROPPED,
        ),
        (
            {"event": "failed", "severity": "permanent", "reason": "bounce"},
            FeedbackType.BOUNCED_HARD,
        ),
        ({"event": "stored"}, FeedbackType.IGNORED),
    ],
)
def test_mailgun_failures(data: dict[str, Any], expected: FeedbackType) -> None:
    assert mailgun.normalize(data).type is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (1, FeedbackType.BOUNCED_HARD),
        (100000, FeedbackType.BOUNCED_HARD),
        (2, FeedbackType.DEFERRED),
        (256, FeedbackType.BOUNCED_SOFT),
        (100006, FeedbackType.BOUNCED_SOFT),
        (100009, FeedbackType.BOUNCED_SOFT),
        (16, FeedbackType.UNSUBSCRIBED),
        (64, FeedbackType.IGNORED),
        ("1", FeedbackType.IGNORED),
    ],
)
def test_postmark_bounce_type_codes(code: Any, expected: FeedbackType) -> None:
    event = postmark.normalize(
        {"recordtype": "Bounce", "typecode": code, "type": "T", "email": "a@example.com"}
    )
    assert event.type is expected
    if expected is FeedbackType.IGNORED:
        assert event.ignored_kind == "T"


def test_postmark_keys_are_case_insensitive() -> None:
    body = orjson.dumps(
        {
            "RecordType": "Delivery",
            "MessageId": "m-1",
            "recipient": "A@example.com",
            "DeliveredAt": "2024-01-02T03:04:05Z",
        }
    )
    [event] = postmark.PostmarkReceiver("u", "p").parse(body)
    assert (event.esp_message_id, event.recipient) == ("m-1", "a@example.com")
    assert (
        event.occurred_at is not None
        and event.occurred_at.isoformat() == "2024-01-02T03:04:05+00:00"
    )


def test_ses_bounce_subtypes_and_subscription_opt_in() -> None:
    mail = {"messageId": "m", "destination": ["a@example.com", "b@example.com"]}
    suppressed = {
        "notificationType": "Bounce",
        "mail": mail,
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "OnAccountSuppressionList",
            "bouncedRecipients": [{"emailAddress": "a@example.com"}],
        },
    }
    [event] = ses.map_record(suppressed)
    assert (event["type"], event["recipient"]) == (FeedbackType.DROPPED, "a@example.com")
    undetermined = {
        **suppressed,
        "bounce": {
            "bounceType": "Undetermined",
            "bouncedRecipients": [{"emailAddress": "b@example.com"}],
        },
    }
    assert ses.map_record(undetermined)[0]["type"] is FeedbackType.BOUNCED_SOFT
    opt_in = {
        "eventType": "Subscription",
        "mail": mail,
        "subscription": {
            "newTopicPreferences": {
                "unsubscribeAll": False,
                "topicSubscriptionStatus": [{"topicName": "t", "subscriptionStatus": "OptIn"}],
            }
        },
    }
    assert {e["ignored_kind"] for e in ses.map_record(opt_in)} == {"resubscribed"}


def test_unknown_events_are_ignored_under_their_own_name() -> None:
    event = sendgrid.normalize({"event": "machine_learning_thing", "email": "a@example.com"})
    assert (event.type, event.esp_event, event.ignored_kind) == (
        "ignored",
        "machine_learning_thing",
        "machine_learning_thing",
    )
    assert postmark.normalize({"recordtype": "InboundMessage"}).ignored_kind == "InboundMessage"


def test_payloads_that_are_not_the_esp_shape_are_refused() -> None:
    sg = receiver_for(by_file("sendgrid/docs-delivered.json"))
    for body in (b"{}", b"[1]", b"not json"):
        with pytest.raises(WebhookPayloadError):
            sg.parse(body)
    receiver = receiver_for(by_file("postmark/docs-delivery.json"))
    for body in (b"[]", b"{}", b"not json"):
        with pytest.raises(WebhookPayloadError):
            receiver.parse(body)


def test_the_content_hash_ignores_ids_and_transport_but_not_what_happened() -> None:
    [event] = receiver_for(by_file("sendgrid/docs-delivered.json")).parse(
        request("sendgrid/docs-delivered.json").body
    )
    same = [
        dataclasses.replace(event, esp_event_id="new"),
        dataclasses.replace(event, transport_id="x"),
    ]
    assert {e.content_hash for e in same} == {event.content_hash}
    different = [
        dataclasses.replace(event, recipient="b@example.com"),
        dataclasses.replace(event, type=FeedbackType.BOUNCED_HARD),
    ]
    assert event.content_hash not in {e.content_hash for e in different}


def test_big_postmark_ids_stay_exact() -> None:
    [event] = receiver_for(by_file("postmark/docs-bounce_hard.json")).parse(
        request("postmark/docs-bounce_hard.json").body
    )
    assert event.esp_event_id == "4323372036854775807"
    body = b'{"RecordType": "Bounce", "ID": 123456789012345678901234567890, "TypeCode": 1}'
    [huge] = postmark.PostmarkReceiver("u", "p").parse(body)
    assert huge.esp_event_id == "123456789012345678901234567890"


def test_events_serialize_to_json() -> None:
    event = NormalizedEvent(
        provider="x",
        type=FeedbackType.OPENED,
        esp_event="open",
        recipient=None,
        occurred_at=None,
        machine_open=True,
        smtp_code=0,
    )
    data = orjson.loads(event.to_json())
    assert data["machine_open"] is True and data["smtp_code"] == 0 and "recipient" not in data
