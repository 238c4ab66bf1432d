"""The ESP webhook fixtures (``tests/fixtures/esp``) and receivers configured to verify them.

Every fixture's keys are the ones its manifest entry names: SendGrid's published SDK test key
or a real account's public key, Mailgun's documented sample key, the SNS certificates by file
(``POSTROOM_SNS_CERT_DIR``), and Postmark's made-up Basic credentials.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from postroom.webhooks.base import WebhookReceiver
from postroom.webhooks.mailgun import MailgunReceiver
from postroom.webhooks.postmark import PostmarkReceiver
from postroom.webhooks.sendgrid import SendGridReceiver
from postroom.webhooks.ses import SesReceiver
from postroom.webhooks.sns import CertificateSource

ESP_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "esp"
CERT_DIR = ESP_DIR / "ses" / "certs"
SENDGRID_KEY_B = (ESP_DIR / "sendgrid/keys/published-test-key-B.public.b64.txt").read_text().strip()
MAILGUN_KEY = (ESP_DIR / "mailgun/keys/docs-sample-webhook-signing-key.txt").read_text().strip()
POSTMARK_USER, POSTMARK_PASSWORD = "fixture-user", "fixture-pass"


@functools.cache
def manifest() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = orjson.loads((ESP_DIR / "manifest.json").read_bytes())
    return entries


@functools.cache
def ses_topics() -> tuple[str, ...]:
    """Every topic the SES fixtures come from (a test narrows this to check the allow-list)."""
    topics = {
        orjson.loads((ESP_DIR / e["file"]).read_bytes())["TopicArn"]
        for e in manifest()
        if e["esp"] == "ses"
    }
    return tuple(sorted(topics))


@dataclass(frozen=True)
class Request:
    headers: dict[str, str]
    body: bytes


def request(entry_or_file: dict[str, Any] | str) -> Request:
    entry = entry_or_file if isinstance(entry_or_file, dict) else by_file(entry_or_file)
    headers: dict[str, str] = orjson.loads((ESP_DIR / entry["headers_file"]).read_bytes())
    return Request(headers, (ESP_DIR / entry["file"]).read_bytes())


def by_file(file: str) -> dict[str, Any]:
    return next(e for e in manifest() if e["file"] == file)


def receiver_for(entry: dict[str, Any], **limits: Any) -> WebhookReceiver:
    """A receiver holding the key this fixture was signed with (timestamps unchecked unless
    ``max_age`` is given: the fixtures date from 2013 to 2026)."""
    limits.setdefault("max_age", 0)
    signature = entry["signature"]
    if entry["esp"] == "sendgrid":
        key = (ESP_DIR / signature["public_key_file"]).read_text().strip()
        return SendGridReceiver(key, **limits)
    if entry["esp"] == "mailgun":
        return MailgunReceiver(MAILGUN_KEY, **limits)
    if entry["esp"] == "ses":
        return SesReceiver(ses_topics(), CertificateSource(CERT_DIR), **limits)
    assert signature["basic_auth"] == f"{POSTMARK_USER}:{POSTMARK_PASSWORD}"
    return PostmarkReceiver(POSTMARK_USER, POSTMARK_PASSWORD, **limits)
