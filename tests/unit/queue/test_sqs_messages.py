"""Postroom messages on SQS as pure functions: the URL, body encoding, attributes, batches."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from postroom.errors import ConfigurationError
from postroom.messages import Priority
from postroom.queue import sqs_messages as sm
from postroom.queue.sqs import SqsQueue


def test_url_names_region_prefix_and_endpoint() -> None:
    where = sm.SqsLocation.parse("sqs://?region=eu-west-1&prefix=mail_prod")
    assert (where.region, where.prefix, where.endpoint_url) == ("eu-west-1", "mail_prod", None)
    assert sm.SqsLocation.parse("sqs://").prefix == "postroom"
    queue = SqsQueue.from_url("sqs://?endpoint=http://127.0.0.1:5000", endpoint_url="http://x")
    assert queue.endpoint_url == "http://127.0.0.1:5000"  # the URL's own wins
    assert SqsQueue.from_url("sqs://", endpoint_url="http://x").endpoint_url == "http://x"


@pytest.mark.parametrize(
    "url",
    [
        "sqs://us-east-1",
        "sqs://?regoin=us-east-1",
        "sqs://?prefix=a.b",
        f"sqs://?prefix={'p' * 61}",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError, match="POSTROOM_QUEUE_URL"):
        sm.SqsLocation.parse(url)


def received(body: str, **attributes: str) -> dict[str, Any]:
    return {
        "MessageId": "sqs-id",
        "ReceiptHandle": "r",
        "Body": body,
        "Attributes": {"SentTimestamp": "1700000000000", "ApproximateReceiveCount": "3"},
        "MessageAttributes": {
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
        },
    }


@pytest.mark.parametrize(
    ("body", "as_text"),
    [
        ('{"email_type": "welcome", "name": "Zoë 🎉"}'.encode(), True),
        (b"tab\tand\r\nnewline", True),
        (b"nul \x00 inside", False),
        (b"\xff\xfe not utf-8", False),
    ],
)
def test_bodies_travel_as_text_when_sqs_can_carry_them(body: bytes, as_text: bool) -> None:
    text, attributes = sm.encode_body(body)
    assert (sm.ENCODING not in attributes) is as_text
    assert text == (body.decode("utf-8") if as_text else base64.b64encode(body).decode())
    message = received(text, **{k: v["StringValue"] for k, v in attributes.items()})
    assert sm.decode_body(message) == body


def test_ids_and_classes_of_messages_other_producers_sent() -> None:
    assert sm.message_id(received("{}")) == "sqs-id"
    assert sm.message_id(received("{}", **{sm.ID: "ours"})) == "ours"
    assert sm.priority_of(received("{}")) is Priority.TRANSACTIONAL
    assert sm.priority_of(received("{}", **{sm.PRIORITY: "marketing"})) is Priority.MARKETING
    assert sm.receive_count(received("{}")) == 3


def test_a_copy_keeps_our_attributes_with_changes() -> None:
    message = received("{}", **{sm.ATTEMPT: "1", sm.LAST_ERROR: "old", "trace": "t"})
    attributes = sm.resend_attributes(
        message, Priority.CRITICAL, attempt=2, error="x" * 3000, not_before=None
    )
    assert set(attributes) == {sm.ID, sm.PRIORITY, sm.ATTEMPT, sm.LAST_ERROR}
    assert attributes[sm.ATTEMPT] == {"DataType": "Number", "StringValue": "2"}
    assert attributes[sm.LAST_ERROR]["StringValue"] == "x" * sm.TEXT_LIMIT
    assert attributes[sm.PRIORITY]["StringValue"] == "critical"


def test_dead_letters_from_our_attributes_or_the_redrive_policy() -> None:
    ours = sm.dead_letter_of(
        received("{}", **{sm.REASON: "bad", sm.ATTEMPT: "2", sm.DEAD_AT: "1700000100.5"}), 5
    )
    assert (ours.reason, ours.attempt, ours.dead_at.timestamp()) == ("bad", 2, 1700000100.5)
    redriven = sm.dead_letter_of(received("{}"), 5)
    assert redriven.reason == "delivery limit reached: handed out 5 times without an outcome"
    assert redriven.dead_at.timestamp() == 1700000000.0  # when it was sent


def test_seconds_round_up_and_cap() -> None:
    assert [sm.seconds(v, 900) for v in (0, 0.2, 1, 1.01, 899.5, 5000, -3)] == [
        0,
        1,
        1,
        2,
        900,
        900,
        0,
    ]


def test_batches_hold_ten_entries_or_200_kib() -> None:
    small = [{"MessageBody": "x"} for _ in range(23)]
    assert [len(b) for b in sm.batches(small)] == [10, 10, 3]
    assert [e["Id"] for e in next(sm.batches(small))] == [str(i) for i in range(10)]
    big = [{"MessageBody": "y" * 90_000} for _ in range(5)]
    assert [len(b) for b in sm.batches(big)] == [2, 2, 1]
