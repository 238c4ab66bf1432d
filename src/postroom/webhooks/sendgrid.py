"""SendGrid's signed Event Webhook: ECDSA P-256 / SHA-256 over timestamp + raw body.

One POST is a JSON array of events. The body is verified exactly as received: SendGrid signs
the bytes including the trailing CRLF, and re-serialized JSON would not verify.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from postroom.errors import ConfigurationError, WebhookPayloadError, WebhookVerificationError
from postroom.webhooks.base import (
    WebhookReceiver,
    epoch,
    load_json,
    looks_machine_made,
    lower_email,
    require_header,
    send_ids_from,
    smtp_details,
    text,
)
from postroom.webhooks.events import FeedbackType, NormalizedEvent

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# event → normalized type. Bounces depend on their ``type`` and are handled apart.
_TYPES = {
    "delivered": FeedbackType.DELIVERED,
    "deferred": FeedbackType.DEFERRED,
    "dropped": FeedbackType.DROPPED,
    "open": FeedbackType.OPENED,
    "click": FeedbackType.CLICKED,
    "spamreport": FeedbackType.COMPLAINED,
    "unsubscribe": FeedbackType.UNSUBSCRIBED,
    "group_unsubscribe": FeedbackType.UNSUBSCRIBED,
}
# Valid events outside the vocabulary, with the label they are ignored under.
_IGNORED = {"processed": "accepted", "group_resubscribe": "resubscribed"}


def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """The key as SendGrid shows it: base64 DER SubjectPublicKeyInfo (``MFkwEwYHKoZIzj0...``)."""
    try:
        key = serialization.load_der_public_key(base64.b64decode(value.strip(), validate=True))
    except (ValueError, binascii.Error) as exc:
        raise ConfigurationError(
            "POSTROOM_SENDGRID_WEBHOOK_PUBLIC_KEY is not a base64 DER public key"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigurationError("POSTROOM_SENDGRID_WEBHOOK_PUBLIC_KEY is not a P-256 ECDSA key")
    return key


class SendGridReceiver(WebhookReceiver):
    provider = "sendgrid"

    def __init__(self, public_key: str, **limits: Any) -> None:
        super().__init__(**limits)
        self._key = load_public_key(public_key)

    def _verify(self, headers: dict[str, str], raw_body: bytes, now: float) -> None:
        signature_b64 = require_header(headers, SIGNATURE_HEADER)
        timestamp = require_header(headers, TIMESTAMP_HEADER).strip()
        if not timestamp.isdigit():
            raise WebhookVerificationError("malformed", f"{TIMESTAMP_HEADER} is not a number")
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except binascii.Error:
            raise WebhookVerificationError(
                "malformed", f"{SIGNATURE_HEADER} is not base64"
            ) from None
        try:
            self._key.verify(signature, timestamp.encode() + raw_body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise WebhookVerificationError(
                "signature", "SendGrid signature does not match"
            ) from None
        self.check_fresh(int(timestamp), now)

    def parse(self, raw_body: bytes) -> list[NormalizedEvent]:
        payload = load_json(raw_body)
        if not isinstance(payload, list) or not all(isinstance(e, dict) for e in payload):
            raise WebhookPayloadError("a SendGrid event webhook body is a JSON array of events")
        return [normalize(event) for event in payload]


def normalize(event: dict[str, Any]) -> NormalizedEvent:
    get = event.get  # one bound method for the dozen look-ups: this runs per event
    kind = str(get("event") or "")
    message_id = text(get("sg_message_id"))
    diagnostic = text(get("reason")) if kind == "bounce" else text(get("response"))
    code, enhanced = smtp_details(diagnostic)
    user_agent = text(get("useragent"))
    send_id, postroom_message_id = send_ids_from(event)  # custom_args arrive as top-level keys
    ignored_kind = _IGNORED.get(kind)
    if kind == "bounce":
        # type=bounce is a hard bounce; type=blocked is a block SendGrid does not retry and
        # lists under Blocks rather than Bounces: the address may well be good.
        hard = get("type", "bounce") != "blocked"
        kind_type = FeedbackType.BOUNCED_HARD if hard else FeedbackType.BOUNCED_SOFT
    elif kind in _TYPES:
        kind_type = _TYPES[kind]
    else:
        kind_type = FeedbackType.IGNORED
        ignored_kind = ignored_kind or kind or "unknown"
    scope = None
    if kind == "unsubscribe":
        scope = "global"
    elif kind in ("group_unsubscribe", "group_resubscribe"):
        scope = f"asm_group_id={get('asm_group_id')}"
    reason = text(get("reason")) if kind == "dropped" else None
    if kind == "bounce":
        reason = text(get("bounce_classification"))
    # The API's id is a strict prefix of the webhook's, so the two never repeat.
    lookup_ids: tuple[str, ...] = ()
    if message_id:
        api_id = api_message_id(message_id)
        lookup_ids = (message_id, api_id) if api_id else (message_id,)
    return NormalizedEvent(
        provider="sendgrid",
        type=kind_type,
        esp_event=kind,
        recipient=lower_email(get("email")),
        occurred_at=epoch(get("timestamp")),
        esp_message_id=message_id,
        esp_event_id=text(get("sg_event_id")),
        postroom_send_id=send_id,
        postroom_message_id=postroom_message_id,
        smtp_code=code,
        enhanced_status=text(get("status")) or enhanced,
        diagnostic=diagnostic,
        reason=reason,
        url=text(get("url")) if kind == "click" else None,
        user_agent=user_agent,
        machine_open=kind == "open"
        and (get("sg_machine_open") is True or looks_machine_made(user_agent)),
        ignored_kind=ignored_kind,
        scope=scope,
        lookup_ids=lookup_ids,
    )


def api_message_id(sg_message_id: str | None) -> str | None:
    """The ``X-Message-Id`` our send call got back: the part of ``sg_message_id`` before the
    filter/receiver suffix. Old ids have dots of their own, so split at the suffix."""
    if not sg_message_id:
        return None
    for marker in (".filter", ".recvd"):
        head, found, _ = sg_message_id.partition(marker)
        if found and head:
            return head
    return None
