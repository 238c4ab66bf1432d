"""Mailgun webhooks: HMAC-SHA256 of timestamp + token with the webhook signing key.

The signature does not cover the body, so a captured request could be replayed with other
event data: the token is single-use (:meth:`MailgunReceiver.replay_token`) and the timestamp
must be fresh. One event per POST, in ``event-data``.
"""

from __future__ import annotations

import hashlib
import hmac
from email.utils import parseaddr
from typing import Any

from postroom.errors import WebhookPayloadError, WebhookVerificationError
from postroom.webhooks.base import (
    WebhookReceiver,
    constant_time_equal,
    epoch,
    load_json,
    looks_machine_made,
    lower_email,
    obj,
    send_ids_from,
    smtp_details,
    text,
    unique,
)
from postroom.webhooks.events import FeedbackType, NormalizedEvent

_TYPES = {
    "delivered": FeedbackType.DELIVERED,
    "rejected": FeedbackType.DROPPED,
    "opened": FeedbackType.OPENED,
    "clicked": FeedbackType.CLICKED,
    "unsubscribed": FeedbackType.UNSUBSCRIBED,
    "complained": FeedbackType.COMPLAINED,
}


def signature_for(signing_key: str, timestamp: str, token: str) -> str:
    return hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


class MailgunReceiver(WebhookReceiver):
    provider = "mailgun"

    def __init__(self, signing_key: str, **limits: Any) -> None:
        super().__init__(**limits)
        self._key = signing_key

    def _verify(self, headers: dict[str, str], raw_body: bytes, now: float) -> None:
        timestamp, token, signature = _signature_block(raw_body)
        expected = signature_for(self._key, timestamp, token)
        if not constant_time_equal(expected, signature.lower()):
            raise WebhookVerificationError("signature", "Mailgun signature does not match")
        self.check_fresh(float(timestamp), now)

    def replay_token(self, raw_body: bytes) -> str | None:
        return _signature_block(raw_body)[1]

    def parse(self, raw_body: bytes) -> list[NormalizedEvent]:
        payload = load_json(raw_body)
        data = payload.get("event-data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            raise WebhookPayloadError("a Mailgun webhook body carries an event-data object")
        return [normalize(data)]


def _signature_block(raw_body: bytes) -> tuple[str, str, str]:
    """(timestamp, token, signature): the signature lives inside the JSON body itself."""
    try:
        payload = load_json(raw_body)
    except WebhookPayloadError:
        raise WebhookVerificationError("malformed", "body is not JSON") from None
    block = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(block, dict):
        raise WebhookVerificationError("malformed", "no signature block in the body")
    timestamp, token, signature = (
        str(block.get(k) or "") for k in ("timestamp", "token", "signature")
    )
    if not (timestamp.isdigit() and token and signature):
        raise WebhookVerificationError("malformed", "incomplete signature block")
    return timestamp, token, signature


def normalize(data: dict[str, Any]) -> NormalizedEvent:
    kind = str(data.get("event") or "")
    status = obj(data.get("delivery-status"))
    headers = obj(obj(data.get("message")).get("headers"))
    message_id = text(headers.get("message-id"))
    diagnostic = text(status.get("message")) or text(status.get("description"))
    code = status.get("code") if isinstance(status.get("code"), int) else None
    parsed_code, parsed_enhanced = smtp_details(diagnostic)
    enhanced = (
        text(status.get("enhanced-code")) or text(status.get("bounce-code")) or parsed_enhanced
    )
    reason = text(data.get("reason"))
    ignored_kind = None
    if kind == "failed":
        kind_type = _failure_type(data.get("severity"), reason or "")
    elif kind in _TYPES:
        kind_type = _TYPES[kind]
    else:
        kind_type = FeedbackType.IGNORED
        ignored_kind = "accepted" if kind == "accepted" else kind or "unknown"
    if kind == "rejected":
        reject = obj(data.get("reject"))
        reason = text(reject.get("reason"))
    client = obj(data.get("client-info"))
    user_agent = text(client.get("user-agent"))
    # A rejected message may carry no recipient: the To header is all there is.
    recipient = lower_email(data.get("recipient")) or lower_email(
        parseaddr(headers.get("to") or "")[1]
    )
    send_id, postroom_message_id = send_ids_from(data.get("user-variables"))
    return NormalizedEvent(
        provider="mailgun",
        type=kind_type,
        esp_event=kind,
        recipient=recipient,
        occurred_at=epoch(data.get("timestamp")),
        esp_message_id=message_id,
        esp_event_id=text(data.get("id")),
        postroom_send_id=send_id,
        postroom_message_id=postroom_message_id,
        smtp_code=code if code is not None else parsed_code,
        enhanced_status=enhanced,
        diagnostic=diagnostic,
        reason=reason,
        url=text(data.get("url")) if kind == "clicked" else None,
        user_agent=user_agent,
        # Mailgun names the proxy that fetched the pixel (Apple, Gmail) in client-info.bot.
        machine_open=kind == "opened"
        and (bool(client.get("bot")) or looks_machine_made(user_agent)),
        ignored_kind=ignored_kind,
        # The send API answers with the id in angle brackets; webhooks carry it without.
        lookup_ids=unique([message_id, f"<{message_id}>" if message_id else None]),
    )


def _failure_type(severity: Any, reason: str) -> FeedbackType:
    if severity == "temporary":
        return FeedbackType.DEFERRED
    if reason.startswith("suppress-"):
        # Mailgun did not try: the address is on its own bounce/unsubscribe/complaint list.
        return FeedbackType.DROPPED
    if reason == "old":
        # Mailgun gave up retrying a temporary failure; the address itself may be fine.
        return FeedbackType.BOUNCED_SOFT
    return FeedbackType.BOUNCED_HARD
