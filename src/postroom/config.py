"""Settings: environment variables with the prefix ``POSTROOM_``, or a TOML file.

Every default lives here. Nothing reads settings at import time; :func:`load_settings` builds
them when an edge (CLI, API, test) asks.
"""

from __future__ import annotations

import os
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_RETRY_SCHEDULE = (300.0, 900.0, 3600.0, 14400.0, 43200.0)
"""Backoff through the queue after the immediate retries: 5 min, 15 min, 1 h, 4 h, 12 h."""


class SmtpSecurity(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"  # implicit TLS, usually port 465


class AmbiguousPolicy(StrEnum):
    """What to do with a send whose outcome is unknown (worker died or response lost)."""

    BY_CATEGORY = "by_category"  # resend transactional and critical, never marketing
    RESEND = "resend"
    NEVER = "never"


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Postroom's configuration. Field names are the variables without ``POSTROOM_``."""

    model_config = SettingsConfigDict(env_prefix="POSTROOM_", extra="ignore")

    data_dir: Path = Field(default=Path(".postroom"), description="Outbox, keys, SQLite file.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in the data dir."
    )
    queue_url: str = Field(
        default="sql://",
        description="sql:// (the application database), amqp[s]://… (RabbitMQ) or sqs://… (SQS).",
    )
    provider: str = Field(
        default="outbox", description="outbox, smtp, sendgrid, mailgun, ses or postmark."
    )
    templates_dir: Path | None = Field(
        default=None, description="Folder of email types; default: the bundled examples."
    )

    sender: str = Field(default="Postroom <noreply@postroom.localhost>")
    reply_to: str | None = None
    postal_address: str = Field(
        default="Postroom, 1 Example Street, Springfield",
        description="Physical address in the footer of marketing mail (CAN-SPAM).",
    )
    unsubscribe_mailto: str | None = Field(
        default=None, description="Optional mailto: address added to List-Unsubscribe."
    )
    public_url: str = Field(
        default="http://127.0.0.1:8025", description="Base URL for unsubscribe links."
    )
    secret_key: str | None = Field(
        default=None, description="Signs unsubscribe tokens; default: generated in the data dir."
    )
    # Subscriber controls (rendering/unsubscribe.py, store/sunset.py): key rotation for
    # unsubscribe links, and the inactive-subscriber sunset.
    previous_secret_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated retired secret keys; links they signed still work.",
    )
    sunset_inactive_days: int = Field(
        default=180, ge=1, description="Days without a human open or click before re-engagement."
    )
    sunset_grace_days: int = Field(
        default=30, ge=1, description="Days after the re-engagement email before status sunset."
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated; default: generated in the data dir."
    )
    host: str = "127.0.0.1"
    port: int = 8025

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_security: SmtpSecurity = SmtpSecurity.NONE
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout: float = 30.0
    smtp_verify_tls: bool = True

    dkim_selector: str | None = Field(
        default=None,
        description="DKIM selector; the smtp provider signs when it and the key are set.",
    )
    dkim_private_key_file: Path | None = Field(
        default=None, description="PEM private key written by `postroom dkim keygen`."
    )
    dkim_domain: str | None = Field(
        default=None, description="DKIM d= domain; default: the domain of POSTROOM_SENDER."
    )

    lint_max_score: float | None = Field(
        default=None,
        gt=0,
        description="Refuse to send mail whose content scores this or more (off when unset).",
    )
    dns_nameserver: str | None = Field(
        default=None,
        description="HOST:PORT the domain check asks instead of the system resolver.",
    )

    worker_concurrency: int = Field(default=64, ge=1, description="Messages in flight per worker.")
    claim_batch: int = Field(default=64, ge=1)
    batch_linger: float = Field(
        default=0.05,
        ge=0,
        description="Seconds a marketing-only claim may wait to fill a batch (never other mail).",
    )
    campaign_chunk_concurrency: int = Field(
        default=2, ge=1, description="Campaign chunks (up to 1,000 recipients) sent at once."
    )
    campaign_scheduler_interval: float = Field(
        default=1.0, gt=0, description="Seconds between campaign scheduler passes."
    )
    campaign_stale_chunk_seconds: float = Field(
        default=900.0, gt=0, description="A queued chunk untouched this long is published again."
    )
    poll_interval: float = Field(default=0.002, gt=0, description="Seconds between empty claims.")
    lease_seconds: float = Field(default=60.0, gt=0)
    immediate_retries: int = Field(default=3, ge=0)
    immediate_retry_delay: float = Field(default=0.2, ge=0, description="Base, jittered.")
    retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE)
    )
    max_deliveries: int = Field(
        default=10, ge=1, description="Claims without an outcome before a message is poison."
    )
    # Broker queues: RabbitMQ takes ?prefix=…&prefetch=… in its URL, SQS ?region=…&prefix=…
    # (see docs/architecture.md, "RabbitMQ and SQS").
    sqs_endpoint_url: str | None = Field(
        default=None, description="SQS endpoint (moto, localstack); default: AWS for the region."
    )

    ambiguous_policy: AmbiguousPolicy = AmbiguousPolicy.BY_CATEGORY
    max_document_bytes: int = Field(default=256 * 1024, ge=1024)
    shutdown_grace: float = Field(default=30.0, ge=0)
    sqlite_synchronous: str = Field(default="NORMAL", pattern="^(NORMAL|FULL)$")
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    log_format: str = Field(
        default="json", pattern="^(json|text)$", description="json lines, or text for people."
    )

    # Send-rate limits and failover (worker/throttle.py, worker/failover.py).
    rate_limit_url: str | None = Field(
        default=None,
        description="redis://… shares the rate limits across workers and hosts; default: "
        "kept in each worker process.",
    )
    provider_rate: float | None = Field(
        default=None, gt=0, description="Recipients per second for the provider, on average."
    )
    provider_request_rate: float | None = Field(
        default=None, gt=0, description="Provider API calls per second."
    )
    domain_rates: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="Recipients per second per recipient domain: gmail.com=20,yahoo.com=10.",
    )
    failover_provider: str | None = Field(
        default=None,
        description="Provider that takes the mail while the primary's circuit is open.",
    )
    breaker_threshold: int = Field(
        default=5, ge=1, description="Consecutive failed provider calls that open the circuit."
    )
    breaker_open_seconds: float = Field(
        default=30.0, gt=0, description="Seconds the circuit stays open before a probe."
    )
    warmup_start: date | None = Field(
        default=None, description="First day (UTC) of a warm-up schedule; unset: no warm-up."
    )
    warmup_target: int | None = Field(
        default=None, gt=0, description="Daily volume the warm-up grows to (then no cap)."
    )
    warmup_initial: int = Field(default=200, gt=0, description="Daily cap on the first day.")
    warmup_days: int = Field(default=30, ge=2, description="Days from the first cap to the target.")
    warmup_fallback_provider: str | None = Field(
        default=None, description="Takes the mail over the day's cap; unset: it waits a day."
    )

    # ESP webhooks (POST /webhooks/{provider}); a provider without its credentials is refused.
    sendgrid_webhook_public_key: str | None = Field(
        default=None, description="Base64 DER P-256 key from SendGrid's signed event webhook."
    )
    mailgun_webhook_signing_key: SecretStr | None = Field(
        default=None, description="Mailgun's HTTP webhook signing key (not the API key)."
    )
    ses_topic_arns: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated SNS topic ARNs SES feedback comes from."
    )
    sns_cert_dir: Path | None = Field(
        default=None, description="Folder of SNS signing certificates; default: fetch over HTTPS."
    )
    postmark_webhook_user: str | None = None
    postmark_webhook_password: SecretStr | None = None
    webhook_max_age: float = Field(
        default=300.0, ge=0, description="Seconds a signed webhook timestamp stays valid; 0: off."
    )
    webhook_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    soft_bounce_limit: int = Field(
        default=3, ge=1, description="Soft bounces within the window that suppress an address."
    )
    soft_bounce_window: int = Field(
        default=5, ge=1, description="How many of the address's latest sends are counted."
    )

    # Subscribers, consent and double opt-in (store/subscribers.py, api/confirm.py).
    implied_consent_days: int = Field(
        default=730, ge=1, description="Days implied consent lasts (CASL: 2 years)."
    )
    double_opt_in: bool = Field(
        default=False, description="New subscriptions wait for a confirm link unless told not to."
    )
    confirm_token_max_age: float = Field(
        default=7 * 86400.0, gt=0, description="Seconds a double opt-in confirm link works."
    )
    confirmation_email_type: str = Field(
        default="subscription_confirmation",
        description="Email type sent with the confirm link for double opt-in.",
    )

    # Alerts (alerts/): rules over the ledger, the queue and the breakers; log, webhook and
    # email sinks; a running campaign pauses itself past a critical line.
    alert_monitor: bool = Field(
        default=True,
        description="Evaluate alerts in this process (serve, worker); run one evaluator only.",
    )
    alert_interval: float = Field(default=5.0, gt=0, description="Seconds between evaluations.")
    alert_campaign_interval: float = Field(
        default=1.0, gt=0, description="Seconds between checks of running campaigns alone."
    )
    alert_min_sends: int = Field(
        default=100, ge=1, description="Sends before a bounce or complaint rate counts."
    )
    alert_bounce_window: int = Field(
        default=1000, ge=1, description="Latest sends the hard-bounce rate is taken over."
    )
    alert_bounce_rate: float = Field(
        default=0.02, gt=0, description="Hard-bounce rate that is critical (pauses a campaign)."
    )
    alert_complaint_warning: float = Field(default=0.001, gt=0, description="Over 24 h.")
    alert_complaint_critical: float = Field(
        default=0.003, gt=0, description="Over 24 h; pauses a campaign past it."
    )
    alert_dlq_floor: int = Field(
        default=10, ge=0, description="Dead letters below this never alert, growing or not."
    )
    alert_dlq_window: float = Field(
        default=900.0, gt=0, description="Seconds over which the DLQ must have grown."
    )
    alert_queue_lag_critical: float = Field(default=60.0, gt=0, description="Oldest age, s.")
    alert_queue_lag_transactional: float = Field(default=300.0, gt=0)
    alert_queue_lag_marketing: float = Field(default=3600.0, gt=0)
    alert_auth_window: float = Field(
        default=900.0, gt=0, description="Seconds a provider credential failure keeps firing."
    )
    alert_webhook_url: str | None = Field(
        default=None, description="POST alerts as JSON here (Slack incoming webhooks work)."
    )
    alert_webhook_timeout: float = Field(default=5.0, gt=0)
    alert_email_to: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated operator addresses for alert email."
    )

    # ESP providers (POSTROOM_PROVIDER=sendgrid|mailgun|ses|postmark); *_BASE_URL points a
    # provider at a regional endpoint, a staging proxy or a test fake.
    esp_timeout: float = Field(default=30.0, gt=0, description="Seconds for one ESP API call.")
    esp_connect_timeout: float = Field(default=10.0, gt=0)
    sendgrid_api_key: SecretStr | None = None
    sendgrid_base_url: str = "https://api.sendgrid.com"
    mailgun_api_key: SecretStr | None = None
    mailgun_domain: str | None = Field(default=None, description="The sending domain.")
    mailgun_region: Literal["us", "eu"] = "us"
    mailgun_base_url: str | None = Field(default=None, description="Default: the region's API.")
    postmark_server_token: SecretStr | None = None
    postmark_message_stream: str = "outbound"
    postmark_base_url: str = "https://api.postmarkapp.com"
    ses_region: str | None = Field(default=None, description="Default: AWS_REGION.")
    ses_access_key_id: str | None = Field(
        default=None, description="Default: the AWS credential chain (env, profile, role)."
    )
    ses_secret_access_key: SecretStr | None = None
    ses_session_token: SecretStr | None = None
    ses_base_url: str | None = Field(default=None, description="SES endpoint URL override.")
    ses_configuration_set: str | None = None

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("previous_secret_keys", mode="before")
    @classmethod
    def _parse_previous_keys(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("ses_topic_arns", mode="before")
    @classmethod
    def _parse_topics(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("alert_email_to", mode="before")
    @classmethod
    def _parse_alert_email_to(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("domain_rates", mode="before")
    @classmethod
    def _parse_domain_rates(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        rates: dict[str, str] = {}
        for part in _split_list(value):
            domain, sep, rate = part.partition("=")
            if not sep or not domain.strip():
                raise ValueError(f"expected DOMAIN=RECIPIENTS_PER_SECOND, got {part!r}")
            rates[domain.strip().lower()] = rate.strip()
        return rates

    @field_validator("domain_rates")
    @classmethod
    def _positive_domain_rates(cls, value: dict[str, float]) -> dict[str, float]:
        for domain, rate in value.items():
            if rate <= 0:
                raise ValueError(f"{domain}: the rate must be a positive number per second")
        return value

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("retry_schedule")
    @classmethod
    def _positive_schedule(cls, value: list[float]) -> list[float]:
        if any(delay <= 0 for delay in value):
            raise ValueError("every retry delay must be a positive number of seconds")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("POSTROOM_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'postroom.db').resolve()}"


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and ``POSTROOM_CONFIG``), then ``overrides``."""
    return Settings(**overrides)
