"""A fake Postmark Email API (``POST /email``, ``POST /email/batch``).

Follows postmarkapp.com/developer (API overview, error codes, batch emails) and support article
1180: ``X-Postmark-Server-Token`` (401 with ErrorCode 10 otherwise), invalid JSON is 422 with
ErrorCode 402, more than 500 batch messages 422 with ErrorCode 410; per message ``From``, ``To``
(at most 50 recipients), a ``TextBody`` or ``HtmlBody`` are required (ErrorCode 300), an
inactive recipient is ErrorCode 406. ``/email`` answers a refused message with 422
``{"ErrorCode", "Message"}``; ``/email/batch`` answers 200 with one result per message.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.utils import getaddresses, parseaddr
from typing import Any

import orjson
from aiohttp import web
from tests.esp_fakes.base import Delivered, FakeEsp

MAX_BATCH = 500
MAX_RECIPIENTS = 50


class FakePostmark(FakeEsp):
    def __init__(self, credential: str = "server-token-test") -> None:
        super().__init__(credential)
        self.inactive: set[str] = set()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/email", self.email)
        app.router.add_post("/email/batch", self.batch)

    async def _body(self, request: web.Request) -> Any:
        if request.headers.get("X-Postmark-Server-Token") != self.credential:
            await request.read()
            raise _RefusalError(401, 10, "Request does not contain a valid Server token.")
        fault = await self.fault_for(request)
        if fault is not None:
            raise _FaultedError(fault)
        try:
            return orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise _RefusalError(422, 402, "Received invalid JSON input.") from None

    async def email(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._body(request)
        except _FaultedError as faulted:
            return faulted.response
        except _RefusalError as refusal:
            return refusal.response()
        answer = self.accept(body)
        self.calls.append(body)
        status = 200 if answer["ErrorCode"] == 0 else 422
        if status == 422:
            answer = {"ErrorCode": answer["ErrorCode"], "Message": answer["Message"]}
        return web.json_response(answer, status=status)

    async def batch(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._body(request)
        except _FaultedError as faulted:
            return faulted.response
        except _RefusalError as refusal:
            return refusal.response()
        if not isinstance(body, list):
            return _RefusalError(422, 402, "Received invalid JSON input.").response()
        if len(body) > MAX_BATCH:
            return _RefusalError(
                422, 410, f"Too many batch messages ({len(body)}). The limit is {MAX_BATCH}."
            ).response()
        self.calls.append(body)
        return web.json_response([self.accept(message) for message in body])

    def accept(self, message: Any) -> dict[str, Any]:
        to = str(message.get("To", "")) if isinstance(message, dict) else ""
        problem = self._problem(message, to)
        if problem is not None:
            code, text = problem
            return {"ErrorCode": code, "Message": text}
        message_id = str(uuid.uuid4())
        headers = {h["Name"]: h["Value"] for h in message.get("Headers", [])}
        name, address = parseaddr(to)
        self.delivered.append(
            Delivered(
                to=address,
                to_name=name or None,
                sender=message["From"],
                subject=message.get("Subject", ""),
                text=message.get("TextBody"),
                html=message.get("HtmlBody"),
                headers=headers,
                ids=dict(message.get("Metadata", {})),
                provider_id=message_id,
                extra={k: message.get(k) for k in ("Tag", "MessageStream", "ReplyTo")},
            )
        )
        return {
            "To": to,
            "SubmittedAt": datetime.now(UTC).isoformat(),
            "MessageID": message_id,
            "ErrorCode": 0,
            "Message": "OK",
        }

    def _problem(self, message: Any, to: str) -> tuple[int, str] | None:
        if not isinstance(message, dict):
            return 402, "Received invalid JSON input."
        if "@" not in parseaddr(str(message.get("From", "")))[1]:
            return 300, "Invalid 'From' address: ''."
        recipients = [a for _n, a in getaddresses([to])]
        if not to or not recipients:
            return 300, "Zero recipients specified"
        if len(recipients) > MAX_RECIPIENTS:
            return 300, "Maximum of 50 recipients allowed per email message."
        for address in recipients:
            if address.count("@") != 1 or " " in address:
                return (
                    300,
                    f"Error parsing 'To': Illegal email address '{address}'. "
                    "It must contain the '@' symbol.",
                )
        if not (message.get("HtmlBody") or message.get("TextBody")):
            return 300, "Provide either email TextBody or HtmlBody or both."
        metadata = message.get("Metadata", {})
        if any(len(str(k)) > 20 or len(str(v)) > 80 for k, v in metadata.items()):
            return 300, "Metadata keys are limited to 20 characters and values to 80."
        inactive = [a for a in recipients if a.lower() in self.inactive]
        if inactive:
            return 406, (
                "You tried to send to recipient(s) that have been marked as inactive. Found "
                f"inactive addresses: {', '.join(inactive)}."
            )
        return None


class _RefusalError(Exception):
    def __init__(self, status: int, code: int, text: str) -> None:
        super().__init__(text)
        self.status, self.code, self.text = status, code, text

    def response(self) -> web.Response:
        return web.json_response({"ErrorCode": self.code, "Message": self.text}, status=self.status)


class _FaultedError(Exception):
    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__("fault")
        self.response = response
