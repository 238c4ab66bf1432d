"""Mailgun Messages API (``POST /v3/{domain}/messages``), batch sending with
``recipient-variables``: up to 1,000 recipients per call for messages that differ only in
per-recipient values (see ``http_batching``).

Per-recipient values travel as ``%recipient.NAME%`` markers in the subject, bodies and ``h:``
headers (List-Unsubscribe, Message-Id, X-Postroom-*), and in the ``v:postroom_send_id`` and
``v:postroom_message_id`` custom variables, which Mailgun returns in every webhook event as
``user-variables``: that is how events bind back to a send. Mailgun answers one ``id`` per call;
every recipient of the call gets it (angle brackets removed, as webhooks show it).

=======================================  ==================================================
answer                                   result (per message of the call)
=======================================  ==================================================
200 ``{"id": ...}``                      sent, provider id = ``id``
400 about ``to``/recipients, 413,       call split in halves and resent (find the bad one)
for a call of several
other 400, 413                           PermanentProviderError
401, 403                                 PermanentProviderError, logged at ERROR (credentials)
402, 404 (wrong domain or region)        PermanentProviderError, logged at ERROR (account)
429                                      RateLimitedError (``Retry-After`` if sent, else 2 s)
408, 5xx                                 TransientProviderError
transport failure before the request     TransientProviderError
timeout or reset after the request       AmbiguousProviderError
=======================================  ==================================================
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import urllib.parse
from collections.abc import Sequence

import orjson

from postroom.config import Settings
from postroom.errors import InvalidMessageError, PermanentProviderError, ProviderError
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
from postroom.providers.mime import display_address

__all__ = ["REGION_BASE_URLS", "MailgunProvider", "error_detail"]

REGION_BASE_URLS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
MAX_RECIPIENTS = 1000
_MARKER_PREFIX = "%recipient."
_ABOUT_RECIPIENTS = re.compile(r"\bto\b|recipient")
_log = logging.getLogger("postroom.providers.mailgun")


def _marker(name: str) -> str:
    return f"{_MARKER_PREFIX}{name}%"


def error_detail(reply: HttpReply) -> str:
    body = reply.json()
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return reply.text() or "(empty body)"


class MailgunProvider(HttpEspProvider):
    name = "mailgun"
    max_batch_size = MAX_RECIPIENTS

    def __init__(
        self,
        api_key: str,
        domain: str,
        *,
        base_url: str = REGION_BASE_URLS["us"],
        client: EspHttpClient | None = None,
    ) -> None:
        super().__init__(client or EspHttpClient(self.name))
        self.domain = domain
        self._url = f"{base_url.rstrip('/')}/v3/{urllib.parse.quote(domain, safe='')}/messages"
        credentials = base64.b64encode(f"api:{api_key}".encode()).decode("ascii")
        self._authorization = f"Basic {credentials}"

    @classmethod
    def from_settings(cls, settings: Settings) -> MailgunProvider:
        return cls(
            required(settings.mailgun_api_key, "POSTROOM_MAILGUN_API_KEY", cls.name),
            required(settings.mailgun_domain, "POSTROOM_MAILGUN_DOMAIN", cls.name),
            base_url=settings.mailgun_base_url or REGION_BASE_URLS[settings.mailgun_region],
            client=client_from_settings(cls.name, settings),
        )

    def prepare(self, email: RenderedEmail) -> Personalized:
        return personalize(email, _marker, marker_prefix=_MARKER_PREFIX)

    def prepare_all(self, batch: Sequence[RenderedEmail]) -> list[Personalized]:
        return personalize_all(batch, _marker, marker_prefix=_MARKER_PREFIX)

    def plan(self, items: Sequence[Personalized]) -> list[list[int]]:
        position = {id(item): index for index, item in enumerate(items)}
        calls = group_for_batch(items, MAX_RECIPIENTS)
        return [[position[id(item)] for item in call] for call in calls]

    def split_on(self, reply: HttpReply) -> bool:
        # Mailgun names no field; its messages about recipients mention "to" or "recipient".
        detail = error_detail(reply).lower()
        return reply.status == 413 or (
            reply.status == 400 and bool(_ABOUT_RECIPIENTS.search(detail))
        )

    def request(self, items: Sequence[Personalized]) -> EspRequest:
        boundary, body = multipart_body(build_fields(items))
        headers = {
            "Authorization": self._authorization,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        }
        return EspRequest(self._url, body, headers)

    def parse(self, items: Sequence[Personalized], reply: HttpReply) -> list[SendResult]:
        if 200 <= reply.status < 300:
            body = reply.json()
            raw_id = body.get("id") if isinstance(body, dict) else None
            provider_id = str(raw_id).strip("<>") if raw_id else None
            return [
                SendResult(
                    item.email.send_id, provider_message_id=provider_id or item.email.message_id
                )
                for item in items
            ]
        detail = error_detail(reply)
        if reply.status in (402, 404):
            # Mailgun uses 404 for an unknown sending domain (or the wrong region) and 402 for
            # an account that may not send: every message fails until an operator acts.
            _log.error(
                "mailgun refused the domain %s (HTTP %d): %s", self.domain, reply.status, detail
            )
            error: ProviderError = PermanentProviderError(
                f"mailgun HTTP {reply.status} (account or domain): {detail}", code=str(reply.status)
            )
        else:
            error = classify_status(self.name, reply, detail)
        return [SendResult(item.email.send_id, error=error) for item in items]


def build_fields(items: Sequence[Personalized]) -> list[tuple[str, str]]:
    """The form fields of one call; all ``items`` share a key (same content template)."""
    first = items[0]
    single = len(items) == 1
    email = first.email
    fields: list[tuple[str, str]] = [("from", email.sender)]
    fields += [("to", _recipient(item.email)) for item in items]
    source = email if single else first
    fields.append(("subject", source.subject))
    if not (source.text or source.html):
        raise InvalidMessageError("neither a text nor an HTML part", "content")
    if source.text:
        fields.append(("text", source.text))
    if source.html:
        fields.append(("html", source.html))
    headers = dict(email.headers if single else first.headers)
    headers["Message-Id"] = email.message_id if single else _marker("message_id")
    fields += [(f"h:{name}", value) for name, value in headers.items()]
    if single:
        fields += [
            ("v:postroom_send_id", email.send_id),
            ("v:postroom_message_id", email.message_id),
        ]
    else:
        fields += [
            ("v:postroom_send_id", _marker("send_id")),
            ("v:postroom_message_id", _marker("message_id")),
        ]
    if email.email_type:
        fields.append(("o:tag", email.email_type))
    if not single:
        variables = {item.email.recipient: dict(item.values) for item in items}
        fields.append(("recipient-variables", orjson.dumps(variables).decode()))
    return fields


def multipart_body(fields: Sequence[tuple[str, str]]) -> tuple[str, bytes]:
    """``fields`` as ``multipart/form-data`` (what Mailgun's examples send): each value goes
    as raw UTF-8, where URL-encoding would escape a body character by character in Python
    (~300 µs for a 4 KB HTML part). Returns the boundary and the body."""
    # A quote or line break in a name is escaped as browsers do (HTML's form-data rules).
    encoded = [
        (name.encode().replace(b'"', b"%22").replace(b"\r", b"%0D").replace(b"\n", b"%0A"),
         value.encode())
        for name, value in fields
    ]  # fmt: skip
    boundary = secrets.token_hex(16).encode()
    while any(boundary in value for _name, value in encoded):
        boundary = secrets.token_hex(16).encode()  # vanishingly rare; never split a value
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (boundary, name, value)
        for name, value in encoded
    ]
    parts.append(b"--%s--\r\n" % boundary)
    return boundary.decode(), b"".join(parts)


def _recipient(email: RenderedEmail) -> str:
    return display_address(email.recipient_name, email.recipient)
