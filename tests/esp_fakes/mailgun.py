"""A fake Mailgun Messages API (``POST /v3/{domain}/messages``).

Follows mailgun/documentation ``api-sending.rst`` and ``user_manual.rst`` (Batch Sending): HTTP
Basic auth with user ``api`` (401 ``Forbidden`` otherwise), an unknown domain is 404, form
fields ``from``, ``to`` (repeatable, at most 1,000), ``subject`` and one of ``text``/``html``
required, ``recipient-variables`` valid JSON; errors as ``{"message": ...}``. Accepted calls
answer 200 ``{"id": "<...>", "message": "Queued. Thank you."}``; ``%recipient.NAME%`` is
substituted per recipient in subject, bodies, ``h:`` headers and ``v:`` variables.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from email.utils import getaddresses
from typing import Any

import orjson
from aiohttp import BodyPartReader, web
from tests.esp_fakes.base import Delivered, FakeEsp

MAX_RECIPIENTS = 1000
_MARKER = re.compile(r"%recipient\.([A-Za-z0-9_-]+)%")


def message(text: str, status: int = 400) -> web.Response:
    return web.json_response({"message": text}, status=status)


async def form_fields(request: web.Request) -> list[tuple[str, str]]:
    """Form fields in order, repeats kept. Both encodings are parsed here because aiohttp's
    own form parser stops at 1,000 fields, fewer than a full Mailgun batch has."""
    if request.content_type == "application/x-www-form-urlencoded":
        text = (await request.read()).decode()
        return urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=None)
    if request.content_type != "multipart/form-data":
        await request.read()
        return []
    fields = []
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        assert isinstance(part, BodyPartReader) and part.name is not None
        fields.append((part.name, (await part.read()).decode()))
    return fields


class FakeMailgun(FakeEsp):
    def __init__(self, credential: str = "key-test", domain: str = "mg.news.example") -> None:
        super().__init__(credential)
        self.domain = domain
        self.rejected: set[str] = set()  # addresses refused as invalid (lower case)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v3/{domain}/messages", self.messages)

    def authorized(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"api:{self.credential}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    async def messages(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            await request.read()
            return web.Response(status=401, text="Forbidden")
        if request.match_info["domain"] != self.domain:
            await request.read()
            return message(f"Domain not found: {request.match_info['domain']}", 404)
        fault = await self.fault_for(request)
        if fault is not None:
            return fault
        fields = await form_fields(request)
        try:
            delivered = self.accept(fields)
        except ValueError as exc:
            return message(str(exc))
        provider_id = f"<{self.new_id(14)}.{len(self.calls)}@{self.domain}>"
        for item in delivered:
            item.provider_id = provider_id
        self.calls.append(fields)
        self.delivered += delivered
        return web.json_response({"id": provider_id, "message": "Queued. Thank you."})

    def accept(self, fields: list[tuple[str, str]]) -> list[Delivered]:
        single = {k: v for k, v in fields}
        for required in ("from", "to", "subject"):
            if not single.get(required):
                raise ValueError(f"{required} parameter is missing")
        if not (single.get("text") or single.get("html") or single.get("template")):
            raise ValueError(
                "Need at least one of 'text', 'html' or 'template' parameters specified"
            )
        recipients = getaddresses([v for k, v in fields if k == "to"])
        if len(recipients) > MAX_RECIPIENTS:
            raise ValueError(f"Too many recipients: the limit is {MAX_RECIPIENTS} per message")
        if any("@" not in a or a.lower() in self.rejected for _n, a in recipients):
            raise ValueError("to parameter is not a valid address. please check documentation")
        variables: dict[str, Any] = {}
        if "recipient-variables" in single:
            try:
                variables = orjson.loads(single["recipient-variables"])
            except orjson.JSONDecodeError:
                raise ValueError("recipient-variables parameter is not a valid JSON") from None
        return [
            self._deliver(single, fields, name, address, variables.get(address, {}))
            for name, address in recipients
        ]

    def _deliver(
        self,
        single: dict[str, str],
        fields: list[tuple[str, str]],
        name: str,
        address: str,
        values: dict[str, Any],
    ) -> Delivered:
        def apply(text: str | None) -> str | None:
            if text is None:
                return None
            return _MARKER.sub(lambda m: str(values.get(m.group(1), m.group(0))), text)

        return Delivered(
            to=address,
            to_name=name or None,
            sender=single["from"],
            subject=apply(single["subject"]) or "",
            text=apply(single.get("text")),
            html=apply(single.get("html")),
            headers={k[2:]: apply(v) or "" for k, v in fields if k.startswith("h:")},
            ids={k[2:]: apply(v) or "" for k, v in fields if k.startswith("v:")},
            provider_id="",
            extra={"tags": [v for k, v in fields if k == "o:tag"]},
        )
