"""SendGrid v3 Mail Send (``POST /v3/mail/send``): one personalization per recipient, up to
1,000 per call, for messages that differ only in per-recipient values (see ``http_batching``).

Each personalization carries the recipient's own headers (List-Unsubscribe, Message-ID, our
X-Postroom-* headers), its subject, substitutions that restore its exact content, and
``custom_args`` with our send id and Message-ID, which SendGrid copies into every webhook
event: that is how events bind back to a send. SendGrid answers 202 with one ``X-Message-Id``
per call; every recipient of the call gets that id as its provider message id (webhook
``sg_message_id`` values start with it), so ids are unique per call, not per recipient.

=======================================  ==================================================
answer                                   result (per message of the call)
=======================================  ==================================================
202                                      sent, provider id = ``X-Message-Id``
400 naming ``personalizations…``, 413,   call split in halves and resent (find the bad one)
for a call of several
other 400, 404, 405, 413                 PermanentProviderError
401, 403                                 PermanentProviderError, logged at ERROR (credentials)
429                                      RateLimitedError, wait until ``X-RateLimit-Reset``
                                         (or ``Retry-After``)
408, 5xx                                 TransientProviderError
transport failure before the request     TransientProviderError
timeout or reset after the request       AmbiguousProviderError
=======================================  ==================================================
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from email.utils import parseaddr
from typing import Any

import orjson

from postroom.config import Settings
from postroom.errors import InvalidMessageError
from postroom.messages import RenderedEmail
from postroom.providers.base import SendResult
from postroom.providers.http import (
    EspHttpClient,
    EspRequest,
    HttpEspProvider,
    HttpReply,
    classify_status,
    client_from_settings,
    required,
)
from postroom.providers.http_batching import Personalized, group_for_batch, personalize
from postroom.providers.mailing_copies import personalize_all

__all__ = ["DEFAULT_BASE_URL", "SendGridProvider", "error_detail"]

DEFAULT_BASE_URL = "https://api.sendgrid.com"
MAX_PERSONALIZATIONS = 1000
_MARKER_PREFIX = "[[postroom:"
# SendGrid refuses these in personalization headers; Reply-To goes in ``reply_to`` instead.
_RESERVED_HEADERS = frozenset(
    {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
     "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"}
)  # fmt: skip


def _marker(name: str) -> str:
    return f"{_MARKER_PREFIX}{name}]]"


@functools.lru_cache(maxsize=256)
def _parsed(formatted: str) -> tuple[str, str]:
    # The sender and Reply-To repeat on every call; parsing them costs ~5 µs each time.
    return parseaddr(formatted)


def _address(formatted: str, field: str) -> dict[str, str]:
    name, address = _parsed(formatted)
    if "@" not in address:
        raise InvalidMessageError(f"not an address: {formatted!r}", field)
    return {"email": address, "name": name} if name else {"email": address}


def error_fields(reply: HttpReply) -> list[str]:
    body = reply.json()
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return []
    return [str(e.get("field")) for e in errors if isinstance(e, dict) and e.get("field")]


def error_detail(reply: HttpReply) -> str:
    """SendGrid's ``errors[].message`` (with ``field``), or the start of the body."""
    body = reply.json()
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        parts = []
        for error in body["errors"][:5]:
            if isinstance(error, dict):
                field = error.get("field")
                message = str(error.get("message", ""))
                parts.append(f"{field}: {message}" if field else message)
        if parts:
            return "; ".join(parts)
    return reply.text() or "(empty body)"


class SendGridProvider(HttpEspProvider):
    name = "sendgrid"
    max_batch_size = MAX_PERSONALIZATIONS

    def __init__(
        self, api_key: str, *, base_url: str = DEFAULT_BASE_URL, client: EspHttpClient | None = None
    ) -> None:
        super().__init__(client or EspHttpClient(self.name))
        self._url = base_url.rstrip("/") + "/v3/mail/send"
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> SendGridProvider:
        return cls(
            required(settings.sendgrid_api_key, "POSTROOM_SENDGRID_API_KEY", cls.name),
            base_url=settings.sendgrid_base_url,
            client=client_from_settings(cls.name, settings),
        )

    def prepare(self, email: RenderedEmail) -> Personalized:
        return personalize(email, _marker, marker_prefix=_MARKER_PREFIX)

    def prepare_all(self, batch: Sequence[RenderedEmail]) -> list[Personalized]:
        return personalize_all(batch, _marker, marker_prefix=_MARKER_PREFIX)

    def plan(self, items: Sequence[Personalized]) -> list[list[int]]:
        position = {id(item): index for index, item in enumerate(items)}
        calls = group_for_batch(items, MAX_PERSONALIZATIONS)
        return [[position[id(item)] for item in call] for call in calls]

    def split_on(self, reply: HttpReply) -> bool:
        # SendGrid names the field it refuses: only a personalization can be one recipient's.
        return reply.status == 413 or (
            reply.status == 400
            and any(field.startswith("personalizations") for field in error_fields(reply))
        )

    def request(self, items: Sequence[Personalized]) -> EspRequest:
        return EspRequest(self._url, orjson.dumps(build_payload(items)), self._headers)

    def parse(self, items: Sequence[Personalized], reply: HttpReply) -> list[SendResult]:
        if 200 <= reply.status < 300:
            batch_id = reply.headers.get("X-Message-Id")
            return [
                SendResult(
                    item.email.send_id, provider_message_id=batch_id or item.email.message_id
                )
                for item in items
            ]
        error = classify_status(self.name, reply, error_detail(reply))
        return [SendResult(item.email.send_id, error=error) for item in items]


def build_payload(items: Sequence[Personalized]) -> dict[str, Any]:
    """The Mail Send body for one call; all ``items`` share a key (same content template)."""
    first = items[0]
    single = len(items) == 1
    # Every item of the call has the same content and header names (their key is equal), so
    # the markers in use and the headers SendGrid accepts are looked up once per call.
    used = [] if single else [(m, n) for n in first.values if _used(first, m := _marker(n))]
    header_names = [n for n in first.email.headers if n.lower() not in _RESERVED_HEADERS]
    payload: dict[str, Any] = {
        "personalizations": [_personalization(item, header_names, used) for item in items],
        "from": _address(first.email.sender, "sender"),
        "subject": first.email.subject if single else first.subject,
        "content": _content(first.email if single else first),
    }
    reply_to = first.email.headers.get("Reply-To")
    if reply_to:
        payload["reply_to"] = _address(reply_to, "Reply-To")
    if first.email.email_type:
        payload["categories"] = [first.email.email_type[:255]]
    return payload


def _content(source: Personalized | RenderedEmail) -> list[dict[str, str]]:
    # SendGrid requires text/plain before text/html.
    content = []
    if source.text:
        content.append({"type": "text/plain", "value": source.text})
    if source.html:
        content.append({"type": "text/html", "value": source.html})
    if not content:
        raise InvalidMessageError("neither a text nor an HTML part", "content")
    return content


def _used(item: Personalized, marker: str) -> bool:
    return marker in item.html or marker in item.text or marker in item.subject


def _personalization(
    item: Personalized, header_names: Sequence[str], used: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    email = item.email
    to = {"email": email.recipient}
    if email.recipient_name:
        to["name"] = email.recipient_name
    own = email.headers
    headers = {name: own[name] for name in header_names}
    headers["Message-ID"] = email.message_id
    entry: dict[str, Any] = {
        "to": [to],
        "subject": email.subject,
        "headers": headers,
        "custom_args": {
            "postroom_send_id": email.send_id,
            "postroom_message_id": email.message_id,
            "postroom_email_type": email.email_type,
        },
    }
    if used:
        # Each substitution restores this recipient's own text in the shared content.
        values = item.values
        entry["substitutions"] = {marker: values[name] for marker, name in used}
    return entry
