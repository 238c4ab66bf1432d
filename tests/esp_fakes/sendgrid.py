"""A fake SendGrid v3 Mail Send (``POST /v3/mail/send``).

Follows twilio/sendgrid-oai ``tsg_mail_v3.json`` and the Mail Send errors page: Bearer auth
(401 ``authorization required``-style body otherwise), at most 1,000 personalizations and 1,000
recipients per call, every address once per call, ``from``, ``subject`` (top level or in every
personalization) and ``content`` required, text/plain before text/html, reserved headers refused,
``custom_args`` values strings; errors as ``{"errors": [{"message", "field", "help"}]}``.
Accepted calls answer 202 with an empty body and ``X-Message-Id``; substitutions are applied
per personalization so tests see what each recipient would get.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web
from tests.esp_fakes.base import Delivered, FakeEsp

MAX_PERSONALIZATIONS = 1000
RESERVED_HEADERS = {
    "x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
    "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc",
}  # fmt: skip


class InvalidRequestError(Exception):
    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.body = {"errors": [{"message": message, "field": field, "help": None}]}
        self.status = status


def errors_response(message: str, field: str | None, status: int, **headers: str) -> web.Response:
    body = {"errors": [{"message": message, "field": field, "help": None}]}
    return web.json_response(body, status=status, headers=headers)


class FakeSendGrid(FakeEsp):
    def __init__(self, credential: str = "SG.test-key") -> None:
        super().__init__(credential)
        self.rate_limit = 10_000
        self.rejected: set[str] = set()  # addresses refused as invalid (lower case)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v3/mail/send", self.mail_send)

    def rate_limit_headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(self.rate_limit - 1),
            "X-RateLimit-Reset": str(int(time.time()) + 1),
        }

    async def mail_send(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.credential}":
            await request.read()
            return errors_response(
                "The provided authorization grant is invalid, expired, or revoked", None, 401
            )
        fault = await self.fault_for(request)
        if fault is not None:
            return fault
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return errors_response("Bad Request", None, 400)
        try:
            check(body, self.rejected)
        except InvalidRequestError as exc:
            return web.json_response(exc.body, status=exc.status)
        message_id = self.new_id()
        self.calls.append(body)
        self.delivered += deliveries(body, message_id)
        return web.Response(
            status=202, headers={"X-Message-Id": message_id, **self.rate_limit_headers()}
        )


def check(body: Any, rejected: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    if not isinstance(body, dict):
        raise InvalidRequestError("Bad Request")
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        raise InvalidRequestError(
            "The personalizations field is required and must have at least one personalization.",
            "personalizations",
        )
    if len(personalizations) > MAX_PERSONALIZATIONS:
        raise InvalidRequestError(
            "The personalizations field may have at most 1000 personalizations.",
            "personalizations",
        )
    sender = body.get("from")
    if not isinstance(sender, dict) or "@" not in str(sender.get("email", "")):
        raise InvalidRequestError(
            "The from object must be provided for every email send.", "from.email"
        )
    seen: set[str] = set()
    for index, entry in enumerate(personalizations):
        _check_personalization(index, entry, seen, has_subject=bool(body.get("subject")))
    if seen & rejected:
        raise InvalidRequestError("Does not contain a valid address.", "personalizations.to.email")
    if len(seen) > MAX_PERSONALIZATIONS:
        raise InvalidRequestError(
            "Too many recipients: at most 1000 per request.", "personalizations"
        )
    content = body.get("content")
    if not isinstance(content, list) or not content:
        raise InvalidRequestError(
            "Unless a valid template_id is provided, the content parameter is required.",
            "content",
        )
    types = [part.get("type") for part in content if isinstance(part, dict)]
    if any(not part.get("value") for part in content if isinstance(part, dict)):
        raise InvalidRequestError(
            "The content value must be a string at least one character in length.",
            "content.0.value",
        )
    if "text/plain" in types and types.index("text/plain") != 0:
        raise InvalidRequestError(
            "If present, text/plain must be first, followed by text/html.", "content"
        )


def _check_personalization(index: int, entry: Any, seen: set[str], *, has_subject: bool) -> None:
    where = f"personalizations.{index}"
    to = entry.get("to") if isinstance(entry, dict) else None
    if not isinstance(to, list) or not to:
        raise InvalidRequestError(
            "The to array is required for all personalization objects.", f"{where}.to"
        )
    for position, recipient in enumerate(to):
        address = str(recipient.get("email", "")).lower()
        if "@" not in address or " " in address:
            raise InvalidRequestError(
                "Does not contain a valid address.", f"{where}.to.{position}.email"
            )
        if address in seen:
            raise InvalidRequestError(
                "Each email address in the personalization block should be unique between to, "
                f"cc, and bcc. We found the first duplicate instance of [{address}] in the "
                f"{where}.to field.",
                f"{where}.to",
            )
        seen.add(address)
    if not has_subject and not entry.get("subject"):
        raise InvalidRequestError(
            "The subject is required. You can get around this requirement if you use a "
            "template with a subject defined or if every personalization has a subject defined.",
            "subject",
        )
    for name in entry.get("headers", {}):
        if name.lower() in RESERVED_HEADERS:
            raise InvalidRequestError(
                f"The header {name} is reserved and cannot be set.", f"{where}.headers"
            )
    substitutions = entry.get("substitutions", {})
    if sum(len(k.encode()) + len(v.encode()) for k, v in substitutions.items()) > 10_000:
        raise InvalidRequestError(
            "The total size of your substitutions may not exceed 10,000 bytes per "
            "personalization object.",
            f"{where}.substitutions",
        )
    for name, value in entry.get("custom_args", {}).items():
        if not isinstance(value, str):
            raise InvalidRequestError(
                f"Custom args values must be strings: {name}.", f"{where}.custom_args"
            )


def deliveries(body: dict[str, Any], message_id: str) -> list[Delivered]:
    parts = {part["type"]: part["value"] for part in body["content"]}
    out = []
    for entry in body["personalizations"]:
        subs: dict[str, str] = entry.get("substitutions", {})

        def apply(text: str | None, subs: dict[str, str] = subs) -> str | None:
            if text is None:
                return None
            for key, value in subs.items():
                text = text.replace(key, value)
            return text

        recipient = entry["to"][0]
        out.append(
            Delivered(
                to=recipient["email"],
                to_name=recipient.get("name"),
                sender=body["from"]["email"],
                subject=apply(entry.get("subject") or body.get("subject")) or "",
                text=apply(parts.get("text/plain")),
                html=apply(parts.get("text/html")),
                headers={k: apply(v) or "" for k, v in entry.get("headers", {}).items()},
                ids=dict(entry.get("custom_args", {})),
                provider_id=message_id,
                extra={"reply_to": body.get("reply_to"), "categories": body.get("categories")},
            )
        )
    return out
