"""ESP webhooks: verify, then normalize into one vocabulary (see ``base`` for the contract)."""

from __future__ import annotations

from postroom.config import Settings
from postroom.errors import ConfigurationError
from postroom.webhooks.base import WebhookReceiver

PROVIDERS = ("sendgrid", "mailgun", "ses", "postmark")


def build_receiver(provider: str, settings: Settings) -> WebhookReceiver:
    """The receiver for ``provider`` with the configured keys; a provider whose keys are not
    configured is a :class:`ConfigurationError` (its endpoint refuses everything)."""
    limits = {
        "max_age": settings.webhook_max_age,
        "max_body_bytes": settings.webhook_max_body_bytes,
    }
    if provider == "sendgrid":
        from postroom.webhooks.sendgrid import SendGridReceiver

        if not settings.sendgrid_webhook_public_key:
            raise ConfigurationError("POSTROOM_SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
        return SendGridReceiver(settings.sendgrid_webhook_public_key, **limits)
    if provider == "mailgun":
        from postroom.webhooks.mailgun import MailgunReceiver

        key = settings.mailgun_webhook_signing_key
        if key is None or not key.get_secret_value():
            raise ConfigurationError("POSTROOM_MAILGUN_WEBHOOK_SIGNING_KEY is not set")
        return MailgunReceiver(key.get_secret_value(), **limits)
    if provider == "ses":
        from postroom.webhooks.ses import SesReceiver
        from postroom.webhooks.sns import CertificateSource

        if not settings.ses_topic_arns:
            raise ConfigurationError("POSTROOM_SES_TOPIC_ARNS is not set")
        certificates = CertificateSource(settings.sns_cert_dir)
        return SesReceiver(settings.ses_topic_arns, certificates, **limits)
    if provider == "postmark":
        from postroom.webhooks.postmark import PostmarkReceiver

        user, password = settings.postmark_webhook_user, settings.postmark_webhook_password
        if not user or password is None or not password.get_secret_value():
            raise ConfigurationError(
                "POSTROOM_POSTMARK_WEBHOOK_USER and POSTROOM_POSTMARK_WEBHOOK_PASSWORD are not set"
            )
        return PostmarkReceiver(user, password.get_secret_value(), **limits)
    raise ConfigurationError(f"unknown webhook provider {provider!r}; use {', '.join(PROVIDERS)}")
