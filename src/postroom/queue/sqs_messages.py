"""How Postroom messages look on Amazon SQS: names, message attributes, body encoding, and the
batches the SQS APIs accept (10 entries, 256 KiB)."""

from __future__ import annotations

import base64
import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from postroom.errors import ConfigurationError, QueueError
from postroom.messages import Priority
from postroom.queue.base import DeadLetter

CLASSES = tuple(sorted(Priority, key=lambda priority: priority.rank))
MAX_DELAY_SECONDS = 900  # SQS DelaySeconds cap
MAX_VISIBILITY_SECONDS = 43_200  # SQS visibility timeout cap (12 h)
BATCH_ENTRIES = 10
# Under SendMessageBatch's 256 KiB, leaving room for attributes.
BATCH_BYTES = 200 * 1024

# Message attributes (an SQS message carries at most 10).
ID = "postroom-id"
PRIORITY = "postroom-priority"
ATTEMPT = "postroom-attempt"
LAST_ERROR = "postroom-error"
NOT_BEFORE = "postroom-not-before"  # epoch seconds: a delay longer than DelaySeconds allows
REASON = "postroom-reason"
DEAD_AT = "postroom-dead-at"  # epoch seconds
ENCODING = "postroom-encoding"  # "base64" when the body is not SQS-safe text
TEXT_LIMIT = 2000

# The characters an SQS message body may hold; anything else travels base64-encoded.
_SQS_TEXT = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]+")
_NAME = re.compile("[A-Za-z0-9_-]{1,60}")
_URL_OPTIONS = {"region", "prefix", "endpoint"}


@dataclass(frozen=True)
class SqsLocation:
    """What ``sqs://?region=…&prefix=…&endpoint=…`` says."""

    region: str | None
    prefix: str
    endpoint_url: str | None

    @classmethod
    def parse(cls, url: str) -> SqsLocation:
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query))
        if parts.scheme != "sqs" or parts.netloc or set(options) - _URL_OPTIONS:
            raise ConfigurationError(
                f"POSTROOM_QUEUE_URL: expected sqs://?region=…&prefix=…[&endpoint=…], got {url!r}"
            )
        prefix = options.get("prefix", "postroom")
        if not _NAME.fullmatch(prefix):
            raise ConfigurationError(
                f"POSTROOM_QUEUE_URL: prefix {prefix!r} must be 1-60 letters, digits, - or _"
            )
        return cls(options.get("region"), prefix, options.get("endpoint"))


@contextlib.contextmanager
def aws_errors(doing: str) -> Iterator[None]:
    """botocore's failures (HTTP, credentials, SQS errors) as :class:`QueueError`."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise QueueError(f"SQS: {doing} failed: {exc}") from exc


def queue_name(prefix: str, priority: Priority) -> str:
    return f"{prefix}-{priority.value}"


def dead_queue_name(prefix: str) -> str:
    return f"{prefix}-dead"


def seconds(value: float, cap: int) -> int:
    """Whole seconds for SQS, rounded up (a delay or lease is never shortened), capped."""
    return max(0, min(cap, math.ceil(value)))


def string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value[:TEXT_LIMIT] or " "}


def number(value: float) -> dict[str, str]:
    return {"DataType": "Number", "StringValue": repr(value)}


def encode_body(body: bytes) -> tuple[str, dict[str, dict[str, str]]]:
    """The SQS body for ``body``: the text itself when SQS can carry it (a JSON document stays
    readable), else base64 with an attribute that says so."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and _SQS_TEXT.fullmatch(text):
        return text, {}
    return base64.b64encode(body).decode("ascii"), {ENCODING: string("base64")}


def decode_body(message: Mapping[str, Any]) -> bytes:
    body: str = message["Body"]
    if attribute(message, ENCODING) == "base64":
        return base64.b64decode(body)
    return body.encode("utf-8")


def attribute(message: Mapping[str, Any], name: str) -> str | None:
    value = message.get("MessageAttributes", {}).get(name)
    return None if value is None else str(value.get("StringValue"))


def number_attribute(message: Mapping[str, Any], name: str) -> float | None:
    value = attribute(message, name)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def message_id(message: Mapping[str, Any]) -> str:
    """Our id, or SQS's own for a message another producer sent."""
    return attribute(message, ID) or str(message["MessageId"])


def priority_of(message: Mapping[str, Any]) -> Priority:
    known = {priority.value: priority for priority in Priority}
    return known.get(attribute(message, PRIORITY) or "", Priority.TRANSACTIONAL)


def receive_count(message: Mapping[str, Any]) -> int:
    return int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))


def resend_attributes(
    message: Mapping[str, Any], priority: Priority, **changes: str | float | None
) -> dict[str, dict[str, str]]:
    """The message's Postroom attributes for a copy, with ``changes`` (None removes one)."""
    kept: dict[str, dict[str, str]] = {
        name: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
        for name, value in message.get("MessageAttributes", {}).items()
        if name.startswith("postroom-") and "StringValue" in value
    }
    kept[ID] = string(message_id(message))
    kept[PRIORITY] = string(priority.value)
    for key, value in changes.items():
        name = "postroom-" + key.replace("_", "-")
        if value is None:
            kept.pop(name, None)
        else:
            kept[name] = string(value) if isinstance(value, str) else number(value)
    return kept


def dead_letter_of(message: Mapping[str, Any], max_deliveries: int) -> DeadLetter:
    """A DLQ message as a :class:`DeadLetter`: sent there by ``dead_letter`` (our attributes)
    or moved there by the redrive policy after ``max_deliveries`` receives."""
    dead_at = number_attribute(message, DEAD_AT)
    if dead_at is None:
        dead_at = int(message.get("Attributes", {}).get("SentTimestamp", "0")) / 1000
    reason = attribute(message, REASON) or (
        f"delivery limit reached: handed out {max_deliveries} times without an outcome"
    )
    return DeadLetter(
        id=message_id(message),
        priority=priority_of(message),
        body=decode_body(message),
        reason=reason,
        attempt=int(number_attribute(message, ATTEMPT) or 0),
        dead_at=datetime.fromtimestamp(dead_at, UTC),
    )


def batches(entries: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """SendMessageBatch-sized groups: at most 10 entries and about 200 KiB of bodies each.
    Entry ``Id``s are their index in the group."""
    batch: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        entry_size = len(entry["MessageBody"].encode("utf-8"))
        if batch and (len(batch) == BATCH_ENTRIES or size + entry_size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry | {"Id": str(len(batch))})
        size += entry_size
    if batch:
        yield batch


def chunks(items: Sequence[Any], size: int = BATCH_ENTRIES) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
