"""Amazon SES feedback through SNS: verify the SNS envelope, then map the SES record inside.

Both SES formats are understood: identity feedback notifications (``notificationType``) and
configuration-set event publishing (``eventType``). A notification can name several
recipients; there is one event per *affected* recipient (``bouncedRecipients`` ...), never
one per ``mail.destination``. SNS control messages and non-SES messages become ``ignored``.
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from typing import Any

import orjson

from postroom.errors import WebhookPayloadError, WebhookVerificationError
from postroom.webhooks.base import (
    WebhookReceiver,
    iso_time,
    load_json,
    looks_machine_made,
    lower_email,
    obj,
    smtp_details,
    text,
)
from postroom.webhooks.events import FeedbackType, NormalizedEvent
from postroom.webhooks.sns import CertificateSource, check_subscribe_url, sns_host, verify_envelope

# SES did not attempt delivery for these bounce subtypes: the address was on a list.
_SUPPRESSED_SUBTYPES = ("Suppressed", "OnAccountSuppressionList")


class SesReceiver(WebhookReceiver):
    provider = "ses"

    def __init__(
        self,
        topic_arns: Collection[str],
        certificates: CertificateSource | None = None,
        **limits: Any,
    ) -> None:
        super().__init__(**limits)
        self._topics = frozenset(topic_arns)
        self._certificates = certificates or CertificateSource()

    def _verify(self, headers: dict[str, str], raw_body: bytes, now: float) -> None:
        message = _envelope(raw_body)
        verify_envelope(message, headers, topic_arns=self._topics, certificates=self._certificates)
        timestamp = iso_time(message.get("Timestamp"))
        if timestamp is None:
            raise WebhookVerificationError("malformed", "SNS Timestamp missing")
        self.check_fresh(timestamp.timestamp(), now)

    def parse(self, raw_body: bytes) -> list[NormalizedEvent]:
        try:
            message = _envelope(raw_body)
        except WebhookVerificationError as exc:
            raise WebhookPayloadError(str(exc)) from None
        kind = str(message.get("Type"))
        sns_id = text(message.get("MessageId"))
        if kind != "Notification":
            subscribe_url = None
            if kind == "SubscriptionConfirmation":
                subscribe_url = check_subscribe_url(message, sns_host(str(message["TopicArn"])))
            return [_sns_control(kind, sns_id, subscribe_url)]
        record = _ses_record(message.get("Message"))
        if record is None:  # a plain SNS message, or SES's "Successfully validated" note
            return [_sns_control(kind, sns_id, None)]
        return [
            NormalizedEvent(**{**fields, "transport_id": sns_id}) for fields in map_record(record)
        ]


def _envelope(raw_body: bytes) -> dict[str, Any]:
    try:
        message = load_json(raw_body)
    except WebhookPayloadError:
        raise WebhookVerificationError("malformed", "body is not JSON") from None
    if not isinstance(message, dict):
        raise WebhookVerificationError("malformed", "not an SNS message")
    return message


def _sns_control(kind: str, sns_id: str | None, subscribe_url: str | None) -> NormalizedEvent:
    return NormalizedEvent(
        provider="ses",
        type=FeedbackType.IGNORED,
        esp_event=f"sns-{kind}",
        recipient=None,
        occurred_at=None,
        ignored_kind=f"sns-{kind}",
        transport_id=sns_id,
        subscribe_url=subscribe_url,
    )


def _ses_record(message: Any) -> dict[str, Any] | None:
    if not isinstance(message, str) or not message.startswith("{"):
        return None
    try:
        record = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("mail"), dict):
        return None
    if not (record.get("eventType") or record.get("notificationType")):
        return None
    return record


def map_record(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of one SES record, as NormalizedEvent keyword arguments."""
    kind = str(record.get("eventType") or record.get("notificationType"))
    mail = record["mail"]
    message_id = text(mail.get("messageId"))
    tags = obj(mail.get("tags"))
    common = {
        "provider": "ses",
        "esp_event": kind,
        "esp_message_id": message_id,
        "postroom_send_id": _send_id(tags),
        "lookup_ids": (message_id,) if message_id else (),
    }
    detail_key = {"Rendering Failure": "failure", "DeliveryDelay": "deliveryDelay"}.get(
        kind, kind[:1].lower() + kind[1:]
    )
    detail = obj(record.get(detail_key))
    occurred = iso_time(detail.get("timestamp")) or iso_time(mail.get("timestamp"))
    destinations = [a for a in mail.get("destination") or [] if isinstance(a, str)]

    def each(addresses: list[str], **fields: Any) -> list[dict[str, Any]]:
        return [
            {**common, "recipient": lower_email(a), "occurred_at": occurred, **fields}
            for a in addresses
        ]

    if kind == "Bounce":
        return [
            {**common, **_bounce(detail, r), "occurred_at": occurred}
            for r in _entries(detail, "bouncedRecipients")
        ]
    if kind == "Complaint":
        dropped = detail.get("complaintSubType") == "OnAccountSuppressionList"
        return [
            {
                **common,
                "type": FeedbackType.DROPPED if dropped else FeedbackType.COMPLAINED,
                "recipient": lower_email(r.get("emailAddress")),
                "occurred_at": occurred,
                "esp_event_id": text(detail.get("feedbackId")),
                "reason": text(detail.get("complaintFeedbackType")),
                "user_agent": text(detail.get("userAgent")),
            }
            for r in _entries(detail, "complainedRecipients")
        ]
    if kind == "Delivery":
        diagnostic = text(detail.get("smtpResponse"))
        code, enhanced = smtp_details(diagnostic)
        recipients = [a for a in detail.get("recipients") or [] if isinstance(a, str)]
        return each(
            recipients,
            type=FeedbackType.DELIVERED,
            diagnostic=diagnostic,
            smtp_code=code,
            enhanced_status=enhanced,
        )
    if kind == "DeliveryDelay":
        return [
            {
                **common,
                **_smtp_entry(r),
                "type": FeedbackType.DEFERRED,
                "occurred_at": occurred,
                "reason": text(detail.get("delayType")),
            }
            for r in _entries(detail, "delayedRecipients")
        ]
    if kind == "Open":
        agent = text(detail.get("userAgent"))
        return each(
            destinations,
            type=FeedbackType.OPENED,
            user_agent=agent,
            machine_open=looks_machine_made(agent),
        )
    if kind == "Click":
        return each(
            destinations,
            type=FeedbackType.CLICKED,
            url=text(detail.get("link")),
            user_agent=text(detail.get("userAgent")),
        )
    if kind in ("Reject", "Rendering Failure"):
        reason = text(detail.get("reason")) or text(detail.get("errorMessage"))
        return each(destinations, type=FeedbackType.DROPPED, reason=reason)
    if kind == "Subscription":
        return each(destinations, **_subscription(detail))
    label = "accepted" if kind == "Send" else kind
    return each(destinations, type=FeedbackType.IGNORED, ignored_kind=label)


def _entries(detail: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [e for e in detail.get(key) or [] if isinstance(e, dict)]


def _smtp_entry(entry: dict[str, Any]) -> dict[str, Any]:
    diagnostic = text(entry.get("diagnosticCode"))
    code, enhanced = smtp_details(diagnostic)
    return {
        "recipient": lower_email(entry.get("emailAddress")),
        "diagnostic": diagnostic,
        "smtp_code": code,
        "enhanced_status": text(entry.get("status")) or enhanced,
    }


def _bounce(detail: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    bounce_type, subtype = detail.get("bounceType"), detail.get("bounceSubType")
    if bounce_type == "Permanent":
        kind = (
            FeedbackType.DROPPED if subtype in _SUPPRESSED_SUBTYPES else FeedbackType.BOUNCED_HARD
        )
    else:
        # Transient: SES already stopped retrying. Undetermined: SES could not tell; an
        # address is not given up on the strength of that.
        kind = FeedbackType.BOUNCED_SOFT
    return {
        **_smtp_entry(entry),
        "type": kind,
        "esp_event_id": text(detail.get("feedbackId")),
        "reason": f"{bounce_type}/{subtype}" if subtype else text(bounce_type),
    }


def _subscription(detail: dict[str, Any]) -> dict[str, Any]:
    new = obj(detail.get("newTopicPreferences"))
    topics = [t for t in new.get("topicSubscriptionStatus") or [] if isinstance(t, dict)]
    opted_out = new.get("unsubscribeAll") is True or any(
        t.get("subscriptionStatus") == "OptOut" for t in topics
    )
    fields: dict[str, Any] = {
        "scope": text(detail.get("contactList")),
        "reason": text(detail.get("source")),
    }
    if opted_out:
        return {**fields, "type": FeedbackType.UNSUBSCRIBED}
    return {**fields, "type": FeedbackType.IGNORED, "ignored_kind": "resubscribed"}


def _tag(tags: dict[str, Any], name: str) -> str | None:
    values = tags.get(name)
    return text(values[0]) if isinstance(values, list) and values else None


def _send_id(tags: dict[str, Any]) -> str | None:
    """Our send id from the message tags; one outside SES's tag alphabet travels in base32."""
    plain = _tag(tags, "postroom_send_id")
    encoded = _tag(tags, "postroom_send_id_b32")
    if plain or not encoded:
        return plain
    try:
        return base64.b32decode(encoded + "=" * (-len(encoded) % 8)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
