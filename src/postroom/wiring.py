"""Settings → the objects that do the work. The only module that knows every seam's backends."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from postroom.config import Settings
from postroom.errors import ConfigurationError, PostroomError
from postroom.messages import RenderedEmail
from postroom.providers.base import Provider
from postroom.queue.base import QueueBackend
from postroom.rendering.registry import TemplateRegistry, bundled_templates_dir
from postroom.rendering.renderer import Renderer
from postroom.store import migrate
from postroom.store.campaigns import Campaigns
from postroom.store.database import Database, is_sqlite, open_database
from postroom.store.ledger import Ledger
from postroom.store.personal_data import PersonalData
from postroom.store.send_counts import SendCounts
from postroom.store.subscribers import Subscribers
from postroom.store.suppressions import Suppressions
from postroom.worker.failover import CircuitBreaker, FailoverProvider
from postroom.worker.pipeline import DeliveryPipeline
from postroom.worker.retry import RetryPolicy
from postroom.worker.runner import Worker
from postroom.worker.throttle import (
    LocalReservations,
    Rate,
    ReservationStore,
    SendLimits,
    Throttle,
    parse_rates,
)
from postroom.worker.warmup import WarmupProvider, WarmupSchedule

if TYPE_CHECKING:
    from postroom.deliverability.dkim import DkimSigner


log = logging.getLogger("postroom")


@dataclass
class Postroom:
    """Everything a process needs, built once from settings and closed once."""

    settings: Settings
    db: Database
    queue: QueueBackend
    ledger: Ledger
    suppressions: Suppressions
    registry: TemplateRegistry
    renderer: Renderer
    provider: Provider
    throttle: Throttle | None = None
    wake_listeners: list[Worker] = field(default_factory=list)

    @functools.cached_property
    def subscribers(self) -> Subscribers:
        return Subscribers(self.db, implied_consent_days=self.settings.implied_consent_days)

    @functools.cached_property
    def campaigns(self) -> Campaigns:
        return Campaigns(self.db)

    @functools.cached_property
    def personal_data(self) -> PersonalData:
        return PersonalData(self.db, self.suppressions)

    def wake_workers(self) -> None:
        for worker in self.wake_listeners:
            worker.wake()

    async def close(self) -> None:
        await self.provider.close()
        if self.throttle is not None:
            await self.throttle.store.close()
        await self.queue.close()
        await self.db.dispose()


def with_generated_secrets(settings: Settings) -> Settings:
    """Fill in a secret key and an API key kept in the data dir when none are configured, so
    the embedded default runs without setup and keeps its keys across restarts."""
    updates: dict[str, object] = {}
    if not settings.secret_key:
        updates["secret_key"] = _read_or_create(settings.data_dir / "secret-key")
    if not settings.api_keys:
        updates["api_keys"] = [_read_or_create(settings.data_dir / "api-key")]
    return settings.model_copy(update=updates) if updates else settings


def _read_or_create(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


async def prepare_database(settings: Settings) -> None:
    """Migrate the embedded SQLite database; refuse to run on an out-of-date server database."""
    url = settings.resolved_database_url
    if is_sqlite(url):
        await asyncio.to_thread(migrate.upgrade, url)
        return
    current, head = await asyncio.to_thread(migrate.pending_revision, url)
    if current != head:
        raise ConfigurationError(
            f"database schema is at {current or 'nothing'}, this version needs {head}: "
            "run `postroom migrate`"
        )


def build_queue(settings: Settings, db: Database) -> QueueBackend:
    scheme = urlsplit(settings.queue_url).scheme
    if scheme == "sql":
        from postroom.queue.sql import SqlQueue

        return SqlQueue(db, max_deliveries=settings.max_deliveries)
    if scheme in ("amqp", "amqps"):
        from postroom.queue.rabbitmq import RabbitMqQueue

        # A wait queue for every delay the worker asks for, so none is rounded up.
        return RabbitMqQueue.from_url(
            settings.queue_url,
            max_deliveries=settings.max_deliveries,
            extra_wait_tiers=[*settings.retry_schedule, settings.lease_seconds],
        )
    if scheme == "sqs":
        from postroom.queue.sqs import SqsQueue

        return SqsQueue.from_url(
            settings.queue_url,
            endpoint_url=settings.sqs_endpoint_url,
            max_deliveries=settings.max_deliveries,
        )
    raise ConfigurationError(
        f"POSTROOM_QUEUE_URL: unsupported scheme {scheme!r}; use sql://, amqp://, amqps:// "
        "or sqs://"
    )


def build_provider(settings: Settings) -> Provider:
    if settings.provider == "outbox":
        from postroom.providers.outbox import OutboxProvider

        return OutboxProvider(settings.data_dir / "outbox")
    if settings.provider == "smtp":
        from postroom.providers.smtp import SmtpProvider

        return SmtpProvider(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout,
            verify_tls=settings.smtp_verify_tls,
            signer=build_signer(settings),
        )
    if settings.provider == "sendgrid":
        from postroom.providers.sendgrid import SendGridProvider

        return SendGridProvider.from_settings(settings)
    if settings.provider == "mailgun":
        from postroom.providers.mailgun import MailgunProvider

        return MailgunProvider.from_settings(settings)
    if settings.provider == "ses":
        from postroom.providers.ses import SesProvider

        return SesProvider.from_settings(settings)
    if settings.provider == "postmark":
        from postroom.providers.postmark import PostmarkProvider

        return PostmarkProvider.from_settings(settings)
    raise ConfigurationError(
        f"POSTROOM_PROVIDER: unknown provider {settings.provider!r}; "
        "use outbox, smtp, sendgrid, mailgun, ses or postmark"
    )


def build_sending_provider(settings: Settings, db: Database) -> Provider:
    """The configured provider within its warm-up caps (if any), behind its circuit breaker,
    with the failover provider (if any) taking the mail while the circuit is open."""
    primary = build_warmup(settings, db, build_provider(settings))
    secondary = None
    if settings.failover_provider:
        if settings.failover_provider == settings.provider:
            raise ConfigurationError(
                "POSTROOM_FAILOVER_PROVIDER: must differ from POSTROOM_PROVIDER"
            )
        secondary = build_provider(
            settings.model_copy(update={"provider": settings.failover_provider})
        )
    breaker = CircuitBreaker(
        primary.name,
        threshold=settings.breaker_threshold,
        open_seconds=settings.breaker_open_seconds,
    )
    return FailoverProvider(primary, breaker, secondary)


def build_warmup(settings: Settings, db: Database, provider: Provider) -> Provider:
    if settings.warmup_start is None:
        return provider
    if settings.warmup_target is None:
        raise ConfigurationError("POSTROOM_WARMUP_TARGET: required with POSTROOM_WARMUP_START")
    if settings.warmup_initial > settings.warmup_target:
        raise ConfigurationError("POSTROOM_WARMUP_INITIAL: must not exceed POSTROOM_WARMUP_TARGET")
    schedule = WarmupSchedule(
        start=settings.warmup_start,
        target=settings.warmup_target,
        initial=settings.warmup_initial,
        days=settings.warmup_days,
    )
    counts = SendCounts(db)

    async def take(counter: str, day: date, wanted: int, cap: int) -> int:
        return await db.write(lambda conn: counts.take_within(conn, counter, day, wanted, cap))

    fallback = None
    if settings.warmup_fallback_provider:
        fallback = build_provider(
            settings.model_copy(update={"provider": settings.warmup_fallback_provider})
        )
    return WarmupProvider(provider, schedule, take, fallback)


def build_throttle(settings: Settings, provider: Provider) -> Throttle | None:
    """Send-rate limits from settings; None when none is configured."""
    limits = SendLimits(
        recipients=Rate(settings.provider_rate) if settings.provider_rate else None,
        requests=Rate(settings.provider_request_rate) if settings.provider_request_rate else None,
        domains=parse_rates(settings.domain_rates),
    )
    if not limits.any:
        return None
    store: ReservationStore
    if settings.rate_limit_url:
        from postroom.worker.throttle_redis import RedisReservations

        store = RedisReservations(settings.rate_limit_url)
    else:
        store = LocalReservations()
    return Throttle(provider.name, limits, store)


def build_signer(settings: Settings) -> DkimSigner | None:
    """The DKIM signer when POSTROOM_DKIM_SELECTOR and POSTROOM_DKIM_PRIVATE_KEY_FILE are set."""
    selector, key_file = settings.dkim_selector, settings.dkim_private_key_file
    if not (selector or key_file or settings.dkim_domain):
        return None
    # Half a DKIM configuration is a mistake, not a request to send unsigned mail.
    if not selector:
        raise ConfigurationError("POSTROOM_DKIM_SELECTOR: required when DKIM signing is configured")
    if not key_file:
        raise ConfigurationError(
            "POSTROOM_DKIM_PRIVATE_KEY_FILE: required when DKIM signing is configured"
        )
    from postroom.deliverability.dkim import DkimSigner

    # DMARC passes on DKIM only when d= aligns with the From domain: default to that domain.
    domain = settings.dkim_domain or parseaddr(settings.sender)[1].rpartition("@")[2]
    return DkimSigner.from_file(selector, domain, key_file)


def build_renderer(settings: Settings, registry: TemplateRegistry) -> Renderer:
    if not settings.secret_key:
        raise ConfigurationError("POSTROOM_SECRET_KEY is required to sign unsubscribe links")
    return Renderer(
        registry,
        sender=settings.sender,
        reply_to=settings.reply_to,
        public_url=settings.public_url,
        secret_key=settings.secret_key,
        postal_address=settings.postal_address,
        unsubscribe_mailto=settings.unsubscribe_mailto,
        previous_secret_keys=settings.previous_secret_keys,
    )


async def open_postroom(settings: Settings, *, provider: Provider | None = None) -> Postroom:
    """Build every part from ``settings`` (the database must already be prepared)."""
    settings = with_generated_secrets(settings)
    registry = TemplateRegistry.load(settings.templates_dir or bundled_templates_dir())
    renderer = build_renderer(settings, registry)
    warn_about_content(registry, renderer)
    db = open_database(settings.resolved_database_url, synchronous=settings.sqlite_synchronous)
    provider = provider or build_sending_provider(settings, db)
    return Postroom(
        settings=settings,
        db=db,
        queue=build_queue(settings, db),
        ledger=Ledger(db),
        suppressions=Suppressions(db),
        registry=registry,
        renderer=renderer,
        provider=provider,
        throttle=build_throttle(settings, provider),
    )


def build_pipeline(postroom: Postroom) -> DeliveryPipeline:
    s = postroom.settings
    return DeliveryPipeline(
        queue=postroom.queue,
        ledger=postroom.ledger,
        suppressions=postroom.suppressions,
        registry=postroom.registry,
        renderer=postroom.renderer,
        provider=postroom.provider,
        policy=RetryPolicy.from_settings(s),
        lease_seconds=s.lease_seconds,
        max_document_bytes=s.max_document_bytes,
        content_gate=build_content_gate(s),
        throttle=postroom.throttle,
    )


def warn_about_content(registry: TemplateRegistry, renderer: Renderer) -> None:
    """Content-check every email type that has sample data, and log what the check finds:
    a template author hears of a spammy subject or a missing footer at startup, not later."""
    from postroom.deliverability.content import lint_email_type

    for email_type in registry:
        if not email_type.sample:
            continue
        try:
            report = lint_email_type(renderer, email_type.name, email_type.sample)
        except PostroomError as exc:
            log.warning(
                "email type %s does not render with its sample data: %s", email_type.name, exc
            )
            continue
        for finding in report.findings:
            if finding.severity != "info":
                log.warning(
                    "email type %s: %s (%s)", email_type.name, finding.message, finding.rule
                )


def build_content_gate(settings: Settings) -> Callable[[RenderedEmail], str | None] | None:
    """The opt-in check refusing mail whose content scores too high (POSTROOM_LINT_MAX_SCORE)."""
    limit = settings.lint_max_score
    if limit is None:
        return None
    from postroom.deliverability.content import lint_message

    def refuse(email: RenderedEmail) -> str | None:
        report = lint_message(
            email.subject, email.html, email.text, marketing="List-Unsubscribe" in email.headers
        )
        if report.score < limit:
            return None
        rules = ", ".join(sorted({f.rule for f in report.findings if f.points > 0}))
        return f"content scored {report.score:.1f}, the limit is {limit:.1f} ({rules})"

    return refuse


def build_worker(postroom: Postroom, pipeline: DeliveryPipeline | None = None) -> Worker:
    """A worker on ``postroom``'s queue; API enqueues in this process wake it up."""
    from postroom.campaigns.assembly import build_dispatcher, build_scheduler

    s = postroom.settings
    pipeline = pipeline or build_pipeline(postroom)
    dispatcher = build_dispatcher(
        s, postroom.db, postroom.suppressions, postroom.renderer, pipeline
    )
    scheduler = build_scheduler(s, postroom.db, postroom.queue)
    worker = Worker(
        postroom.queue,
        dispatcher.process,
        concurrency=s.worker_concurrency,
        claim_batch=s.claim_batch,
        poll_interval=s.poll_interval,
        lease_seconds=s.lease_seconds,
        shutdown_grace=s.shutdown_grace,
        linger=s.batch_linger,
        weigh=dispatcher.weigh,
        companions=[scheduler.run],
    )
    postroom.wake_listeners.append(worker)
    return worker
