"""Postmark Email API: ``POST /email`` for one message, ``POST /email/batch`` for up to 500,
each message complete (Postmark has no substitution batch for pre-rendered content).

``Metadata`` carries our send id and Message-ID (Postmark returns it in every webhook event),
``Tag`` the email type, ``MessageStream`` the configured stream. Postmark answers one
``MessageID`` per message; a batch answers 200 with a result per message, in order, each with
its own ``ErrorCode``, so one bad address does not fail the others.

=======================================  ==================================================
answer                                   result
=======================================  ==================================================
ErrorCode 0                              sent, provider id = ``MessageID``
ErrorCode 406 (inactive recipient)       PermanentProviderError(suppress=True)
ErrorCode 300 naming an illegal To       PermanentProviderError(suppress=True)
ErrorCode 300 otherwise, 402, 403,       PermanentProviderError (this request is invalid)
409, 410, 411, other codes
ErrorCode 10, 400, 401, 405, 412, 413    PermanentProviderError, logged at ERROR (token,
                                         sender signature or account)
ErrorCode 100 (maintenance), 500         TransientProviderError
ErrorCode 429                            RateLimitedError (2 s; Postmark sends no header)
HTTP 401, 403                            PermanentProviderError, logged at ERROR
HTTP 404, 413, other 4xx                 PermanentProviderError
HTTP 429                                 RateLimitedError (``Retry-After`` if sent, else 2 s)
HTTP 408, 5xx                            TransientProviderError
transport failure before the request     TransientProviderError
timeout or reset after the request       AmbiguousProviderError
=======================================  ==================================================
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import orjson

from postroom.config import Settings
from postroom.errors import (
    AmbiguousProviderError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from postroom.messages import RenderedEmail
from postroom.providers.base import SendResult
from postroom.providers.http import (
    DEFAULT_RATE_LIMIT_WAIT,
    EspHttpClient,
    EspRequest,
    HttpEspProvider,
    HttpReply,
    auth_failure,
    classify_status,
    client_from_settings,
    required,
    retry_after_seconds,
)
from postroom.providers.http_batching import Personalized
from postroom.providers.mime import display_address

__all__ = ["DEFAULT_BASE_URL", "PostmarkProvider", "classify_error_code"]

DEFAULT_BASE_URL = "https://api.postmarkapp.com"
MAX_BATCH = 500
_log = logging.getLogger("postroom.providers.postmark")

# Postmark's API error codes (postmarkapp.com/developer/api/overview#error-codes).
_CONFIG_CODES = {
    10: "bad or missing server token",
    400: "sender signature not found",
    401: "sender signature not confirmed",
    405: "not allowed to send",
    412: "account is pending",
    413: "account may not send",
}
_TRANSIENT_CODES = {100: "maintenance", 500: "sender signature query exception"}
# Only a refusal of the To field blames the recipient; "Illegal email address" alone may be
# about From or Reply-To.
_BAD_TO = re.compile(r"Error parsing 'To'|Invalid 'To' address", re.I)
_METADATA_VALUE_MAX = 80  # Postmark limits metadata values to 80 characters


def classify_error_code(code: int, message: str) -> ProviderError:
    """Map one Postmark ``ErrorCode`` (non-zero) to an error class (see the module table)."""
    text = f"postmark ErrorCode {code}: {message}"
    label = str(code)
    if code == 406:
        # The address is deactivated after a hard bounce, spam complaint or manual
        # suppression: Postmark will refuse it until someone reactivates it.
        return PermanentProviderError(text, code=label, suppress=True)
    if code == 300:
        # 300 covers any invalid request (empty body, > 50 recipients, bad From); only a
        # refused To address says the recipient itself is bad.
        return PermanentProviderError(text, code=label, suppress=bool(_BAD_TO.search(message)))
    if code == 429:
        return RateLimitedError(text, retry_after=DEFAULT_RATE_LIMIT_WAIT, code=label)
    if code in _TRANSIENT_CODES:
        return TransientProviderError(text, code=label)
    if code in _CONFIG_CODES:
        _log.error(
            "postmark refused to send (ErrorCode %d, %s): %s", code, _CONFIG_CODES[code], message
        )
        return PermanentProviderError(text, code=label)
    return PermanentProviderError(text, code=label)


class PostmarkProvider(HttpEspProvider):
    name = "postmark"
    max_batch_size = MAX_BATCH

    def __init__(
        self,
        server_token: str,
        *,
        message_stream: str = "outbound",
        base_url: str = DEFAULT_BASE_URL,
        client: EspHttpClient | None = None,
    ) -> None:
        super().__init__(client or EspHttpClient(self.name))
        self.message_stream = message_stream
        self._base = base_url.rstrip("/")
        self._headers = {
            "X-Postmark-Server-Token": server_token,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> PostmarkProvider:
        return cls(
            required(settings.postmark_server_token, "POSTROOM_POSTMARK_SERVER_TOKEN", cls.name),
            message_stream=settings.postmark_message_stream,
            base_url=settings.postmark_base_url,
            client=client_from_settings(cls.name, settings),
        )

    def plan(self, items: Sequence[Personalized]) -> list[list[int]]:
        positions = list(range(len(items)))
        return [positions[i : i + MAX_BATCH] for i in range(0, len(positions), MAX_BATCH)]

    def split_on(self, reply: HttpReply) -> bool:
        # Postmark answers per message inside a 200; a batch refused whole is too large
        # (HTTP 413 over 50 MB, ErrorCode 410 over 500 messages), which halving resolves.
        return reply.status == 413 or _error_code(reply.json()) == 410

    def request(self, items: Sequence[Personalized]) -> EspRequest:
        messages = [self.message(item.email) for item in items]
        if len(messages) == 1:
            return EspRequest(f"{self._base}/email", orjson.dumps(messages[0]), self._headers)
        return EspRequest(f"{self._base}/email/batch", orjson.dumps(messages), self._headers)

    def message(self, email: RenderedEmail) -> dict[str, Any]:
        headers = [
            {"Name": name, "Value": value}
            for name, value in email.headers.items()
            if name.lower() != "reply-to"
        ]
        headers.append({"Name": "Message-ID", "Value": email.message_id})
        metadata = {"postroom_send_id": email.send_id}
        if len(email.message_id) <= _METADATA_VALUE_MAX:
            metadata["postroom_message_id"] = email.message_id
        message: dict[str, Any] = {
            "From": email.sender,
            "To": display_address(email.recipient_name, email.recipient),
            "Subject": email.subject,
            "Headers": headers,
            "Metadata": metadata,
            "MessageStream": self.message_stream,
        }
        if email.html:
            message["HtmlBody"] = email.html
        if email.text:
            message["TextBody"] = email.text
        if email.headers.get("Reply-To"):
            message["ReplyTo"] = email.headers["Reply-To"]
        if email.email_type:
            message["Tag"] = email.email_type[:1000]
        return message

    def parse(self, items: Sequence[Personalized], reply: HttpReply) -> list[SendResult]:
        body = reply.json()
        if reply.status == 200:
            answers = body if isinstance(body, list) else [body]
            if len(answers) == len(items) and all(isinstance(a, dict) for a in answers):
                return [
                    _result(item.email, answer) for item, answer in zip(items, answers, strict=True)
                ]
            # A 200 we cannot read: Postmark took the request, we cannot say for whom.
            error: ProviderError = _unreadable(reply)
        elif reply.status == 422 and _error_code(body) is not None:
            code = _error_code(body)
            assert code is not None
            error = classify_error_code(code, _message(body))
        elif reply.status == 401:
            error = auth_failure(self.name, 401, _message(body) or reply.text())
        elif reply.status == 429:
            error = RateLimitedError(
                f"postmark HTTP 429: {_message(body)}",
                retry_after=retry_after_seconds(reply.headers),
                code="429",
            )
        else:
            error = classify_status(self.name, reply, _message(body) or reply.text())
        return [SendResult(item.email.send_id, error=error) for item in items]


def _result(email: RenderedEmail, answer: dict[str, Any]) -> SendResult:
    code = answer.get("ErrorCode")
    if code == 0 and answer.get("MessageID"):
        return SendResult(email.send_id, provider_message_id=str(answer["MessageID"]))
    if not isinstance(code, int) or code == 0:
        return SendResult(email.send_id, error=_unreadable_answer(answer))
    return SendResult(
        email.send_id, error=classify_error_code(code, str(answer.get("Message", "")))
    )


def _unreadable(reply: HttpReply) -> ProviderError:
    return AmbiguousProviderError(f"postmark answered 200 with an unreadable body: {reply.text()}")


def _unreadable_answer(answer: dict[str, Any]) -> ProviderError:
    return AmbiguousProviderError(f"postmark answered without an id: {str(answer)[:300]}")


def _error_code(body: Any) -> int | None:
    code = body.get("ErrorCode") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None


def _message(body: Any) -> str:
    return str(body.get("Message", "")) if isinstance(body, dict) else ""
