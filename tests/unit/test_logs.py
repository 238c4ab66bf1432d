"""Logs are JSON lines; addresses are redacted at INFO and above; secrets and bodies never
appear."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from postroom import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    logs.configure("DEBUG", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:], root.level = handlers, level


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def test_records_are_json_with_their_ids_and_addresses_redacted(
    captured: io.StringIO,
) -> None:
    log = logging.getLogger("postroom.worker")
    log.warning(
        "send to jane.doe@example.com bounced",
        extra={"send_id": "01HX", "attempt": 2, "recipient": "jane.doe@example.com"},
    )
    [record] = lines(captured)
    assert record["event"] == "send to j…@example.com bounced"
    assert record["recipient"] == "j…@example.com"
    assert record["send_id"] == "01HX" and record["attempt"] == 2
    assert record["level"] == "warning" and record["logger"] == "postroom.worker"
    assert "jane.doe" not in json.dumps(record)


def test_debug_keeps_addresses_but_never_secrets_or_bodies(
    captured: io.StringIO,
) -> None:
    logging.getLogger("postroom").debug(
        "rendered for jane@example.com",
        extra={"api_key": "SG.secret", "html": "<p>hi</p>", "unsubscribe_token": "abc"},
    )
    [record] = lines(captured)
    assert record["event"] == "rendered for jane@example.com"
    assert record["api_key"] == record["html"] == record["unsubscribe_token"] == "[withheld]"


def test_exceptions_are_rendered_and_scrubbed(captured: io.StringIO) -> None:
    try:
        raise ValueError("no such mailbox: ann@example.org")
    except ValueError:
        logging.getLogger("postroom").exception("hand-over failed")
    [record] = lines(captured)
    assert "ValueError" in str(record["exception"])
    assert "ann@example.org" not in str(record["exception"])
