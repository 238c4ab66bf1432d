"""Postmark webhooks: no payload signature, so HTTP Basic credentials in the webhook URL.

One record per POST. Field casing differs between Postmark's own sources (``MessageID`` and
``MessageId``), so keys are matched case-insensitively.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from postroom.errors import WebhookPayloadError, WebhookVerificationError
from postroom.webhooks.base import (
    WebhookReceiver,
    constant_time_equal,
    iso_time,
    load_json,
    looks_machine_made,
    lower_email,
    send_ids_from,
    smtp_details,
    text,
    unique,
)
from postroom.webhooks.events import FeedbackType, NormalizedEvent

# Bounce TypeCode → type (Postmark's bounce-type table). Codes not listed are ignored under
# their Type name.
_BOUNCE_TYPES = {
    1: FeedbackType.BOUNCED_HARD,  # HardBounce
    100000: FeedbackType.BOUNCED_HARD,  # BadEmailAddress
    2: FeedbackType.DEFERRED,  # Transient: "message delayed", Postmark keeps trying
    4096: FeedbackType.BOUNCED_SOFT,  # SoftBounce
    256: FeedbackType.BOUNCED_SOFT,  # DnsError
    100006: FeedbackType.BOUNCED_SOFT,  # Blocked: a block says nothing about the address
    100009: FeedbackType.BOUNCED_SOFT,  # DMARCPolicy: our authentication, not their address
    16: FeedbackType.UNSUBSCRIBED,  # Unsubscribe (arrives as a Bounce, sometimes without Email)
    100001: FeedbackType.COMPLAINED,  # SpamComplaint
    100002: FeedbackType.DROPPED,  # ManuallyDeactivated
    100010: FeedbackType.DROPPED,  # TemplateRenderingFailed
}
_SUPPRESSION_REASONS = {
    "HardBounce": FeedbackType.BOUNCED_HARD,
    "SpamComplaint": FeedbackType.COMPLAINED,
    "ManualSuppression": FeedbackType.UNSUBSCRIBED,
}
_TIME_FIELDS = ("bouncedat", "deliveredat", "receivedat", "changedat")


class PostmarkReceiver(WebhookReceiver):
    provider = "postmark"

    def __init__(self, user: str, password: str, **limits: Any) -> None:
        super().__init__(**limits)
        self._expected = f"{user}:{password}".encode()

    def _verify(self, headers: dict[str, str], raw_body: bytes, now: float) -> None:
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise WebhookVerificationError("unauthorized", "Basic credentials required")
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise WebhookVerificationError("unauthorized", "Basic credentials malformed") from None
        if not constant_time_equal(given, self._expected):
            raise WebhookVerificationError("unauthorized", "wrong Basic credentials")

    def parse(self, raw_body: bytes) -> list[NormalizedEvent]:
        payload = load_json(raw_body, exact_integers=True)  # IDs beyond 2**53 occur
        if not isinstance(payload, dict) or not payload.get("RecordType"):
            raise WebhookPayloadError("a Postmark webhook body is one record with a RecordType")
        return [normalize({key.lower(): value for key, value in payload.items()})]


def normalize(record: dict[str, Any]) -> NormalizedEvent:
    """``record`` has lower-cased keys."""
    kind = str(record.get("recordtype"))
    message_id = text(record.get("messageid"))
    diagnostic = text(record.get("details"))
    code, enhanced = smtp_details(diagnostic)
    user_agent = text(record.get("useragent"))
    event_type, ignored_kind = _classify(kind, record)
    metadata = record.get("metadata")
    send_id, postroom_message_id = send_ids_from(metadata)
    occurred = next((iso_time(record.get(f)) for f in _TIME_FIELDS if record.get(f)), None)
    return NormalizedEvent(
        provider="postmark",
        type=event_type,
        esp_event=kind,
        # Bounce and SpamComplaint records name the address Email, the others Recipient.
        recipient=lower_email(record.get("email")) or lower_email(record.get("recipient")),
        occurred_at=occurred,
        esp_message_id=message_id,
        esp_event_id=text(record.get("id")),
        postroom_send_id=send_id,
        postroom_message_id=postroom_message_id,
        smtp_code=code,
        enhanced_status=enhanced,
        diagnostic=diagnostic if kind in ("Bounce", "Delivery") else None,
        reason=text(record.get("type")) or text(record.get("suppressionreason")),
        url=text(record.get("originallink")) if kind == "Click" else None,
        user_agent=user_agent,
        machine_open=kind == "Open" and looks_machine_made(user_agent),
        ignored_kind=ignored_kind,
        scope=text(record.get("messagestream"))
        if event_type is FeedbackType.UNSUBSCRIBED
        else None,
        lookup_ids=unique([message_id]),
    )


def _classify(kind: str, record: dict[str, Any]) -> tuple[FeedbackType, str | None]:
    simple = {
        "Delivery": FeedbackType.DELIVERED,
        "Open": FeedbackType.OPENED,
        "Click": FeedbackType.CLICKED,
        # Classify on RecordType: Postmark's own example carries TypeCode 512.
        "SpamComplaint": FeedbackType.COMPLAINED,
    }
    if kind in simple:
        return simple[kind], None
    if kind == "Bounce":
        code = record.get("typecode")
        found = _BOUNCE_TYPES.get(code) if isinstance(code, int) else None
        if found is not None:
            return found, None
        return FeedbackType.IGNORED, text(record.get("type")) or "bounce"
    if kind == "SubscriptionChange":
        if record.get("suppresssending") is not True:
            return FeedbackType.IGNORED, "resubscribed"
        reason = str(record.get("suppressionreason"))
        return _SUPPRESSION_REASONS.get(reason, FeedbackType.UNSUBSCRIBED), None
    return FeedbackType.IGNORED, kind or "unknown"
